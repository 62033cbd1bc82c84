//! `kwire sandbox up` as a user runs it, without `--check`: when a check fails the sandbox
//! stays up for inspection, the command says what failed, and Ctrl-C tears it down and exits
//! non-zero (issue 16 item 15); a node daemon killed while it is up is reported and
//! restarted, as a DaemonSet would (issue 16 item 16); `Node` documents of the manifest
//! label the Node objects the sandbox registers (issue 15 item 6).
//!
//! Needs root and the tools `can_run_network_tests` lists; skipped otherwise (a failure
//! with `KWIRE_REQUIRE_E2E=1`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kwire_sandbox::netns::{can_run_network_tests, pids_in};
use kwire_sandbox::record::{Record, read_records, record_dir};
use kwire_tests::wait::wait_for;

/// A Peer whose remote Interface does not exist never becomes Ready: a check that fails
/// every time.
const NEVER_READY: &str = "apiVersion: kwire.dev/v1alpha1
kind: Interface
metadata: {name: a-wg0}
spec: {nodeName: a, deviceName: wg0, listenPort: 51820, addresses: [10.9.0.1/24]}
---
apiVersion: kwire.dev/v1alpha1
kind: Peer
metadata: {name: a-to-nowhere}
spec:
  interface: a-wg0
  remote: {interface: nowhere-wg0}
";

/// `kwire sandbox up`, killed and cleaned up with `kwire sandbox down` if the test fails.
struct Up {
    child: Child,
    log: PathBuf,
}

impl Up {
    /// `kwire sandbox up -f <manifest> <args>`, its output in `dir/up.log`.
    fn start(dir: &Path, manifest: &Path, args: &[&str]) -> Self {
        let log = dir.join("up.log");
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_kwire"))
            .args(["sandbox", "up", "-f"])
            .arg(manifest)
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("kwire sandbox up starts");
        Self { child, log }
    }

    /// Waits until it says it is up (and stays up); fails if it exits.
    fn wait_up(&mut self) {
        let mut exited = None;
        let waited = wait_for(
            "kwire sandbox up to say it stays up",
            Duration::from_secs(300),
            || {
                exited = self.child.try_wait()?;
                Ok(
                    (exited.is_some() || self.output().contains(" is up (kubeconfig: "))
                        .then_some(()),
                )
            },
        );
        assert!(
            waited.is_ok() && exited.is_none(),
            "kwire sandbox up did not stay up ({exited:?}):\n{}",
            self.output()
        );
    }

    /// Ctrl-C; returns its exit code once it has torn down.
    fn interrupt(&mut self) -> Option<i32> {
        Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .unwrap();
        let (status, _) = wait_for("kwire sandbox up to exit", Duration::from_secs(120), || {
            Ok(self.child.try_wait()?)
        })
        .unwrap();
        assert!(self.output().contains("tearing down"), "{}", self.output());
        assert!(
            self.record().is_none(),
            "the record is left:\n{}",
            self.output()
        );
        status.code()
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn record(&self) -> Option<Record> {
        read_records(&record_dir())
            .ok()?
            .into_iter()
            .filter_map(|f| f.record.ok())
            .find(|r| r.owner.pid == self.child.id())
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let record = self.record();
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(record) = record {
            let _ = Command::new(env!("CARGO_BIN_EXE_kwire"))
                .args(["sandbox", "down", "--id", &record.id, "--force"])
                .stdin(Stdio::null())
                .output();
        }
    }
}

#[test]
fn a_failed_check_without_check_keeps_the_sandbox_up_until_ctrl_c_then_exits_1() {
    if let Err(why) = can_run_network_tests() {
        println!("SKIPPED: {why}");
        return;
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("sandbox-up-stays-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let manifest = dir.join("never-ready.yaml");
    std::fs::write(&manifest, NEVER_READY).unwrap();
    let mut up = Up::start(
        &dir,
        &manifest,
        &[
            "--namespace",
            "stays-up",
            "--timeout",
            "3s",
            "--without-controller-manager",
        ],
    );

    // It says what failed, and that it stays up.
    up.wait_up();
    let output = up.output();
    assert!(
        output.contains("error: not ready after 3s")
            && output.contains("Peer/a-to-nowhere")
            && output.contains("although a check failed"),
        "{output}"
    );

    // Still up: its record and its node namespace (with the node daemon in it).
    let record = up.record().expect("the sandbox's record");
    let node_netns: Vec<&String> = record
        .netns
        .iter()
        .map(|n| &n.name)
        .filter(|n| n.starts_with("kwa"))
        .collect();
    assert_eq!(node_netns.len(), 1, "{record:#?}");
    assert!(
        !pids_in(node_netns[0]).is_empty(),
        "node a's namespace has no process: {record:#?}"
    );

    // Ctrl-C: torn down, exit code 1.
    assert_eq!(up.interrupt(), Some(1), "{}", up.output());
    let netns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&netns.stdout).contains(node_netns[0].as_str()),
        "namespace {} is left",
        node_netns[0]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_node_daemon_killed_while_up_is_reported_and_restarted() {
    if let Err(why) = can_run_network_tests() {
        println!("SKIPPED: {why}");
        return;
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("sandbox-up-restarts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/seed/two-hosts.yaml");
    let mut up = Up::start(
        &dir,
        &manifest,
        &["--namespace", "restarts", "--without-controller-manager"],
    );
    up.wait_up();
    let daemon_of = |up: &Up| -> Vec<u32> {
        up.record()
            .expect("the sandbox's record")
            .processes
            .iter()
            .filter(|p| p.what == "kwire-node of vm01")
            .map(|p| p.id.pid)
            .collect()
    };
    let first = daemon_of(&up);
    assert_eq!(first.len(), 1, "{first:?}");
    let killed = Command::new("kill")
        .args(["-KILL", &first[0].to_string()])
        .status()
        .unwrap();
    assert!(killed.success());

    wait_for(
        "the dead daemon to be reported and restarted",
        Duration::from_secs(60),
        || {
            Ok(up
                .output()
                .contains("the node daemon of vm01 restarted (restart 1, pid ")
                .then_some(()))
        },
    )
    .unwrap_or_else(|e| panic!("{e}:\n{}", up.output()));
    let output = up.output();
    assert!(
        output.contains("the node daemon of vm01 exited (signal: 9 (SIGKILL)); restarting it now"),
        "{output}"
    );
    let now = daemon_of(&up);
    let restarted: Vec<&u32> = now.iter().filter(|p| !first.contains(p)).collect();
    assert_eq!(restarted.len(), 1, "{now:?}");
    assert!(
        Path::new(&format!("/proc/{}", restarted[0])).exists(),
        "the restarted daemon is not running:\n{output}"
    );
    assert!(up.child.try_wait().unwrap().is_none(), "{output}");

    // Nothing failed: Ctrl-C tears down with exit code 0.
    assert_eq!(up.interrupt(), Some(0), "{}", up.output());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Two-hosts plus Node documents: labels for vm01, and vm03 declared by its Node document
/// alone.
const NODE_DOCUMENTS: &str = "
---
apiVersion: v1
kind: Node
metadata:
  name: vm01
  labels: {topology.kubernetes.io/zone: east, kwire.dev/mesh: overlay}
---
apiVersion: v1
kind: Node
metadata:
  name: vm03
  labels: {kwire.dev/mesh: overlay}
";

#[test]
fn node_documents_of_the_manifest_label_the_sandbox_nodes() {
    if let Err(why) = can_run_network_tests() {
        println!("SKIPPED: {why}");
        return;
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("sandbox-up-labels-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let two_hosts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/seed/two-hosts.yaml");
    let manifest = dir.join("labelled.yaml");
    std::fs::write(
        &manifest,
        std::fs::read_to_string(two_hosts).unwrap() + NODE_DOCUMENTS,
    )
    .unwrap();
    let mut up = Up::start(
        &dir,
        &manifest,
        &["--namespace", "labels", "--without-controller-manager"],
    );
    up.wait_up();
    let output = up.output();
    let kubeconfig = output
        .split("(kubeconfig: ")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .unwrap_or_else(|| panic!("no kubeconfig in the output:\n{output}"))
        .to_string();
    let got = Command::new(kwire_sandbox::control_plane::kubectl_path())
        .args(["--kubeconfig", &kubeconfig, "get", "nodes", "-o", "json"])
        .output()
        .unwrap();
    assert!(got.status.success(), "{got:?}");
    let nodes: serde_json::Value = serde_json::from_slice(&got.stdout).unwrap();
    let labels: Vec<(String, serde_json::Value)> = nodes["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["metadata"]["name"].as_str().unwrap().to_string(),
                n["metadata"]["labels"].clone(),
            )
        })
        .collect();
    assert_eq!(
        labels,
        [
            (
                "vm01".to_string(),
                serde_json::json!({"kwire.dev/mesh": "overlay", "kwire.dev/sandbox": "true", "topology.kubernetes.io/zone": "east"})
            ),
            (
                "vm02".to_string(),
                serde_json::json!({"kwire.dev/sandbox": "true"})
            ),
            (
                "vm03".to_string(),
                serde_json::json!({"kwire.dev/mesh": "overlay", "kwire.dev/sandbox": "true"})
            ),
        ],
        "{output}"
    );
    assert_eq!(up.interrupt(), Some(0), "{}", up.output());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The Meshes of examples/mesh that run on the sandbox's one LAN, with their node lists,
/// as a user brings them up: the List of Nodes makes and labels the nodes, and the check
/// waits for the Mesh to be Ready and pings every member from every other over each family
/// both have: through the hubs in the hub and spoke, through the gateways between zones.
/// (two-locations.yaml puts its gateways on ExternalIPs, which the sandbox has none of.)
#[test]
fn the_mesh_examples_are_checked_by_pinging_every_member_from_every_other() {
    if let Err(why) = can_run_network_tests() {
        println!("SKIPPED: {why}");
        return;
    }
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/mesh");
    // (example, Mesh, pings: members × (members − 1) × families, a ping it must list)
    for (example, mesh, expected, one) in [
        (
            "full-mesh",
            "overlay",
            12,
            "C → A (fd00:60::1, Mesh overlay): ok",
        ),
        (
            "hub-and-spoke",
            "branches",
            20,
            "SHOP-1 → SHOP-3 (10.61.0.5, Mesh branches): ok",
        ),
        (
            "zones",
            "zones",
            60,
            "EAST-2 → WEST-3 (fd00:63::6, Mesh zones): ok",
        ),
    ] {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("sandbox-up-{example}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let nodes = examples
            .join(format!("{example}.nodes.yaml"))
            .display()
            .to_string();
        let mut up = Up::start(
            &dir,
            &examples.join(format!("{example}.yaml")),
            &[
                "-f",
                &nodes,
                "--namespace",
                "mesh",
                "--check",
                "--without-controller-manager",
            ],
        );
        let (status, _) = wait_for(
            "kwire sandbox up --check to exit",
            Duration::from_secs(300),
            || Ok(up.child.try_wait()?),
        )
        .unwrap();
        let output = up.output();
        assert_eq!(status.code(), Some(0), "{example}: {output}");
        let pings: Vec<&str> = output
            .lines()
            .filter(|l| l.contains(&format!(", Mesh {mesh}): ")))
            .collect();
        assert_eq!(pings.len(), expected, "{example}: {output}");
        assert!(
            pings.iter().all(|l| l.ends_with(": ok")),
            "{example}: {output}"
        );
        assert!(pings.contains(&one), "{example}: {output}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
