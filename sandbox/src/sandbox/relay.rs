//! The API relay: the node namespaces reach the API server, which listens on the host's
//! loopback only, through a pair of `socat` relays joined by a Unix socket in the run folder
//! (see the [module docs](super)). Cutting it is how tests make the API unreachable.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use super::{NodeKind, Sandbox, SandboxNode, lan};
use crate::error::{Error, Result};
use crate::kubelet;
use crate::process::{exited, spawn_logged, wait_until};

impl Sandbox {
    /// The relays into every node namespace: at the API server's `127.0.0.1:<port>` and,
    /// on kubelet nodes, at [`kubelet::API_VIP`] for pods (with a route to the Service
    /// range, as a node's default route gives).
    pub(super) fn start_api_relays(&mut self) -> Result<()> {
        self.begin("API relay into the node namespaces")?;
        self.start_relay()?;
        let kubelets = self.node_kind == NodeKind::Kubelet;
        for node in self.nodes.values() {
            let pid = start_inner_relay(node, &self.run_dir, self.api_port, Ipv4Addr::LOCALHOST)?;
            self.ledger.process(
                pid,
                "socat (API relay in the node)",
                Some(node.netns.name()),
            )?;
            if kubelets {
                node.netns.exec(&[
                    "ip",
                    "address",
                    "add",
                    &format!("{}/32", kubelet::API_VIP),
                    "dev",
                    "lo",
                ])?;
                // A route to the Service range, as a node's default route gives: without
                // one, a hostNetwork pod's connection to the `kubernetes` Service fails
                // before kube-proxy's DNAT (in OUTPUT) can redirect it to API_VIP.
                let routes =
                    node.netns
                        .exec(&["ip", "-o", "-4", "route", "show", &lan().to_string()])?;
                let routes = String::from_utf8_lossy(&routes.stdout);
                let device = routes
                    .split_whitespace()
                    .skip_while(|w| *w != "dev")
                    .nth(1)
                    .ok_or_else(|| {
                        Error::Unexpected(format!(
                            "no LAN route in {}: {routes}",
                            node.netns.name()
                        ))
                    })?;
                node.netns
                    .exec(&["ip", "route", "add", kubelet::SERVICE_CIDR, "dev", device])?;
                let pid = start_inner_relay(node, &self.run_dir, self.api_port, kubelet::API_VIP)?;
                self.ledger.process(
                    pid,
                    "socat (API relay for pods in the node)",
                    Some(node.netns.name()),
                )?;
            }
        }
        self.steps.done();
        Ok(())
    }

    /// The host side of the relay: the run folder's socket to the API server's port.
    fn start_relay(&mut self) -> Result<()> {
        let socket = self.run_dir.join("api.sock");
        let _ = std::fs::remove_file(&socket);
        let log = self.run_dir.join("api-relay.log");
        let relay = spawn_logged(
            Command::new("socat")
                .arg(format!("UNIX-LISTEN:{},fork,reuseaddr", socket.display()))
                .arg(format!("TCP:127.0.0.1:{}", self.api_port)),
            &log,
            "socat, the API relay (apt-get install socat)",
        )?;
        let pid = relay.id();
        self.relay = Some(relay);
        self.ledger.process(pid, "socat (API relay)", None)?;
        let relay = &mut self.relay;
        wait_until(
            &format!("socat to create {}", socket.display()),
            Duration::from_secs(5),
            || relay.as_mut().and_then(|c| exited(c, &log)),
            || Ok(socket.exists().then_some(())),
        )
    }

    /// Cuts every node off the API server (the daemons keep running).
    pub fn disconnect_api(&mut self) {
        if let Some(mut relay) = self.relay.take() {
            let _ = relay.kill();
            let _ = relay.wait();
        }
    }

    /// Joins the nodes to the API server again.
    pub fn reconnect_api(&mut self) -> Result<()> {
        self.start_relay()
    }

    /// Like [`Sandbox::disconnect_api`], and also ends the connections already relayed:
    /// socat serves each connection in a forked child, which outlives the listener, so
    /// without this the daemons' open watch connections would go on working.
    pub fn disconnect_api_and_connections(&mut self) {
        let Some(listener) = self.relay.as_ref().map(Child::id) else {
            return;
        };
        // Stopped, the listener forks no new child while its children are collected.
        let _ = Command::new("kill")
            .args(["-STOP", &listener.to_string()])
            .status();
        let children = child_pids(listener);
        self.disconnect_api();
        for pid in children {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
}

/// The PIDs whose parent is `parent`.
fn child_pids(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_string_lossy().parse::<u32>().ok()?;
            // /proc/PID/stat: "pid (comm) state ppid …"; comm may contain spaces.
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            let ppid = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse::<u32>()
                .ok()?;
            (ppid == parent).then_some(pid)
        })
        .collect()
}

/// Starts the relay from the API server's port inside `node`'s namespace to the run
/// folder's socket. Runs inside the namespace and is killed with it; returns its pid.
fn start_inner_relay(node: &SandboxNode, run_dir: &Path, port: u16, bind: Ipv4Addr) -> Result<u32> {
    let child = spawn_logged(
        Command::new("ip")
            .args(["netns", "exec", node.netns.name(), "socat"])
            .arg(format!("TCP-LISTEN:{port},bind={bind},fork,reuseaddr"))
            .arg(format!(
                "UNIX-CONNECT:{}",
                run_dir.join("api.sock").display()
            )),
        &run_dir.join(format!("api-relay-{}.log", node.netns.name())),
        "socat in a node namespace",
    )?;
    Ok(child.id())
}
