//! What a sandbox will make for its manifests, decided before anything is made: the nodes
//! (the Interfaces' `nodeName`s and the `Node` documents), their LAN addresses and labels,
//! the far sides of external Peers. A manifest the sandbox cannot play fails here, at once.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use kwire_crds::manifest::{KwireObject, parse_manifests};

use super::far_sides::public_key_of;
use super::lan;
use crate::error::{Error, IoContext as _, Result};
use crate::external::{self, FarSide};

/// The objects of a sandbox's manifests and where their nodes and far sides go.
pub(super) struct Layout {
    pub objects: Vec<KwireObject>,
    /// Every node's LAN address, in name order (node `i` at `10.211.55.<first_host + i>`).
    pub nodes: Vec<(Ipv4Addr, String)>,
    /// The labels `Node` documents of the manifests give their nodes (node name → labels),
    /// set on the Node objects the sandbox registers.
    pub node_labels: BTreeMap<String, BTreeMap<String, String>>,
    pub far_sides: Vec<FarSide>,
}

/// The nodes declared by `Node` documents (`apiVersion: v1`, `kind: Node`, alone or as items
/// of a `List`): name → the labels in `metadata.labels`. Everything else of such a document is ignored here (the
/// sandbox gives each node its own LAN address).
fn declared_nodes(objects: &[KwireObject]) -> Result<BTreeMap<String, BTreeMap<String, String>>> {
    let mut out = BTreeMap::new();
    // A `List` of Nodes (what `kubectl get nodes -o yaml` prints, and the node lists of
    // examples/mesh) gives its items' labels too.
    let listed = objects.iter().filter_map(|o| match o {
        KwireObject::Other { kind, value } if kind == "List" => value["items"].as_array(),
        _ => None,
    });
    for value in objects
        .iter()
        .filter_map(|o| match o {
            KwireObject::Other { kind, value } if kind == "Node" => Some(value),
            _ => None,
        })
        .chain(listed.flatten().filter(|item| item["kind"] == "Node"))
    {
        if value.get("apiVersion").and_then(|v| v.as_str()) != Some("v1") {
            return Err(Error::Topology(
                "a Node document needs apiVersion: v1 (it gives a sandbox node its labels)".into(),
            ));
        }
        let name = value
            .pointer("/metadata/name")
            .and_then(|v| v.as_str())
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                Error::Topology(
                    "a Node document has no metadata.name: name the node whose labels it gives"
                        .into(),
                )
            })?;
        let mut labels = BTreeMap::new();
        if let Some(map) = value.pointer("/metadata/labels").filter(|v| !v.is_null()) {
            let map = map.as_object().ok_or_else(|| {
                Error::Topology(format!(
                    "Node {name}: metadata.labels is not a map of label names to values"
                ))
            })?;
            for (key, v) in map {
                let v = v.as_str().ok_or_else(|| {
                    Error::Topology(format!(
                        "Node {name}: label {key} has a value that is not a string: quote it (e.g. \"true\")"
                    ))
                })?;
                labels.insert(key.clone(), v.to_string());
            }
        }
        if out.insert(name.to_string(), labels).is_some() {
            return Err(Error::Topology(format!(
                "Node {name} is declared twice in the manifests: give its labels in one Node document"
            )));
        }
    }
    Ok(out)
}

impl Layout {
    /// Reads the manifest `files` and places their nodes from `10.211.55.<first_host>` on.
    /// Also checks that each external Peer's private key is the one of its public key.
    pub fn read(files: &[PathBuf], first_host: u8) -> Result<Self> {
        let mut text = String::new();
        for f in files {
            text.push_str(&std::fs::read_to_string(f).io(|| format!("reading {}", f.display()))?);
            text.push_str("\n---\n");
        }
        let layout = Self::plan(parse_manifests(&text)?, first_host)?;
        for side in &layout.far_sides {
            check_far_side_key(side)?;
        }
        Ok(layout)
    }

    /// The nodes (the Interfaces' `nodeName`s and the `Node` documents), their labels and
    /// the far sides of `objects`.
    fn plan(objects: Vec<KwireObject>, first_host: u8) -> Result<Self> {
        let node_labels = declared_nodes(&objects)?;
        let mut node_names: Vec<String> = objects
            .iter()
            .filter_map(|o| match o {
                KwireObject::Interface(i) => Some(i.spec.node_name.to_string()),
                _ => None,
            })
            .chain(node_labels.keys().cloned())
            .collect();
        node_names.sort();
        node_names.dedup();
        if node_names.is_empty() {
            return Err(Error::Topology(
                "the manifests name no Interface and no Node, so no node".into(),
            ));
        }
        if first_host < 1 || usize::from(first_host) + node_names.len() > 255 {
            return Err(Error::Topology(format!(
                "10.211.55.{first_host} and the {} addresses after it are not all host addresses of {}",
                node_names.len() - 1,
                lan()
            )));
        }
        let nodes: Vec<(Ipv4Addr, String)> = node_names
            .into_iter()
            .zip(first_host..)
            .map(|(name, host)| (Ipv4Addr::new(10, 211, 55, host), name))
            .collect();
        let far_sides = external::far_sides(&objects, lan(), &nodes)?;
        Ok(Self {
            objects,
            nodes,
            node_labels,
            far_sides,
        })
    }
}

/// Fails when the private key in the Peer's annotation is not the one of its
/// `spec.remote.publicKey`, saying what to change.
fn check_far_side_key(side: &FarSide) -> Result<()> {
    let derived = public_key_of(side.private_key()).map_err(|_| {
        Error::Topology(format!(
            "Peer {}: annotation {} does not hold a WireGuard private key (make one with `wg genkey`)",
            side.peer,
            external::REMOTE_PRIVATE_KEY_ANNOTATION
        ))
    })?;
    if derived != side.public_key {
        return Err(Error::Topology(format!(
            "Peer {}: the private key in annotation {} is not the one of spec.remote.publicKey {} (its public key is {derived}); \
             set publicKey to `wg pubkey` of that private key",
            side.peer,
            external::REMOTE_PRIVATE_KEY_ANNOTATION,
            side.public_key
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_HOSTS: &str = include_str!("../../../examples/seed/two-hosts.yaml");

    fn plan(text: &str) -> Result<Layout> {
        Layout::plan(parse_manifests(text)?, 10)
    }

    #[test]
    fn node_documents_give_labels_and_may_add_nodes() {
        let text = format!(
            "{TWO_HOSTS}\n---\napiVersion: v1\nkind: Node\nmetadata:\n  name: vm01\n  labels: {{topology.kubernetes.io/zone: east, kwire.dev/mesh: overlay}}\n---\napiVersion: v1\nkind: Node\nmetadata: {{name: vm03, labels: {{kwire.dev/mesh: overlay}}}}\n---\napiVersion: v1\nkind: Node\nmetadata: {{name: vm04}}\n"
        );
        let layout = plan(&text).unwrap();
        let names: Vec<&str> = layout.nodes.iter().map(|(_, n)| n.as_str()).collect();
        assert_eq!(names, ["vm01", "vm02", "vm03", "vm04"]);
        assert_eq!(layout.nodes[2].0, Ipv4Addr::new(10, 211, 55, 12));
        let vm01 = &layout.node_labels["vm01"];
        assert_eq!(vm01["topology.kubernetes.io/zone"], "east");
        assert_eq!(vm01["kwire.dev/mesh"], "overlay");
        assert_eq!(layout.node_labels["vm03"].len(), 1);
        assert!(layout.node_labels["vm04"].is_empty());
        assert!(!layout.node_labels.contains_key("vm02"));
    }

    #[test]
    fn a_list_of_nodes_as_kubectl_prints_it_gives_the_nodes_and_their_labels() {
        let text = format!(
            "{}\n---\n{}",
            include_str!("../../../examples/mesh/full-mesh.yaml"),
            include_str!("../../../examples/mesh/full-mesh.nodes.yaml")
        );
        let layout = plan(&text).unwrap();
        let names: Vec<&str> = layout.nodes.iter().map(|(_, n)| n.as_str()).collect();
        assert_eq!(names, ["a", "b", "c", "d"]);
        assert_eq!(layout.node_labels["a"]["kwire.dev/mesh"], "overlay");
        assert!(layout.node_labels["d"].is_empty());
    }

    #[test]
    fn without_node_documents_there_are_no_labels() {
        let layout = plan(TWO_HOSTS).unwrap();
        assert_eq!(layout.nodes.len(), 2);
        assert!(layout.node_labels.is_empty());
    }

    #[test]
    fn a_node_document_that_cannot_give_labels_says_why() {
        for (doc, says) in [
            (
                "apiVersion: v1\nkind: Node\nmetadata: {labels: {a: b}}\n",
                "has no metadata.name",
            ),
            (
                "apiVersion: v1\nkind: Node\nmetadata: {name: x, labels: {hub: true}}\n",
                "Node x: label hub has a value that is not a string",
            ),
            (
                "apiVersion: v1\nkind: Node\nmetadata: {name: x}\n---\napiVersion: v1\nkind: Node\nmetadata: {name: x}\n",
                "Node x is declared twice",
            ),
        ] {
            let error = plan(&format!("{TWO_HOSTS}\n---\n{doc}"))
                .err()
                .expect("rejected")
                .to_string();
            assert!(error.contains(says), "{doc}: {error}");
        }
    }
}
