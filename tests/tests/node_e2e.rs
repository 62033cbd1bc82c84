//! End-to-end tests of the node daemon (`kwire-node`) in the sandbox: a local control
//! plane, the chart installed with helm, one network namespace per node, the operator and
//! one daemon per node under their ServiceAccounts, real wireguard-go handshakes.
//!
//! Each test brings up its own [`Sandbox`] and drops it (processes, namespaces, devices,
//! the control plane and the run folder go with it, also when the test fails). The tests
//! take turns: a sandbox is a control plane plus a few daemons, and two at once on a
//! two-core machine only slow each other down.
//!
//! Nothing here is a timing assertion: a "lost nothing" ping is a correctness check
//! ("no rebuild, no gap"), and the times printed (recovery after wireguard-go is killed,
//! a deleted route coming back) are reported and only bounded generously.
//!
//! Needs root, `ip`, `wg`, `wireguard-go`, `ping`, `socat`, `curl` and `nsenter`; prints
//! `SKIPPED <test>: <why>` and passes without them. Build the binaries first:
//! `cargo build --workspace --bins`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, ensure};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use kwire_tests::netns::can_run_network_tests;
use kwire_tests::sandbox::{Sandbox, SandboxNode};
use kwire_tests::wait::{settled, wait_for, wait_for_every};
use serde_json::Value;

/// Generous bound for a sandbox to become Ready and Connected (about 20 s when idle).
const READY: Duration = Duration::from_secs(180);
/// Where the sandbox's daemons serve /metrics, /healthz and /readyz (inside each node).
const METRICS_PORT: u16 = 9090;
/// The sandbox runs the daemons with `--resync-period 10s`.
const RESYNC: Duration = Duration::from_secs(10);

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Checks the prerequisites (or prints `SKIPPED`) and waits for this test's turn.
async fn begin(test: &str) -> Option<tokio::sync::MutexGuard<'static, ()>> {
    let missing = can_run_network_tests().err().or_else(|| {
        ["socat", "curl", "nsenter"].into_iter().find_map(|tool| {
            let found = Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            (!found).then(|| format!("{tool} is not installed"))
        })
    });
    if let Some(why) = missing {
        eprintln!("SKIPPED {test}: {why}");
        return None;
    }
    let turn = ONE_AT_A_TIME.lock().await;
    eprintln!("== {test}");
    Some(turn)
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn seed(file: &str) -> PathBuf {
    repo().join("examples/seed").join(file)
}

/// Manifests written by a test; removed on drop.
struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn new(test: &str) -> Result<Self> {
        let dir =
            std::env::temp_dir().join(format!("kwire-node-e2e-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }

    fn file(&self, name: &str, text: &str) -> Result<PathBuf> {
        let path = self.dir.join(name);
        std::fs::write(&path, text)?;
        Ok(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn node<'a>(sb: &'a Sandbox, name: &str) -> Result<&'a SandboxNode> {
    sb.nodes.get(name).ok_or_else(|| anyhow!("no node {name}"))
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("a literal address")
}

/// Runs kubectl against the sandbox; fails with its stderr.
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

/// `kubectl apply --server-side` of `yaml` into the sandbox namespace.
fn apply(sb: &Sandbox, scratch: &Scratch, name: &str, yaml: &str) -> Result<()> {
    let file = scratch.file(name, yaml)?;
    kubectl(
        sb,
        &[
            "apply",
            "--server-side",
            "-n",
            &sb.namespace,
            "-f",
            file.to_str().unwrap(),
        ],
    )?;
    Ok(())
}

/// One object of the sandbox namespace as JSON.
fn object(sb: &Sandbox, kind: &str, name: &str) -> Result<Value> {
    let text = kubectl(sb, &["get", kind, name, "-n", &sb.namespace, "-o", "json"])?;
    Ok(serde_json::from_str(&text)?)
}

/// `(status, reason, message)` of condition `kind`.
fn condition(object: &Value, kind: &str) -> Option<(String, String, String)> {
    let c = object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)?;
    let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
    Some((s("status"), s("reason"), s("message")))
}

/// Waits until everything is Ready and Connected; on failure the error has the status
/// table and the logs. A link without persistentKeepalive shakes hands only when there is
/// traffic (as in the seed's walkthrough, where the ping comes first), so once everything
/// is configured every expected ping is sent before waiting for `Connected`.
fn ready(sb: &Sandbox) -> Result<Duration> {
    let start = Instant::now();
    wait_for("every Interface, Peer and Route Ready", READY, || {
        Ok(sb
            .not_true("interfaces,peers,routes", "Ready")?
            .is_empty()
            .then_some(()))
    })
    .with_context(|| format!("status:\n{}\n{}", sb.status_table(), sb.logs_tail(15)))?;
    let _ = sb.ping_all(&sb.expected_pings()?);
    sb.wait_ready(READY.saturating_sub(start.elapsed()))
        .with_context(|| format!("status:\n{}", sb.status_table()))?;
    Ok(start.elapsed())
}

/// One peer line of `wg show all dump` (interface lines, which carry the private key,
/// are never kept or printed).
#[derive(Debug, Clone)]
struct WgPeer {
    public_key: String,
    endpoint: String,
    allowed_ips: String,
    latest_handshake: u64,
    rx: u64,
    tx: u64,
    keepalive: String,
}

fn wg_peers(node: &SandboxNode) -> Result<Vec<WgPeer>> {
    Ok(node
        .wg_show()?
        .lines()
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .filter(|f| f.len() == 9)
        .map(|f| WgPeer {
            public_key: f[1].into(),
            endpoint: f[3].into(),
            allowed_ips: f[4].into(),
            latest_handshake: f[5].parse().unwrap_or(0),
            rx: f[6].parse().unwrap_or(0),
            tx: f[7].parse().unwrap_or(0),
            keepalive: f[8].into(),
        })
        .collect())
}

fn wg_peer(node: &SandboxNode, public_key: &str) -> Result<WgPeer> {
    wg_peers(node)?
        .into_iter()
        .find(|p| p.public_key == public_key)
        .ok_or_else(|| anyhow!("no peer {public_key} in wg show"))
}

/// The public key the operator published for an Interface.
fn public_key(sb: &Sandbox, interface: &str) -> Result<String> {
    object(sb, "interface", interface)?["status"]["publicKey"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("Interface {interface} has no status.publicKey"))
}

/// The wireguard-go processes of a node.
fn wireguard_go(node: &SandboxNode) -> Vec<u32> {
    let mut pids = node.netns.pids_named("wireguard-go");
    pids.sort_unstable();
    pids
}

/// `/metrics` of a node's daemon as `name{labels}` → value.
fn scrape(node: &SandboxNode) -> Result<BTreeMap<String, f64>> {
    let (code, body) = node.netns.http_get(METRICS_PORT, "/metrics")?;
    ensure!(code == 200, "/metrics answered {code}: {body}");
    Ok(body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect())
}

fn metric(metrics: &BTreeMap<String, f64>, name: &str) -> Result<f64> {
    metrics
        .get(name)
        .copied()
        .ok_or_else(|| anyhow!("no metric {name}"))
}

const FULL_RECONCILES: &str = "kwire_node_reconciles_total{mode=\"full\"}";

/// The counters of a daemon's reconciles: full, delta, kernel writes, failed steps. They move
/// together during a reconcile (the full count first, the writes once the plan is applied).
fn reconcile_counters(node: &SandboxNode) -> Result<[f64; 4]> {
    let m = scrape(node)?;
    Ok([
        metric(&m, FULL_RECONCILES)?,
        metric(&m, "kwire_node_reconciles_total{mode=\"delta\"}")?,
        metric(&m, "kwire_node_kernel_writes_total")?,
        metric(&m, "kwire_node_apply_errors_total")?,
    ])
}

/// Full reconciles of each node's daemon so far, to count from with [`full_reconciles_after`].
fn full_reconciles(nodes: &[&SandboxNode]) -> Result<Vec<f64>> {
    nodes
        .iter()
        .map(|n| metric(&scrape(n)?, FULL_RECONCILES))
        .collect()
}

/// Waits until the daemon of each of `nodes` has completed `more` full reconciles (observe,
/// plan, apply: the periodic resync, or a look again after a change) since `since`, and
/// then until their reconcile counters stand still, so that no reconcile is half done.
fn full_reconciles_after(
    nodes: &[&SandboxNode],
    since: &[f64],
    more: f64,
    timeout: Duration,
) -> Result<()> {
    wait_for(
        &format!("{more} more full reconciles on every node"),
        timeout,
        || {
            let now = full_reconciles(nodes)?;
            Ok(now
                .iter()
                .zip(since)
                .all(|(now, since)| *now >= since + more)
                .then_some(()))
        },
    )?;
    settled("the nodes' reconcile counters", RESYNC, 3, || {
        nodes
            .iter()
            .map(|n| reconcile_counters(n))
            .collect::<Result<Vec<_>>>()
    })?;
    Ok(())
}

/// `ping -i 0.01` running in a node until [`ContinuousPing::stop`]; killed on drop.
/// Its output goes to a file (a pipe nobody reads would fill up and stall it).
struct ContinuousPing {
    child: Option<Child>,
    output: PathBuf,
    label: String,
}

/// Echo requests sent in the last second before the ping is interrupted may still be on
/// their way: they are not counted (every test lets [`AFTER`] more replies come back after
/// the event before it stops its ping).
const IN_FLIGHT: u64 = 100;
/// Replies a test waits for before the event it pings across ([`ContinuousPing::replies_past`]):
/// the ping runs and the path answers.
const BEFORE: u64 = 100;
/// Replies a test waits for after the event before it stops the ping: the [`IN_FLIGHT`]
/// that are not counted, and as many again that are.
const AFTER: u64 = 2 * IN_FLIGHT;

#[derive(Debug)]
struct PingSummary {
    transmitted: u64,
    received: u64,
    /// Sequence numbers without a reply, except the last [`IN_FLIGHT`].
    missing: Vec<u64>,
}

impl PingSummary {
    fn lost(&self) -> u64 {
        self.missing.len() as u64
    }
}

impl ContinuousPing {
    /// Starts pinging `to` from `node` every 10 ms, after checking that it answers.
    fn start(node: &SandboxNode, to: IpAddr) -> Result<Self> {
        ensure!(
            node.netns
                .wait_for_ping(to, Duration::from_secs(20))
                .is_some(),
            "{to} does not answer from {}",
            node.netns.name()
        );
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let output = std::env::temp_dir().join(format!(
            "kwire-node-e2e-ping-{}-{}.txt",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let file = std::fs::File::create(&output)?;
        let child = Command::new("ip")
            .args(["netns", "exec", node.netns.name()])
            .args(["ping", "-n", "-i", "0.01", "-W", "2"])
            .arg(to.to_string())
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) => {
                let _ = std::fs::remove_file(&output);
                return Err(e).context("starting ping");
            }
        };
        Ok(Self {
            child: Some(child),
            output,
            label: format!("{} → {to}", node.netns.name()),
        })
    }

    /// Echo replies so far (ping prints each as it comes).
    fn replies(&self) -> Result<u64> {
        let text = std::fs::read_to_string(&self.output)?;
        Ok(text.lines().filter(|l| l.contains("bytes from")).count() as u64)
    }

    /// Waits until `more` replies have come back since this is called: the ping has run
    /// across whatever happens meanwhile, or before what comes next.
    fn replies_past(&self, more: u64) -> Result<()> {
        let now = self.replies()?;
        wait_for(
            &format!("{more} more ping replies {} (after {now})", self.label),
            Duration::from_secs(60),
            || Ok((self.replies()? >= now + more).then_some(())),
        )?;
        Ok(())
    }

    /// Interrupts the ping (it prints its summary) and returns what came back.
    fn stop(mut self) -> Result<PingSummary> {
        let mut child = self.child.take().ok_or_else(|| anyhow!("stopped twice"))?;
        let _ = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status();
        child.wait()?;
        let text = std::fs::read_to_string(&self.output)?;
        let line = text
            .lines()
            .find(|l| l.contains("packets transmitted"))
            .ok_or_else(|| anyhow!("no ping summary for {}", self.label))?;
        let numbers: Vec<u64> = line
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|n| n.parse().ok())
            .collect();
        ensure!(numbers.len() >= 2, "ping summary {line:?}");
        let replies: std::collections::BTreeSet<u64> = text
            .lines()
            .filter(|l| l.contains("bytes from"))
            .filter_map(|l| {
                let seq = l.split("icmp_seq=").nth(1)?;
                seq.split_whitespace().next()?.parse().ok()
            })
            .collect();
        let transmitted = numbers[0];
        let summary = PingSummary {
            transmitted,
            received: numbers[1],
            missing: (1..=transmitted.saturating_sub(IN_FLIGHT))
                .filter(|seq| !replies.contains(seq))
                .collect(),
        };
        eprintln!(
            "   ping {}: {} sent, {} received, {} lost{}",
            self.label,
            summary.transmitted,
            summary.received,
            summary.lost(),
            if summary.missing.is_empty() {
                String::new()
            } else {
                format!(
                    " (icmp_seq {:?})",
                    &summary.missing[..summary.missing.len().min(20)]
                )
            }
        );
        Ok(summary)
    }
}

impl Drop for ContinuousPing {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.output);
    }
}

/// `ip -j …` inside a node, parsed, for byte-for-byte comparisons of foreign state.
fn ip_json(node: &SandboxNode, args: &[&str]) -> Result<String> {
    let mut argv = vec!["ip", "-j"];
    argv.extend_from_slice(args);
    let out = node.netns.exec(&argv)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Checks every Peer's handshake in `wg show` on both ends and in its status.
fn assert_handshakes_reported(sb: &Sandbox) -> Result<()> {
    for peer in sb.get("peers")? {
        let name = peer["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let local = peer["spec"]["interface"].as_str().unwrap_or_default();
        let remote = peer["spec"]["remote"]["interface"]
            .as_str()
            .unwrap_or_default();
        for (this, other) in [(local, remote), (remote, local)] {
            let node_name = object(sb, "interface", this)?["spec"]["nodeName"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let other_key = public_key(sb, other)?;
            let entry = wg_peer(node(sb, &node_name)?, &other_key)
                .with_context(|| format!("on node {node_name}, device of {this}"))?;
            ensure!(
                entry.latest_handshake > 0,
                "wg show on {node_name}: no handshake with {other} ({entry:?})"
            );
        }
        // The status gets handshake and transfer from both ends (counters are written at
        // most every 30 s, so wait for traffic to show in both directions).
        wait_for(
            &format!("transfer of Peer {name} in status"),
            Duration::from_secs(75),
            || {
                let status = object(sb, "peer", &name)?["status"].clone();
                let counted = |t: &Value| {
                    t["rxBytes"].as_u64().unwrap_or(0) > 0 && t["txBytes"].as_u64().unwrap_or(0) > 0
                };
                Ok((status["latestHandshake"].is_string()
                    && counted(&status["transfer"])
                    && status["remoteEnd"]["latestHandshake"].is_string()
                    && counted(&status["remoteEnd"]["transfer"]))
                .then_some(()))
            },
        )?;
    }
    Ok(())
}

/// Pings every link and route the topology promises.
fn assert_pings(sb: &Sandbox) -> Result<()> {
    let pings = sb.expected_pings()?;
    ensure!(!pings.is_empty(), "no pings expected");
    let failed: Vec<String> = sb
        .ping_all(&pings)
        .into_iter()
        .filter(|(_, ok)| !ok)
        .map(|(p, _)| p.label)
        .collect();
    ensure!(
        failed.is_empty(),
        "pings failed: {failed:?}\n{}",
        sb.logs_tail(20)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeds_two_hosts_handshake_ping_and_report() -> Result<()> {
    let Some(_turn) = begin("the_seeds_two_hosts_handshake_ping_and_report").await else {
        return Ok(());
    };
    let sb = Sandbox::up(&[seed("two-hosts.yaml")], "two-hosts", true).await?;
    let took = ready(&sb)?;
    eprintln!(
        "   Ready and Connected {:.1}s after the apply",
        took.as_secs_f64()
    );
    ensure!(
        node(&sb, "vm01")?
            .netns
            .ping(ip("10.0.0.2"), 3, Duration::from_secs(2))
    );
    ensure!(
        node(&sb, "vm02")?
            .netns
            .ping(ip("10.0.0.1"), 3, Duration::from_secs(2))
    );
    assert_pings(&sb)?;
    assert_handshakes_reported(&sb)?;
    // wg show lists exactly the one peer per node, with the default AllowedIPs.
    let vm02 = public_key(&sb, "vm02-wg0")?;
    let on_vm01 = wg_peers(node(&sb, "vm01")?)?;
    ensure!(on_vm01.len() == 1, "{on_vm01:?}");
    ensure!(on_vm01[0].public_key == vm02 && on_vm01[0].allowed_ips == "10.0.0.2/32");
    ensure!(
        on_vm01[0].endpoint == "10.211.55.11:51820",
        "{:?}",
        on_vm01[0]
    );
    ensure!(
        on_vm01[0].rx > 0 && on_vm01[0].tx > 0,
        "traffic both ways: {:?}",
        on_vm01[0]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeds_relay_pings_a_to_c_through_b_and_never_shows_a_private_key() -> Result<()> {
    let Some(_turn) =
        begin("the_seeds_relay_pings_a_to_c_through_b_and_never_shows_a_private_key").await
    else {
        return Ok(());
    };
    let sb = Sandbox::up(&[seed("relay.yaml")], "relay", true).await?;
    let took = ready(&sb)?;
    eprintln!(
        "   Ready and Connected {:.1}s after the apply",
        took.as_secs_f64()
    );
    // A reaches C only through B: A has no peer for C and C none for A.
    let a = node(&sb, "a")?;
    ensure!(
        a.netns.ping(ip("10.2.0.2"), 3, Duration::from_secs(2)),
        "A → C"
    );
    ensure!(
        node(&sb, "c")?
            .netns
            .ping(ip("10.1.0.1"), 3, Duration::from_secs(2)),
        "C → A"
    );
    let c_key = public_key(&sb, "c-wg0-server")?;
    ensure!(wg_peers(a)?.iter().all(|p| p.public_key != c_key));
    assert_pings(&sb)?;
    assert_handshakes_reported(&sb)?;
    let peers_on_b = wg_peers(node(&sb, "b")?)?;
    ensure!(
        peers_on_b.len() == 2,
        "B has one peer per device: {peers_on_b:?}"
    );
    assert_no_private_key_anywhere(&sb)?;
    Ok(())
}

/// Every Interface's private key, read from its Secret, as it could appear in text:
/// base64 (as `wg genkey` prints it), hex (as the UAPI carries it), the Secret's data
/// field (base64 of what is stored), and the raw bytes.
fn private_key_needles(sb: &Sandbox) -> Result<Vec<(String, Vec<u8>)>> {
    let mut needles = Vec::new();
    for interface in sb.get("interfaces")? {
        let name = interface["metadata"]["name"].as_str().unwrap_or_default();
        let (secret, data_key) = match interface["spec"]["privateKeySecretRef"].as_object() {
            Some(r) => (
                r["name"].as_str().unwrap_or_default().to_string(),
                r.get("key")
                    .and_then(Value::as_str)
                    .unwrap_or("privateKey")
                    .to_string(),
            ),
            None => (
                interface["status"]["privateKeySecret"]
                    .as_str()
                    .ok_or_else(|| anyhow!("Interface {name} has no key Secret"))?
                    .to_string(),
                "privateKey".to_string(),
            ),
        };
        let secret = object(sb, "secret", &secret)?;
        let field = secret["data"][&data_key]
            .as_str()
            .ok_or_else(|| anyhow!("Secret of {name} has no {data_key}"))?
            .to_string();
        let stored = B64.decode(&field)?;
        let raw: Vec<u8> = if stored.len() == 32 {
            stored
        } else {
            B64.decode(String::from_utf8(stored)?.trim())?
        };
        ensure!(raw.len() == 32, "the key of {name} is not 32 bytes");
        let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let text = B64.encode(&raw);
        needles.push((format!("{name}: base64"), text.into_bytes()));
        needles.push((format!("{name}: hex"), hex.into_bytes()));
        needles.push((format!("{name}: Secret data"), field.into_bytes()));
        needles.push((format!("{name}: raw"), raw));
    }
    Ok(needles)
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_under(&path, out);
        } else if path.is_file() {
            out.push(path);
        }
    }
}

fn assert_no_private_key_anywhere(sb: &Sandbox) -> Result<()> {
    let needles = private_key_needles(sb)?;
    let mut haystacks: Vec<(String, Vec<u8>)> = Vec::new();
    let mut files = Vec::new();
    files_under(&sb.run_dir, &mut files);
    for file in files {
        haystacks.push((file.display().to_string(), std::fs::read(&file)?));
    }
    ensure!(
        haystacks
            .iter()
            .any(|(name, text)| name.ends_with("node-b.log") && !text.is_empty()),
        "the logs are missing: nothing to search"
    );
    haystacks.push((
        "kubectl get kwire -A -o yaml".into(),
        kubectl(
            sb,
            &[
                "get",
                "interfaces,peers,routes,networks",
                "-A",
                "-o",
                "yaml",
            ],
        )?
        .into_bytes(),
    ));
    haystacks.push((
        "kubectl get events -A -o yaml".into(),
        kubectl(sb, &["get", "events", "-A", "-o", "yaml"])?.into_bytes(),
    ));
    for (name, n) in &sb.nodes {
        let (_, metrics) = n.netns.http_get(METRICS_PORT, "/metrics")?;
        haystacks.push((format!("/metrics of node {name}"), metrics.into_bytes()));
    }
    // The search finds what it looks for: every key is in its Secret.
    let secrets = kubectl(sb, &["get", "secrets", "-n", &sb.namespace, "-o", "yaml"])?;
    for (what, needle) in needles.iter().filter(|(w, _)| w.ends_with("Secret data")) {
        ensure!(
            secrets
                .as_bytes()
                .windows(needle.len())
                .any(|w| w == needle.as_slice()),
            "the search is broken: {what} is not in the Secrets"
        );
    }
    let mut leaks = Vec::new();
    for (what, needle) in &needles {
        for (place, text) in &haystacks {
            if text.windows(needle.len()).any(|w| w == needle.as_slice()) {
                leaks.push(format!("{what} in {place}"));
            }
        }
    }
    ensure!(leaks.is_empty(), "private keys leaked: {leaks:?}");
    eprintln!(
        "   {} key forms searched in {} places: none found",
        needles.len(),
        haystacks.len()
    );
    Ok(())
}

const HUB: &str = "\
apiVersion: kwire.dev/v1alpha1
kind: Interface
metadata: {name: hub-wg0}
spec: {nodeName: hub, deviceName: wg0, listenPort: 51820, addresses: [10.3.0.1/24]}
---
apiVersion: kwire.dev/v1alpha1
kind: Interface
metadata: {name: s1-wg0}
spec: {nodeName: spoke1, deviceName: wg0, listenPort: 51820, addresses: [10.3.0.2/24]}
---
apiVersion: kwire.dev/v1alpha1
kind: Interface
metadata: {name: s2-wg0}
spec: {nodeName: spoke2, deviceName: wg0, listenPort: 51820, addresses: [10.3.0.3/24]}
---
apiVersion: kwire.dev/v1alpha1
kind: Peer
metadata: {name: hub-s1}
spec: {interface: hub-wg0, remote: {interface: s1-wg0}, persistentKeepalive: 15}
---
apiVersion: kwire.dev/v1alpha1
kind: Peer
metadata: {name: hub-s2}
spec: {interface: hub-wg0, remote: {interface: s2-wg0}, persistentKeepalive: 15}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_one_peer_leaves_the_device_and_the_other_peer_alone() -> Result<()> {
    let Some(_turn) = begin("changing_one_peer_leaves_the_device_and_the_other_peer_alone").await
    else {
        return Ok(());
    };
    let scratch = Scratch::new("hub")?;
    let sb = Sandbox::up(&[scratch.file("hub.yaml", HUB)?], "hub", true).await?;
    ready(&sb)?;
    let hub = node(&sb, "hub")?;
    let (s1, s2) = (public_key(&sb, "s1-wg0")?, public_key(&sb, "s2-wg0")?);
    let before = wireguard_go(hub);
    ensure!(before.len() == 1, "one wireguard-go on the hub: {before:?}");
    let s1_before = wg_peer(hub, &s1)?;

    let ping = ContinuousPing::start(hub, ip("10.3.0.2"))?;
    ping.replies_past(BEFORE)?;
    apply(
        &sb,
        &scratch,
        "hub-s2.yaml",
        "apiVersion: kwire.dev/v1alpha1\nkind: Peer\nmetadata: {name: hub-s2}\n\
         spec: {interface: hub-wg0, remote: {interface: s2-wg0}, persistentKeepalive: 25, \
         allowedIPs: [10.3.0.3/32, 10.33.0.0/24]}\n",
    )?;
    let ((), took) = wait_for(
        "the changed peer on the hub",
        Duration::from_secs(60),
        || {
            let p = wg_peer(hub, &s2)?;
            Ok((p.keepalive == "25" && p.allowed_ips.contains("10.33.0.0/24")).then_some(()))
        },
    )?;
    eprintln!(
        "   change reached the hub's device {:.1}s after kubectl apply",
        took.as_secs_f64()
    );
    ping.replies_past(AFTER)?;
    let summary = ping.stop()?;

    ensure!(summary.transmitted > 100, "{summary:?}");
    ensure!(
        summary.lost() == 0,
        "the untouched peer lost {} of {} pings while the other peer changed",
        summary.lost(),
        summary.transmitted
    );
    ensure!(
        wireguard_go(hub) == before,
        "the hub's wireguard-go changed: {before:?} → {:?} (device recreated)",
        wireguard_go(hub)
    );
    let s1_after = wg_peer(hub, &s1)?;
    ensure!(
        (
            s1_after.keepalive.as_str(),
            s1_after.allowed_ips.as_str(),
            s1_after.endpoint.as_str()
        ) == (
            s1_before.keepalive.as_str(),
            s1_before.allowed_ips.as_str(),
            s1_before.endpoint.as_str()
        ),
        "the untouched peer changed: {s1_before:?} → {s1_after:?}"
    );
    // The other end of the changed link got its side of the change too.
    let on_s2 = wg_peer(node(&sb, "spoke2")?, &public_key(&sb, "hub-wg0")?)?;
    ensure!(on_s2.keepalive == "25", "{on_s2:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_killed_and_restarted_adopts_everything_with_zero_writes_and_no_gap() -> Result<()>
{
    let Some(_turn) =
        begin("a_daemon_killed_and_restarted_adopts_everything_with_zero_writes_and_no_gap").await
    else {
        return Ok(());
    };
    let mut sb = Sandbox::up(&[seed("relay.yaml")], "restart", true).await?;
    ready(&sb)?;
    let before = wireguard_go(node(&sb, "b")?);
    ensure!(
        before.len() == 2,
        "B runs one wireguard-go per device: {before:?}"
    );
    let command = sb.daemon_command("b")?;

    // A → C crosses B, the relay whose daemon dies.
    let ping = ContinuousPing::start(node(&sb, "a")?, ip("10.2.0.2"))?;
    ping.replies_past(BEFORE)?;
    sb.kill_daemon("b")?;
    // B forwards with no daemon: the pings through it go on answering.
    ping.replies_past(AFTER)?;
    let restarted = Instant::now();
    sb.respawn_daemon("b", &command)?;
    let b = node(&sb, "b")?;
    let (metrics, took) = wait_for(
        "the first reconcile after the restart",
        Duration::from_secs(90),
        || {
            let m = scrape(b)?;
            Ok((metric(&m, "kwire_node_reconciles_total{mode=\"full\"}")? >= 1.0).then_some(m))
        },
    )?;
    eprintln!(
        "   first reconcile {:.1}s after the restart",
        took.as_secs_f64()
    );
    ping.replies_past(AFTER)?;
    let summary = ping.stop()?;

    ensure!(
        metric(&metrics, "kwire_node_kernel_writes_total")? == 0.0,
        "the restarted daemon wrote to the kernel:\n{}",
        sb.logs_tail(30)
    );
    ensure!(metric(&metrics, "kwire_node_last_reconcile_writes")? == 0.0);
    ensure!(
        wireguard_go(b) == before,
        "B's devices were recreated: wireguard-go {before:?} → {:?}",
        wireguard_go(b)
    );
    ensure!(summary.transmitted > 100, "{summary:?}");
    ensure!(
        summary.lost() == 0,
        "{} of {} pings through B were lost around the restart",
        summary.lost(),
        summary.transmitted
    );
    // Still zero writes after the next resync, and the restarted daemon reports again.
    full_reconciles_after(&[b], &[1.0], 1.0, RESYNC * 3)?;
    let later = scrape(b)?;
    ensure!(metric(&later, FULL_RECONCILES)? >= 2.0);
    ensure!(metric(&later, "kwire_node_kernel_writes_total")? == 0.0);
    eprintln!(
        "   restart to status: {:.1}s",
        restarted.elapsed().as_secs_f64()
    );
    ready(&sb)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_api_server_tears_nothing_down_and_changes_apply_after_it_returns()
-> Result<()> {
    let Some(_turn) =
        begin("an_unreachable_api_server_tears_nothing_down_and_changes_apply_after_it_returns")
            .await
    else {
        return Ok(());
    };
    let scratch = Scratch::new("outage")?;
    let mut sb = Sandbox::up(&[seed("relay.yaml")], "outage", true).await?;
    ready(&sb)?;
    let b_key = public_key(&sb, "b-wg0-server")?;
    let before: Vec<Vec<u32>> = sb.nodes.values().map(wireguard_go).collect();
    let routes_before = ip_json(
        node(&sb, "a")?,
        &["route", "show", "table", "all", "proto", "75"],
    )?;

    let ping = ContinuousPing::start(node(&sb, "a")?, ip("10.2.0.2"))?;
    sb.disconnect_api_and_connections();
    let outage = Instant::now();
    let nodes: Vec<&SandboxNode> = sb.nodes.values().collect();
    let since = full_reconciles(&nodes)?;
    // A change made during the outage cannot reach the nodes...
    apply(&sb, &scratch, "a-to-b.yaml", &seed_peer_a_to_b(21))?;
    // ...however long it lasts: every daemon goes on resyncing what it knew, four times
    // (three resync periods at least).
    full_reconciles_after(&nodes, &since, 4.0, RESYNC * 8)?;
    eprintln!(
        "   outage of {:.1}s: four full resyncs on every node",
        outage.elapsed().as_secs_f64()
    );
    let a = node(&sb, "a")?;
    ensure!(
        wg_peer(a, &b_key)?.keepalive == "15",
        "a change reached node a while the API server was unreachable: the outage was not real"
    );
    // ...and nothing was torn down: same processes, same routes, pings went on.
    let during: Vec<Vec<u32>> = sb.nodes.values().map(wireguard_go).collect();
    ensure!(
        during == before,
        "wireguard-go changed during the outage: {before:?} → {during:?}"
    );
    ensure!(
        ip_json(a, &["route", "show", "table", "all", "proto", "75"])? == routes_before,
        "kwire's routes on node a changed during the outage"
    );
    sb.reconnect_api()?;
    let summary = ping.stop()?;
    ensure!(summary.transmitted > 1000, "{summary:?}");
    ensure!(
        summary.lost() == 0,
        "{} of {} pings lost during the API outage",
        summary.lost(),
        summary.transmitted
    );

    // The change made during the outage arrives once the watches are back...
    let ((), took) = wait_for(
        "the outage's change on node a",
        Duration::from_secs(120),
        || Ok((wg_peer(node(&sb, "a")?, &b_key)?.keepalive == "21").then_some(())),
    )?;
    eprintln!(
        "   change made during the outage applied {:.1}s after reconnecting",
        took.as_secs_f64()
    );
    // ...and so does one made afterwards.
    apply(&sb, &scratch, "a-to-b-2.yaml", &seed_peer_a_to_b(23))?;
    let ((), took) = wait_for(
        "a change after the outage on node a",
        Duration::from_secs(60),
        || Ok((wg_peer(node(&sb, "a")?, &b_key)?.keepalive == "23").then_some(())),
    )?;
    eprintln!(
        "   change made after the outage applied in {:.1}s",
        took.as_secs_f64()
    );
    ensure!(sb.nodes.values().map(wireguard_go).collect::<Vec<_>>() == before);
    ready(&sb)?;
    Ok(())
}

/// The seed's `a-to-b` Peer with another keepalive.
fn seed_peer_a_to_b(keepalive: u16) -> String {
    format!(
        "apiVersion: kwire.dev/v1alpha1\nkind: Peer\nmetadata: {{name: a-to-b}}\n\
         spec: {{interface: a-wg0-client, remote: {{interface: b-wg0-server}}, \
         allowedIPs: [10.1.0.2/32, 10.2.0.0/24], remoteAllowedIPs: [10.1.0.1/32], \
         persistentKeepalive: {keepalive}}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_wireguard_go_is_replaced_and_the_link_recovers() -> Result<()> {
    let Some(_turn) = begin("a_killed_wireguard_go_is_replaced_and_the_link_recovers").await else {
        return Ok(());
    };
    let sb = Sandbox::up(&[seed("two-hosts.yaml")], "wgo-kill", true).await?;
    ready(&sb)?;
    let vm01 = node(&sb, "vm01")?;
    let before = wireguard_go(vm01);
    ensure!(before.len() == 1, "{before:?}");
    ensure!(vm01.netns.ping(ip("10.0.0.2"), 1, Duration::from_secs(2)));

    Command::new("kill")
        .args(["-9", &before[0].to_string()])
        .status()?;
    let killed = Instant::now();
    // A ping must not count before the old process is really gone.
    let gone = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
            stat.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
    };
    wait_for(
        "the killed wireguard-go to exit",
        Duration::from_secs(10),
        || Ok(gone(before[0]).then_some(())),
    )?;
    // Until a ping gets through again, one at a time, 200 ms each (no pause between: the
    // ping's own deadline paces them, and the recovery time is not the pause's).
    wait_for_every(
        Duration::ZERO,
        "a ping through after wireguard-go was killed",
        Duration::from_secs(30),
        || {
            let out = vm01
                .netns
                .try_exec(&["ping", "-n", "-q", "-c", "1", "-W", "0.2", "10.0.0.2"]);
            Ok(out.status.success().then_some(()))
        },
    )
    .with_context(|| sb.logs_tail(30))?;
    let recovered = killed.elapsed();
    eprintln!(
        "   RECOVERY: ping vm01 → vm02 answered again {:.2}s after wireguard-go was killed (goal: 5 s)",
        recovered.as_secs_f64()
    );
    let after = wireguard_go(vm01);
    ensure!(
        after.len() == 1 && after != before,
        "{before:?} → {after:?}"
    );
    ready(&sb)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kwire_route_deleted_by_hand_comes_back_within_one_resync() -> Result<()> {
    let Some(_turn) = begin("a_kwire_route_deleted_by_hand_comes_back_within_one_resync").await
    else {
        return Ok(());
    };
    let sb = Sandbox::up(&[seed("relay.yaml")], "drift", true).await?;
    ready(&sb)?;
    let a = node(&sb, "a")?;
    let show = ["ip", "route", "show", "10.2.0.0/24", "proto", "75"];
    let route = String::from_utf8_lossy(&a.netns.exec(&show)?.stdout).into_owned();
    ensure!(route.contains("via 10.1.0.2 dev wg0-client"), "{route}");
    a.netns
        .exec(&["ip", "route", "del", "10.2.0.0/24", "proto", "75"])?;
    // Within one resync period (and a margin for a loaded machine): the wait's bound.
    let ((), took) = wait_for(
        "the route to come back",
        RESYNC + Duration::from_secs(20),
        || {
            let now = String::from_utf8_lossy(&a.netns.exec(&show)?.stdout).into_owned();
            Ok((now == route).then_some(()))
        },
    )?;
    eprintln!(
        "   route back {:.2}s after it was deleted (resync period {}s)",
        took.as_secs_f64(),
        RESYNC.as_secs()
    );
    ensure!(
        a.netns.ping(ip("10.2.0.2"), 2, Duration::from_secs(2)),
        "A → C after the repair"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_becomes_a_condition_on_its_object_and_disturbs_nothing_else() -> Result<()> {
    let Some(_turn) =
        begin("bad_input_becomes_a_condition_on_its_object_and_disturbs_nothing_else").await
    else {
        return Ok(());
    };
    let scratch = Scratch::new("bad-input")?;
    let sb = Sandbox::up(&[seed("two-hosts.yaml")], "bad-input", true).await?;
    ready(&sb)?;
    let vm01 = node(&sb, "vm01")?;
    // Foreign things on vm01: a program on UDP 40000 and a link named taken0 (a veth:
    // this kernel has no dummy links).
    let socat = vm01
        .netns
        .spawn(
            Path::new("socat"),
            &[
                "-u".into(),
                "UDP4-RECV:40000".into(),
                "OPEN:/dev/null".into(),
            ],
            &[],
            &scratch.dir.join("socat.log"),
        )
        .context("starting socat")?;
    let _socat = KillOnDrop(Some(socat));
    vm01.netns.exec(&[
        "ip", "link", "add", "taken0", "type", "veth", "peer", "name", "taken0p",
    ])?;
    let taken_before = ip_json(vm01, &["-d", "link", "show", "dev", "taken0"])?;
    wait_for("socat to bind UDP 40000", Duration::from_secs(10), || {
        let out = vm01.netns.exec(&["ss", "-Huan", "sport", "= :40000"])?;
        Ok((!out.stdout.is_empty()).then_some(()))
    })?;
    kubectl(
        &sb,
        &[
            "create",
            "secret",
            "generic",
            "bad-key",
            "-n",
            &sb.namespace,
            "--from-literal=privateKey=this is not a WireGuard key",
        ],
    )?;
    let interface = |name: &str, device: &str, port: u16, net: u8, secret: Option<&str>| {
        let secret = secret
            .map(|s| format!(", privateKeySecretRef: {{name: {s}}}"))
            .unwrap_or_default();
        format!(
            "apiVersion: kwire.dev/v1alpha1\nkind: Interface\nmetadata: {{name: {name}}}\n\
             spec: {{nodeName: vm01, deviceName: {device}, listenPort: {port}, \
             addresses: [10.50.{net}.1/24]{secret}}}\n---\n"
        )
    };
    let bad = [
        interface(
            "vm01-missing-secret",
            "wgms",
            40001,
            1,
            Some("does-not-exist"),
        ),
        interface("vm01-bad-key", "wgbk", 40002, 2, Some("bad-key")),
        interface("vm01-port-in-use", "wgpu", 40000, 3, None),
        interface("vm01-name-taken", "taken0", 40004, 4, None),
    ]
    .concat();

    let ping = ContinuousPing::start(vm01, ip("10.0.0.2"))?;
    apply(&sb, &scratch, "bad.yaml", &bad)?;
    let expected = [
        ("vm01-missing-secret", "KeyUnavailable", "does not exist"),
        ("vm01-bad-key", "KeyUnavailable", "not a WireGuard key"),
        ("vm01-port-in-use", "ListenPortInUse", "40000"),
        ("vm01-name-taken", "Conflict", "taken0"),
    ];
    let (found, took) = wait_for(
        "a Ready condition on each bad Interface",
        Duration::from_secs(90),
        || {
            let mut found = Vec::new();
            for (name, reason, _) in expected {
                match condition(&object(&sb, "interface", name)?, "Ready") {
                    Some((status, r, message)) if status == "False" && r == reason => {
                        found.push((name, r, message))
                    }
                    _ => return Ok(None),
                }
            }
            Ok(Some(found))
        },
    )?;
    ping.replies_past(AFTER)?;
    let summary = ping.stop()?;
    eprintln!(
        "   conditions set {:.1}s after the apply:",
        took.as_secs_f64()
    );
    for ((name, reason, message), (_, _, must)) in found.iter().zip(expected) {
        eprintln!("   {name}: {reason}: {message}");
        ensure!(
            message.contains(must),
            "{name}: {message:?} does not mention {must:?}"
        );
    }
    ensure!(summary.transmitted > 100, "{summary:?}");
    ensure!(
        summary.lost() == 0,
        "the good link lost {} pings",
        summary.lost()
    );

    // The good Interface on the same node stays Ready, its Peer Connected.
    let good = object(&sb, "interface", "vm01-wg0")?;
    ensure!(
        condition(&good, "Ready").is_some_and(|c| c.0 == "True"),
        "vm01-wg0: {:?}",
        condition(&good, "Ready")
    );
    let link = object(&sb, "peer", "vm01-vm02")?;
    ensure!(condition(&link, "Connected").is_some_and(|c| c.0 == "True"));
    ensure!(vm01.netns.ping(ip("10.0.0.2"), 3, Duration::from_secs(2)));
    // The foreign link and the program holding the port are untouched.
    ensure!(ip_json(vm01, &["-d", "link", "show", "dev", "taken0"])? == taken_before);
    let holder = vm01.netns.exec(&["ss", "-Hunap", "sport", "= :40000"])?;
    ensure!(String::from_utf8_lossy(&holder.stdout).contains("socat"));
    // Devices the node could not configure were not created at all.
    for device in ["wgms", "wgbk"] {
        let out = vm01.netns.try_exec(&["ip", "link", "show", "dev", device]);
        ensure!(!out.status.success(), "device {device} exists");
    }
    Ok(())
}

/// A child process killed on drop.
struct KillOnDrop(Option<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Interfaces that exist only to name the nodes a, b and c: their key Secret does not
/// exist, so no node creates anything for them, and the nodes' namespaces are up before
/// any object of the relay is applied.
const PLACEHOLDERS: &str = "\
apiVersion: kwire.dev/v1alpha1
kind: Interface
metadata: {name: a-placeholder}
spec: {nodeName: a, deviceName: wgp, listenPort: 40100, addresses: [10.60.0.1/24], privateKeySecretRef: {name: not-yet}}
---
apiVersion: kwire.dev/v1alpha1
kind: Interface
metadata: {name: b-placeholder}
spec: {nodeName: b, deviceName: wgp, listenPort: 40100, addresses: [10.60.0.2/24], privateKeySecretRef: {name: not-yet}}
---
apiVersion: kwire.dev/v1alpha1
kind: Interface
metadata: {name: c-placeholder}
spec: {nodeName: c, deviceName: wgp, listenPort: 40100, addresses: [10.60.0.3/24], privateKeySecretRef: {name: not-yet}}
";

/// The foreign state of a node, as `ip -j` prints it.
fn foreign_snapshot(node: &SandboxNode) -> Result<Vec<String>> {
    Ok(vec![
        ip_json(node, &["-d", "link", "show", "dev", "fgn0"])?,
        ip_json(node, &["addr", "show", "dev", "fgn0"])?,
        ip_json(node, &["route", "show", "table", "all", "dev", "fgn0"])?,
        ip_json(
            node,
            &["-6", "route", "show", "table", "all", "dev", "fgn0"],
        )?,
        ip_json(node, &["rule", "show"])?,
        ip_json(node, &["addr", "show", "dev", "eth0"])?,
    ])
}

fn kwire_leftovers(node: &SandboxNode) -> Result<Vec<String>> {
    let mut left = Vec::new();
    let links: Value = serde_json::from_str(&ip_json(node, &["link", "show"])?)?;
    for link in links.as_array().into_iter().flatten() {
        if link["ifalias"]
            .as_str()
            .is_some_and(|a| a.starts_with("kwire:"))
        {
            left.push(format!("link {}", link["ifname"]));
        }
    }
    let routes = ip_json(node, &["route", "show", "table", "all", "proto", "75"])?;
    if routes.trim() != "[]" && !routes.trim().is_empty() {
        left.push(format!("routes {routes}"));
    }
    Ok(left)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_links_addresses_routes_and_rules_survive_a_whole_run() -> Result<()> {
    let Some(_turn) = begin("foreign_links_addresses_routes_and_rules_survive_a_whole_run").await
    else {
        return Ok(());
    };
    let scratch = Scratch::new("foreign")?;
    let mut sb = Sandbox::up(
        &[scratch.file("placeholders.yaml", PLACEHOLDERS)?],
        "foreign",
        true,
    )
    .await?;
    // Foreign state on every node, before any object of the relay exists. On a and c the
    // foreign route has the destination of kwire's Route, in the same table, with another
    // protocol and metric.
    let same_destination = [
        ("a", "10.2.0.0/24"),
        ("b", "10.99.0.0/24"),
        ("c", "10.1.0.0/24"),
    ];
    for (name, destination) in same_destination {
        let n = node(&sb, name)?;
        for cmd in [
            "ip link add fgn0 type veth peer name fgn1",
            "ip link set fgn1 up",
            "ip link set fgn0 up",
            "ip addr add 10.77.0.1/24 dev fgn0",
            &format!("ip route add {destination} dev fgn0 metric 500 proto static"),
            "ip route add default dev fgn0 table 100 proto boot",
            "ip rule add from 10.77.0.0/24 table 100 priority 1000",
        ] {
            n.netns.exec(&cmd.split(' ').collect::<Vec<_>>())?;
        }
    }
    // IPv6 duplicate address detection still runs on the new link: let it finish.
    for n in sb.nodes.values() {
        wait_for("IPv6 DAD on fgn0", Duration::from_secs(20), || {
            let out = n
                .netns
                .exec(&["ip", "-6", "addr", "show", "dev", "fgn0", "tentative"])?;
            Ok(out.stdout.is_empty().then_some(()))
        })?;
    }
    let snapshot = |sb: &Sandbox| -> Result<BTreeMap<String, Vec<String>>> {
        sb.nodes
            .iter()
            .map(|(name, n)| Ok((name.clone(), foreign_snapshot(n)?)))
            .collect()
    };
    let original = snapshot(&sb)?;
    let compare = |sb: &Sandbox, when: &str| -> Result<()> {
        let now = snapshot(sb)?;
        for (name, before) in &original {
            for (i, (b, a)) in before.iter().zip(&now[name]).enumerate() {
                ensure!(
                    b == a,
                    "{when}: foreign state #{i} of node {name} changed:\n{b}\n→\n{a}"
                );
            }
        }
        eprintln!("   {when}: foreign state identical");
        Ok(())
    };

    kubectl(
        &sb,
        &[
            "delete",
            "interfaces",
            "a-placeholder",
            "b-placeholder",
            "c-placeholder",
            "-n",
            &sb.namespace,
        ],
    )?;
    kubectl(
        &sb,
        &[
            "apply",
            "--server-side",
            "-n",
            &sb.namespace,
            "-f",
            seed("relay.yaml").to_str().unwrap(),
        ],
    )?;
    ready(&sb)?;
    assert_pings(&sb)?;
    // kwire's route to 10.2.0.0/24 sits beside the foreign one (metric 0 wins).
    let routes = String::from_utf8_lossy(
        &node(&sb, "a")?
            .netns
            .exec(&["ip", "route", "show", "10.2.0.0/24"])?
            .stdout,
    )
    .into_owned();
    ensure!(
        routes.contains("proto 75") && routes.contains("proto static"),
        "{routes}"
    );
    let nodes: Vec<&SandboxNode> = sb.nodes.values().collect();
    let since = full_reconciles(&nodes)?;
    compare(&sb, "after convergence")?;
    full_reconciles_after(&nodes, &since, 1.0, RESYNC * 3)?;
    compare(&sb, "after a full reconcile")?;

    kubectl(
        &sb,
        &[
            "delete",
            "interfaces,peers,routes",
            "--all",
            "-n",
            &sb.namespace,
        ],
    )?;
    wait_for(
        "the daemons to remove kwire's devices and routes",
        Duration::from_secs(60),
        || {
            let mut left = Vec::new();
            for (name, n) in &sb.nodes {
                left.extend(
                    kwire_leftovers(n)?
                        .into_iter()
                        .map(|l| format!("{name}: {l}")),
                );
            }
            Ok(left.is_empty().then_some(()))
        },
    )?;
    compare(&sb, "after deleting every kwire object")?;

    let names: Vec<String> = sb.nodes.keys().cloned().collect();
    for name in &names {
        let pid = sb.nodes[name].daemon.as_ref().map(Child::id);
        if let Some(pid) = pid {
            Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()?;
        }
        if let Some(mut child) = sb.nodes.get_mut(name).and_then(|n| n.daemon.take()) {
            let status = child.wait()?;
            ensure!(
                status.success(),
                "the daemon of {name} exited with {status}"
            );
        }
    }
    compare(&sb, "after the daemons stopped")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_serves_metrics_health_and_readiness() -> Result<()> {
    let Some(_turn) = begin("the_daemon_serves_metrics_health_and_readiness").await else {
        return Ok(());
    };
    let mut sb = Sandbox::up(&[seed("two-hosts.yaml")], "endpoints", true).await?;
    ready(&sb)?;
    let vm01 = node(&sb, "vm01")?;
    let vm02_key = public_key(&sb, "vm02-wg0")?;
    // Per-peer numbers come from the last full observation (every resync).
    let (m, _) = wait_for("per-peer metrics with a handshake", RESYNC * 3, || {
        let m = scrape(vm01)?;
        let age = format!(
            "kwire_node_peer_handshake_age_seconds{{device=\"wg0\",public_key=\"{vm02_key}\"}}"
        );
        Ok(m.contains_key(&age).then_some(m))
    })?;
    let labels = format!("{{device=\"wg0\",public_key=\"{vm02_key}\"}}");
    let age = metric(
        &m,
        &format!("kwire_node_peer_handshake_age_seconds{labels}"),
    )?;
    ensure!((0.0..180.0).contains(&age), "handshake age {age}");
    ensure!(
        metric(
            &m,
            &format!("kwire_node_peer_latest_handshake_seconds{labels}")
        )? > 1.6e9
    );
    ensure!(metric(&m, &format!("kwire_node_peer_receive_bytes_total{labels}"))? > 0.0);
    ensure!(metric(&m, &format!("kwire_node_peer_transmit_bytes_total{labels}"))? > 0.0);
    ensure!(metric(&m, "kwire_node_reconciles_total{mode=\"full\"}")? >= 1.0);
    ensure!(
        metric(&m, "kwire_node_kernel_writes_total")? > 0.0,
        "the first reconcile created the device"
    );
    ensure!(metric(&m, "kwire_node_apply_errors_total")? == 0.0);
    ensure!(metric(&m, "kwire_node_ready")? == 1.0);
    ensure!(vm01.netns.http_get(METRICS_PORT, "/healthz")? == (200, "ok\n".into()));
    ensure!(vm01.netns.http_get(METRICS_PORT, "/readyz")? == (200, "ready\n".into()));
    ensure!(vm01.netns.http_get(METRICS_PORT, "/nothing")?.0 == 404);

    // For docs/performance.md (printed, never asserted): the daemons' memory in API mode.
    for (name, n) in &sb.nodes {
        if let Some(pid) = n.daemon.as_ref().map(Child::id) {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
            let rss = status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .unwrap_or("VmRSS: ?");
            eprintln!("   kwire-node of {name} (debug build, API mode, 1 peer): {rss}");
        }
    }

    // A daemon that starts while the API server is unreachable is alive but not ready
    // (it does not know what it should have), and leaves the kernel alone.
    let command = sb.daemon_command("vm02")?;
    sb.disconnect_api_and_connections();
    sb.kill_daemon("vm02")?;
    sb.respawn_daemon("vm02", &command)?;
    let vm02 = node(&sb, "vm02")?;
    wait_for(
        "the restarted daemon's endpoints",
        Duration::from_secs(30),
        || Ok(vm02.netns.http_get(METRICS_PORT, "/healthz").ok()),
    )?;
    // Nothing moves: its reconcile counters stay where they are for three seconds.
    settled(
        "the reconcile counters of the daemon without the API",
        Duration::from_secs(30),
        16,
        || reconcile_counters(vm02),
    )?;
    ensure!(vm02.netns.http_get(METRICS_PORT, "/healthz")?.0 == 200);
    let (code, body) = vm02.netns.http_get(METRICS_PORT, "/readyz")?;
    ensure!(
        code == 503,
        "/readyz before the first reconcile: {code} {body}"
    );
    ensure!(metric(&scrape(vm02)?, FULL_RECONCILES)? == 0.0);
    ensure!(
        node(&sb, "vm01")?
            .netns
            .ping(ip("10.0.0.2"), 2, Duration::from_secs(2)),
        "the link stays up"
    );
    sb.reconnect_api()?;
    let vm02 = node(&sb, "vm02")?;
    let ((), took) = wait_for(
        "/readyz after the API is back",
        Duration::from_secs(90),
        || Ok((vm02.netns.http_get(METRICS_PORT, "/readyz")?.0 == 200).then_some(())),
    )?;
    eprintln!(
        "   ready {:.1}s after the API server came back",
        took.as_secs_f64()
    );
    ensure!(metric(&scrape(vm02)?, "kwire_node_kernel_writes_total")? == 0.0);
    Ok(())
}
