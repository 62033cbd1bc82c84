//! `kwire-node wireguard-host` and the daemon's `--wireguard-host-dir`, for real:
//! the host keeps wireguard-go processes for request files, the daemon asks for
//! devices through it, and a restarted daemon adopts them without a write while
//! the processes stay the same.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A running `kwire-node wireguard-host` in a namespace; killed on drop.
struct Host {
    child: Option<Child>,
    log: std::path::PathBuf,
}

impl Host {
    fn start(ns: &Netns, dir: &Path, program: &str) -> Self {
        let log = dir.join("host.log");
        let requests = dir.join("requests");
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, BIN, "wireguard-host", "--dir"])
            .arg(&requests)
            .args(["--wireguard-go", program])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting the wireguard host");
        Self {
            child: Some(child),
            log,
        }
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// SIGTERM; the exit status must be a success.
    fn stop(&mut self) {
        let mut child = self.child.take().unwrap();
        kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
        let status = child.wait().unwrap();
        assert!(status.success(), "wireguard host exited with {status}");
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- wireguard host log ----\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}

fn parent(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let (_, rest) = stat.rsplit_once(") ").unwrap();
    rest.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The host's children, with a stand-in for wireguard-go that writes its PID
/// to `<dir>/<dev>.pid` and sleeps: started per request, restarted when they
/// die, stopped when the request goes, left running when the host stops.
#[test]
fn the_host_keeps_one_process_per_request() {
    require_prerequisites!();
    let dir = tempfile::tempdir().unwrap();
    let ns = Netns::new("wh");
    let fake = dir.path().join("fake-wireguard-go");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\necho $$ > {}/$2.pid.tmp && mv {}/$2.pid.tmp {}/$2.pid\nexec sleep 600\n",
            dir.path().display(),
            dir.path().display(),
            dir.path().display()
        ),
    )
    .unwrap();
    run(&["chmod", "+x", fake.to_str().unwrap()]);
    let mut host = Host::start(&ns, dir.path(), fake.to_str().unwrap());
    let requests = dir.path().join("requests");
    wait_until(Duration::from_secs(10), "the request folder", || {
        requests.is_dir()
    });
    let pid_of = |dev: &str| -> Option<i32> {
        std::fs::read_to_string(dir.path().join(format!("{dev}.pid")))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    };

    // A request starts a process; a temporary file does not.
    std::fs::write(requests.join("wga.want"), "").unwrap();
    std::fs::write(requests.join("wgb.want.tmp"), "").unwrap();
    wait_until(Duration::from_secs(10), "wga started", || {
        pid_of("wga").is_some_and(alive)
    });
    let first = pid_of("wga").unwrap();
    assert_eq!(parent(first), host.pid(), "not the host's child");
    assert_eq!(pid_of("wgb"), None);

    // A process that dies is restarted.
    kill(Pid::from_raw(first), Signal::SIGKILL).unwrap();
    wait_until(Duration::from_secs(10), "wga restarted", || {
        pid_of("wga").is_some_and(|p| p != first && alive(p))
    });
    let second = pid_of("wga").unwrap();

    // The request deleted: the process is stopped (SIGTERM ends `sleep`).
    std::fs::remove_file(requests.join("wga.want")).unwrap();
    wait_until(Duration::from_secs(10), "wga stopped", || !alive(second));

    // Stopping the host leaves its processes running.
    std::fs::write(requests.join("wgc.want"), "").unwrap();
    wait_until(Duration::from_secs(10), "wgc started", || {
        pid_of("wgc").is_some_and(alive)
    });
    let kept = pid_of("wgc").unwrap();
    host.stop();
    assert!(alive(kept), "the host's SIGTERM ended its child");
    // Netns's drop ends it.
}

/// The daemon with `--wireguard-host-dir`: the device's wireguard-go is the
/// host's child, a restarted daemon adopts the device with no write and the
/// same process, and a device no longer desired goes with its process.
#[test]
fn a_daemon_with_a_wireguard_host_creates_adopts_and_deletes_through_it() {
    require_prerequisites!();
    let dir = tempfile::tempdir().unwrap();
    let ns = Netns::new("wd");
    let dev = unique("wd");
    let (sk, _) = keypair();
    let key_file = dir.path().join("wd.key");
    std::fs::write(&key_file, sk).unwrap();
    let desired = dir.path().join("desired.yaml");
    std::fs::write(
        &desired,
        format!(
            "devices:\n  {dev}:\n    owner: default/{dev}\n    privateKeyFile: {}\n    listenPort: 51890\n    addresses: [10.74.0.1/24]\n",
            key_file.display()
        ),
    )
    .unwrap();
    let host = Host::start(&ns, dir.path(), "wireguard-go");
    let requests = dir.path().join("requests");
    let requests_arg = requests.to_str().unwrap().to_owned();
    let extra = ["--wireguard-host-dir", requests_arg.as_str()];

    let mut daemon = Daemon::start(&ns, dir.path(), &desired, &extra);
    wait_until(Duration::from_secs(30), "the device up", || {
        ns.try_exec(&["ip", "addr", "show", "dev", &dev])
            && ns
                .ip(&["addr", "show", "dev", &dev])
                .contains("10.74.0.1/24")
    });
    assert!(requests.join(format!("{dev}.want")).exists());
    let pids = ns.wireguard_go_pids();
    assert_eq!(pids.len(), 1, "{pids:?}");
    assert_eq!(
        parent(pids[0]),
        host.pid(),
        "wireguard-go is not the host's"
    );
    daemon.stop();

    // A new daemon adopts it: nothing planned, nothing written, the same process.
    let state = dir.path().join(format!("state-{}.json", ns.name));
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name, BIN, "--backend", "userspace"])
        .args(["--once", "--report-json", "--desired-file"])
        .arg(&desired)
        .arg("--state-file")
        .arg(&state)
        .args(extra)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let report: serde_json::Value = serde_json::from_str(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or_default(),
    )
    .unwrap();
    assert_eq!(report["steps"], serde_json::json!([]), "{report}");
    assert_eq!(report["writes"], 0, "{report}");
    assert_eq!(ns.wireguard_go_pids(), pids, "wireguard-go was restarted");

    // No device desired: the request goes, and the process and the link with it.
    let mut daemon = Daemon::start(&ns, dir.path(), &desired, &extra);
    std::fs::write(&desired, "devices: {}\n").unwrap();
    wait_until(Duration::from_secs(30), "the device gone", || {
        !ns.try_exec(&["ip", "link", "show", "dev", &dev])
    });
    assert!(!requests.join(format!("{dev}.want")).exists());
    wait_until(Duration::from_secs(10), "wireguard-go gone", || {
        ns.wireguard_go_pids().is_empty()
    });
    daemon.stop();
    drop(host);
}
