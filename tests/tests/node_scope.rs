//! Node daemons see only their own node (issue 14 item 3, decision 0009). On the real local
//! control plane, with the chart, the operator and one daemon per node of the seed's relay
//! (nodes a, b and c, in network namespaces, under their ServiceAccounts):
//!
//! 1. Interfaces, Peers and Routes of ten other nodes are created, and the operator resolves
//!    them. Then one Peer and one Route of node a change, and daemon a configures them:
//!    its watches are ordered, so by then it has received whatever it was going to receive
//!    of the other nodes' objects. Every daemon's `kwire_node_watch_events_total` counts 0
//!    objects of other nodes, of every kind, while each still receives its own (before the
//!    change, daemon a received 37 Peers and 25 Routes of other nodes here).
//! 2. A Peer whose local end moves to another node in its status (the operator is stopped
//!    and the status patched, as if it had resolved the Peer elsewhere) comes to daemon a
//!    as a deletion: its entry leaves a's device, and b keeps its end. Once the operator
//!    runs again and resolves it back, the entry returns.
//!
//! Counts are asserted; nothing about time is. Needs root, `ip`, `wg` and `wireguard-go`;
//! prints `SKIPPED <test>: <why>` and passes without them. Build the binaries first:
//! `cargo build --workspace --bins`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, ensure};
use kwire_tests::netns::can_run_network_tests;
use kwire_tests::sandbox::{Sandbox, SandboxNode};
use kwire_tests::wait::wait_for;
use serde_json::Value;

/// Generous bound for the sandbox, or the operator, to get somewhere (seconds when idle).
const READY: Duration = Duration::from_secs(180);
/// Where the sandbox's daemons serve /metrics (inside each node).
const METRICS_PORT: u16 = 9090;
/// Other nodes, each with an Interface, a Peer to the next one and a Route.
const OTHER_NODES: usize = 10;
const KINDS: [&str; 3] = ["Interface", "Peer", "Route"];

fn seed(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/seed")
        .join(file)
}

/// The objects of the other nodes `far-0` … `far-9`: a ring of Peers, a Route on each.
fn other_nodes_objects() -> String {
    let mut yaml = String::new();
    for i in 0..OTHER_NODES {
        let next = (i + 1) % OTHER_NODES;
        yaml.push_str(&format!(
            "apiVersion: kwire.dev/v1alpha1
kind: Interface
metadata: {{name: far-{i}-wg0}}
spec:
  nodeName: far-{i}
  listenPort: 51820
  addresses: [10.50.{i}.1/24]
  endpoint: {{host: 192.0.2.{i}}}
---
apiVersion: kwire.dev/v1alpha1
kind: Peer
metadata: {{name: far-{i}-to-{next}}}
spec:
  interface: far-{i}-wg0
  remote: {{interface: far-{next}-wg0}}
  allowedIPs: [10.60.{next}.0/24]
---
apiVersion: kwire.dev/v1alpha1
kind: Route
metadata: {{name: far-{i}-route}}
spec:
  interface: far-{i}-wg0
  destination: 10.60.{next}.0/24
---
"
        ));
    }
    yaml
}

/// `kwire_node_watch_events_total{kind, node}` of a daemon: (this node's, other nodes') by kind.
fn watch_events(node: &SandboxNode) -> Result<Vec<(String, f64, f64)>> {
    let (code, body) = node.netns.http_get(METRICS_PORT, "/metrics")?;
    ensure!(code == 200, "/metrics answered {code}: {body}");
    let value = |kind: &str, of: &str| {
        let name = format!("kwire_node_watch_events_total{{kind=\"{kind}\",node=\"{of}\"}} ");
        body.lines()
            .find_map(|l| l.strip_prefix(&name))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Ok(KINDS
        .iter()
        .map(|k| (k.to_string(), value(k, "this"), value(k, "other")))
        .collect())
}

fn node<'a>(sb: &'a Sandbox, name: &str) -> Result<&'a SandboxNode> {
    sb.nodes.get(name).ok_or_else(|| anyhow!("no node {name}"))
}

fn kubectl(sb: &Sandbox, args: &[&str]) -> Result<String> {
    let out = sb.cp.kubectl().args(args).output()?;
    ensure!(
        out.status.success(),
        "kubectl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn object(sb: &Sandbox, kind: &str, name: &str) -> Result<Value> {
    sb.get_one(kind, name)?
        .ok_or_else(|| anyhow!("{kind} {name} does not exist"))
}

/// Whether condition `kind` of `object` is True for its current generation.
fn true_for_generation(object: &Value, kind: &str) -> bool {
    let generation = &object["metadata"]["generation"];
    object["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter().any(|c| {
            c["type"] == kind && c["status"] == "True" && &c["observedGeneration"] == generation
        })
    })
}

/// Whether the device of node `node` has a peer entry with `public_key`.
fn has_peer(node: &SandboxNode, public_key: &str) -> Result<bool> {
    Ok(node
        .wg_show()?
        .lines()
        .any(|l| l.split('\t').nth(1) == Some(public_key)))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_daemon_receives_only_its_own_nodes_objects_and_drops_a_peer_moved_away() -> Result<()> {
    let test = "a_daemon_receives_only_its_own_nodes_objects_and_drops_a_peer_moved_away";
    if let Err(why) = can_run_network_tests() {
        eprintln!("SKIPPED {test}: {why}");
        return Ok(());
    }
    let mut sb = Sandbox::up(&[seed("relay.yaml")], "scope", true).await?;
    wait_for("every Interface, Peer and Route Ready", READY, || {
        Ok(sb
            .not_true("interfaces,peers,routes", "Ready")?
            .is_empty()
            .then_some(()))
    })
    .with_context(|| format!("status:\n{}\n{}", sb.status_table(), sb.logs_tail(15)))?;

    // 1. The other nodes' objects, resolved by the operator.
    sb.apply_yaml(&other_nodes_objects())?;
    wait_for(
        "the operator to resolve every Peer and check every Route of the other nodes",
        READY,
        || {
            let objects = sb.get("peers,routes")?;
            let far: Vec<&Value> = objects
                .iter()
                .filter(|o| {
                    o["metadata"]["name"]
                        .as_str()
                        .is_some_and(|n| n.starts_with("far-"))
                })
                .collect();
            let done = far.iter().all(|o| match o["kind"].as_str() {
                Some("Peer") => {
                    o["status"]["resolved"]["localNode"].is_string()
                        && o["status"]["resolved"]["remoteNode"].is_string()
                }
                _ => o["status"]["conditions"].is_array(),
            });
            Ok((far.len() == 2 * OTHER_NODES && done).then_some(()))
        },
    )?;
    // Node a's own changes, after all of that: a Peer (its keepalive) and a new Route.
    kubectl(
        &sb,
        &[
            "patch",
            "peer",
            "a-to-b",
            "-n",
            &sb.namespace,
            "--type=merge",
            "-p",
            r#"{"spec":{"persistentKeepalive":17}}"#,
        ],
    )?;
    sb.apply_yaml(
        "apiVersion: kwire.dev/v1alpha1
kind: Route
metadata: {name: a-to-c-upper-half}
spec:
  interface: a-wg0-client
  destination: 10.2.0.128/25
  via: 10.1.0.2
",
    )?;
    wait_for(
        "daemon a to configure its changed Peer and its new Route",
        READY,
        || {
            Ok(
                (true_for_generation(&object(&sb, "peer", "a-to-b")?, "Ready")
                    && true_for_generation(&object(&sb, "route", "a-to-c-upper-half")?, "Ready"))
                .then_some(()),
            )
        },
    )
    .with_context(|| sb.logs_tail(15))?;
    for name in ["a", "b", "c"] {
        let counts = watch_events(node(&sb, name)?)?;
        eprintln!("daemon {name}: (kind, this node's, other nodes') {counts:?}");
        for (kind, this, other) in &counts {
            ensure!(
                *other == 0.0,
                "daemon {name} received {other} {kind} objects of other nodes: {counts:?}"
            );
            // Node a has objects of every kind (b has no Route).
            ensure!(
                name != "a" || *this > 0.0,
                "daemon {name} received no {kind} of its own: {counts:?}"
            );
        }
    }

    // 2. A Peer resolved to another node leaves daemon a, and comes back.
    let b_key = object(&sb, "interface", "b-wg0-server")?["status"]["publicKey"]
        .as_str()
        .ok_or_else(|| anyhow!("Interface b-wg0-server has no public key"))?
        .to_string();
    ensure!(has_peer(node(&sb, "a")?, &b_key)?, "a has no entry for b");
    sb.stop_operator()?;
    kubectl(
        &sb,
        &[
            "patch",
            "peer",
            "a-to-b",
            "-n",
            &sb.namespace,
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"resolved":{"localNode":"far-0"}}}"#,
        ],
    )?;
    wait_for(
        "daemon a to remove the entry of a Peer now on another node",
        READY,
        || Ok((!has_peer(node(&sb, "a")?, &b_key)?).then_some(())),
    )
    .with_context(|| sb.logs_tail(15))?;
    let a_key = object(&sb, "interface", "a-wg0-client")?["status"]["publicKey"]
        .as_str()
        .ok_or_else(|| anyhow!("Interface a-wg0-client has no public key"))?
        .to_string();
    ensure!(
        has_peer(node(&sb, "b")?, &a_key)?,
        "b lost its end of a-to-b, whose remote end is still on b"
    );
    sb.restart_operator().await?;
    wait_for(
        "the operator to resolve the Peer back to node a, and daemon a to configure it",
        READY,
        || Ok(has_peer(node(&sb, "a")?, &b_key)?.then_some(())),
    )
    .with_context(|| sb.logs_tail(15))?;
    Ok(())
}
