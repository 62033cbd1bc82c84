//! Fuzzing the offline commands, `kwire lint`, `plan`, `graph -f` and `showconf -f`, through
//! the functions they run once the files are read (issue 16, item 13): no input may make
//! them panic. The inputs (arbitrary text, and corpus manifests with text and tree edits)
//! come from `crds/tests/support/manifest_gen.rs`. A short pass in every test run; a long
//! one with `KWIRE_FUZZ_CASES=<n> cargo test -p kwire-cli --lib fuzz -- --nocapture`
//! (docs/fuzzing.md).

#[path = "../../crds/tests/support/manifest_gen.rs"]
mod manifest_gen;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use kube::ResourceExt as _;
use kwire_crds::manifest::KwireObject;
use proptest::prelude::*;

use crate::commands::{ShowconfArgs, graph_offline, node_infos, showconf_offline};
use crate::manifests::{Document, default_namespace, parse_documents, typed_objects};
use crate::offline::resolve_offline;
use crate::{ShowconfOutput, graph, lint, plan};
use manifest_gen::{config, manifest_text, scalar_string};

/// What the command line adds to the files: `--node-ip`, `--allowed-ips`,
/// `--remote-interface`, a Peer name, `-n`.
#[derive(Clone, Debug)]
struct Flags {
    node_ips: Vec<(String, String)>,
    allowed_ips: Vec<IpNet>,
    remote_interface: Option<String>,
    peer: String,
    namespace: String,
}

fn flags() -> impl Strategy<Value = Flags> {
    let node = prop_oneof![
        proptest::sample::select(&["a", "b", "c", "gw", "hub"][..]).prop_map(str::to_string),
        scalar_string(),
    ];
    (
        proptest::collection::vec((node, any::<IpAddr>()), 0..3),
        proptest::collection::vec(
            (any::<IpAddr>(), any::<u8>()).prop_map(|(ip, len)| {
                let max = if ip.is_ipv4() { 32 } else { 128 };
                IpNet::new(ip, len % (max + 1)).expect("a prefix length within the family")
            }),
            0..3,
        ),
        proptest::option::of(scalar_string()),
        scalar_string(),
        prop_oneof![Just("default".to_string()), scalar_string()],
    )
        .prop_map(
            |(node_ips, allowed_ips, remote_interface, peer, namespace)| Flags {
                node_ips: node_ips
                    .into_iter()
                    .map(|(n, ip)| (n, ip.to_string()))
                    .collect(),
                allowed_ips,
                remote_interface,
                peer,
                namespace,
            },
        )
}

fn documents(text: &str) -> Option<Vec<Document>> {
    parse_documents("fuzz.yaml", text).ok()
}

/// The typed objects, as `load_objects` gives them (none when one does not fit its type:
/// the command then stops with that error).
fn objects(text: &str, namespace: &str) -> Option<Vec<KwireObject>> {
    typed_objects(documents(text)?, namespace).ok()
}

/// `kwire lint -f`.
fn lint_text(text: &str, namespace: &str) {
    let Some(mut docs) = documents(text) else {
        return;
    };
    default_namespace(&mut docs, namespace);
    let report = lint::lint(&docs);
    let rendered = lint::render(&report);
    assert_eq!(report.is_clean(), report.problems.is_empty(), "{rendered}");
}

/// `kwire plan -f`, every node, against an empty node; host names "resolve" to a
/// documentation address instead of the system resolver.
fn plan_text(text: &str, flags: &Flags) {
    let Some(objects) = objects(text, &flags.namespace) else {
        return;
    };
    let off = resolve_offline(&objects, &node_infos(&objects, &flags.node_ips));
    let nodes = off.nodes();
    let hosts: BTreeMap<String, SocketAddr> = plan::host_endpoints(&off)
        .into_iter()
        .map(|e| (e, SocketAddr::from(([192, 0, 2, 1], 51820))))
        .collect();
    let plans: Vec<plan::NodePlan> = nodes
        .iter()
        .map(|n| plan::plan_node(&off, n, &plan::fresh_node(), &hosts))
        .collect();
    let _ = plan::render(&plans, &off.notes_for(&nodes));
}

/// `kwire graph -f`, both formats.
fn graph_text(text: &str, flags: &Flags) {
    let Some(objects) = objects(text, &flags.namespace) else {
        return;
    };
    for format in [graph::Format::Mermaid, graph::Format::Dot] {
        let _ = graph_offline(&objects, format);
    }
}

/// `kwire showconf -f` for every Peer of the files and one name from the flags, both
/// outputs.
fn showconf_text(text: &str, flags: &Flags) {
    let Some(objects) = objects(text, &flags.namespace) else {
        return;
    };
    let mut peers: Vec<String> = objects
        .iter()
        .filter_map(|o| match o {
            KwireObject::Peer(p) => Some(p.name_any()),
            _ => None,
        })
        .collect();
    peers.push(flags.peer.clone());
    for peer in peers {
        for output in [ShowconfOutput::WgQuick, ShowconfOutput::PeerYaml] {
            let args = ShowconfArgs {
                peer: peer.clone(),
                output,
                include_private_key: false,
                private_key_secret: None,
                remote_interface: flags.remote_interface.clone(),
                allowed_ips: flags.allowed_ips.clone(),
            };
            let _ = showconf_offline(&objects, &flags.node_ips, &flags.namespace, &args);
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn fuzz_lint(text in manifest_text(), flags in flags()) {
        lint_text(&text, &flags.namespace);
    }

    #[test]
    fn fuzz_plan(text in manifest_text(), flags in flags()) {
        plan_text(&text, &flags);
    }

    #[test]
    fn fuzz_graph(text in manifest_text(), flags in flags()) {
        graph_text(&text, &flags);
    }

    #[test]
    fn fuzz_showconf(text in manifest_text(), flags in flags()) {
        showconf_text(&text, &flags);
    }
}

#[test]
fn fuzz_every_corpus_file_through_every_command() {
    let flags = Flags {
        node_ips: vec![("a".into(), "10.211.55.10".into())],
        allowed_ips: vec![],
        remote_interface: None,
        peer: "laptop".into(),
        namespace: "default".into(),
    };
    for text in manifest_gen::corpus() {
        lint_text(text, "default");
        plan_text(text, &flags);
        graph_text(text, &flags);
        showconf_text(text, &flags);
    }
}

/// The structure-aware inputs must reach the planners, not stop at the parser: of 512
/// generated inputs, many must give typed objects that resolve to at least one node.
#[test]
fn fuzz_inputs_reach_the_planners() {
    use proptest::strategy::ValueTree as _;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = manifest_text();
    let (mut parsed, mut typed, mut with_nodes) = (0, 0, 0);
    for _ in 0..512 {
        let text = strategy.new_tree(&mut runner).unwrap().current();
        parsed += usize::from(documents(&text).is_some());
        if let Some(objects) = objects(&text, "default") {
            typed += 1;
            with_nodes += usize::from(!resolve_offline(&objects, &[]).nodes().is_empty());
        }
    }
    println!(
        "of 512 inputs: {parsed} parse as YAML, {typed} type-check, {with_nodes} have a node to plan"
    );
    assert!(
        parsed > 256 && typed > 128 && with_nodes > 64,
        "{parsed} {typed} {with_nodes}"
    );
}

/// What `fuzz_graph` found on the code before the key was checked when deserialized
/// (shrunk by proptest): `examples/external-peer.yaml` with a 44-character non-ASCII
/// `publicKey` made `kwire graph -f` panic ("end byte index 8 is not a char boundary").
#[test]
fn fuzz_regression_graph_non_ascii_public_key() {
    let text = "---\napiVersion: kwire.dev/v1alpha1\nkind: Interface\nmetadata:\n  name: gateway-wg0\nspec:\n  addresses:\n  - 10.4.0.1/24\n  deviceName: wg0\n  endpoint:\n    host: vpn.example.com\n  listenPort: 51820\n  nodeName: gateway\n\n---\napiVersion: kwire.dev/v1alpha1\nkind: Peer\nmetadata:\n  name: laptop\nspec:\n  allowedIPs:\n  - 10.4.0.2/32\n  interface: gateway-wg0\n  presharedKey:\n    generate: true\n  remote:\n    publicKey: OgbUF/E\u{e9}1zi9qHf5h9H6N/iM92nnNYgRtOMhReFm730=\n\n";
    let flags = Flags {
        node_ips: vec![],
        allowed_ips: vec![],
        remote_interface: None,
        peer: "laptop".into(),
        namespace: "default".into(),
    };
    let error = typed_objects(documents(text).unwrap(), "default").unwrap_err();
    assert!(
        error.to_string().contains("must be a WireGuard key"),
        "{error}"
    );
    graph_text(text, &flags);
    showconf_text(text, &flags);
    plan_text(text, &flags);
    lint_text(text, "default");
}
