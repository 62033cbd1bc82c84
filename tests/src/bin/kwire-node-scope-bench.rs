//! `kwire-node-scope-bench`: what one node daemon receives and holds when the cluster has
//! many Peers of other nodes (issue 14 item 3, decision 0009).
//!
//! Brings up the sandbox of the seed's two hosts (vm01, vm02: control plane, chart,
//! operator, one daemon per node), stops the operator (the bench writes the statuses it
//! would write), then for each `--node-bin` in turn runs it as vm01's daemon (killed and
//! started again, adopting the device) and measures, with 0 Peers of other nodes and then
//! with `--peers` of them (created once, their `status.resolved` naming two other nodes):
//! - the objects its watches received by the time it is ready and quiet, split into this
//!   node's and other nodes' (`kwire_node_watch_events_total`), and its `VmRSS`;
//! - the objects received while every other node's Peer gets one status write (as their
//!   daemons write handshakes), up to a change of vm01's own Peer that it then configures.
//!
//! ```sh
//! cargo build --release -p kwire-node-daemon --bin kwire-node
//! cargo build -p kwire-tests --bin kwire-node-scope-bench --bins
//! sudo ./target/debug/kwire-node-scope-bench --node-bin after=target/release/kwire-node \
//!     --node-bin before=/tmp/kwire-node-before --peers 5000
//! ```
//!
//! It prints a Markdown table and the load average; it asserts nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, ensure};
use clap::Parser;
use futures::StreamExt as _;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use kwire_crds::v1alpha1::Peer;
use kwire_tests::sandbox::{Sandbox, SandboxNode};
use kwire_tests::wait::{settled, wait_for};
use serde_json::{Value, json};

#[derive(Parser)]
#[command(
    name = "kwire-node-scope-bench",
    about = "Watch events and memory of one node daemon among many Peers of other nodes"
)]
struct Args {
    /// `label=path` of a kwire-node binary to measure; repeat to compare.
    #[arg(long = "node-bin", required = true)]
    node_bins: Vec<String>,
    /// Peers of other nodes.
    #[arg(long, default_value_t = 5000)]
    peers: usize,
    /// Concurrent requests when creating them.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
}

const NODE: &str = "vm01";
const OWN_PEER: &str = "vm01-vm02";
const METRICS_PORT: u16 = 9090;
const LONG: Duration = Duration::from_secs(600);

/// What one daemon received: (this node's, other nodes') objects of every kind.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
struct Received {
    this: f64,
    other: f64,
}

fn scrape(node: &SandboxNode) -> Result<String> {
    let (code, body) = node.netns.http_get(METRICS_PORT, "/metrics")?;
    ensure!(code == 200, "/metrics answered {code}");
    Ok(body)
}

fn received(node: &SandboxNode) -> Result<Received> {
    let body = scrape(node)?;
    let mut r = Received::default();
    for line in body
        .lines()
        .filter(|l| l.starts_with("kwire_node_watch_events_total{"))
    {
        let value: f64 = line
            .rsplit_once(' ')
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0.0);
        if line.contains("node=\"other\"") {
            r.other += value;
        } else {
            r.this += value;
        }
    }
    Ok(r)
}

fn rss_mib(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("no VmRSS for {pid}"))?;
    Ok(kib / 1024.0)
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Runs `bin` as vm01's daemon in place of the one running; returns its PID once it is ready.
fn run_daemon(sb: &mut Sandbox, bin: &Path) -> Result<u32> {
    let mut command = sb.daemon_command(NODE)?;
    command.argv[0] = bin.as_os_str().to_os_string();
    sb.kill_daemon(NODE)?;
    sb.respawn_daemon(NODE, &command)?;
    let node = sb
        .nodes
        .get(NODE)
        .ok_or_else(|| anyhow!("no node {NODE}"))?;
    let pid = node
        .daemon
        .as_ref()
        .map(|c| c.id())
        .ok_or_else(|| anyhow!("no daemon"))?;
    wait_for("the daemon to be ready", LONG, || {
        let (code, _) = node.netns.http_get(METRICS_PORT, "/readyz")?;
        Ok((code == 200).then_some(()))
    })?;
    Ok(pid)
}

/// Changes vm01's own Peer and waits until its daemon reports the new generation: every
/// object its watches were sent before that change has been received.
async fn barrier(sb: &Sandbox, keepalive: u16) -> Result<()> {
    let api: Api<Peer> = Api::namespaced(sb.cp.client().await?, &sb.namespace);
    let patched = api
        .patch(
            OWN_PEER,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"persistentKeepalive": keepalive}})),
        )
        .await?;
    let generation = patched.metadata.generation;
    wait_for("vm01's daemon to report its changed Peer", LONG, || {
        let peer = sb
            .get_one("peer", OWN_PEER)?
            .ok_or_else(|| anyhow!("no Peer {OWN_PEER}"))?;
        let seen = peer["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["observedGeneration"] == json!(generation))
        });
        Ok(seen.then_some(()))
    })?;
    Ok(())
}

/// Creates `n` Peers between Interfaces of other nodes, with the status the operator would
/// write (the Interfaces themselves are not needed: no daemon of those nodes runs).
async fn create_other_peers(sb: &Sandbox, n: usize, concurrency: usize) -> Result<Duration> {
    let api: Api<Peer> = Api::namespaced(sb.cp.client().await?, &sb.namespace);
    let api = Arc::new(api);
    let start = Instant::now();
    let results: Vec<Result<()>> = futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            async move {
                let (from, to) = (i % 1000, (i + 1) % 1000);
                let name = format!("far-{i}");
                let peer: Peer = serde_json::from_value(json!({
                    "apiVersion": "kwire.dev/v1alpha1", "kind": "Peer",
                    "metadata": {"name": name},
                    "spec": {"interface": format!("far-{from}-wg0"),
                             "remote": {"interface": format!("far-{to}-wg0")}},
                }))?;
                api.create(&PostParams::default(), &peer).await?;
                api.patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(resolved(i, 0)),
                )
                .await?;
                Ok(())
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    results.into_iter().collect::<Result<Vec<()>>>()?;
    Ok(start.elapsed())
}

/// The status of other node's Peer `i`: resolved between nodes far-*, and a byte count.
fn resolved(i: usize, bytes: u64) -> Value {
    json!({"status": {
        "resolved": {
            "localNode": format!("far-{}", i % 100),
            "remoteNode": format!("far-{}", (i + 1) % 100),
            "publicKey": "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=",
            "endpoint": format!("192.0.2.{}:51820", i % 250),
            "allowedIPs": [format!("10.{}.{}.0/24", 64 + i / 256 % 64, i % 256)],
        },
        "transfer": {"rxBytes": bytes, "txBytes": bytes},
    }})
}

/// One status write to every other node's Peer (`bytes` must differ from the last).
async fn touch_other_peers(sb: &Sandbox, n: usize, concurrency: usize, bytes: u64) -> Result<()> {
    let api = Arc::new(Api::<Peer>::namespaced(
        sb.cp.client().await?,
        &sb.namespace,
    ));
    let results: Vec<Result<()>> = futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            async move {
                api.patch_status(
                    &format!("far-{i}"),
                    &PatchParams::default(),
                    &Patch::Merge(resolved(i, bytes)),
                )
                .await?;
                Ok(())
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    results.into_iter().collect::<Result<Vec<()>>>()?;
    Ok(())
}

struct Row {
    label: String,
    others: usize,
    at_start: Received,
    rss_mib: f64,
    during_writes: Option<Received>,
}

/// Starts `bin` as vm01's daemon, waits until it is quiet, measures; with other nodes'
/// Peers, also the writes to all of them.
async fn measure(
    sb: &mut Sandbox,
    label: &str,
    bin: &Path,
    others: usize,
    concurrency: usize,
    keepalive: &mut u16,
) -> Result<Row> {
    eprintln!("{label}, {others} Peers of other nodes: load {}", load());
    let pid = run_daemon(sb, bin)?;
    *keepalive += 1;
    barrier(sb, *keepalive).await?;
    let node = sb.nodes.get(NODE).ok_or_else(|| anyhow!("no node"))?;
    let (at_start, _) = settled("the daemon's watch events", LONG, 5, || received(node))?;
    let rss_mib = rss_mib(pid)?;
    let during_writes = if others > 0 {
        // A new byte count each time, so that every write changes the object.
        touch_other_peers(sb, others, concurrency, u64::from(*keepalive)).await?;
        *keepalive += 1;
        barrier(sb, *keepalive).await?;
        let node = sb.nodes.get(NODE).ok_or_else(|| anyhow!("no node"))?;
        let (after, _) = settled("the daemon's watch events", LONG, 5, || received(node))?;
        Some(Received {
            this: after.this - at_start.this,
            other: after.other - at_start.other,
        })
    } else {
        None
    };
    Ok(Row {
        label: label.to_string(),
        others,
        at_start,
        rss_mib,
        during_writes,
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let bins: Vec<(String, PathBuf)> = args
        .node_bins
        .iter()
        .map(|b| {
            let (label, path) = b
                .split_once('=')
                .ok_or_else(|| anyhow!("--node-bin {b}: expected label=path"))?;
            let path = std::fs::canonicalize(path).with_context(|| path.to_string())?;
            Ok((label.to_string(), path))
        })
        .collect::<Result<_>>()?;
    println!("load before: {}", load());
    let seed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/seed/two-hosts.yaml");
    let mut sb = Sandbox::up(&[seed], "scope-bench", true).await?;
    wait_for("the two hosts Ready", LONG, || {
        Ok(sb
            .not_true("interfaces,peers", "Ready")?
            .is_empty()
            .then_some(()))
    })?;
    // From here the bench writes what the operator would.
    sb.stop_operator()?;
    let mut keepalive = 20;
    let mut rows = Vec::new();
    for (label, bin) in &bins {
        rows.push(measure(&mut sb, label, bin, 0, args.concurrency, &mut keepalive).await?);
    }
    let took = create_other_peers(&sb, args.peers, args.concurrency).await?;
    println!(
        "created {} Peers of other nodes in {:.1}s",
        args.peers,
        took.as_secs_f64()
    );
    for (label, bin) in &bins {
        rows.push(
            measure(
                &mut sb,
                label,
                bin,
                args.peers,
                args.concurrency,
                &mut keepalive,
            )
            .await?,
        );
    }
    println!("load after: {}", load());
    println!();
    println!(
        "| kwire-node | Peers of other nodes | objects received by ready and quiet (this node / other nodes) | VmRSS | objects received while each other node's Peer gets one status write (this / other) |"
    );
    println!("|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {} / {} | {:.1} MiB | {} |",
            r.label,
            r.others,
            r.at_start.this,
            r.at_start.other,
            r.rss_mib,
            r.during_writes
                .map(|d| format!("{} / {}", d.this, d.other))
                .unwrap_or_else(|| "-".into())
        );
    }
    Ok(())
}
