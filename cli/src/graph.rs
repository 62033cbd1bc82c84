//! `kwire graph`: the topology as a Mermaid flowchart or a Graphviz graph.
//!
//! Nodes are subgraphs holding their Interfaces (device, addresses, port, forwarding,
//! Routes); every Peer is an edge labelled with its name and state, and an external peer
//! is a node of its own outside every subgraph. Pure: the state of each link is passed in
//! (the `Connected` reason from the cluster, or the topology findings from files).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use kube::ResourceExt as _;
use kwire_crds::v1alpha1::{Interface, Peer, Route};
use kwire_mesh::world::ns_of;

use crate::table::Tone;

/// The state shown on an edge or an Interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct State {
    pub label: String,
    pub tone: Tone,
}

/// What a graph is drawn from.
#[derive(Clone, Debug, Default)]
pub struct GraphInput<'a> {
    pub interfaces: &'a [Interface],
    pub peers: &'a [Peer],
    pub routes: &'a [Route],
    /// By (namespace, Peer name).
    pub links: BTreeMap<(String, String), State>,
    /// By (namespace, Interface name).
    pub devices: BTreeMap<(String, String), State>,
    /// Links between the generated Interfaces of Meshes (which have no Peer objects).
    pub mesh_links: Vec<MeshLink>,
}

/// A link between two members of a Mesh, drawn once per pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeshLink {
    pub namespace: String,
    /// The generated Interfaces at both ends.
    pub from: String,
    pub to: String,
    pub label: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Mermaid,
    Dot,
}

struct Box_ {
    id: String,
    lines: Vec<String>,
    state: Option<State>,
}

struct Edge {
    from: String,
    to: String,
    label: String,
    tone: Option<Tone>,
}

struct Model {
    nodes: BTreeMap<String, Vec<Box_>>,
    externals: Vec<Box_>,
    edges: Vec<Edge>,
}

fn id(prefix: &str, parts: &[&str]) -> String {
    let mut out = prefix.to_string();
    for p in parts {
        out.push('_');
        out.extend(
            p.chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }),
        );
    }
    out
}

fn model(input: &GraphInput<'_>) -> Model {
    let namespaces: BTreeSet<String> = input.interfaces.iter().map(ns_of).collect();
    let qualify = namespaces.len() > 1;
    let mut nodes: BTreeMap<String, Vec<Box_>> = BTreeMap::new();
    let mut sorted: Vec<&Interface> = input.interfaces.iter().collect();
    sorted.sort_by_key(|i| (ns_of(*i), i.name_any()));
    for i in sorted {
        let (ns, name) = (ns_of(i), i.name_any());
        let status = i.status.clone().unwrap_or_default();
        let addresses = if status.addresses.is_empty() {
            i.spec
                .addresses
                .iter()
                .flatten()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        } else {
            status.addresses.clone()
        };
        let title = if qualify {
            format!("{ns}/{name}")
        } else {
            name.clone()
        };
        let mut detail = vec![i.device_name()];
        if addresses.is_empty() {
            detail.push("(address pending)".into());
        } else {
            detail.push(addresses.join(", "));
        }
        detail.push(format!(":{}", i.spec.listen_port));
        if i.spec.forwarding == Some(true) {
            detail.push("forwarding".into());
        }
        let mut lines = vec![title, detail.join(" ")];
        let mut routes: Vec<&Route> = input
            .routes
            .iter()
            .filter(|r| ns_of(*r) == ns && r.spec.interface.as_str() == name)
            .collect();
        routes.sort_by_key(|r| r.name_any());
        for r in routes {
            lines.push(match &r.spec.via {
                Some(via) => format!("route {} via {via}", r.spec.destination),
                None => format!("route {}", r.spec.destination),
            });
        }
        nodes
            .entry(i.spec.node_name.to_string())
            .or_default()
            .push(Box_ {
                id: id("if", &[&ns, &name]),
                lines,
                state: input.devices.get(&(ns, name)).cloned(),
            });
    }

    let known: BTreeSet<(String, String)> = input
        .interfaces
        .iter()
        .map(|i| (ns_of(i), i.name_any()))
        .collect();
    let mut externals = Vec::new();
    let mut edges = Vec::new();
    let mut peers: Vec<&Peer> = input.peers.iter().collect();
    peers.sort_by_key(|p| (ns_of(*p), p.name_any()));
    for p in peers {
        let (ns, name) = (ns_of(p), p.name_any());
        let local = p.spec.interface.to_string();
        let from = id("if", &[&ns, &local]);
        if !known.contains(&(ns.clone(), local.clone())) {
            continue;
        }
        let to = if let Some(remote) = &p.spec.remote.interface {
            if !known.contains(&(ns.clone(), remote.to_string())) {
                continue;
            }
            id("if", &[&ns, remote.as_str()])
        } else {
            let ext = id("ext", &[&ns, &name]);
            let mut lines = vec![format!("external {name}")];
            if let Some(k) = &p.spec.remote.public_key {
                lines.push(format!("key {}…", k.prefix()));
            }
            if let Some(e) = &p.spec.remote.endpoint {
                lines.push(e.to_socket_string(0));
            }
            externals.push(Box_ {
                id: ext.clone(),
                lines,
                state: None,
            });
            ext
        };
        let state = input.links.get(&(ns, name.clone()));
        let label = match state {
            Some(s) if !s.label.is_empty() => format!("{name}: {}", s.label),
            _ => name,
        };
        edges.push(Edge {
            from,
            to,
            label,
            tone: state.map(|s| s.tone),
        });
    }
    let mut mesh_links: Vec<&MeshLink> = input.mesh_links.iter().collect();
    mesh_links.sort_by_key(|l| (&l.namespace, &l.from, &l.to));
    for l in mesh_links {
        edges.push(Edge {
            from: id("if", &[&l.namespace, &l.from]),
            to: id("if", &[&l.namespace, &l.to]),
            label: l.label.clone(),
            tone: None,
        });
    }
    Model {
        nodes,
        externals,
        edges,
    }
}

fn mermaid_text(lines: &[String]) -> String {
    lines
        .iter()
        .map(|l| l.replace('"', "#quot;"))
        .collect::<Vec<_>>()
        .join("<br/>")
}

fn mermaid_colour(tone: Tone) -> Option<&'static str> {
    match tone {
        Tone::Good => Some("#2e7d32"),
        Tone::Bad => Some("#c62828"),
        Tone::Pending => Some("#ef6c00"),
        Tone::Plain | Tone::Dim => None,
    }
}

/// A Mermaid flowchart (renders on GitHub and in most Markdown viewers).
pub fn mermaid(input: &GraphInput<'_>) -> String {
    let m = model(input);
    let mut o = String::from("flowchart LR\n");
    let mut styled = Vec::new();
    for (node, boxes) in &m.nodes {
        let _ = writeln!(o, "  subgraph {}[\"node {node}\"]", id("node", &[node]));
        for b in boxes {
            let mut lines = b.lines.clone();
            if let Some(s) = &b.state {
                lines.push(s.label.clone());
                if let Some(c) = mermaid_colour(s.tone) {
                    styled.push(format!("  style {} stroke:{c},stroke-width:2px", b.id));
                }
            }
            let _ = writeln!(o, "    {}[\"{}\"]", b.id, mermaid_text(&lines));
        }
        let _ = writeln!(o, "  end");
    }
    for b in &m.externals {
        let _ = writeln!(o, "  {}([\"{}\"])", b.id, mermaid_text(&b.lines));
    }
    for (n, e) in m.edges.iter().enumerate() {
        let _ = writeln!(
            o,
            "  {} <-->|\"{}\"| {}",
            e.from,
            e.label.replace('"', "#quot;"),
            e.to
        );
        if let Some(c) = e.tone.and_then(mermaid_colour) {
            styled.push(format!("  linkStyle {n} stroke:{c},stroke-width:2px"));
        }
    }
    for s in styled {
        o.push_str(&s);
        o.push('\n');
    }
    o
}

fn dot_quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn dot_colour(tone: Tone) -> Option<&'static str> {
    match tone {
        Tone::Good => Some("darkgreen"),
        Tone::Bad => Some("red3"),
        Tone::Pending => Some("darkorange"),
        Tone::Plain | Tone::Dim => None,
    }
}

/// A Graphviz graph (`kwire graph --format dot | dot -Tsvg > kwire.svg`).
pub fn dot(input: &GraphInput<'_>) -> String {
    let m = model(input);
    let mut o =
        String::from("graph kwire {\n  rankdir=LR;\n  node [shape=box, fontname=\"monospace\"];\n");
    for (node, boxes) in &m.nodes {
        let _ = writeln!(o, "  subgraph {} {{", dot_quote(&id("cluster", &[node])));
        let _ = writeln!(o, "    label={};", dot_quote(&format!("node {node}")));
        for b in boxes {
            let mut lines = b.lines.clone();
            let mut colour = String::new();
            if let Some(s) = &b.state {
                lines.push(s.label.clone());
                if let Some(c) = dot_colour(s.tone) {
                    colour = format!(", color={c}");
                }
            }
            let label = lines
                .join("\n")
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            let _ = writeln!(o, "    {} [label=\"{label}\"{colour}];", dot_quote(&b.id));
        }
        let _ = writeln!(o, "  }}");
    }
    for b in &m.externals {
        let label = b.lines.join("\n").replace('"', "\\\"").replace('\n', "\\n");
        let _ = writeln!(
            o,
            "  {} [shape=ellipse, label=\"{label}\"];",
            dot_quote(&b.id)
        );
    }
    for e in &m.edges {
        let colour = e
            .tone
            .and_then(dot_colour)
            .map_or(String::new(), |c| format!(", color={c}, fontcolor={c}"));
        let _ = writeln!(
            o,
            "  {} -- {} [label={}{colour}];",
            dot_quote(&e.from),
            dot_quote(&e.to),
            dot_quote(&e.label)
        );
    }
    o.push_str("}\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use kwire_crds::manifest::{KwireObject, parse_manifests};

    const RELAY: &str = include_str!("../../examples/seed/relay.yaml");

    fn relay() -> (Vec<Interface>, Vec<Peer>, Vec<Route>) {
        let (mut i, mut p, mut r) = (vec![], vec![], vec![]);
        for o in parse_manifests(RELAY).unwrap() {
            match o {
                KwireObject::Interface(x) => i.push(*x),
                KwireObject::Peer(x) => p.push(*x),
                KwireObject::Route(x) => r.push(*x),
                _ => {}
            }
        }
        (i, p, r)
    }

    #[test]
    fn the_relay_as_mermaid_has_a_subgraph_per_node_and_an_edge_per_peer() {
        let (i, p, r) = relay();
        let mut links = BTreeMap::new();
        links.insert(
            (String::new(), "a-to-b".to_string()),
            State {
                label: "HandshakeRecent".into(),
                tone: Tone::Good,
            },
        );
        let text = mermaid(&GraphInput {
            interfaces: &i,
            peers: &p,
            routes: &r,
            links,
            devices: BTreeMap::new(),
            mesh_links: Vec::new(),
        });
        let expected = "\
flowchart LR
  subgraph node_a[\"node a\"]
    if__a_wg0_client[\"a-wg0-client<br/>wg0-client 10.1.0.1/24 :11111<br/>route 10.2.0.0/24 via 10.1.0.2\"]
  end
  subgraph node_b[\"node b\"]
    if__b_wg0_server[\"b-wg0-server<br/>wg0-server 10.1.0.2/24 :22222 forwarding\"]
    if__b_wg1_client[\"b-wg1-client<br/>wg1-client 10.2.0.1/24 :23333 forwarding\"]
  end
  subgraph node_c[\"node c\"]
    if__c_wg0_server[\"c-wg0-server<br/>wg0-server 10.2.0.2/24 :33333<br/>route 10.1.0.0/24 via 10.2.0.1\"]
  end
  if__a_wg0_client <-->|\"a-to-b: HandshakeRecent\"| if__b_wg0_server
  if__b_wg1_client <-->|\"b-to-c\"| if__c_wg0_server
  linkStyle 0 stroke:#2e7d32,stroke-width:2px
";
        assert_eq!(text, expected);
    }

    #[test]
    fn the_relay_as_dot_uses_clusters_and_coloured_edges() {
        let (i, p, r) = relay();
        let mut links = BTreeMap::new();
        links.insert(
            (String::new(), "b-to-c".to_string()),
            State {
                label: "NoHandshake".into(),
                tone: Tone::Bad,
            },
        );
        let text = dot(&GraphInput {
            interfaces: &i,
            peers: &p,
            routes: &r,
            links,
            devices: BTreeMap::new(),
            mesh_links: Vec::new(),
        });
        assert!(text.starts_with("graph kwire {\n  rankdir=LR;\n"));
        assert!(text.contains("  subgraph \"cluster_b\" {\n    label=\"node b\";\n"));
        assert!(text.contains(
            "  \"if__b_wg1_client\" -- \"if__c_wg0_server\" [label=\"b-to-c: NoHandshake\", color=red3, fontcolor=red3];"
        ), "{text}");
        assert!(text.ends_with("}\n"));
    }

    #[test]
    fn an_external_peer_is_a_node_outside_the_subgraphs() {
        let objects = parse_manifests(include_str!("../../examples/external-peer.yaml")).unwrap();
        let (mut i, mut p) = (vec![], vec![]);
        for o in objects {
            match o {
                KwireObject::Interface(x) => i.push(*x),
                KwireObject::Peer(x) => p.push(*x),
                _ => {}
            }
        }
        let text = mermaid(&GraphInput {
            interfaces: &i,
            peers: &p,
            ..GraphInput::default()
        });
        assert!(
            text.contains("  ext__laptop([\"external laptop<br/>key OgbUF/E2…\"])\n"),
            "{text}"
        );
        assert!(text.contains("  if__gateway_wg0 <-->|\"laptop\"| ext__laptop\n"));
    }
}
