//! The main job, end to end: each example topology comes up in the sandbox (real API
//! server, chart installed by helm, operator and node daemons under the chart's
//! ServiceAccounts, one network namespace per node, the far side of each external Peer
//! played with plain `wg`), every Interface, Peer and Route becomes Ready and every Peer
//! Connected, every ping through every link and route answers, and tearing down leaves
//! nothing behind: no namespace, link, process, folder, listening port or wireguard-go
//! socket, checked against the sandbox's crash record and against names carrying the pid.
//!
//! Then the crash: `kwire sandbox up` killed with SIGKILL once it is up, and
//! `kwire sandbox down --id <its record>` removing everything it left.
//!
//! The seed's relay (A → B → C) is the first scenario every build must pass; its node B
//! has two Interfaces (`wg0-server`, `wg1-client`), the case of a node with several devices.
//!
//! Needs root, `ip`, `wg`, `wireguard-go`, `ping` and `socat` (prints `SKIPPED …` and passes
//! otherwise), and the workspace binaries: `cargo build --workspace --bins` first.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use kwire_crds::manifest::KwireObject;
use kwire_sandbox::record::{Record, netns_inode, read_records, record_dir};
use kwire_sandbox::teardown::{host_links, listening_tcp_ports};
use kwire_tests::netns::can_run_network_tests;
use kwire_tests::sandbox::{Sandbox, workspace_binary};
use kwire_tests::wait::wait_for;

/// One sandbox at a time: two cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Whether `name` is `<prefix><letters><pid % 100000>x<n>`, a name made by process `pid`
/// (`kwire_sandbox::netns::unique_name`).
fn made_by(name: &str, prefix: &str, pid: u32) -> bool {
    let Some(rest) = name.strip_prefix(prefix) else {
        return false;
    };
    let rest = rest.trim_start_matches(|c: char| c.is_ascii_alphabetic());
    rest.split_once('x').is_some_and(|(p, n)| {
        p == (pid % 100_000).to_string() && !n.is_empty() && n.chars().all(|c| c.is_ascii_digit())
    })
}

fn netns_names() -> BTreeSet<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

fn wireguard_sockets() -> BTreeSet<String> {
    std::fs::read_dir("/var/run/wireguard")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Everything that a sandbox owned by process `pid` and recorded in `record` may have left
/// behind, by kind; empty when it left nothing.
fn leftovers(record: &Record, pid: u32) -> Vec<String> {
    let mut left = Vec::new();
    let namespaces = netns_names();
    for ns in &record.netns {
        if namespaces.contains(&ns.name) && netns_inode(&ns.name) == ns.inode {
            left.push(format!("network namespace {} (recorded)", ns.name));
        }
    }
    for name in namespaces.iter().filter(|n| made_by(n, "kw", pid)) {
        left.push(format!("network namespace {name}"));
    }
    let links = host_links();
    for link in record.links.iter().filter(|l| links.contains(&l.name)) {
        left.push(format!("link {} in the host's namespace", link.name));
    }
    for link in links
        .iter()
        .filter(|l| ["p", "e", "kx"].iter().any(|p| made_by(l, p, pid)))
    {
        left.push(format!("link {link} in the host's namespace"));
    }
    for p in record.processes.iter().filter(|p| p.id.is_running()) {
        left.push(format!("process {} (pid {}, recorded)", p.what, p.id.pid));
    }
    let marker = format!("kwire-sandbox-{pid}-");
    let out = Command::new("pgrep")
        .args(["-af", &marker])
        .output()
        .expect("pgrep");
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if !line.contains("pgrep") {
            left.push(format!("process {line}"));
        }
    }
    for folder in record.folders.iter().filter(|f| f.exists()) {
        left.push(format!("folder {} (recorded)", folder.display()));
    }
    for entry in std::fs::read_dir(std::env::temp_dir()).unwrap().flatten() {
        if entry.file_name().to_string_lossy().starts_with(&marker) {
            left.push(format!("folder {}", entry.path().display()));
        }
    }
    for socket in record.sockets.iter().filter(|s| s.exists()) {
        left.push(format!("socket {} (recorded)", socket.display()));
    }
    for socket in wireguard_sockets()
        .iter()
        .filter(|s| made_by(s.trim_end_matches(".sock"), "kx", pid))
    {
        left.push(format!("socket /var/run/wireguard/{socket}"));
    }
    let listening = listening_tcp_ports();
    for port in record.ports.iter().filter(|p| listening.contains_key(p)) {
        left.push(format!("listening port {port} (recorded)"));
    }
    let file = record_dir().join(format!("{}.json", record.id));
    if file.exists() {
        left.push(format!("record {}", file.display()));
    }
    left
}

/// A record that lists what a sandbox of `example` must have made.
fn assert_recorded(record: &Record, example: &str) {
    assert!(
        !record.netns.is_empty()
            && record.processes.len() >= 5
            && record.folders.len() == 2
            && !record.links.is_empty()
            && !record.ports.is_empty(),
        "{example}: the record misses things: {record:#?}"
    );
}

/// Devices per node that the manifests ask for.
fn devices_per_node(sandbox: &Sandbox) -> Vec<(String, usize)> {
    sandbox
        .nodes
        .keys()
        .map(|node| {
            let count = sandbox
                .objects
                .iter()
                .filter(
                    |o| matches!(o, KwireObject::Interface(i) if i.spec.node_name.as_str() == node),
                )
                .count();
            (node.clone(), count)
        })
        .collect()
}

async fn runs_end_to_end(example: &str, namespace: &str) {
    runs_end_to_end_with(example, namespace, true).await;
}

/// [`runs_end_to_end`], with or without kube-controller-manager in the control plane.
async fn runs_end_to_end_with(example: &str, namespace: &str, controller_manager: bool) {
    if let Err(why) = can_run_network_tests() {
        println!("SKIPPED {example}: {why}");
        return;
    }
    let _turn = ONE_AT_A_TIME.lock().await;
    let file = repo().join(example);
    let record = {
        let up = if controller_manager {
            Sandbox::up(&[file], namespace, true).await
        } else {
            Sandbox::up_without_controller_manager(&[file], namespace, true).await
        };
        let sandbox = up.expect("sandbox up");
        let components: Vec<String> = sandbox.cp.processes().into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            components.iter().any(|n| n == "kube-controller-manager"),
            controller_manager,
            "{example}: control plane processes {components:?}"
        );
        let waited = sandbox.wait_ready(Duration::from_secs(120));
        if let Err(e) = &waited {
            panic!("{example}: {e}\n{}", sandbox.status_table());
        }
        let pings = sandbox.expected_pings().expect("pings");
        assert!(!pings.is_empty(), "{example}: nothing to ping");
        for name in sandbox.externals.keys() {
            assert!(
                pings
                    .iter()
                    .any(|p| p.label.starts_with(&format!("{name} → "))),
                "{example}: no ping from the far side of {name}"
            );
        }
        let results = sandbox.ping_all(&pings);
        println!(
            "{example}: Ready and Connected in {:.1}s",
            waited.unwrap().as_secs_f64()
        );
        for (ping, ok) in &results {
            println!("  {}: {}", ping.label, if *ok { "ok" } else { "FAILED" });
        }
        let failed: Vec<_> = results
            .iter()
            .filter(|(_, ok)| !ok)
            .map(|(p, _)| p.label.clone())
            .collect();
        assert!(
            failed.is_empty(),
            "{example}: pings failed: {failed:?}\n{}",
            sandbox.logs_tail(20)
        );
        // After traffic every Peer reports a handshake, keepalive or not.
        let mut idle = Vec::new();
        if let Err(e) = wait_for("every Peer Connected", Duration::from_secs(60), || {
            idle = sandbox.not_true("peers", "Connected").expect("peers");
            Ok(idle.is_empty().then_some(()))
        }) {
            panic!("{example}: not Connected after pings: {idle:?} ({e:#})");
        }
        // A node with several Interfaces has as many devices.
        for (node, want) in devices_per_node(&sandbox) {
            let dump = sandbox.nodes[&node].wg_show().expect("wg show");
            let devices = dump.lines().filter(|l| l.split('\t').count() == 5).count();
            assert_eq!(devices, want, "{example}: devices on node {node}:\n{dump}");
        }
        let record = sandbox.record();
        assert_recorded(&record, example);
        assert!(sandbox.record_path().exists());
        record
    };
    let left = leftovers(&record, std::process::id());
    assert!(left.is_empty(), "{example}: left behind: {left:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_relay_a_to_c_through_b() {
    runs_end_to_end("examples/seed/relay.yaml", "seed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_two_hosts() {
    // Also the main job's control plane: etcd and kube-apiserver only.
    runs_end_to_end_with("examples/seed/two-hosts.yaml", "two-hosts", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_relay_with_allocated_addresses() {
    runs_end_to_end("examples/seed/relay-networks.yaml", "seed-networks").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_stack() {
    runs_end_to_end("examples/dual-stack.yaml", "dual-stack").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_and_spoke() {
    runs_end_to_end("examples/hub-and-spoke.yaml", "hub").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_and_spoke_with_an_external_peer_played_by_plain_wg() {
    runs_end_to_end(
        "examples/sandbox/hub-and-spoke-external.yaml",
        "hub-external",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_both_ends_on_one_node() {
    runs_end_to_end("tests/topologies/both-ends-on-one-node.yaml", "one-node").await;
}

/// `kwire sandbox up` as a child process, killed and cleaned up when dropped (also when the
/// test fails half-way).
struct SandboxUp {
    child: Option<Child>,
    pid: u32,
    log: PathBuf,
    record: Option<String>,
}

impl SandboxUp {
    fn start(example: &str, namespace: &str) -> Self {
        let log = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("sandbox-up-{}.log", std::process::id()));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(workspace_binary("kwire").expect("kwire is built"))
            .args(["sandbox", "up", "-f", example, "--namespace", namespace])
            .current_dir(repo())
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("kwire sandbox up starts");
        Self {
            pid: child.id(),
            child: Some(child),
            log,
            record: None,
        }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until it says it is up (verified, staying up).
    fn wait_up(&mut self, timeout: Duration) {
        let up = wait_for("kwire sandbox up to say it is up", timeout, || {
            if self.output().contains(" is up (kubeconfig: ") {
                return Ok(Some(()));
            }
            let exited = self.child.as_mut().unwrap().try_wait().unwrap();
            assert!(
                exited.is_none(),
                "kwire sandbox up exited ({exited:?}):\n{}",
                self.output()
            );
            Ok(None)
        });
        if let Err(e) = up {
            panic!("{e:#}:\n{}", self.output());
        }
    }

    /// Its crash record.
    fn record(&mut self) -> Record {
        let record = read_records(&record_dir())
            .unwrap()
            .into_iter()
            .filter_map(|f| f.record.ok())
            .find(|r| r.owner.pid == self.pid)
            .unwrap_or_else(|| {
                panic!(
                    "no record of pid {} in {}",
                    self.pid,
                    record_dir().display()
                )
            });
        self.record = Some(record.id.clone());
        record
    }

    /// SIGKILL: no destructor runs.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}

impl Drop for SandboxUp {
    fn drop(&mut self) {
        self.kill();
        if let Some(id) = &self.record {
            let _ = kwire(&["sandbox", "down", "--id", id, "--force"]);
        }
    }
}

fn kwire(args: &[&str]) -> Output {
    Command::new(workspace_binary("kwire").expect("kwire is built"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("kwire runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_sandbox_leaves_nothing_after_sandbox_down() {
    let example = "examples/sandbox/hub-and-spoke-external.yaml";
    if let Err(why) = can_run_network_tests() {
        println!("SKIPPED: {why}");
        return;
    }
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut up = SandboxUp::start(example, "crash");
    up.wait_up(Duration::from_secs(300));
    let record = up.record();
    assert_recorded(&record, example);
    assert!(
        !record.sockets.is_empty(),
        "the far side's socket is not recorded: {record:#?}"
    );
    let before = leftovers(&record, up.pid);
    assert!(
        before.len() > 10,
        "a running sandbox should show plenty: {before:#?}"
    );

    up.kill();
    // Nothing ran its destructors: all of it is still there (the control plane's
    // watchdog may be stopping the control plane meanwhile).
    assert!(
        record.netns.iter().all(|n| netns_inode(&n.name) == n.inode),
        "namespaces went away without a teardown"
    );

    let id = record.id.as_str();
    let out = kwire(&["sandbox", "down", "--id", id]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    println!(
        "kwire sandbox down --id {id}:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "kwire sandbox down failed");
    for expected in [
        format!("sandbox {id} ("),
        "killed kwire-operator".into(),
        "killed wireguard-go (far side of Peer laptop)".into(),
        "deleted network namespace".into(),
        "removed socket /var/run/wireguard/kx".into(),
        format!("removed folder /tmp/kwire-sandbox-{id}"),
        format!(
            "removed record {}",
            record_dir().join(format!("{id}.json")).display()
        ),
    ] {
        assert!(text.contains(&expected), "no {expected:?} in:\n{text}");
    }
    let left = leftovers(&record, up.pid);
    assert!(left.is_empty(), "left behind: {left:#?}");

    // Again: nothing to do, and that is not a failure.
    let again = kwire(&["sandbox", "down", "--id", id]);
    let text = String::from_utf8_lossy(&again.stdout);
    assert!(again.status.success(), "{text}");
    assert!(text.contains("nothing to do"), "{text}");
    up.record = None;
}

#[test]
fn names_made_by_a_process_are_told_from_others() {
    assert!(made_by("kwhub4242x1", "kw", 4242));
    assert!(made_by("kx4242x13", "kx", 4242));
    assert!(made_by("kwa4242x0", "kw", 104_242));
    assert!(!made_by("kwa14242x0", "kw", 4242));
    assert!(!made_by("kwa4242", "kw", 4242));
    assert!(!made_by("eth0", "e", 4242));
}
