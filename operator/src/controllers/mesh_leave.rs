//! Letting a leaving Mesh member go (decision 0010, "A leaver's address goes back last").
//!
//! Every generated Interface carries the finalizer [`MEMBER_FINALIZER`]. When a member
//! leaves, the Mesh controller deletes its Interface: the object stays, marked deleted, so
//! its addresses stay allocated in their Networks (the Network controller releases an
//! address only once its Interface is gone from the store), while the other members' node
//! daemons drop it as a peer and each lists it in its own `status.mesh.departed`. This
//! controller removes the finalizer, which lets the Interface and its addresses go:
//!
//! - once every other live member of the Mesh lists the leaver as departed (a member whose
//!   Interface was created after the leaver's deletion never had it as a peer and is not
//!   asked);
//! - after [`LEAVE_TIMEOUT`] from the deletion whatever the members say (a dead node's
//!   daemon must not hold an address for ever), with a Warning Event on the Mesh naming the
//!   nodes that did not confirm;
//! - at once when the Mesh is gone or being deleted (its Interfaces all go with it).
//!
//! [`decide`] is pure; [`reconcile`] reads the stores, decides, and removes the finalizer by
//! a merge patch that carries the `resourceVersion` it decided on (optimistic lock).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use kwire_crds::v1alpha1::{Interface, Mesh};
use kwire_mesh::generate::MEMBER_FINALIZER;
use serde_json::json;

use super::mesh::{controlling_mesh, owned_by};
use super::{finish, namespace};
use crate::context::{Context, EventSpec};
use crate::error::Error;

pub const CONTROLLER: &str = "mesh-leave";

/// How long a leaver waits for the other members' confirmations at most.
pub const LEAVE_TIMEOUT: Duration = Duration::from_secs(300);

/// Reasons of the Events this controller publishes.
pub mod reasons {
    /// A leaver was let go before every member confirmed it dropped it.
    pub const UNCONFIRMED: &str = "MemberLeaveUnconfirmed";
}

/// How many node names an Event lists at most.
const NAMES_IN_EVENT: usize = 10;

/// Why a leaver is let go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Release {
    /// Every other live member's device dropped it.
    Confirmed,
    /// Its Mesh is gone or being deleted.
    MeshGone,
    /// [`LEAVE_TIMEOUT`] passed; the members on these nodes (in name order) had not
    /// confirmed.
    TimedOut { unconfirmed: Vec<String> },
}

/// What to do about one generated Interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nothing: it is not being deleted, or does not carry the finalizer.
    Nothing,
    /// Keep it: the members on these nodes (in name order) have not confirmed; decide again
    /// after `retry_after` at the latest (when it times out).
    Wait {
        unconfirmed: Vec<String>,
        retry_after: Duration,
    },
    /// Remove the finalizer.
    Release(Release),
}

/// Whether `interface` is on its way out with the finalizer still on.
pub fn is_leaving(interface: &Interface) -> bool {
    interface.metadata.deletion_timestamp.is_some()
        && interface.finalizers().iter().any(|f| f == MEMBER_FINALIZER)
}

/// Decides about `leaver`, given the Mesh that controls it as the store has it (`None`: not
/// there), the Interfaces of its namespace, and the time.
pub fn decide(
    leaver: &Interface,
    mesh: Option<&Mesh>,
    interfaces: &[Arc<Interface>],
    now: &Time,
    timeout: Duration,
) -> Decision {
    let Some(deleted_at) = leaver.metadata.deletion_timestamp.as_ref() else {
        return Decision::Nothing;
    };
    if !is_leaving(leaver) {
        return Decision::Nothing;
    }
    let owner_uid = leaver
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true) && o.kind == "Mesh")
        .map(|o| o.uid.clone());
    let mesh_uid = mesh
        .filter(|m| m.metadata.deletion_timestamp.is_none())
        .and_then(|m| m.uid());
    let (Some(uid), true) = (owner_uid.as_ref(), owner_uid == mesh_uid) else {
        return Decision::Release(Release::MeshGone);
    };
    let name = leaver.name_any();
    let mut unconfirmed: Vec<String> = interfaces
        .iter()
        .filter(|i| owned_by(i, uid) && i.name_any() != name)
        .filter(|i| i.metadata.deletion_timestamp.is_none())
        // Created after the leaver was deleted: its daemon never took the leaver as a peer.
        .filter(|i| {
            i.metadata
                .creation_timestamp
                .as_ref()
                .is_none_or(|c| c.0 <= deleted_at.0)
        })
        .filter(|i| {
            !i.status
                .as_ref()
                .and_then(|s| s.mesh.as_ref())
                .is_some_and(|m| m.departed.contains(&name))
        })
        .map(|i| i.spec.node_name.to_string())
        .collect();
    if unconfirmed.is_empty() {
        return Decision::Release(Release::Confirmed);
    }
    unconfirmed.sort_unstable();
    let waited = Duration::try_from(now.0.duration_since(deleted_at.0)).unwrap_or(Duration::ZERO);
    match timeout.checked_sub(waited).filter(|left| !left.is_zero()) {
        Some(retry_after) => Decision::Wait {
            unconfirmed,
            retry_after,
        },
        None => Decision::Release(Release::TimedOut { unconfirmed }),
    }
}

/// The Warning Event of a leaver let go without every confirmation.
pub fn timed_out_event(leaver: &str, unconfirmed: &[String]) -> EventSpec {
    let mut shown: Vec<&str> = unconfirmed
        .iter()
        .take(NAMES_IN_EVENT)
        .map(String::as_str)
        .collect();
    if unconfirmed.len() > NAMES_IN_EVENT {
        shown.push("…");
    }
    EventSpec::warning(
        reasons::UNCONFIRMED,
        "ReleaseMember",
        format!(
            "let the leaving member's Interface {leaver} go after {}s without confirmation from the members on {} node(s) ({}): their node daemons did not report that their devices dropped it (are they running?). Its addresses go back to their Networks; until those nodes' daemons catch up, they may still send its addresses' traffic to it",
            LEAVE_TIMEOUT.as_secs(),
            unconfirmed.len(),
            shown.join(", ")
        ),
    )
}

/// The leaving generated Interfaces (deleted, finalizer still on) controlled by the Meshes
/// `meshes` ((namespace, name)): whom a change of those Meshes or of their members concerns.
pub fn leaving_members(
    meshes: &BTreeSet<(String, String)>,
    interfaces: &[Arc<Interface>],
) -> BTreeSet<(String, String)> {
    if meshes.is_empty() {
        return BTreeSet::new();
    }
    interfaces
        .iter()
        .filter(|i| is_leaving(i))
        .filter(|i| controlling_mesh(i).is_some_and(|m| meshes.contains(&m)))
        .map(|i| (i.namespace().unwrap_or_default(), i.name_any()))
        .collect()
}

/// Reconciles one generated Interface.
pub async fn reconcile(interface: Arc<Interface>, ctx: Arc<Context>) -> Result<Action, Error> {
    let result = async {
        if !is_leaving(&interface) {
            return Ok(Action::await_change());
        }
        let ns = namespace(interface.as_ref(), "Interface")?;
        let mesh = controlling_mesh(&interface)
            .and_then(|(ns, name)| ctx.stores.meshes.get(&ObjectRef::new(&name).within(&ns)));
        let interfaces = ctx.stores.interfaces_in(&ns);
        let decision = decide(
            &interface,
            mesh.as_deref(),
            &interfaces,
            &ctx.clock.now(),
            LEAVE_TIMEOUT,
        );
        let release = match decision {
            Decision::Nothing => return Ok(Action::await_change()),
            Decision::Wait {
                unconfirmed,
                retry_after,
            } => {
                tracing::debug!(namespace = %ns, interface = %interface.name_any(), ?unconfirmed, "the leaver waits for the other members to drop it");
                return Ok(Action::requeue(retry_after));
            }
            Decision::Release(release) => release,
        };
        let name = interface.name_any();
        // The other finalizers as seen here, on the version seen here: a concurrent change
        // makes the patch fail (409), and the next reconcile decides on the new object.
        let rest: Vec<&String> = interface
            .finalizers()
            .iter()
            .filter(|f| *f != MEMBER_FINALIZER)
            .collect();
        let patch = json!({"metadata": {
            "finalizers": rest,
            "resourceVersion": interface.resource_version(),
        }});
        let api = Api::<Interface>::namespaced(ctx.client.clone(), &ns);
        match api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(Action::await_change()),
            Err(source) => {
                return Err(Error::ReleaseMember {
                    namespace: ns.clone(),
                    name,
                    source: Box::new(source),
                });
            }
        }
        tracing::info!(namespace = %ns, interface = %name, ?release, "let the leaving member go");
        if let (Release::TimedOut { unconfirmed }, Some(mesh)) = (&release, &mesh) {
            ctx.events
                .publish(
                    &mesh.object_ref(&()),
                    timed_out_event(&name, unconfirmed),
                )
                .await;
        }
        Ok(Action::await_change())
    }
    .await;
    finish(CONTROLLER, interface.as_ref(), &ctx, result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::{SignedDuration, Timestamp};
    use kwire_crds::v1alpha1::InterfaceStatus;
    use kwire_mesh::api::MemberPeersStatus;
    use proptest::prelude::*;

    fn t(secs: i64) -> Time {
        Time(Timestamp::from_second(1_800_000_000).unwrap() + SignedDuration::from_secs(secs))
    }

    fn mesh(uid: &str) -> Mesh {
        serde_json::from_value(json!({
            "apiVersion": "kwire.dev/v1alpha1",
            "kind": "Mesh",
            "metadata": {"name": "overlay", "namespace": "net", "uid": uid},
            "spec": {"nodeSelector": {}, "networks": [{"name": "overlay-v4"}]},
        }))
        .unwrap()
    }

    /// A member on `node`, created at `created`, deleted at `deleted`, that lists
    /// `departed` in its status.
    fn member(node: &str, created: i64, deleted: Option<i64>, departed: &[&str]) -> Interface {
        let mut i: Interface = serde_json::from_value(json!({
            "apiVersion": "kwire.dev/v1alpha1",
            "kind": "Interface",
            "metadata": {
                "name": format!("m-{node}"),
                "namespace": "net",
                "labels": {"kwire.dev/mesh": "overlay"},
                "finalizers": [MEMBER_FINALIZER],
                "ownerReferences": [{"apiVersion": "kwire.dev/v1alpha1", "kind": "Mesh",
                    "name": "overlay", "uid": "uid", "controller": true}],
            },
            "spec": {"nodeName": node, "listenPort": 51820},
        }))
        .unwrap();
        i.metadata.creation_timestamp = Some(t(created));
        i.metadata.deletion_timestamp = deleted.map(t);
        i.status = Some(InterfaceStatus {
            mesh: Some(MemberPeersStatus {
                departed: departed.iter().map(|d| d.to_string()).collect(),
                ..MemberPeersStatus::default()
            }),
            ..InterfaceStatus::default()
        });
        i
    }

    fn all(members: Vec<Interface>) -> Vec<Arc<Interface>> {
        members.into_iter().map(Arc::new).collect()
    }

    #[test]
    fn a_leaver_waits_for_every_other_live_member_then_goes() {
        let leaver = member("c", 0, Some(100), &[]);
        let m = mesh("uid");
        let mut members = vec![
            leaver.clone(),
            member("a", 0, None, &["m-c"]),
            member("b", 0, None, &[]),
            // Another leaver does not need to confirm.
            member("e", 0, Some(90), &[]),
            // Joined after c was deleted: never had c as a peer.
            member("f", 101, None, &[]),
        ];
        let waiting = decide(
            &leaver,
            Some(&m),
            &all(members.clone()),
            &t(130),
            LEAVE_TIMEOUT,
        );
        assert_eq!(
            waiting,
            Decision::Wait {
                unconfirmed: vec!["b".into()],
                retry_after: LEAVE_TIMEOUT - Duration::from_secs(30),
            }
        );
        members[2] = member("b", 0, None, &["m-a", "m-c"]);
        assert_eq!(
            decide(&leaver, Some(&m), &all(members), &t(131), LEAVE_TIMEOUT),
            Decision::Release(Release::Confirmed)
        );
    }

    #[test]
    fn a_silent_member_holds_a_leaver_until_the_timeout_and_is_named() {
        let leaver = member("c", 0, Some(100), &[]);
        let members = all(vec![
            leaver.clone(),
            member("b", 0, None, &[]),
            member("a", 0, None, &[]),
        ]);
        let m = mesh("uid");
        let at = |s| decide(&leaver, Some(&m), &members, &t(s), LEAVE_TIMEOUT);
        assert!(matches!(at(399), Decision::Wait { .. }));
        let unconfirmed = vec!["a".to_string(), "b".to_string()];
        assert_eq!(
            at(400),
            Decision::Release(Release::TimedOut {
                unconfirmed: unconfirmed.clone()
            })
        );
        let event = timed_out_event("m-c", &unconfirmed);
        assert!(event.warning && event.note.contains("a, b"), "{event:?}");
    }

    #[test]
    fn a_leaver_of_a_mesh_that_is_gone_goes_at_once() {
        let leaver = member("c", 0, Some(100), &[]);
        let members = all(vec![leaver.clone(), member("a", 0, None, &[])]);
        let gone = Decision::Release(Release::MeshGone);
        assert_eq!(
            decide(&leaver, None, &members, &t(100), LEAVE_TIMEOUT),
            gone
        );
        // A new Mesh of the same name is another Mesh.
        let other = mesh("other-uid");
        assert_eq!(
            decide(&leaver, Some(&other), &members, &t(100), LEAVE_TIMEOUT),
            gone
        );
        let mut deleting = mesh("uid");
        deleting.metadata.deletion_timestamp = Some(t(99));
        assert_eq!(
            decide(&leaver, Some(&deleting), &members, &t(100), LEAVE_TIMEOUT),
            gone
        );
    }

    #[test]
    fn a_live_member_or_one_without_the_finalizer_is_not_acted_on() {
        let m = mesh("uid");
        let live = member("a", 0, None, &[]);
        assert_eq!(
            decide(&live, Some(&m), &[], &t(0), LEAVE_TIMEOUT),
            Decision::Nothing
        );
        let mut bare = member("c", 0, Some(1), &[]);
        bare.metadata.finalizers = None;
        assert_eq!(
            decide(&bare, Some(&m), &[], &t(1), LEAVE_TIMEOUT),
            Decision::Nothing
        );
    }

    #[test]
    fn changes_of_a_mesh_or_its_members_concern_its_leavers_only() {
        let mut foreign = member("x", 0, Some(1), &[]);
        foreign.metadata.owner_references.as_mut().unwrap()[0].name = "other".into();
        let interfaces = all(vec![
            member("a", 0, None, &[]),
            member("c", 0, Some(1), &[]),
            foreign,
        ]);
        let meshes = [("net".to_string(), "overlay".to_string())].into();
        assert_eq!(
            leaving_members(&meshes, &interfaces),
            [("net".to_string(), "m-c".to_string())].into()
        );
        assert!(leaving_members(&BTreeSet::new(), &interfaces).is_empty());
    }

    /// The Mesh controller generates every member with the finalizer, applies it again to
    /// a member that lacks it, and leaves a leaving member alone (no new finalizer can be
    /// added to an object being deleted; it is made again once gone).
    #[test]
    fn generated_members_carry_the_finalizer_and_a_leaving_one_is_not_applied_again() {
        use super::super::mesh::plan_mesh;
        use kwire_mesh::MeshNode;
        let m = mesh("uid");
        let nodes = [MeshNode {
            name: "a".into(),
            internal: vec!["10.0.0.1".parse().unwrap()],
            ..MeshNode::default()
        }];
        let plan = plan_mesh(&m, &nodes, &[], &t(0));
        assert_eq!(plan.apply.len(), 1);
        assert_eq!(plan.apply[0].finalizers(), [MEMBER_FINALIZER]);
        let mut without = plan.apply[0].clone();
        without.metadata.finalizers = None;
        let again = plan_mesh(&m, &nodes, &[Arc::new(without.clone())], &t(1));
        assert_eq!(
            again.apply.len(),
            1,
            "the finalizer is added to an older member"
        );
        without.metadata.deletion_timestamp = Some(t(1));
        let leaving = plan_mesh(&m, &nodes, &[Arc::new(without)], &t(2));
        assert!(
            leaving.apply.is_empty() && leaving.delete.is_empty(),
            "{leaving:?}"
        );
    }

    proptest! {
        /// Whatever the members and the time: a leaver is released as confirmed exactly
        /// when every other live member that existed at its deletion lists it; otherwise it
        /// waits, before the timeout, naming exactly those members, and is released as timed
        /// out after; the order of the members never matters.
        #[test]
        fn release_needs_every_confirmation_or_the_timeout(
            others in proptest::collection::vec((any::<bool>(), any::<bool>(), 0i64..200), 0..12),
            elapsed in 0u64..600,
        ) {
            let leaver = member("leaver", 0, Some(100), &[]);
            let mut members = vec![leaver.clone()];
            let mut expected = Vec::new();
            for (i, (confirmed, deleting, created)) in others.iter().enumerate() {
                let node = format!("n{i:02}");
                let departed: &[&str] = if *confirmed { &["m-leaver"] } else { &[] };
                members.push(member(&node, *created, deleting.then_some(150), departed));
                if !confirmed && !deleting && *created <= 100 {
                    expected.push(node);
                }
            }
            let m = mesh("uid");
            let now = t(100 + elapsed as i64);
            let decision = decide(&leaver, Some(&m), &all(members.clone()), &now, LEAVE_TIMEOUT);
            let want = if expected.is_empty() {
                Decision::Release(Release::Confirmed)
            } else if elapsed >= LEAVE_TIMEOUT.as_secs() {
                Decision::Release(Release::TimedOut { unconfirmed: expected })
            } else {
                Decision::Wait {
                    unconfirmed: expected,
                    retry_after: LEAVE_TIMEOUT - Duration::from_secs(elapsed),
                }
            };
            prop_assert_eq!(&decision, &want);
            members.reverse();
            prop_assert_eq!(decide(&leaver, Some(&m), &all(members), &now, LEAVE_TIMEOUT), want);
        }
    }
}
