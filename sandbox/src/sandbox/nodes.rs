//! The nodes: one network namespace per node on the LAN, then either process nodes (one
//! `kwire-node` process per namespace under the chart's ServiceAccount) or kubelet nodes
//! (the chart's DaemonSet on a kubelet per node, see [`crate::kubelet`]).

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;

use super::cluster::{kubectl_ok, kubectl_stdin, register_node};
use super::layout::Layout;
use super::{NodeKind, SYSTEM_NAMESPACE, Sandbox, Steps, check_interrupted, workspace_binary};
use crate::error::{Error, IoContext as _, Result, run};
use crate::kubelet::{self, KubeletNode, NodeSpec};
use crate::netns::{Lan, Netns, unique_name};
use crate::process::spawn_logged;
use crate::record::Ledger;

/// One node: its namespace, underlay address and daemon: a process (process nodes) or the
/// chart's pod on the node's kubelet (kubelet nodes).
pub struct SandboxNode {
    pub netns: Netns,
    pub address: IpAddr,
    pub daemon: Option<Child>,
    pub log: PathBuf,
    /// containerd, the kubelet and kube-proxy of a kubelet node.
    pub kubelet: Option<KubeletNode>,
    /// What a DaemonSet would keep of a process node's daemon, to restart it.
    supervision: Supervision,
}

/// How a process node's daemon was started and how it has fared, for
/// [`Sandbox::supervise_daemons`].
#[derive(Debug, Default)]
struct Supervision {
    /// The daemon's program and kubeconfig, once started.
    started_with: Option<(PathBuf, PathBuf)>,
    /// When it was last started.
    started_at: Option<Instant>,
    /// Restarts after exits so far (reset once it has run for [`BACKOFF_RESET`]).
    restarts: u32,
    /// When the daemon found dead is to be started again.
    restart_at: Option<Instant>,
}

/// How long a daemon must run before its next exit counts as the first again (the kubelet's
/// rule for a container's restart backoff).
const BACKOFF_RESET: Duration = Duration::from_secs(600);

/// How long to wait before restart number `restarts + 1` of a daemon that exited, as the
/// kubelet backs off restarting a container: at once the first time, then 10 s, doubling up
/// to 5 minutes.
pub fn restart_delay(restarts: u32) -> Duration {
    match restarts {
        0 => Duration::ZERO,
        n => Duration::from_secs(10u64.saturating_mul(1 << (n - 1).min(5)))
            .min(Duration::from_secs(300)),
    }
}

/// What [`Sandbox::supervise_daemons`] saw and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DaemonEvent {
    /// The daemon of `node` exited (killed, crashed): `status`, the last lines of its log.
    Exited {
        node: String,
        status: String,
        log: PathBuf,
        tail: String,
        restart_in: Duration,
    },
    /// It was started again: restart number `restarts`, process `pid`.
    Restarted {
        node: String,
        restarts: u32,
        pid: u32,
    },
    /// Starting it again failed; tried again after `retry_in`.
    RestartFailed {
        node: String,
        error: String,
        retry_in: Duration,
    },
}

impl std::fmt::Display for DaemonEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Exited {
                node,
                status,
                log,
                tail,
                restart_in,
            } => {
                let when = if restart_in.is_zero() {
                    "now".to_string()
                } else {
                    format!("in {}s", restart_in.as_secs())
                };
                write!(
                    f,
                    "the node daemon of {node} exited ({status}); restarting it {when}, as its DaemonSet would. Last lines of {}:",
                    log.display()
                )?;
                for line in tail.lines() {
                    write!(f, "\n  {line}")?;
                }
                Ok(())
            }
            Self::Restarted {
                node,
                restarts,
                pid,
            } => write!(
                f,
                "the node daemon of {node} restarted (restart {restarts}, pid {pid})"
            ),
            Self::RestartFailed {
                node,
                error,
                retry_in,
            } => write!(
                f,
                "the node daemon of {node} could not be restarted: {error}; trying again in {}s",
                retry_in.as_secs()
            ),
        }
    }
}

impl SandboxNode {
    /// `wg show` as the node's daemon sees it (its private `/run/wireguard`; on a kubelet
    /// node, the node's, which the daemon's pod mounts).
    pub fn wg_show(&self) -> Result<String> {
        let pid = match (&self.kubelet, &self.daemon) {
            (Some(k), _) => k
                .containerd_pid()
                .ok_or_else(|| Error::State("the node's containerd is not running".into()))?,
            (None, Some(d)) => d.id(),
            (None, None) => return Err(Error::State("the daemon is not running".into())),
        };
        let out = run(Command::new("nsenter").args([
            "-t",
            &pid.to_string(),
            "-m",
            "-n",
            "wg",
            "show",
            "all",
            "dump",
        ]))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// What the nodes run: the workspace's binaries (process nodes) or the chart's images
/// (kubelet nodes).
pub(super) struct Programs {
    pub operator: PathBuf,
    pub node: PathBuf,
    pub images: kubelet::Images,
}

impl Programs {
    /// Finds them (a step of its own: they must have been built).
    pub fn find(steps: &mut Steps, node_kind: NodeKind) -> Result<Self> {
        check_interrupted()?;
        let programs = match node_kind {
            NodeKind::Kubelet => {
                steps.start("images (kwire/operator, kwire/node, pause)");
                Self {
                    operator: PathBuf::new(),
                    node: PathBuf::new(),
                    images: kubelet::image_archives()?,
                }
            }
            NodeKind::Process => {
                steps.start("binaries (kwire-operator, kwire-node)");
                Self {
                    operator: workspace_binary("kwire-operator")?,
                    node: workspace_binary("kwire-node")?,
                    images: kubelet::Images::default(),
                }
            }
        };
        steps.done();
        Ok(programs)
    }
}

impl Sandbox {
    /// A namespace for every node on the LAN (`shared`, or the sandbox's own), with a Node
    /// object for each on process nodes (a kubelet registers its own), and the far side of
    /// every external Peer.
    pub(super) fn make_namespaces(&mut self, layout: &Layout, shared: Option<&Lan>) -> Result<()> {
        let externals = if layout.far_sides.is_empty() {
            String::new()
        } else {
            format!(" (+{} external)", layout.far_sides.len())
        };
        self.begin(&format!(
            "{} node namespaces{externals} on the shared LAN{}",
            layout.nodes.len(),
            if self.node_kind == NodeKind::Kubelet {
                ""
            } else {
                ", Node objects"
            }
        ))?;
        let lan = shared
            .or(self._lan.as_ref())
            .expect("a sandbox without a shared LAN has its own");
        for (address, name) in &layout.nodes {
            let label: String = name
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .take(3)
                .collect();
            let netns = Self::make_netns(&self.ledger, &label)?;
            let address = IpAddr::V4(*address);
            Self::attach(&self.ledger, lan, &netns, address)?;
            if self.node_kind == NodeKind::Process {
                // A kubelet node registers itself.
                let labels = layout.node_labels.get(name).cloned().unwrap_or_default();
                register_node(&self.cp, name, address, &labels)?;
            }
            let log = self.run_dir.join(format!("node-{name}.log"));
            self.nodes.insert(
                name.clone(),
                SandboxNode {
                    netns,
                    address,
                    daemon: None,
                    log,
                    kubelet: None,
                    supervision: Supervision::default(),
                },
            );
        }
        for side in &layout.far_sides {
            let external = Self::start_far_side(&self.ledger, &self.run_dir, lan, side.clone())?;
            self.externals.insert(external.side.peer.clone(), external);
        }
        self.steps.done();
        Ok(())
    }

    /// A namespace named `kw<label><pid>x<n>`, recorded before it is made.
    pub(super) fn make_netns(ledger: &Ledger, label: &str) -> Result<Netns> {
        let name = unique_name(&format!("kw{label}"));
        ledger.netns(&name)?;
        let netns = Netns::with_name(name.clone())?;
        ledger.netns_made(&name)?;
        Ok(netns)
    }

    /// Plugs `netns` into `lan` at `address`, recording the veth pair first.
    pub(super) fn attach(ledger: &Ledger, lan: &Lan, netns: &Netns, address: IpAddr) -> Result<()> {
        let (port, end) = Lan::veth_names();
        ledger.link(&port, Some(lan.switch().name()))?;
        ledger.link(&end, Some(netns.name()))?;
        lan.attach_named(netns, address, 24, &port, &end)
    }

    /// Process nodes: `kwire-node` (`node_bin`) in each namespace under the chart's
    /// ServiceAccount.
    pub(super) async fn start_node_daemons(&mut self, node_bin: &Path) -> Result<()> {
        self.begin("kwire-node in each namespace under its ServiceAccount")?;
        let kubeconfig = self
            .cp
            .service_account_kubeconfig(SYSTEM_NAMESPACE, "kwire-node")
            .await?;
        let names: Vec<String> = self.nodes.keys().cloned().collect();
        for name in &names {
            self.start_daemon(name, node_bin, &kubeconfig)?;
        }
        self.steps.done();
        Ok(())
    }

    /// The daemon's arguments: its node name, its state and keys in the run folder.
    fn daemon_args(&self, name: &str) -> Result<Vec<String>> {
        Self::daemon_args_in(&self.run_dir, name)
    }

    fn daemon_args_in(run_dir: &Path, name: &str) -> Result<Vec<String>> {
        let state = run_dir.join(format!("state-{name}"));
        std::fs::create_dir_all(&state).io(|| format!("creating {}", state.display()))?;
        Ok(vec![
            "--node-name".into(),
            name.into(),
            "--state-file".into(),
            state.join("node-state.json").display().to_string(),
            "--key-dir".into(),
            state.join("keys").display().to_string(),
            "--metrics-addr".into(),
            "127.0.0.1:9090".into(),
            "--resync-period".into(),
            "10s".into(),
        ])
    }

    /// Starts (or restarts) the daemon of `name`.
    pub fn start_daemon(&mut self, name: &str, node_bin: &Path, kubeconfig: &Path) -> Result<()> {
        let node = self
            .nodes
            .get_mut(name)
            .ok_or_else(|| Error::State(format!("no node {name}")))?;
        let args = Self::daemon_args_in(&self.run_dir, name)?;
        let child = node.netns.spawn(
            node_bin,
            &args,
            &[
                ("KUBECONFIG", kubeconfig.display().to_string()),
                ("RUST_LOG", "info".into()),
            ],
            &node.log,
        )?;
        let pid = child.id();
        node.daemon = Some(child);
        node.supervision.started_with = Some((node_bin.to_path_buf(), kubeconfig.to_path_buf()));
        node.supervision.started_at = Some(Instant::now());
        let netns = node.netns.name().to_string();
        self.ledger
            .process(pid, &format!("kwire-node of {name}"), Some(&netns))?;
        Ok(())
    }

    /// Looks after the process nodes' daemons as a DaemonSet's kubelet would: reports each
    /// daemon found dead, and starts it again after the kubelet's backoff
    /// ([`restart_delay`]) in the mount namespace of its node's surviving wireguard-go
    /// processes, which it adopts, like a restarted pod that mounts the host's
    /// `/run/wireguard`. Call it every second or so while the sandbox is up. Daemons stopped
    /// with [`Sandbox::kill_daemon`] are left alone; kubelet nodes have their own kubelet.
    pub fn supervise_daemons(&mut self) -> Vec<DaemonEvent> {
        let names: Vec<String> = self.nodes.keys().cloned().collect();
        let mut events = Vec::new();
        for name in names {
            let now = Instant::now();
            let node = self.nodes.get_mut(&name).expect("listed above");
            if let Some(status) = node
                .daemon
                .as_mut()
                .and_then(|child| child.try_wait().ok().flatten())
            {
                node.daemon = None;
                let supervision = &mut node.supervision;
                if supervision
                    .started_at
                    .is_some_and(|at| now.duration_since(at) >= BACKOFF_RESET)
                {
                    supervision.restarts = 0;
                }
                let restart_in = restart_delay(supervision.restarts);
                supervision.restart_at = Some(now + restart_in);
                events.push(DaemonEvent::Exited {
                    node: name.clone(),
                    status: status.to_string(),
                    log: node.log.clone(),
                    tail: crate::process::tail(&node.log, 10),
                    restart_in,
                });
            }
            let node = self.nodes.get_mut(&name).expect("listed above");
            let due =
                node.daemon.is_none() && node.supervision.restart_at.is_some_and(|at| at <= now);
            if !due {
                continue;
            }
            node.supervision.restart_at = None;
            node.supervision.restarts += 1;
            let restarts = node.supervision.restarts;
            match self.restart_daemon(&name) {
                Ok(pid) => events.push(DaemonEvent::Restarted {
                    node: name,
                    restarts,
                    pid,
                }),
                Err(e) => {
                    let retry_in = restart_delay(restarts);
                    let node = self.nodes.get_mut(&name).expect("listed above");
                    node.supervision.restart_at = Some(Instant::now() + retry_in);
                    events.push(DaemonEvent::RestartFailed {
                        node: name,
                        error: e.to_string(),
                        retry_in,
                    });
                }
            }
        }
        events
    }

    /// Starts the dead daemon of `name` again as it was started; returns its pid.
    fn restart_daemon(&mut self, name: &str) -> Result<u32> {
        let node = self
            .nodes
            .get(name)
            .ok_or_else(|| Error::State(format!("no node {name}")))?;
        let (node_bin, kubeconfig) = node
            .supervision
            .started_with
            .clone()
            .ok_or_else(|| Error::State(format!("the daemon of {name} was never started")))?;
        if node.netns.pids_named("wireguard-go").is_empty() {
            // Nothing to adopt: a fresh /run/wireguard, as at the first start.
            self.start_daemon(name, &node_bin, &kubeconfig)?;
        } else {
            let mut argv = vec![node_bin.into_os_string()];
            argv.extend(self.daemon_args(name)?.into_iter().map(Into::into));
            let mut env: Vec<(std::ffi::OsString, std::ffi::OsString)> = std::env::vars_os()
                .filter(|(k, _)| k != "KUBECONFIG" && k != "RUST_LOG")
                .collect();
            env.push(("KUBECONFIG".into(), kubeconfig.into_os_string()));
            env.push(("RUST_LOG".into(), "info".into()));
            self.respawn_daemon(name, &DaemonCommand { argv, env })?;
            let node = self.nodes.get_mut(name).expect("found above");
            node.supervision.started_at = Some(Instant::now());
        }
        let node = self.nodes.get(name).expect("found above");
        node.daemon
            .as_ref()
            .map(Child::id)
            .ok_or_else(|| Error::State(format!("the daemon of {name} did not start")))
    }

    /// Kills a node's daemon the hard way (the data plane stays, as after a crash).
    pub fn kill_daemon(&mut self, name: &str) -> Result<()> {
        let node = self
            .nodes
            .get_mut(name)
            .ok_or_else(|| Error::State(format!("no node {name}")))?;
        node.supervision.restart_at = None;
        if let Some(mut child) = node.daemon.take() {
            child
                .kill()
                .io(|| format!("killing the daemon of {name}"))?;
            child
                .wait()
                .io(|| format!("waiting for the daemon of {name}"))?;
        }
        Ok(())
    }

    /// Makes every node a kubelet node, waits for the Nodes to be Ready, points the
    /// `kubernetes` Service at the nodes' API relay, and waits for the chart's operator
    /// Deployment and node DaemonSet to be rolled out (their real probes passing).
    pub(super) fn start_kubelet_nodes(&mut self, images: &kubelet::Images) -> Result<()> {
        let names: Vec<String> = self.nodes.keys().cloned().collect();
        self.begin(&format!(
            "kubelet nodes {} (containerd, kubelet, kube-proxy), images imported",
            names.join(", ")
        ))?;
        for (i, name) in names.iter().enumerate() {
            let node = self.nodes.get(name).expect("listed above");
            let IpAddr::V4(address) = node.address else {
                return Err(Error::Unexpected(format!(
                    "node {name} has no IPv4 address"
                )));
            };
            let octet = u8::try_from(i + 1)
                .map_err(|_| Error::Topology("more than 254 kubelet nodes".into()))?;
            let spec = NodeSpec {
                name: name.clone(),
                netns: node.netns.name().to_string(),
                address,
                pod_cidr: Ipv4Net::new(Ipv4Addr::new(10, 244, octet, 0), 24)
                    .expect("a /24 is a valid prefix"),
                dir: self.run_dir.join(format!("k{i}")),
                cgroup: format!("kwire-{}-{name}", self.ledger.id()),
                api_port: self.api_port,
                pause_image: images.pause.clone(),
            };
            self.ledger.cgroups(&KubeletNode::cgroup_dirs(&spec)?)?;
            let netns = spec.netns.clone();
            let ledger = &self.ledger;
            let started = KubeletNode::start(spec, &self.cp, &images.archives, |pid, what| {
                ledger.process(pid, &format!("{what} of node {name}"), Some(&netns))
            })?;
            self.nodes.get_mut(name).expect("listed above").kubelet = Some(started);
        }
        // `kubectl wait` gives up at once on a Node not registered yet.
        let cp = &self.cp;
        crate::process::wait_until(
            "every kubelet to register its Node",
            Duration::from_secs(60),
            || None,
            || {
                let out = run(cp.kubectl().args(["get", "nodes", "-o", "name"]))?;
                let listed = String::from_utf8_lossy(&out.stdout).into_owned();
                Ok(names
                    .iter()
                    .all(|n| listed.lines().any(|l| l == format!("node/{n}")))
                    .then_some(()))
            },
        )
        .map_err(|e| self.with_node_logs(e))?;
        let nodes: Vec<String> = names.iter().map(|n| format!("node/{n}")).collect();
        let mut args = vec!["wait", "--for=condition=Ready", "--timeout=120s"];
        args.extend(nodes.iter().map(String::as_str));
        kubectl_ok(&self.cp, &args).map_err(|e| self.with_node_logs(e))?;
        // The `kubernetes` Service's endpoint: the API relay every node has at API_VIP
        // (the API server's own reconciler is off; it would advertise 127.0.0.1).
        kubectl_stdin(
            &self.cp,
            &["apply", "--server-side", "-f", "-"],
            &kubelet::kubernetes_endpoint_slice(self.api_port),
        )?;
        self.steps.done();

        self.begin("kwire-operator Deployment and kwire-node DaemonSet rolled out")?;
        for workload in ["deployment/kwire-operator", "daemonset/kwire-node"] {
            kubectl_ok(
                &self.cp,
                &[
                    "rollout",
                    "status",
                    "-n",
                    SYSTEM_NAMESPACE,
                    workload,
                    "--timeout=180s",
                ],
            )
            .map_err(|e| self.with_node_logs(e))?;
        }
        self.steps.done();
        Ok(())
    }

    /// `e` with the last lines of the kubelet nodes' logs and pods' logs appended.
    fn with_node_logs(&self, e: Error) -> Error {
        Error::State(format!("{e}\n{}", self.logs_tail(20)))
    }
}

/// How a node daemon was started: enough to start it again the same way.
#[derive(Debug, Clone)]
pub struct DaemonCommand {
    pub argv: Vec<std::ffi::OsString>,
    pub env: Vec<(std::ffi::OsString, std::ffi::OsString)>,
}

// Added for the node daemon's end-to-end tests (tests/tests/node_e2e.rs).
impl Sandbox {
    /// The command line and environment of the running daemon of `name` (from /proc).
    pub fn daemon_command(&self, name: &str) -> Result<DaemonCommand> {
        use std::os::unix::ffi::OsStrExt as _;
        let node = self
            .nodes
            .get(name)
            .ok_or_else(|| Error::State(format!("no node {name}")))?;
        let pid = node
            .daemon
            .as_ref()
            .ok_or_else(|| Error::State(format!("the daemon of {name} is not running")))?
            .id();
        let split = |bytes: Vec<u8>| -> Vec<std::ffi::OsString> {
            bytes
                .split(|b| *b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| std::ffi::OsStr::from_bytes(s).to_os_string())
                .collect()
        };
        let read = |what: &str| {
            let path = format!("/proc/{pid}/{what}");
            std::fs::read(&path).io(|| format!("reading {path}"))
        };
        let argv = split(read("cmdline")?);
        if argv.is_empty() {
            return Err(Error::Unexpected(format!("no command line for PID {pid}")));
        }
        let env = split(read("environ")?)
            .into_iter()
            .filter_map(|kv| {
                let bytes = kv.as_bytes();
                let eq = bytes.iter().position(|b| *b == b'=')?;
                Some((
                    std::ffi::OsStr::from_bytes(&bytes[..eq]).to_os_string(),
                    std::ffi::OsStr::from_bytes(&bytes[eq + 1..]).to_os_string(),
                ))
            })
            .collect();
        Ok(DaemonCommand { argv, env })
    }

    /// Starts the daemon of `name` again with `command` (see [`Sandbox::daemon_command`]),
    /// e.g. after [`Sandbox::kill_daemon`], like a restarted DaemonSet pod that mounts the
    /// host's `/run/wireguard`: it runs in the mount namespace of the node's surviving
    /// wireguard-go processes, so it finds their UAPI sockets and can adopt their devices.
    /// ([`Sandbox::start_daemon`] gives every run a fresh, empty `/run/wireguard`.) The log
    /// is appended to.
    pub fn respawn_daemon(&mut self, name: &str, command: &DaemonCommand) -> Result<()> {
        let node = self
            .nodes
            .get_mut(name)
            .ok_or_else(|| Error::State(format!("no node {name}")))?;
        if node.daemon.is_some() {
            return Err(Error::State(format!(
                "the daemon of {name} is still running"
            )));
        }
        let Some(holder) = node.netns.pids_named("wireguard-go").into_iter().next() else {
            // No wireguard-go left to adopt: a private, empty /run/wireguard as at start.
            return Err(Error::State(format!(
                "no wireguard-go runs on node {name}: use start_daemon"
            )));
        };
        let child = spawn_logged(
            Command::new("nsenter")
                .arg(format!("--mount=/proc/{holder}/ns/mnt"))
                .arg(format!("--net=/var/run/netns/{}", node.netns.name()))
                .arg("--")
                .args(&command.argv)
                .env_clear()
                .envs(command.env.iter().map(|(k, v)| (k, v))),
            &node.log,
            &format!("the daemon of {name} with nsenter"),
        )?;
        let pid = child.id();
        node.daemon = Some(child);
        let netns = node.netns.name().to_string();
        self.ledger
            .process(pid, &format!("kwire-node of {name}"), Some(&netns))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_back_off_as_the_kubelets_do() {
        let secs: Vec<u64> = (0..9).map(|n| restart_delay(n).as_secs()).collect();
        assert_eq!(secs, [0, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(restart_delay(u32::MAX), Duration::from_secs(300));
    }

    #[test]
    fn a_dead_daemon_is_reported_with_its_log_and_when_it_restarts() {
        let exited = DaemonEvent::Exited {
            node: "b".into(),
            status: "signal: 9 (SIGKILL)".into(),
            log: PathBuf::from("/tmp/node-b.log"),
            tail: "line 1\nline 2".into(),
            restart_in: Duration::ZERO,
        };
        assert_eq!(
            exited.to_string(),
            "the node daemon of b exited (signal: 9 (SIGKILL)); restarting it now, as its DaemonSet would. \
             Last lines of /tmp/node-b.log:\n  line 1\n  line 2"
        );
        let failed = DaemonEvent::RestartFailed {
            node: "b".into(),
            error: "no node b".into(),
            retry_in: Duration::from_secs(20),
        };
        assert_eq!(
            failed.to_string(),
            "the node daemon of b could not be restarted: no node b; trying again in 20s"
        );
        let restarted = DaemonEvent::Restarted {
            node: "b".into(),
            restarts: 1,
            pid: 42,
        };
        assert_eq!(
            restarted.to_string(),
            "the node daemon of b restarted (restart 1, pid 42)"
        );
    }
}
