//! `kwire lint`: what the API server would reject, and what the operator would report as
//! `TopologyValid=False`, found offline.
//!
//! Each document is checked against its CRD's schema and CEL rules
//! ([`validate_like_api_server`]); a document that repeats an earlier object (same kind,
//! namespace and name) is checked as an update of it, so transition rules (immutable
//! fields) apply as on a second `kubectl apply`. The last version of every object then goes
//! through the operator's own topology checks ([`kwire_mesh::topology::check`]), so
//! the messages are exactly those of the conditions.
//!
//! Meshes are checked against the Mesh schema's rules, then expanded over a node list
//! (`--node-list`, else the Node documents of the manifests) and checked with
//! [`kwire_mesh::check`] (see [`crate::mesh`]).

use std::collections::BTreeSet;

use kwire_crds::manifest::{KwireObject, validate_like_api_server};
use kwire_mesh::topology::{Finding, check};
use kwire_mesh::world::World;

use kwire_mesh::MeshNode;

use crate::manifests::{Document, to_object};
use crate::mesh;

/// The reason of a problem the API server would reject the object for (the
/// `StatusReason` of its 422 answer).
pub const INVALID: &str = "Invalid";

/// One problem with one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// `Kind/name`.
    pub object: String,
    pub namespace: String,
    /// `Invalid` for what the API server rejects, else the condition's reason.
    pub reason: String,
    pub message: String,
}

/// What lint found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub problems: Vec<Problem>,
    /// How many objects were checked (kwire objects, each counted once).
    pub objects: usize,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

type Key = (String, String, String);

fn key_of(d: &Document) -> Key {
    (
        d.kind().unwrap_or_default().to_string(),
        d.namespace().unwrap_or_default().to_string(),
        d.name().unwrap_or_default().to_string(),
    )
}

/// Lints documents (already given their default namespace); Meshes are expanded over the
/// Node documents among them.
pub fn lint(documents: &[Document]) -> Report {
    lint_with_nodes(documents, None)
}

/// Lints documents (already given their default namespace); Meshes are expanded over
/// `nodes` when given (`--node-list`), else over the Node documents among them.
pub fn lint_with_nodes(documents: &[Document], nodes: Option<&[MeshNode]>) -> Report {
    let mut problems: Vec<(Key, Problem)> = Vec::new();
    let mut order: Vec<Key> = Vec::new();
    let mut latest: Vec<(Key, KwireObject)> = Vec::new();
    for (i, doc) in documents.iter().enumerate() {
        if doc.kind().is_none() || doc.value.get("apiVersion").is_none() {
            let key = (String::new(), String::new(), doc.location());
            problems.push((
                key.clone(),
                Problem {
                    object: doc.location(),
                    namespace: String::new(),
                    reason: INVALID.into(),
                    message: "a Kubernetes object needs apiVersion and kind".into(),
                },
            ));
            order.push(key);
            continue;
        }
        if !doc.is_kwire() {
            continue;
        }
        let key = key_of(doc);
        let earlier = documents[..i].iter().rev().find(|d| key_of(d) == key);
        if !order.contains(&key) {
            order.push(key.clone());
        }
        let problem = |message: String| Problem {
            object: doc.label(),
            namespace: key.1.clone(),
            reason: INVALID.into(),
            message,
        };
        if mesh::is_mesh(doc) {
            let update = earlier.map_or(String::new(), |e| {
                format!(" (as an update of {})", e.location())
            });
            for message in mesh::validate(doc, earlier.map(|d| &d.value)) {
                problems.push((key.clone(), problem(format!("{message}{update}"))));
            }
            continue;
        }
        let found = validate_like_api_server(&doc.value, earlier.map(|d| &d.value));
        let update = earlier.map_or(String::new(), |e| {
            format!(" (as an update of {})", e.location())
        });
        for message in &found {
            problems.push((key.clone(), problem(format!("{message}{update}"))));
        }
        match to_object(doc) {
            Ok(object) => {
                latest.retain(|(k, _)| *k != key);
                latest.push((key.clone(), object));
            }
            Err(e) if found.is_empty() => problems.push((key.clone(), problem(e))),
            Err(_) => {}
        }
    }

    let objects: Vec<KwireObject> = latest.into_iter().map(|(_, o)| o).collect();
    for finding in check(&World::from_manifests(&objects)) {
        let key = finding_key(&finding);
        if !order.contains(&key) {
            order.push(key.clone());
        }
        problems.push((
            key,
            Problem {
                object: format!("{}/{}", finding.kind, finding.name),
                namespace: finding.namespace.clone(),
                reason: finding.reason.to_string(),
                message: finding.message.clone(),
            },
        ));
    }

    let meshes = mesh::meshes_of(documents);
    if !meshes.is_empty() {
        let from_manifests;
        let nodes = match nodes {
            Some(n) => n,
            None => {
                from_manifests = mesh::nodes_in_manifests(documents);
                &from_manifests
            }
        };
        let found = if nodes.is_empty() {
            meshes
                .iter()
                .map(|m| mesh::MeshProblem {
                    namespace: kwire_mesh::world::ns_of(m),
                    mesh: kube::ResourceExt::name_any(m),
                    reason: mesh::NO_NODE_LIST.into(),
                    message: "no node list to expand the Mesh over, so it cannot be checked: pass --node-list FILE (a list of v1 Nodes, e.g. from kubectl get nodes -o yaml) or add Node documents to the manifests".into(),
                })
                .collect()
        } else {
            let (expanded, mut found) = mesh::expand_all(&meshes, nodes);
            found.extend(mesh::check_all(&expanded, &objects));
            found
        };
        for f in found {
            let key = ("Mesh".to_string(), f.namespace.clone(), f.mesh.clone());
            if !order.contains(&key) {
                order.push(key.clone());
            }
            problems.push((
                key,
                Problem {
                    object: format!("Mesh/{}", f.mesh),
                    namespace: f.namespace,
                    reason: f.reason,
                    message: f.message,
                },
            ));
        }
    }

    // Grouped by object, in the order the objects first appear in the files.
    problems.sort_by_key(|(k, _)| order.iter().position(|o| o == k));
    Report {
        problems: problems.into_iter().map(|(_, p)| p).collect(),
        objects: order.iter().filter(|k| !k.0.is_empty()).count(),
    }
}

fn finding_key(f: &Finding) -> Key {
    (f.kind.to_string(), f.namespace.clone(), f.name.clone())
}

/// `Kind/name: reason: message`, one line per problem, then a summary line.
pub fn render(report: &Report) -> String {
    let namespaces: BTreeSet<&str> = report
        .problems
        .iter()
        .map(|p| p.namespace.as_str())
        .collect();
    let mut out = String::new();
    for p in &report.problems {
        let ns = if namespaces.len() > 1 && !p.namespace.is_empty() {
            format!(" (namespace {})", p.namespace)
        } else {
            String::new()
        };
        out.push_str(&format!("{}{ns}: {}: {}\n", p.object, p.reason, p.message));
    }
    let objects = plural(report.objects, "object");
    if report.is_clean() {
        out.push_str(&format!("{objects}, no problems\n"));
    } else {
        let with: BTreeSet<(&str, &str)> = report
            .problems
            .iter()
            .map(|p| (p.namespace.as_str(), p.object.as_str()))
            .collect();
        out.push('\n');
        out.push_str(&format!(
            "{} in {} of {objects}\n",
            plural(report.problems.len(), "problem"),
            with.len()
        ));
    }
    out
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifests::{default_namespace, parse_documents};

    const RELAY: &str = include_str!("../../examples/seed/relay.yaml");

    fn lint_text(text: &str) -> Report {
        let mut docs = parse_documents("relay.yaml", text).unwrap();
        default_namespace(&mut docs, "default");
        lint(&docs)
    }

    #[test]
    fn the_seed_relay_is_clean() {
        let report = lint_text(RELAY);
        assert!(report.is_clean(), "{report:#?}");
        assert_eq!(report.objects, 8);
        assert_eq!(render(&report), "8 objects, no problems\n");
    }

    #[test]
    fn a_schema_problem_names_the_object_and_the_field() {
        let text = RELAY.replacen("deviceName: wg0-client", "deviceName: wg0-client-16chr", 1);
        let report = lint_text(&text);
        assert_eq!(report.problems.len(), 1, "{report:#?}");
        let p = &report.problems[0];
        assert_eq!(p.object, "Interface/a-wg0-client");
        assert_eq!(p.reason, INVALID);
        assert!(p.message.starts_with("spec.deviceName: Too long"), "{p:?}");
    }

    #[test]
    fn a_repeated_object_is_checked_as_an_update() {
        let a = "apiVersion: kwire.dev/v1alpha1\nkind: Route\nmetadata: {name: route-r}\nspec: {interface: wg-x, destination: 10.2.0.0/24}\n";
        let text = format!(
            "{a}---\n{}",
            a.replace("interface: wg-x", "interface: wg-y")
        );
        let report = lint_text(&text);
        let immutable: Vec<&Problem> = report
            .problems
            .iter()
            .filter(|p| p.reason == INVALID)
            .collect();
        assert_eq!(immutable.len(), 1, "{report:#?}");
        assert!(
            immutable[0].message.contains("spec.interface is immutable")
                && immutable[0]
                    .message
                    .ends_with("(as an update of relay.yaml#1)"),
            "{immutable:?}"
        );
        assert_eq!(report.objects, 1);
    }

    #[test]
    fn topology_findings_come_after_the_schema_problems_of_their_object() {
        let text = RELAY.replace("  forwarding: true\n", "");
        let report = lint_text(&text);
        let objects: Vec<&str> = report.problems.iter().map(|p| p.object.as_str()).collect();
        assert!(objects.contains(&"Peer/a-to-b"), "{objects:?}");
        // Interfaces come first in the file, so their findings are printed first.
        assert!(objects[0].starts_with("Interface/"), "{objects:?}");
        assert!(render(&report).ends_with(&format!(
            "{} problems in {} of 8 objects\n",
            report.problems.len(),
            objects.iter().collect::<BTreeSet<_>>().len()
        )));
    }

    #[test]
    fn a_document_without_a_kind_is_a_problem() {
        let report = lint_text("metadata: {name: x}\n");
        assert_eq!(report.problems[0].object, "relay.yaml#1");
        assert_eq!(report.objects, 0);
    }
}
