//! `kwire sandbox up` as a user runs it, without `--check` (issue 16 item 15): when a check
//! fails the sandbox stays up for inspection, the command says what failed, and Ctrl-C
//! tears it down and exits non-zero.
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
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "sandbox-up-stays-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let manifest = dir.join("never-ready.yaml");
    std::fs::write(&manifest, NEVER_READY).unwrap();
    let log = dir.join("up.log");
    let file = std::fs::File::create(&log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_kwire"))
        .args(["sandbox", "up", "-f"])
        .arg(&manifest)
        .args([
            "--namespace",
            "stays-up",
            "--timeout",
            "3s",
            "--without-controller-manager",
        ])
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .expect("kwire sandbox up starts");
    let mut up = Up { child, log };

    // It says what failed, and that it stays up.
    let exited = std::cell::Cell::new(None);
    let waited = wait_for(
        "kwire sandbox up to say it stays up",
        Duration::from_secs(300),
        || {
            if let Some(status) = up.child.try_wait()? {
                exited.set(Some(status));
                return Ok(Some(()));
            }
            Ok(up.output().contains(" is up (kubeconfig: ").then_some(()))
        },
    );
    let output = up.output();
    assert!(
        waited.is_ok() && exited.get().is_none(),
        "kwire sandbox up did not stay up ({:?}):\n{output}",
        exited.get()
    );
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
    Command::new("kill")
        .args(["-INT", &up.child.id().to_string()])
        .status()
        .unwrap();
    let (status, _) = wait_for("kwire sandbox up to exit", Duration::from_secs(120), || {
        Ok(up.child.try_wait()?)
    })
    .unwrap();
    let output = up.output();
    assert_eq!(status.code(), Some(1), "{output}");
    assert!(output.contains("tearing down"), "{output}");
    assert!(up.record().is_none(), "the record is left:\n{output}");
    let netns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&netns.stdout).contains(node_netns[0].as_str()),
        "namespace {} is left",
        node_netns[0]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
