//! Fixtures for the real-kernel tests: named network namespaces with RAII
//! cleanup, veth pairs, `kwire-node` processes, polling helpers.
//!
//! Each test names its namespaces and devices after the test process's PID
//! and a per-test tag, so tests can run in parallel and never meet anything
//! on the host. wireguard-go's UAPI sockets live in the host-wide
//! `/var/run/wireguard`; unique device names keep them apart.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

pub const BIN: &str = env!("CARGO_BIN_EXE_kwire-node");

/// `Some(reason)` when this machine cannot run the real-kernel tests.
pub fn missing_prerequisite() -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some("not running as root".into());
    }
    for tool in ["ip", "wg", "wireguard-go", "ping"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Some(format!("{tool} is not installed"));
        }
    }
    None
}

/// Returns early from a test, with a message, when prerequisites are missing.
#[macro_export]
macro_rules! require_prerequisites {
    () => {
        if let Some(reason) = common::missing_prerequisite() {
            let thread = std::thread::current();
            // The README's test command (and CI) sets KWIRE_REQUIRE_E2E=1: there a test
            // that cannot run fails rather than passing with nothing tested.
            assert!(
                std::env::var("KWIRE_REQUIRE_E2E").map_or(true, |v| v != "1"),
                "KWIRE_REQUIRE_E2E=1 and {} cannot run here: {reason}",
                thread.name().unwrap_or(module_path!())
            );
            eprintln!(
                "SKIPPED {}: {reason}",
                thread.name().unwrap_or(module_path!())
            );
            return;
        }
    };
}

/// A short unique prefix for this test process.
pub fn unique(tag: &str) -> String {
    format!("kw{}{tag}", std::process::id() % 100_000)
}

/// Runs a command, panics with its stderr if it fails, returns stdout.
pub fn run(cmd: &[&str]) -> String {
    let out = Command::new(cmd[0])
        .args(&cmd[1..])
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command and reports whether it succeeded.
pub fn try_run(cmd: &[&str]) -> bool {
    Command::new(cmd[0])
        .args(&cmd[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A named network namespace, deleted with everything in it on drop (even
/// when the test panics): processes inside get SIGTERM, then SIGKILL.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Self {
        let name = format!("kwt-{}-{tag}", std::process::id());
        let _ = try_run(&["ip", "netns", "del", &name]);
        run(&["ip", "netns", "add", &name]);
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n <ns> args…`
    pub fn ip(&self, args: &[&str]) -> String {
        let mut cmd = vec!["ip", "-n", &self.name];
        cmd.extend_from_slice(args);
        run(&cmd)
    }

    /// `ip netns exec <ns> args…`
    pub fn exec(&self, args: &[&str]) -> String {
        let mut cmd = vec!["ip", "netns", "exec", &self.name];
        cmd.extend_from_slice(args);
        run(&cmd)
    }

    pub fn try_exec(&self, args: &[&str]) -> bool {
        let mut cmd = vec!["ip", "netns", "exec", &self.name];
        cmd.extend_from_slice(args);
        try_run(&cmd)
    }

    /// PIDs of the processes in this namespace, with their command names.
    pub fn processes(&self) -> Vec<(i32, String)> {
        let out = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        out.split_whitespace()
            .filter_map(|p| p.parse().ok())
            .map(|pid: i32| {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                (pid, comm.trim().to_owned())
            })
            .collect()
    }

    pub fn wireguard_go_pids(&self) -> Vec<i32> {
        self.processes()
            .into_iter()
            .filter(|(_, c)| c == "wireguard-go")
            .map(|(p, _)| p)
            .collect()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for (pid, _) in self.processes() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while !self.processes().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        for (pid, _) in self.processes() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let _ = try_run(&["ip", "netns", "del", &self.name]);
    }
}

/// A veth pair `eth0`↔`eth0` between two namespaces, with IPv4 addresses.
pub fn veth(a: &Netns, a_addr: &str, b: &Netns, b_addr: &str) {
    a.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &b.name,
    ]);
    for (ns, addr) in [(a, a_addr), (b, b_addr)] {
        ns.ip(&["addr", "add", addr, "dev", "eth0"]);
        ns.ip(&["link", "set", "eth0", "up"]);
    }
}

/// A fresh (private, public) key pair, base64.
pub fn keypair() -> (String, String) {
    let private =
        kwire_crds::keys::PrivateKey::generate().expect("the system random number generator");
    let public = private.public_key();
    (private.to_base64().to_string(), public.to_base64())
}

/// Polls `check` every 100 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A running `kwire-node --desired-file` inside a namespace. Killed on drop;
/// its log is printed when the test is failing.
pub struct Daemon {
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    pub fn start(ns: &Netns, dir: &Path, desired: &Path, extra: &[&str]) -> Self {
        let log = dir.join(format!("kwire-node-{}.log", ns.name));
        let state = dir.join(format!("state-{}.json", ns.name));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, BIN, "--backend", "userspace"])
            .arg("--desired-file")
            .arg(desired)
            .arg("--state-file")
            .arg(&state)
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("starting kwire-node");
        Self {
            child: Some(child),
            log,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits up to `timeout` for the daemon to exit by itself; its exit status.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let child = self.child.as_mut().expect("a running daemon");
        let mut status = None;
        wait_until(timeout, "kwire-node to exit", || {
            status = child.try_wait().expect("waiting for kwire-node");
            status.is_some()
        });
        self.child = None;
        status.expect("an exit status")
    }

    /// SIGTERM, then wait for the exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            let status = child.wait().unwrap();
            assert!(status.success(), "kwire-node exited with {status}");
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- kwire-node log {} ----\n{}",
                self.log.display(),
                self.log()
            );
        }
    }
}

/// `kwire-node --once --report-json` in a namespace; the parsed report.
pub fn reconcile_once(ns: &Netns, dir: &Path, desired: &Path) -> serde_json::Value {
    let state = dir.join(format!("state-{}.json", ns.name));
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            BIN,
            "--backend",
            "userspace",
            "--once",
            "--report-json",
        ])
        .arg("--desired-file")
        .arg(desired)
        .arg("--state-file")
        .arg(&state)
        .output()
        .expect("running kwire-node --once");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "kwire-node --once failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("report {last:?}: {e}"))
}
