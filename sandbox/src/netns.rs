//! Network-namespace "nodes" for end-to-end tests.
//!
//! Each [`Netns`] is a named network namespace with loopback up. Processes started with
//! [`Netns::spawn`] run inside it, each in a private mount namespace with its own tmpfs on
//! `/run/wireguard`, because wireguard-go keeps its control sockets there and that folder is
//! otherwise shared by every namespace of the host (the seed has `wg0-server` on two nodes).
//!
//! Cleanup is by RAII: dropping a [`Netns`] kills every process inside it (including the
//! wireguard-go processes a daemon started, which outlive the daemon by design), waits for
//! them, and deletes the namespace, also when the test panics.

use std::net::IpAddr;
use std::path::Path;
use std::process::{Child, Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, IoContext as _, Result, run};
use crate::process::spawn_logged;

/// Whether this process may create namespaces and devices. Tests print why they skip
/// otherwise, except where `KWIRE_REQUIRE_E2E=1` (the README's test command and CI set it):
/// there a missing prerequisite panics, so that a run without root or tools is red, not
/// green with no end-to-end coverage.
pub fn can_run_network_tests() -> Result<(), String> {
    let required = std::env::var("KWIRE_REQUIRE_E2E").is_ok_and(|v| v == "1");
    match skip_or_fail(network_test_prerequisites(), required) {
        Ok(verdict) => verdict,
        Err(e) => panic!("{e}"),
    }
}

/// What a test does with its prerequisites' verdict: `Ok(verdict)` to run or skip on it,
/// `Err` (the message to fail with) when it may not skip because end-to-end tests are
/// required.
fn skip_or_fail(verdict: Result<(), String>, required: bool) -> Result<Result<(), String>, String> {
    match verdict {
        Err(why) if required => Err(format!(
            "KWIRE_REQUIRE_E2E=1 and an end-to-end test cannot run here: {why}"
        )),
        verdict => Ok(verdict),
    }
}

#[cfg(test)]
mod require_tests {
    use super::skip_or_fail;

    #[test]
    fn a_missing_prerequisite_skips_unless_end_to_end_tests_are_required() {
        let missing = || Err("network namespace tests need root".to_string());
        assert_eq!(skip_or_fail(missing(), false), Ok(missing()));
        assert_eq!(
            skip_or_fail(missing(), true),
            Err("KWIRE_REQUIRE_E2E=1 and an end-to-end test cannot run here: network namespace tests need root".to_string())
        );
        assert_eq!(skip_or_fail(Ok(()), true), Ok(Ok(())));
    }
}

fn network_test_prerequisites() -> Result<(), String> {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map_err(|e| format!("cannot run id: {e}"))?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Err("network namespace tests need root".into());
    }
    for tool in ["ip", "wireguard-go", "wg", "unshare", "ping"] {
        let found = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .output();
        if !found.is_ok_and(|o| o.status.success()) {
            return Err(format!(
                "{tool} is not installed (bash scripts/install-deps.sh installs it)"
            ));
        }
    }
    Ok(())
}

/// `<prefix><pid>x<n>`: unique among the names this process makes, short enough (≤ 15 bytes
/// with a short prefix) for a link name, and carrying the pid so that what a process made
/// can be told from what others made.
pub fn unique_name(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}{}x{}",
        std::process::id() % 100_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A network namespace acting as one node.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `kw<label><pid>x<n>` with loopback up.
    pub fn new(label: &str) -> Result<Self> {
        Self::with_name(unique_name(&format!("kw{label}")))
    }

    /// Creates the namespace `name` with loopback up. For a caller that records the name
    /// before the namespace exists (see [`crate::record`]); [`unique_name`] makes one.
    pub fn with_name(name: String) -> Result<Self> {
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Self { name };
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs a command inside the namespace and returns its output; fails on a non-zero exit.
    pub fn exec(&self, argv: &[&str]) -> Result<Output> {
        run(Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(argv))
    }

    /// Runs a command inside the namespace; returns the output whatever the exit status.
    pub fn try_exec(&self, argv: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(argv)
            .output()
            .unwrap_or_else(|e| panic!("ip netns exec {}: {e}", self.name))
    }

    /// Starts a long-running process in the namespace, in a private mount namespace with a
    /// fresh `/run/wireguard`. Its output goes to `log`.
    pub fn spawn(
        &self,
        program: &Path,
        args: &[String],
        env: &[(&str, String)],
        log: &Path,
    ) -> Result<Child> {
        // A fresh log for every run of the process.
        std::fs::File::create(log).io(|| format!("creating {}", log.display()))?;
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &self.name,
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
        ])
        .arg("mkdir -p /run/wireguard && mount -t tmpfs kwire-wg /run/wireguard && exec \"$@\"")
        .arg("kwire-node-sh")
        .arg(program)
        .args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        spawn_logged(
            &mut cmd,
            log,
            &format!("{} in {}", program.display(), self.name),
        )
    }

    /// `ping` from this namespace; true when every one of `count` replies came back.
    pub fn ping(&self, to: IpAddr, count: u32, timeout: Duration) -> bool {
        let out = self.try_exec(&[
            "ping",
            "-n",
            "-q",
            "-c",
            &count.to_string(),
            "-i",
            "0.2",
            "-W",
            &timeout.as_secs().max(1).to_string(),
            &to.to_string(),
        ]);
        out.status.success()
    }

    /// Pings until one reply comes back or `deadline` passes; returns how long it took.
    pub fn wait_for_ping(&self, to: IpAddr, deadline: Duration) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < deadline {
            if self.ping(to, 1, Duration::from_secs(1)) {
                return Some(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        None
    }

    /// PIDs of every process in the namespace.
    pub fn pids(&self) -> Vec<u32> {
        pids_in(&self.name)
    }

    fn kill_all(&self) {
        crate::process::kill_until_gone(100, || self.pids());
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.kill_all();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// An underlay LAN: a bridge in a namespace of its own, which node namespaces attach to
/// with a veth pair each (like the seed's VMs on one host network).
#[derive(Debug)]
pub struct Lan {
    switch: Netns,
}

impl Lan {
    pub fn new() -> Result<Self> {
        Self::in_namespace(Netns::new("sw")?)
    }

    /// A LAN whose bridge lives in `switch`, a namespace the caller made (and named).
    pub fn in_namespace(switch: Netns) -> Result<Self> {
        switch.exec(&["ip", "link", "add", "br0", "type", "bridge"])?;
        switch.exec(&["ip", "link", "set", "br0", "up"])?;
        Ok(Self { switch })
    }

    /// The namespace that holds the bridge.
    pub fn switch(&self) -> &Netns {
        &self.switch
    }

    /// The names [`Lan::attach`] gives a new veth pair: the bridge's port, the node's end.
    pub fn veth_names() -> (String, String) {
        (unique_name("p"), unique_name("e"))
    }

    /// Plugs `node` into the LAN with `address/prefix_len` on its end, named `eth0`.
    pub fn attach(&self, node: &Netns, address: IpAddr, prefix_len: u8) -> Result<()> {
        let (port, end) = Self::veth_names();
        self.attach_named(node, address, prefix_len, &port, &end)
    }

    /// [`Lan::attach`] with the veth pair's names chosen by the caller (who may record them
    /// first): `port` on the bridge, `end` in `node` until it is renamed `eth0`.
    pub fn attach_named(
        &self,
        node: &Netns,
        address: IpAddr,
        prefix_len: u8,
        port: &str,
        end: &str,
    ) -> Result<()> {
        run(Command::new("ip").args([
            "link",
            "add",
            port,
            "netns",
            self.switch.name(),
            "type",
            "veth",
            "peer",
            "name",
            end,
            "netns",
            node.name(),
        ]))?;
        self.switch
            .exec(&["ip", "link", "set", port, "master", "br0"])?;
        self.switch.exec(&["ip", "link", "set", port, "up"])?;
        node.exec(&["ip", "link", "set", end, "name", "eth0"])?;
        node.exec(&[
            "ip",
            "addr",
            "add",
            &format!("{address}/{prefix_len}"),
            "dev",
            "eth0",
        ])?;
        node.exec(&["ip", "link", "set", "eth0", "up"])?;
        Ok(())
    }
}

// Helpers for the node daemon's end-to-end tests (tests/tests/node_e2e.rs).
impl Netns {
    /// PIDs of the processes in the namespace whose command name (`/proc/PID/comm`) is `comm`.
    pub fn pids_named(&self, comm: &str) -> Vec<u32> {
        self.pids()
            .into_iter()
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|c| c.trim_end() == comm)
            })
            .collect()
    }

    /// `GET http://127.0.0.1:<port><path>` from inside the namespace (with curl): the
    /// status code and the body. A connection failure is an error.
    pub fn http_get(&self, port: u16, path: &str) -> Result<(u16, String)> {
        let url = format!("http://127.0.0.1:{port}{path}");
        let out = self.try_exec(&[
            "curl",
            "-sS",
            "--max-time",
            "5",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            &url,
        ]);
        if !out.status.success() {
            return Err(Error::Failed {
                command: format!("curl {url} in {}", self.name),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
        let code = code
            .trim()
            .parse()
            .map_err(|_| Error::Unexpected(format!("status code {code:?} from {url}")))?;
        Ok((code, body.to_string()))
    }
}

/// PIDs of every process in network namespace `name` (none if it does not exist).
pub fn pids_in(name: &str) -> Vec<u32> {
    Command::new("ip")
        .args(["netns", "pids", name])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}
