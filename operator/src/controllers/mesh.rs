//! The Mesh controller: expands a Mesh over the current Nodes ([`kwire_mesh::expand`]) and
//! keeps one generated Interface per member, owned by the Mesh; writes the Mesh's status.
//!
//! - observe: the Mesh, the Nodes (trimmed to addresses, labels and pod CIDRs, see
//!   [`super::nodes`]) and the Interfaces of the Mesh's namespace, all from the stores;
//! - [`plan_mesh`] (pure): the Interfaces to apply (missing, or whose spec, labels or owner
//!   differ from the generated ones), the owned Interfaces of members that left, and the
//!   status;
//! - apply: server-side apply of each planned Interface under the operator's field manager,
//!   deletion of the leavers, then the status.
//!
//! The operator never touches an Interface it does not own: a generated name already taken
//! by an object without this Mesh's controller reference is reported (`TopologyValid`
//! `False`, reason `NameTaken`) and left alone. Keys and addresses of the generated
//! Interfaces come from the Interface controller as for any Interface; no Peer object is
//! created: the node daemons derive the members' peers (decision 0010).
//!
//! Every topology is acted on. The elections that must be sticky are recorded and read back
//! as [`kwire_mesh::Decisions`] at the next expansion: each location's gateway in the Mesh's
//! `status.locations[].gateway`, each spoke's primary hub in the annotation
//! `kwire.dev/mesh-primary-hub` of its generated Interface. Each generated Interface also
//! carries what the members' node daemons need to compute their links without reading Nodes
//! or the Mesh (the topology, the announced prefixes, a gateway's gateway address; see
//! [`kwire_mesh::generate`] and [`kwire_mesh::members`]). A Mesh whose members cannot all
//! reach each other (no hub, a location without a possible gateway, overlapping announced
//! prefixes) still gets its Interfaces, with `TopologyValid` `False` and the check's reason.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::controller::Action;
use kwire_crds::v1alpha1::mesh::LocationStatus;
use kwire_crds::v1alpha1::{Interface, Mesh, MeshStatus};
use kwire_mesh::api::STATUS_NAMES_CAP;
use kwire_mesh::check::{Severity, check_mesh};
use kwire_mesh::condition::DesiredCondition;
use kwire_mesh::generate::member_interface;
use kwire_mesh::names::{ANNOTATION_PRIMARY_HUB, MEMBER_ANNOTATIONS};
use kwire_mesh::{Decisions, MeshNode, expand};

use super::{finish, namespace};
use crate::context::Context;
use crate::error::Error;
use crate::status::{FIELD_MANAGER, apply_status, merge_conditions, normalized_conditions};

pub const CONTROLLER: &str = "mesh";

/// How many locations `status.locations` holds at most (the CRD's bound).
const LOCATIONS_CAP: usize = 256;

/// Condition types the operator writes on a Mesh.
pub const TOPOLOGY_VALID: &str = "TopologyValid";
pub const READY: &str = "Ready";

/// Reasons of the Mesh's conditions.
pub mod reasons {
    pub const VALID: &str = "Valid";
    pub const INVALID: &str = "InvalidMesh";
    pub const NAME_TAKEN: &str = "NameTaken";
    pub const ALL_READY: &str = "AllMembersReady";
    pub const NOT_READY: &str = "MembersNotReady";
    pub const NO_MEMBERS: &str = "NoMembers";
}

/// What one reconcile of a Mesh does.
#[derive(Clone, Debug, Default)]
pub struct MeshPlan {
    /// Generated Interfaces to create or bring back to what the Mesh says.
    pub apply: Vec<Interface>,
    /// Owned Interfaces of nodes that are no longer members, by name.
    pub delete: Vec<String>,
    pub status: MeshStatus,
}

/// Whether `interface` is controlled by the Mesh with `uid`.
pub fn owned_by(interface: &Interface, uid: &str) -> bool {
    interface
        .owner_references()
        .iter()
        .any(|o| o.uid == uid && o.controller == Some(true) && o.kind == "Mesh")
}

/// Whether `existing` already is what `desired` asks: same spec, every desired label, the
/// same value (or absence) of each annotation the operator writes, the owner reference and
/// the finalizer.
fn up_to_date(existing: &Interface, desired: &Interface) -> bool {
    let labels = existing.labels();
    let finalizers = existing.finalizers();
    let ours = |i: &Interface| {
        MEMBER_ANNOTATIONS
            .map(|a| i.annotations().get(a).cloned())
            .to_vec()
    };
    existing.spec == desired.spec
        && ours(existing) == ours(desired)
        && desired
            .labels()
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
        && desired
            .owner_references()
            .iter()
            .all(|o| existing.owner_references().contains(o))
        && desired.finalizers().iter().all(|f| finalizers.contains(f))
}

/// The elections recorded earlier: gateways from the Mesh's `status.locations`, primary
/// hubs from the annotations of the Interfaces this Mesh controls (by their node).
pub fn recorded_decisions(mesh: &Mesh, interfaces: &[Arc<Interface>]) -> Decisions {
    let uid = mesh.uid().unwrap_or_default();
    let gateways = mesh
        .status
        .iter()
        .flat_map(|s| &s.locations)
        .filter_map(|l| Some((l.name.clone(), l.gateway.clone()?)))
        .collect();
    let primary_hubs = interfaces
        .iter()
        .filter(|i| owned_by(i, &uid))
        .filter_map(|i| {
            let hub = i.annotations().get(ANNOTATION_PRIMARY_HUB)?;
            Some((i.spec.node_name.to_string(), hub.clone()))
        })
        .collect();
    Decisions {
        gateways,
        primary_hubs,
    }
}

fn is_ready(interface: &Interface) -> bool {
    interface.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

/// Plans one reconcile of `mesh` over `nodes`, given the Interfaces of its namespace.
pub fn plan_mesh(
    mesh: &Mesh,
    nodes: &[MeshNode],
    interfaces: &[Arc<Interface>],
    now: &Time,
) -> MeshPlan {
    let name = mesh.name_any();
    let uid = mesh.uid().unwrap_or_default();
    let by_name: BTreeMap<String, &Interface> = interfaces
        .iter()
        .map(|i| (i.name_any(), i.as_ref()))
        .collect();
    let mut plan = MeshPlan::default();
    let mut status = MeshStatus {
        observed_generation: mesh.metadata.generation,
        ..MeshStatus::default()
    };
    let decisions = recorded_decisions(mesh, interfaces);
    let (valid, ready) = match expand(&name, &mesh.spec, nodes, &decisions) {
        Err(e) => (
            DesiredCondition::failed(TOPOLOGY_VALID, reasons::INVALID, e.to_string()),
            DesiredCondition::failed(READY, reasons::INVALID, "the Mesh cannot be expanded"),
        ),
        Ok(expansion) => {
            let mut taken = Vec::new();
            let mut members = BTreeSet::new();
            let mut ready_members = 0u32;
            let mut unready = Vec::new();
            for member in &expansion.members {
                members.insert(member.name.clone());
                let Some(desired) = member_interface(mesh, &expansion, member) else {
                    continue;
                };
                match by_name.get(&member.name) {
                    Some(existing) if !owned_by(existing, &uid) => {
                        taken.push(member.name.clone());
                        unready.push(member.node.clone());
                        continue;
                    }
                    Some(existing) => {
                        if is_ready(existing) && up_to_date(existing, &desired) {
                            ready_members += 1;
                        } else {
                            unready.push(member.node.clone());
                        }
                        // A leaver's Interface on its way out (see `mesh_leave`) is left
                        // to go: it is made again once gone.
                        let leaving = existing.metadata.deletion_timestamp.is_some();
                        if !leaving && !up_to_date(existing, &desired) {
                            plan.apply.push(desired);
                        }
                    }
                    None => {
                        unready.push(member.node.clone());
                        plan.apply.push(desired);
                    }
                }
            }
            plan.delete = interfaces
                .iter()
                .filter(|i| owned_by(i, &uid) && !members.contains(&i.name_any()))
                .filter(|i| i.metadata.deletion_timestamp.is_none())
                .map(|i| i.name_any())
                .collect();
            let count = u32::try_from(expansion.members.len()).unwrap_or(u32::MAX);
            status.members = Some(count);
            status.ready_members = Some(ready_members);
            unready.truncate(STATUS_NAMES_CAP);
            status.unready_members = unready;
            // The record that keeps each location's gateway (a node name) at the next plan.
            status.locations = expansion
                .locations
                .iter()
                .take(LOCATIONS_CAP)
                .map(|l| LocationStatus {
                    name: l.name.clone(),
                    members: u32::try_from(l.members.len()).unwrap_or(u32::MAX),
                    gateway: l
                        .gateway
                        .as_deref()
                        .and_then(|g| expansion.member(g))
                        .map(|g| g.node.clone()),
                })
                .collect();
            // Members that cannot all reach each other: the first error of the checks.
            let unreachable = check_mesh(&expansion, &[])
                .into_iter()
                .find(|f| f.severity() == Severity::Error);
            let valid = if let Some(finding) = unreachable.filter(|_| taken.is_empty()) {
                DesiredCondition::failed(TOPOLOGY_VALID, finding.reason(), finding.to_string())
            } else if taken.is_empty() {
                DesiredCondition::ok(
                    TOPOLOGY_VALID,
                    reasons::VALID,
                    format!("{count} members, one generated Interface each"),
                )
            } else {
                let shown: Vec<&str> = taken.iter().take(5).map(String::as_str).collect();
                DesiredCondition::failed(
                    TOPOLOGY_VALID,
                    reasons::NAME_TAKEN,
                    format!(
                        "{} generated Interface name(s) are taken by objects this Mesh does not own ({}): rename or delete them; the operator never takes over an object it did not create",
                        taken.len(),
                        shown.join(", ")
                    ),
                )
            };
            let ready = if count == 0 {
                DesiredCondition::failed(
                    READY,
                    reasons::NO_MEMBERS,
                    "spec.nodeSelector selects no Node",
                )
            } else if ready_members == count {
                DesiredCondition::ok(
                    READY,
                    reasons::ALL_READY,
                    "every member's Interface is Ready",
                )
            } else {
                DesiredCondition::failed(
                    READY,
                    reasons::NOT_READY,
                    format!("{ready_members} of {count} members' Interfaces are Ready"),
                )
            };
            (valid, ready)
        }
    };
    let previous: &[Condition] = mesh
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    status.conditions = merge_conditions(previous, &[valid, ready], mesh.metadata.generation, now);
    plan.status = status;
    plan
}

/// Whether writing `desired` would change the status the Mesh has, timestamps aside.
pub fn status_changed(current: Option<&MeshStatus>, desired: &MeshStatus) -> bool {
    let Some(current) = current else {
        return true;
    };
    let view = |s: &MeshStatus| MeshStatus {
        conditions: normalized_conditions(&s.conditions, &[TOPOLOGY_VALID, READY]),
        ..s.clone()
    };
    view(current) != view(desired)
}

/// Reconciles one Mesh.
pub async fn reconcile(mesh: Arc<Mesh>, ctx: Arc<Context>) -> Result<Action, Error> {
    let result = async {
        let ns = namespace(mesh.as_ref(), "Mesh")?;
        let nodes: Vec<MeshNode> = ctx
            .stores
            .nodes
            .state()
            .iter()
            .map(|n| MeshNode::from_node(n))
            .collect();
        let interfaces = ctx.stores.interfaces_in(&ns);
        let plan = plan_mesh(&mesh, &nodes, &interfaces, &ctx.clock.now());
        let api = Api::<Interface>::namespaced(ctx.client.clone(), &ns);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        for interface in &plan.apply {
            let name = interface.name_any();
            api.patch(&name, &params, &Patch::Apply(interface))
                .await
                .map_err(|source| Error::ApplyGenerated {
                    kind: "Interface",
                    namespace: ns.clone(),
                    name,
                    source: Box::new(source),
                })?;
        }
        for name in &plan.delete {
            // Only the object the plan saw as ours: a same-named object created since is
            // left alone (the uid precondition fails).
            let uid = interfaces
                .iter()
                .find(|i| &i.name_any() == name)
                .and_then(|i| i.uid());
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid,
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match api.delete(name, &params).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                Err(source) => {
                    return Err(Error::DeleteGenerated {
                        kind: "Interface",
                        namespace: ns.clone(),
                        name: name.clone(),
                        source: Box::new(source),
                    });
                }
            }
        }
        let patch = status_changed(mesh.status.as_ref(), &plan.status);
        if patch {
            let meshes = Api::<Mesh>::namespaced(ctx.client.clone(), &ns);
            apply_status(&meshes, mesh.as_ref(), &plan.status)
                .await
                .map_err(|source| Error::PatchStatus {
                    kind: "Mesh",
                    namespace: ns.clone(),
                    name: mesh.name_any(),
                    source: Box::new(source),
                })?;
        }
        ctx.metrics.patched(CONTROLLER, patch);
        Ok(Action::requeue(ctx.config.resync))
    }
    .await;
    finish(CONTROLLER, mesh.as_ref(), &ctx, result)
}

/// The Mesh that controls a generated Interface, if any: `(namespace, mesh name)`.
pub fn controlling_mesh(interface: &Interface) -> Option<(String, String)> {
    let owner = kwire_mesh::members::mesh_controller(interface)?;
    Some((
        interface.namespace().unwrap_or_default(),
        owner.name.clone(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_openapi::jiff::Timestamp;
    use kwire_crds::v1alpha1::InterfaceStatus;
    use kwire_mesh::names::ANNOTATION_KEEPALIVE;
    use serde_json::json;

    fn mesh(topology: &str) -> Mesh {
        let mut m: Mesh = serde_json::from_value(json!({
            "apiVersion": "kwire.dev/v1alpha1",
            "kind": "Mesh",
            "metadata": {"name": "overlay", "namespace": "net", "uid": "mesh-uid", "generation": 2},
            "spec": {
                "nodeSelector": {"matchLabels": {"mesh": "yes"}},
                "topology": {"type": topology},
                "networks": [{"name": "overlay-v4"}],
            },
        }))
        .unwrap();
        if topology == "HubAndSpoke" {
            m.spec.topology.hub_and_spoke =
                Some(serde_json::from_value(json!({"hubSelector": {}})).unwrap());
        }
        m
    }

    fn node(name: &str, selected: bool) -> MeshNode {
        MeshNode {
            name: name.into(),
            labels: if selected {
                [("mesh".to_string(), "yes".to_string())].into()
            } else {
                BTreeMap::new()
            },
            internal: vec!["10.0.0.1".parse().unwrap()],
            ..MeshNode::default()
        }
    }

    fn now() -> Time {
        Time(Timestamp::UNIX_EPOCH)
    }

    fn ready(mut i: Interface) -> Arc<Interface> {
        i.status = Some(InterfaceStatus {
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: "True".into(),
                reason: "Configured".into(),
                message: String::new(),
                observed_generation: None,
                last_transition_time: now(),
            }],
            ..InterfaceStatus::default()
        });
        Arc::new(i)
    }

    #[test]
    fn a_full_mesh_generates_one_owned_interface_per_selected_node() {
        let m = mesh("FullMesh");
        let nodes = [node("a", true), node("b", true), node("c", false)];
        let plan = plan_mesh(&m, &nodes, &[], &now());
        let names: Vec<String> = plan.apply.iter().map(|i| i.name_any()).collect();
        assert_eq!(
            names,
            [
                kwire_mesh::names::member_name("overlay", "a"),
                kwire_mesh::names::member_name("overlay", "b")
            ]
        );
        for i in &plan.apply {
            assert!(owned_by(i, "mesh-uid"));
            assert_eq!(i.labels()["kwire.dev/mesh"], "overlay");
            assert_eq!(i.namespace().as_deref(), Some("net"));
            assert_eq!(
                i.spec.networks.as_ref().unwrap()[0].name.as_str(),
                "overlay-v4"
            );
        }
        assert!(plan.delete.is_empty());
        assert_eq!(plan.status.members, Some(2));
        assert_eq!(plan.status.ready_members, Some(0));
        assert_eq!(plan.status.conditions[0].status, "True");
        assert_eq!(plan.status.conditions[1].reason, reasons::NOT_READY);
    }

    #[test]
    fn a_converged_mesh_applies_nothing_and_a_leaver_is_deleted() {
        let m = mesh("FullMesh");
        let nodes = [node("a", true), node("b", true)];
        let first = plan_mesh(&m, &nodes, &[], &now());
        let existing: Vec<Arc<Interface>> = first.apply.iter().cloned().map(ready).collect();
        let again = plan_mesh(&m, &nodes, &existing, &now());
        assert!(
            again.apply.is_empty() && again.delete.is_empty(),
            "{again:?}"
        );

        // A keepalive set on the Mesh is applied to every member, once.
        let mut keepalive = m.clone();
        keepalive.spec.device.persistent_keepalive = Some(25);
        let plan = plan_mesh(&keepalive, &nodes, &existing, &now());
        assert_eq!(plan.apply.len(), 2);
        assert_eq!(plan.apply[0].annotations()[ANNOTATION_KEEPALIVE], "25");
        let updated: Vec<Arc<Interface>> = plan.apply.iter().cloned().map(ready).collect();
        assert!(
            plan_mesh(&keepalive, &nodes, &updated, &now())
                .apply
                .is_empty()
        );
        // And removed again when the Mesh drops it.
        assert_eq!(plan_mesh(&m, &nodes, &updated, &now()).apply.len(), 2);
        assert_eq!(again.status.ready_members, Some(2));
        assert_eq!(again.status.conditions[1].reason, reasons::ALL_READY);

        // b stops matching: its Interface goes, a's stays untouched.
        let left = plan_mesh(&m, &[node("a", true), node("b", false)], &existing, &now());
        assert!(left.apply.is_empty());
        assert_eq!(
            left.delete,
            [kwire_mesh::names::member_name("overlay", "b")]
        );
        assert_eq!(left.status.members, Some(1));
    }

    #[test]
    fn a_name_taken_by_a_foreign_object_is_reported_and_never_touched() {
        let m = mesh("FullMesh");
        let name = kwire_mesh::names::member_name("overlay", "a");
        let mut foreign = Interface::new(
            &name,
            plan_mesh(&m, &[node("a", true)], &[], &now()).apply[0]
                .spec
                .clone(),
        );
        foreign.metadata = ObjectMeta {
            name: Some(name.clone()),
            namespace: Some("net".into()),
            ..ObjectMeta::default()
        };
        let plan = plan_mesh(&m, &[node("a", true)], &[Arc::new(foreign)], &now());
        assert!(plan.apply.is_empty() && plan.delete.is_empty());
        assert_eq!(plan.status.conditions[0].reason, reasons::NAME_TAKEN);
        assert!(plan.status.conditions[0].message.contains(&name));
    }

    fn labelled(name: &str, pairs: &[(&str, &str)]) -> MeshNode {
        let mut n = node(name, true);
        n.labels
            .extend(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        n
    }

    fn annotation<'a>(plan: &'a MeshPlan, node: &str, key: &str) -> Option<&'a str> {
        plan.apply
            .iter()
            .find(|i| i.spec.node_name.as_str() == node)
            .and_then(|i| i.annotations().get(key))
            .map(String::as_str)
    }

    fn role<'a>(plan: &'a MeshPlan, node: &str) -> &'a str {
        let i = plan
            .apply
            .iter()
            .find(|i| i.spec.node_name.as_str() == node);
        &i.unwrap().labels()["kwire.dev/mesh-role"]
    }

    #[test]
    fn a_locations_mesh_records_one_gateway_per_location_and_keeps_it() {
        let zone = |z| [("topology.kubernetes.io/zone", z)];
        let m = mesh("Locations");
        // a2 and b1 first: each is its location's only node, so its gateway.
        let first_nodes = [labelled("a2", &zone("a")), labelled("b1", &zone("b"))];
        let first = plan_mesh(&m, &first_nodes, &[], &now());
        assert_eq!(first.apply.len(), 2);
        let gateways = |p: &MeshPlan| -> Vec<(String, u32, Option<String>)> {
            p.status
                .locations
                .iter()
                .map(|l| (l.name.clone(), l.members, l.gateway.clone()))
                .collect()
        };
        assert_eq!(
            gateways(&first),
            [
                ("a".to_string(), 1, Some("a2".to_string())),
                ("b".to_string(), 1, Some("b1".to_string()))
            ]
        );
        assert_eq!(role(&first, "a2"), "gateway");
        assert_eq!(
            annotation(&first, "a2", "kwire.dev/mesh-topology"),
            Some("Locations")
        );
        assert_eq!(first.status.conditions[0].reason, reasons::VALID);

        // a1 joins; without a record it would win location a (first by name), with the
        // record the gateway stays a2 and a1 is a plain member.
        let mut recorded = m.clone();
        recorded.status = Some(first.status.clone());
        let existing: Vec<Arc<Interface>> = first.apply.iter().cloned().map(ready).collect();
        let nodes = [
            labelled("a1", &zone("a")),
            labelled("a2", &zone("a")),
            labelled("b1", &zone("b")),
        ];
        let joined = plan_mesh(&recorded, &nodes, &existing, &now());
        let names: Vec<&str> = joined
            .apply
            .iter()
            .map(|i| i.spec.node_name.as_str())
            .collect();
        assert_eq!(names, ["a1"], "only the new member is written");
        assert_eq!(role(&joined, "a1"), "member");
        assert_eq!(
            gateways(&joined),
            [
                ("a".to_string(), 2, Some("a2".to_string())),
                ("b".to_string(), 1, Some("b1".to_string()))
            ]
        );
        let fresh = plan_mesh(&m, &nodes, &[], &now());
        assert_eq!(fresh.status.locations[0].gateway.as_deref(), Some("a1"));

        // The record goes when its gateway leaves: the next one is elected.
        let mut later = recorded.clone();
        later.status = Some(joined.status.clone());
        let left = plan_mesh(
            &later,
            &[nodes[0].clone(), nodes[2].clone()],
            &existing,
            &now(),
        );
        assert_eq!(left.status.locations[0].gateway.as_deref(), Some("a1"));
        assert_eq!(role(&left, "a1"), "gateway");
    }

    #[test]
    fn a_location_without_a_possible_gateway_is_reported_and_the_rest_generated() {
        let mut m = mesh("Locations");
        m.spec.topology.locations = Some(
            serde_json::from_value(json!({"gatewaySelector": {"matchLabels": {"gw": "yes"}}}))
                .unwrap(),
        );
        let zone = |z| ("topology.kubernetes.io/zone", z);
        let nodes = [
            labelled("a1", &[zone("a"), ("gw", "yes")]),
            labelled("b1", &[zone("b")]),
        ];
        let plan = plan_mesh(&m, &nodes, &[], &now());
        assert_eq!(plan.apply.len(), 2);
        assert_eq!(plan.status.conditions[0].reason, "NoGateway");
        assert_eq!(plan.status.locations[1].gateway, None);
    }

    #[test]
    fn a_hub_and_spoke_records_each_spokes_primary_hub_on_its_interface() {
        let mut m = mesh("HubAndSpoke");
        m.spec.topology.hub_and_spoke = Some(
            serde_json::from_value(json!({"hubSelector": {"matchLabels": {"hub": "yes"}}}))
                .unwrap(),
        );
        let hub = [("hub", "yes")];
        let nodes = [
            labelled("h1", &hub),
            labelled("h2", &hub),
            labelled("s1", &[]),
            labelled("s2", &[]),
            labelled("s3", &[]),
        ];
        let plan = plan_mesh(&m, &nodes, &[], &now());
        assert_eq!(plan.status.conditions[0].reason, reasons::VALID);
        assert!(plan.status.locations.is_empty());
        for h in ["h1", "h2"] {
            assert_eq!(role(&plan, h), "hub");
            assert_eq!(annotation(&plan, h, ANNOTATION_PRIMARY_HUB), None);
            let i = plan.apply.iter().find(|i| i.spec.node_name.as_str() == h);
            assert_eq!(i.unwrap().spec.forwarding, Some(true));
        }
        for s in ["s1", "s2", "s3"] {
            assert_eq!(role(&plan, s), "spoke");
            let primary = annotation(&plan, s, ANNOTATION_PRIMARY_HUB).unwrap();
            assert!(["h1", "h2"].contains(&primary), "{s}: {primary}");
            assert_eq!(
                annotation(&plan, s, "kwire.dev/mesh-topology"),
                Some("HubAndSpoke")
            );
        }

        // The record on the Interfaces is what the next plan keeps: move s1 to the other
        // hub in its annotation (as if elected before), and it stays there.
        let other = |hub: &str| if hub == "h1" { "h2" } else { "h1" };
        let mut existing: Vec<Interface> = plan.apply.clone();
        let s1 = existing
            .iter_mut()
            .find(|i| i.spec.node_name.as_str() == "s1")
            .unwrap();
        let moved = other(&s1.annotations()[ANNOTATION_PRIMARY_HUB]).to_string();
        s1.annotations_mut()
            .insert(ANNOTATION_PRIMARY_HUB.into(), moved.clone());
        let existing: Vec<Arc<Interface>> = existing.into_iter().map(ready).collect();
        assert_eq!(recorded_decisions(&m, &existing).primary_hubs["s1"], moved);
        let again = plan_mesh(&m, &nodes, &existing, &now());
        assert!(again.apply.is_empty(), "{:?}", again.apply);
        assert_eq!(again.status.ready_members, Some(5));

        // A hub-and-spoke without a hub: reported, the spokes are still generated.
        let no_hub = plan_mesh(&m, &nodes[2..], &[], &now());
        assert_eq!(no_hub.apply.len(), 3);
        assert_eq!(no_hub.status.conditions[0].reason, "NoHub");
    }

    #[test]
    fn announced_prefixes_are_written_on_the_announcers_interface() {
        let mut m = mesh("FullMesh");
        m.spec.announce = Some(
            serde_json::from_value(json!({"podCIDRs": true,
                "prefixes": [{"nodeName": "b", "cidrs": ["192.168.10.0/24"]}]}))
            .unwrap(),
        );
        let mut a = node("a", true);
        a.pod_cidrs = vec!["10.244.1.0/24".parse().unwrap()];
        let plan = plan_mesh(&m, &[a, node("b", true)], &[], &now());
        assert_eq!(
            annotation(&plan, "a", "kwire.dev/mesh-announce"),
            Some("10.244.1.0/24")
        );
        assert_eq!(
            annotation(&plan, "b", "kwire.dev/mesh-announce"),
            Some("192.168.10.0/24")
        );
        // FullMesh: no topology annotation (FullMesh members written before stay as they are).
        assert_eq!(annotation(&plan, "a", "kwire.dev/mesh-topology"), None);
        assert!(plan.apply.iter().all(|i| i.spec.forwarding == Some(true)));
    }

    #[test]
    fn an_unchanged_status_is_not_written_again() {
        let m = mesh("FullMesh");
        let plan = plan_mesh(&m, &[node("a", true)], &[], &now());
        let mut written = m.clone();
        written.status = Some(plan.status.clone());
        let later = Time(Timestamp::from_second(60).unwrap());
        let again = plan_mesh(&written, &[node("a", true)], &[], &later);
        assert!(!status_changed(written.status.as_ref(), &again.status));
        assert!(status_changed(None, &again.status));
    }
}
