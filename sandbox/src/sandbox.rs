//! A whole kwire installation on this one machine: the local control plane, the chart
//! installed with real helm, one network namespace per node on a shared LAN, the operator
//! and one `kwire-node` per namespace running under the chart's ServiceAccounts, and the
//! given manifests applied with server-side apply.
//!
//! The node daemons run inside their namespaces, where `127.0.0.1` is the namespace's own
//! loopback, while the API server listens on the host's loopback only. A pair of `socat`
//! relays joins the two through a Unix socket in the run folder (Unix sockets do not belong
//! to a network namespace): the daemons see the API server at the same `127.0.0.1:<port>`
//! the certificates name. Stopping the host-side relay cuts every node off the API server,
//! which is how tests simulate an unreachable API.
//!
//! An external Peer (remote = public key + endpoint) gets a namespace of its own on the LAN
//! playing the machine at the other end, configured with plain `wireguard-go`, `wg` and `ip`
//! (see [`crate::external`]).
//!
//! Dropping a [`Sandbox`] removes everything it made: processes, namespaces, the control
//! plane and the run folder. Everything it makes is also written, as it is made, into its
//! crash record ([`crate::record`]), so that `kwire sandbox down` can remove it all when
//! the process dies without dropping it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ipnet::{IpNet, Ipv4Net};
use kwire_crds::manifest::{KwireObject, parse_manifests};
use serde_json::Value;

use crate::control_plane::ControlPlane;
use crate::error::{Error, IoContext as _, Result, describe, failed, run};
use crate::external::{self, FarSide, FarSidePeer, PresharedKeySource};
use crate::kubelet::{self, KubeletNode, NodeSpec};
use crate::netns::{Lan, Netns, unique_name};
use crate::record::{Ledger, Record};
use crate::teardown;

/// The namespace the chart is installed into.
pub const SYSTEM_NAMESPACE: &str = "kwire-system";

/// How a sandbox's nodes run kwire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NodeKind {
    /// `kwire-operator` and one `kwire-node` per node as plain processes under the chart's
    /// ServiceAccount tokens (fast; the default).
    #[default]
    Process,
    /// Every node a kubelet node: the chart's operator Deployment and node DaemonSet run as
    /// pods from the images `scripts/build-images.sh` builds (see [`crate::kubelet`]).
    Kubelet,
}

/// The underlay LAN the nodes (and the far sides of external Peers) are on, like the seed's
/// VMs on one host network.
pub fn lan() -> Ipv4Net {
    Ipv4Net::new(Ipv4Addr::new(10, 211, 55, 0), 24).expect("a /24 is a valid prefix")
}

/// How long the far side of an external Peer waits for the operator to publish what it
/// needs (the Interface's public key and addresses, the pre-shared key's Secret).
const FAR_SIDE_WAIT: Duration = Duration::from_secs(120);

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Asks every sandbox of this process to stop what it is waiting for (Ctrl-C): the step
/// under way ends with [`Error::Interrupted`], and dropping the sandbox tears it down.
pub fn interrupt() {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Whether [`interrupt`] was called.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

pub(crate) fn check_interrupted() -> Result<()> {
    if interrupted() {
        return Err(Error::Interrupted);
    }
    Ok(())
}

/// Where cargo put the workspace's binaries: `$CARGO_TARGET_DIR/debug`, next to the running
/// program (`kwire sandbox up` finds the binaries built with it), or this workspace's
/// `target/debug`.
pub fn workspace_binary(name: &str) -> Result<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"));
    let preferred = target.join("debug").join(name);
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join(name)));
    let candidates = std::env::var_os("CARGO_TARGET_DIR")
        .map(|_| preferred.clone())
        .into_iter()
        .chain(beside)
        .chain([preferred.clone()]);
    for path in candidates {
        if path.is_file() {
            return Ok(path);
        }
    }
    Err(Error::Missing(format!(
        "{} is missing: run `cargo build --workspace --bins` first",
        preferred.display()
    )))
}

/// The repository this crate was built in (the chart and the control plane's scripts are
/// read from there).
fn repo() -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    repo.canonicalize().unwrap_or(repo)
}

/// One node: its namespace, underlay address and daemon: a process (process nodes) or the
/// chart's pod on the node's kubelet (kubelet nodes).
pub struct SandboxNode {
    pub netns: Netns,
    pub address: IpAddr,
    pub daemon: Option<Child>,
    pub log: PathBuf,
    /// containerd, the kubelet and kube-proxy of a kubelet node.
    pub kubelet: Option<KubeletNode>,
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

/// The far side of an external Peer: a namespace on the LAN with a wireguard-go device
/// configured with `wg` and `ip` (see [`crate::external`]).
pub struct ExternalPeer {
    pub side: FarSide,
    pub netns: Netns,
    /// The wireguard-go device; its name is unique on this machine because wireguard-go
    /// keeps its UAPI socket in the host's `/var/run/wireguard`.
    pub device: String,
    pub log: PathBuf,
    wireguard_go: Option<Child>,
    socket: PathBuf,
}

impl ExternalPeer {
    /// `wg show <device> dump` on the far side.
    pub fn wg_show(&self) -> Result<String> {
        let out = self.netns.exec(&["wg", "show", &self.device, "dump"])?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for ExternalPeer {
    fn drop(&mut self) {
        if let Some(mut child) = self.wireguard_go.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Killed, wireguard-go leaves its socket behind. The namespace goes after this.
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Progress lines with the time each step took.
pub struct Steps {
    began: Instant,
    step: Instant,
    quiet: bool,
    pub timings: Vec<(String, Duration)>,
}

impl Steps {
    pub fn new(quiet: bool) -> Self {
        Self {
            began: Instant::now(),
            step: Instant::now(),
            quiet,
            timings: Vec::new(),
        }
    }

    pub fn start(&mut self, what: &str) {
        self.step = Instant::now();
        if !self.quiet {
            eprint!("  {what:<58}");
        }
        self.timings.push((what.to_string(), Duration::ZERO));
    }

    pub fn done(&mut self) {
        let took = self.step.elapsed();
        if let Some(last) = self.timings.last_mut() {
            last.1 = took;
        }
        if !self.quiet {
            eprintln!(" ok  {:>6.1}s", took.as_secs_f64());
        }
    }

    pub fn total(&self) -> Duration {
        self.began.elapsed()
    }
}

pub struct Sandbox {
    pub cp: ControlPlane,
    pub namespace: String,
    pub nodes: BTreeMap<String, SandboxNode>,
    /// The far sides of external Peers, by Peer name.
    pub externals: BTreeMap<String, ExternalPeer>,
    pub objects: Vec<KwireObject>,
    pub run_dir: PathBuf,
    pub steps: Steps,
    /// How the nodes run kwire.
    pub node_kind: NodeKind,
    operator: Option<Child>,
    relay: Option<Child>,
    api_port: u16,
    // Dropped after the node namespaces are gone. `None` when the sandbox's nodes are on a
    // LAN its caller owns.
    _lan: Option<Lan>,
    // Declared last, so dropped last: it removes whatever the record still lists, then the
    // record.
    ledger: Ledger,
}

impl Sandbox {
    /// Brings up everything for the manifests in `files`, applied into `namespace`, on a LAN
    /// of its own (node `i`, in name order, at `10.211.55.<10 + i>`).
    pub async fn up(files: &[PathBuf], namespace: &str, quiet: bool) -> Result<Self> {
        Self::up_with(files, namespace, quiet, None, true, NodeKind::Process).await
    }

    /// [`Sandbox::up`] with every node a kubelet node running the chart's pods from the
    /// images `scripts/build-images.sh` built (see [`crate::kubelet`]).
    pub async fn up_kubelet(files: &[PathBuf], namespace: &str, quiet: bool) -> Result<Self> {
        Self::up_with(files, namespace, quiet, None, true, NodeKind::Kubelet).await
    }

    /// [`Sandbox::up`] with a control plane of etcd and kube-apiserver only: no
    /// kube-controller-manager, so nothing garbage-collects the objects a deleted one owned
    /// and a deleted namespace stays `Terminating`. Enough to bring a topology up and
    /// verify it, and one Kubernetes binary fewer to build on a fresh machine.
    pub async fn up_without_controller_manager(
        files: &[PathBuf],
        namespace: &str,
        quiet: bool,
    ) -> Result<Self> {
        Self::up_with(files, namespace, quiet, None, false, NodeKind::Process).await
    }

    /// The crash record's identity, `<pid>-<n>` (also in the run folder's name).
    pub fn id(&self) -> String {
        self.ledger.id()
    }

    /// The crash record as it is now: everything the sandbox made.
    pub fn record(&self) -> Record {
        self.ledger.snapshot()
    }

    /// The crash record's file.
    pub fn record_path(&self) -> &Path {
        self.ledger.path()
    }

    fn start_relay(&mut self) -> Result<()> {
        let socket = self.run_dir.join("api.sock");
        let _ = std::fs::remove_file(&socket);
        let relay = Command::new("socat")
            .arg(format!("UNIX-LISTEN:{},fork,reuseaddr", socket.display()))
            .arg(format!("TCP:127.0.0.1:{}", self.api_port))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| Error::Spawn {
                what: "starting socat (apt-get install socat)".into(),
                source,
            })?;
        let pid = relay.id();
        self.relay = Some(relay);
        self.ledger.process(pid, "socat (API relay)", None)?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while !socket.exists() {
            if Instant::now() > deadline {
                return Err(Error::Timeout(format!(
                    "socat did not create {}",
                    socket.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
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

    /// Starts (or restarts) the daemon of `name`.
    pub fn start_daemon(&mut self, name: &str, node_bin: &Path, kubeconfig: &Path) -> Result<()> {
        let node = self
            .nodes
            .get_mut(name)
            .ok_or_else(|| Error::State(format!("no node {name}")))?;
        let state = self.run_dir.join(format!("state-{name}"));
        std::fs::create_dir_all(&state).io(|| format!("creating {}", state.display()))?;
        let args: Vec<String> = vec![
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
        ];
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
        let netns = node.netns.name().to_string();
        self.ledger
            .process(pid, &format!("kwire-node of {name}"), Some(&netns))?;
        Ok(())
    }

    /// Kills a node's daemon the hard way (the data plane stays, as after a crash).
    pub fn kill_daemon(&mut self, name: &str) -> Result<()> {
        let node = self
            .nodes
            .get_mut(name)
            .ok_or_else(|| Error::State(format!("no node {name}")))?;
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

    /// The kwire objects of the sandbox namespace as JSON (`kubectl get … -o json`).
    pub fn get(&self, kinds: &str) -> Result<Vec<Value>> {
        let list = self.kubectl_json(&["get", kinds, "-n", &self.namespace, "-o", "json"])?;
        Ok(list["items"].as_array().cloned().unwrap_or_default())
    }

    /// One object of the sandbox namespace as JSON, `None` when it does not exist.
    pub fn get_one(&self, kind: &str, name: &str) -> Result<Option<Value>> {
        let list = self.kubectl_json(&[
            "get",
            kind,
            "-n",
            &self.namespace,
            "--field-selector",
            &format!("metadata.name={name}"),
            "-o",
            "json",
        ])?;
        Ok(list["items"].as_array().and_then(|i| i.first()).cloned())
    }

    fn kubectl_json(&self, args: &[&str]) -> Result<Value> {
        let out = run(self.cp.kubectl().args(args))?;
        serde_json::from_slice(&out.stdout).map_err(|source| Error::Json {
            what: format!("the output of kubectl {}", args.join(" ")),
            source,
        })
    }

    /// Objects whose `type` condition is not `True`, as `Kind/name: reason: message`.
    pub fn not_true(&self, kinds: &str, condition: &str) -> Result<Vec<String>> {
        Ok(self
            .get(kinds)?
            .iter()
            .filter_map(|o| not_true_line(o, condition))
            .collect())
    }

    /// Waits until every Interface, Peer and Route is Ready and every Peer Connected (or,
    /// without a keepalive, waiting for the traffic that starts its handshake).
    pub fn wait_ready(&self, timeout: Duration) -> Result<Duration> {
        let start = Instant::now();
        loop {
            check_interrupted()?;
            let objects = self.get("interfaces,peers,routes")?;
            let mut pending: Vec<String> = objects
                .iter()
                .filter_map(|o| not_true_line(o, "Ready"))
                .collect();
            pending.extend(
                objects
                    .iter()
                    .filter(|o| o["kind"] == "Peer" && !waiting_for_traffic(o))
                    .filter_map(|o| not_true_line(o, "Connected")),
            );
            if pending.is_empty() {
                // The operator listens on its metrics port by now.
                self.record_ports()?;
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                return Err(Error::Timeout(format!(
                    "not ready after {}s:\n  {}\n{}",
                    timeout.as_secs(),
                    pending.join("\n  "),
                    self.logs_tail(15)
                )));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The last lines of every component's log, for failure messages.
    pub fn logs_tail(&self, lines: usize) -> String {
        let mut out = String::new();
        let mut logs: Vec<(String, PathBuf)> =
            vec![("operator".into(), self.run_dir.join("operator.log"))];
        logs.extend(
            self.nodes
                .iter()
                .map(|(n, node)| (format!("node {n}"), node.log.clone())),
        );
        logs.extend(
            self.externals
                .iter()
                .map(|(p, e)| (format!("far side of Peer {p}"), e.log.clone())),
        );
        for node in self.nodes.values() {
            if let Some(k) = &node.kubelet {
                logs.extend(k.container_logs());
            }
        }
        for (name, path) in logs {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(lines).collect();
            let _ = writeln!(out, "--- {name} ({})", path.display());
            for line in tail.iter().rev() {
                let _ = writeln!(out, "{line}");
            }
        }
        for node in self.nodes.values() {
            if let Some(k) = &node.kubelet {
                out.push_str(&k.logs_tail(lines));
            }
        }
        out
    }

    /// The pings a user of this topology expects to work: every Peer's remote address from
    /// the local node, every address inside a Route's destination from the Route's node,
    /// and for an external Peer, its far side to the Interface's addresses and back.
    pub fn expected_pings(&self) -> Result<Vec<Ping>> {
        let interfaces = self.get("interfaces")?;
        let node_of = |name: &str| {
            interfaces
                .iter()
                .find(|i| i["metadata"]["name"] == name)
                .and_then(|i| i["spec"]["nodeName"].as_str().map(str::to_owned))
        };
        let mut pings = Vec::new();
        for peer in self.get("peers")? {
            let (Some(local), Some(remote)) = (
                peer["spec"]["interface"].as_str(),
                peer["spec"]["remote"]["interface"].as_str(),
            ) else {
                continue;
            };
            let (Some(from), Some(remote_if)) = (
                node_of(local),
                interfaces.iter().find(|i| i["metadata"]["name"] == remote),
            ) else {
                continue;
            };
            for address in status_addresses(remote_if) {
                pings.push(Ping {
                    from: from.clone(),
                    to: address.addr(),
                    label: format!("{local} → {remote} ({})", address.addr()),
                });
            }
        }
        // The far side first: its traffic is what a roaming laptop would send.
        for ext in self.externals.values() {
            let side = &ext.side;
            let Some(local) = interfaces
                .iter()
                .find(|i| i["metadata"]["name"] == side.interface.as_str())
            else {
                continue;
            };
            for address in status_addresses(local) {
                pings.push(Ping {
                    from: external_origin(&side.peer),
                    to: address.addr(),
                    label: format!("{} → {} ({})", side.peer, side.interface, address.addr()),
                });
            }
            if let Some(from) = node_of(&side.interface) {
                pings.push(Ping {
                    from,
                    to: side.tunnel_address,
                    label: format!(
                        "{} → {} ({})",
                        side.interface, side.peer, side.tunnel_address
                    ),
                });
            }
        }
        for route in self.get("routes")? {
            let Some(destination) = route["spec"]["destination"]
                .as_str()
                .and_then(|d| d.parse::<IpNet>().ok())
            else {
                continue;
            };
            let Some(from) = route["spec"]["interface"].as_str().and_then(node_of) else {
                continue;
            };
            let route_name = route["metadata"]["name"].as_str().unwrap_or("?");
            for i in &interfaces {
                if i["spec"]["nodeName"].as_str() == Some(from.as_str()) {
                    continue;
                }
                for address in status_addresses(i) {
                    if destination.contains(&address.addr()) {
                        let to_node = i["spec"]["nodeName"].as_str().unwrap_or("?");
                        pings.push(Ping {
                            from: from.clone(),
                            to: address.addr(),
                            label: format!(
                                "{} → {} ({}, route {route_name})",
                                from.to_uppercase(),
                                to_node.to_uppercase(),
                                address.addr(),
                            ),
                        });
                    }
                }
            }
            // Far sides behind the route (through a relay that forwards to them).
            for ext in self.externals.values() {
                let side = &ext.side;
                if destination.contains(&side.tunnel_address)
                    && node_of(&side.interface).as_deref() != Some(from.as_str())
                {
                    pings.push(Ping {
                        from: from.clone(),
                        to: side.tunnel_address,
                        label: format!(
                            "{} → {} ({}, route {route_name})",
                            from.to_uppercase(),
                            side.peer.to_uppercase(),
                            side.tunnel_address,
                        ),
                    });
                }
            }
        }
        Ok(pings)
    }

    /// Runs the pings; returns each with whether it got replies.
    pub fn ping_all(&self, pings: &[Ping]) -> Vec<(Ping, bool)> {
        pings
            .iter()
            .map(|p| {
                let netns = match p.from.strip_prefix(EXTERNAL_ORIGIN) {
                    Some(peer) => self.externals.get(peer).map(|e| &e.netns),
                    None => self.nodes.get(&p.from).map(|n| &n.netns),
                };
                let ok = !interrupted()
                    && netns.is_some_and(|ns| {
                        ns.wait_for_ping(p.to, Duration::from_secs(10)).is_some()
                    });
                (p.clone(), ok)
            })
            .collect()
    }

    /// `kubectl get kwire -o wide` of the sandbox namespace.
    pub fn status_table(&self) -> String {
        let out = self
            .cp
            .kubectl()
            .args(["get", "kwire", "-n", &self.namespace, "-o", "wide"])
            .output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// Records the TCP ports the sandbox's host-side processes listen on.
    fn record_ports(&self) -> Result<()> {
        let pids: BTreeSet<u32> = self
            .ledger
            .snapshot()
            .processes
            .iter()
            .filter(|p| p.netns.is_none())
            .map(|p| p.id.pid)
            .collect();
        let ports: Vec<u16> = teardown::listening_tcp_ports()
            .into_iter()
            .filter(|(_, owners)| !owners.is_disjoint(&pids))
            .map(|(port, _)| port)
            .collect();
        self.ledger.ports(&ports)
    }
}

/// `Ping::from` of a far side: `peer/<name>` (node names cannot contain `/`).
const EXTERNAL_ORIGIN: &str = "peer/";

fn external_origin(peer: &str) -> String {
    format!("{EXTERNAL_ORIGIN}{peer}")
}

/// The addresses in an Interface's status.
fn status_addresses(interface: &Value) -> Vec<IpNet> {
    interface["status"]["addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str()?.parse().ok())
        .collect()
}

/// One expected ping through the overlay.
#[derive(Debug, Clone)]
pub struct Ping {
    /// A node, or `peer/<name>` for the far side of an external Peer.
    pub from: String,
    pub to: IpAddr,
    pub label: String,
}

/// `Kind/name: reason: message` when `object`'s `condition` is not `True`.
fn not_true_line(object: &Value, condition: &str) -> Option<String> {
    let kind = object["kind"].as_str()?;
    let name = object["metadata"]["name"].as_str()?;
    let found = object["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == condition));
    match found {
        Some(c) if c["status"] == "True" => None,
        Some(c) => Some(format!(
            "{kind}/{name}: {}: {}",
            c["reason"].as_str().unwrap_or(""),
            c["message"].as_str().unwrap_or("")
        )),
        None => Some(format!("{kind}/{name}: no {condition} condition yet")),
    }
}

/// Whether a Peer without `Connected` is only waiting for traffic: a link without keepalive
/// hand-shakes once traffic flows (it stays `Connecting`, then `Idle`), and the sandbox's
/// pings are that traffic.
fn waiting_for_traffic(peer: &Value) -> bool {
    let reason = peer["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Connected"))
        .and_then(|c| c["reason"].as_str());
    let keepalive = peer["spec"]["persistentKeepalive"].as_u64().unwrap_or(0);
    reason == Some("Idle") || (reason == Some("Connecting") && keepalive == 0)
}

fn kubectl_ok(cp: &ControlPlane, args: &[&str]) -> Result<()> {
    run(cp.kubectl().args(args))?;
    Ok(())
}

/// `kubectl <args>` with `input` on its standard input; returns its standard output.
fn kubectl_stdin(cp: &ControlPlane, args: &[&str], input: &str) -> Result<String> {
    let mut cmd = cp.kubectl();
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| Error::Spawn {
        what: format!("running {}", describe(&cmd)),
        source,
    })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .io(|| "writing to kubectl".into())?;
    }
    let out = child
        .wait_with_output()
        .io(|| format!("waiting for {}", describe(&cmd)))?;
    if !out.status.success() {
        return Err(failed(&cmd, &out));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn register_node(cp: &ControlPlane, name: &str, address: IpAddr) -> Result<()> {
    let manifest = format!(
        "{{\"apiVersion\":\"v1\",\"kind\":\"Node\",\"metadata\":{{\"name\":\"{name}\",\"labels\":{{\"kwire.dev/sandbox\":\"true\"}}}}}}"
    );
    kubectl_stdin(cp, &["apply", "--server-side", "-f", "-"], &manifest)?;
    let patch = format!(
        "{{\"status\":{{\"addresses\":[{{\"type\":\"InternalIP\",\"address\":\"{address}\"}},{{\"type\":\"Hostname\",\"address\":\"{name}\"}}]}}}}"
    );
    kubectl_ok(
        cp,
        &[
            "patch",
            "node",
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            &patch,
        ],
    )
}

/// Starts the relay from the API server's port inside `node`'s namespace to the run
/// folder's socket. Runs inside the namespace and is killed with it; returns its pid.
fn start_inner_relay(node: &SandboxNode, run_dir: &Path, port: u16, bind: Ipv4Addr) -> Result<u32> {
    let child = Command::new("ip")
        .args(["netns", "exec", node.netns.name(), "socat"])
        .arg(format!("TCP-LISTEN:{port},bind={bind},fork,reuseaddr"))
        .arg(format!(
            "UNIX-CONNECT:{}",
            run_dir.join("api.sock").display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|source| Error::Spawn {
            what: "starting socat in a node namespace".into(),
            source,
        })?;
    Ok(child.id())
}

/// `wg pubkey` of `private_key`.
fn public_key_of(private_key: &str) -> Result<String> {
    let mut cmd = Command::new("wg");
    cmd.arg("pubkey")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| Error::Spawn {
        what: "running wg pubkey (apt-get install wireguard-tools)".into(),
        source,
    })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(format!("{private_key}\n").as_bytes())
            .io(|| "writing to wg pubkey".into())?;
    }
    let out = child
        .wait_with_output()
        .io(|| "waiting for wg pubkey".into())?;
    // wg's message would not quote the key, but say nothing of it either way.
    if !out.status.success() {
        return Err(Error::Failed {
            command: "wg pubkey".into(),
            stderr: "not a WireGuard private key".into(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Writes `text` into a new file only root can read (keys).
fn write_secret_file(path: &Path, text: &str) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .io(|| format!("creating {}", path.display()))?;
    file.write_all(format!("{text}\n").as_bytes())
        .io(|| format!("writing {}", path.display()))?;
    Ok(())
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // Kubelet nodes first: their containers, containerd and cgroups.
        for node in self.nodes.values_mut() {
            if let Some(mut k) = node.kubelet.take() {
                k.stop();
            }
        }
        for node in self.nodes.values_mut() {
            if let Some(mut d) = node.daemon.take() {
                let _ = d.kill();
                let _ = d.wait();
            }
        }
        for child in [self.operator.take(), self.relay.take()]
            .into_iter()
            .flatten()
        {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
        // Namespaces (and the wireguard-go processes in them) go now; the control plane
        // when `cp` drops, the LAN after it, and last the record, whose sweep removes what
        // is left. Keep the run folder only when asked to.
        self.nodes.clear();
        self.externals.clear();
        if std::env::var_os("KWIRE_KEEP_RUN_DIR").is_some() {
            let _ = self.ledger.forget_folder(&self.run_dir);
        } else {
            let _ = std::fs::remove_dir_all(&self.run_dir);
        }
    }
}

// Several sandboxes on one LAN: one cluster each (multi-cluster tests).

impl Sandbox {
    /// Like [`Sandbox::up`], but the node namespaces are plugged into `lan`, a LAN the caller
    /// owns and may share with other sandboxes. Each sandbox is then one cluster (its own
    /// control plane, chart, operator and node daemons) and the nodes of all of them reach
    /// each other on the underlay, like the nodes of two clusters in one data centre.
    ///
    /// Node `i` of this sandbox (in name order) gets `10.211.55.<first_host + i>`: give each
    /// sandbox a range of its own. Declare the LAN before the sandboxes so that it is dropped
    /// after them; the sandbox's own LAN (which [`Sandbox::up`] uses) stays empty.
    pub async fn up_on_lan(
        files: &[PathBuf],
        namespace: &str,
        quiet: bool,
        lan: &Lan,
        first_host: u8,
    ) -> Result<Self> {
        Self::up_with(
            files,
            namespace,
            quiet,
            Some((lan, first_host)),
            true,
            NodeKind::Process,
        )
        .await
    }

    /// Starts a step, unless the sandbox was interrupted.
    fn begin(&mut self, what: &str) -> Result<()> {
        check_interrupted()?;
        self.steps.start(what);
        Ok(())
    }

    /// A namespace named `kw<label><pid>x<n>`, recorded before it is made.
    fn make_netns(ledger: &Ledger, label: &str) -> Result<Netns> {
        let name = unique_name(&format!("kw{label}"));
        ledger.netns(&name)?;
        let netns = Netns::with_name(name.clone())?;
        ledger.netns_made(&name)?;
        Ok(netns)
    }

    /// Plugs `netns` into `lan` at `address`, recording the veth pair first.
    fn attach(ledger: &Ledger, lan: &Lan, netns: &Netns, address: IpAddr) -> Result<()> {
        let (port, end) = Lan::veth_names();
        ledger.link(&port, Some(lan.switch().name()))?;
        ledger.link(&end, Some(netns.name()))?;
        lan.attach_named(netns, address, 24, &port, &end)
    }

    /// The one way up: on `shared` (a LAN and the first host number) or on a LAN of its own.
    async fn up_with(
        files: &[PathBuf],
        namespace: &str,
        quiet: bool,
        shared: Option<(&Lan, u8)>,
        controller_manager: bool,
        node_kind: NodeKind,
    ) -> Result<Self> {
        let first_host = shared.map_or(10, |(_, first)| first);
        let kubelets = node_kind == NodeKind::Kubelet;

        let mut steps = Steps::new(quiet);
        let mut text = String::new();
        for f in files {
            text.push_str(&std::fs::read_to_string(f).io(|| format!("reading {}", f.display()))?);
            text.push_str("\n---\n");
        }
        let objects = parse_manifests(&text)?;
        let mut node_names: Vec<String> = objects
            .iter()
            .filter_map(|o| match o {
                KwireObject::Interface(i) => Some(i.spec.node_name.to_string()),
                _ => None,
            })
            .collect();
        node_names.sort();
        node_names.dedup();
        if node_names.is_empty() {
            return Err(Error::Topology(
                "the manifests name no Interface, so no node".into(),
            ));
        }
        if first_host < 1 || usize::from(first_host) + node_names.len() > 255 {
            return Err(Error::Topology(format!(
                "10.211.55.{first_host} and the {} addresses after it are not all host addresses of {}",
                node_names.len() - 1,
                lan()
            )));
        }
        let node_addresses: Vec<(Ipv4Addr, String)> = node_names
            .iter()
            .zip(first_host..)
            .map(|(name, host)| (Ipv4Addr::new(10, 211, 55, host), name.clone()))
            .collect();
        // Checked before anything is made: a manifest the sandbox cannot play fails at once.
        let far_sides = external::far_sides(&objects, lan(), &node_addresses)?;
        for side in &far_sides {
            let derived = public_key_of(side.private_key()).map_err(|_| {
                Error::Topology(format!(
                    "Peer {}: annotation {} does not hold a WireGuard private key (make one with `wg genkey`)",
                    side.peer,
                    external::REMOTE_PRIVATE_KEY_ANNOTATION
                ))
            })?;
            if derived != side.public_key {
                return Err(Error::Topology(format!(
                    "Peer {}: the private key in annotation {} is not the one of spec.remote.publicKey {} (its public key is {derived}); \
                     set publicKey to `wg pubkey` of that private key",
                    side.peer,
                    external::REMOTE_PRIVATE_KEY_ANNOTATION,
                    side.public_key
                )));
            }
        }

        check_interrupted()?;
        let (operator_bin, node_bin, images) = if kubelets {
            steps.start("images (kwire/operator, kwire/node, pause)");
            let images = kubelet::image_archives()?;
            steps.done();
            (PathBuf::new(), PathBuf::new(), images)
        } else {
            steps.start("binaries (kwire-operator, kwire-node)");
            let binaries = (
                workspace_binary("kwire-operator")?,
                workspace_binary("kwire-node")?,
                kubelet::Images::default(),
            );
            steps.done();
            binaries
        };

        // The record comes first: everything below is written into it before or as it is
        // made. Its id is unique per sandbox: tests run several at once in one process.
        static SANDBOXES: AtomicU32 = AtomicU32::new(0);
        let id = format!(
            "{}-{}",
            std::process::id(),
            SANDBOXES.fetch_add(1, Ordering::Relaxed)
        );
        // On an error below, dropping the ledger removes what was made so far.
        let ledger = Ledger::create(&id, namespace, files)?;
        let own_lan = match shared {
            Some(_) => None,
            None => Some(Lan::in_namespace(Self::make_netns(&ledger, "sw")?)?),
        };
        let run_dir = std::env::temp_dir().join(format!("kwire-sandbox-{id}"));
        ledger.folder(&run_dir)?;
        std::fs::create_dir_all(&run_dir).io(|| format!("creating {}", run_dir.display()))?;
        let cp_dir = run_dir.with_extension("control-plane");
        ledger.folder(&cp_dir)?;

        check_interrupted()?;
        steps.start(if kubelets {
            "local control plane (etcd, kube-apiserver, controller-manager, scheduler)"
        } else if controller_manager {
            "local control plane (etcd, kube-apiserver, controller-manager)"
        } else {
            "local control plane (etcd, kube-apiserver)"
        });
        // The step line says it is up; tests (quiet) get the control plane's own line.
        let cp = if kubelets {
            ControlPlane::start_for_kubelets(cp_dir, quiet)?
        } else {
            ControlPlane::start_with(cp_dir, quiet, controller_manager)?
        };
        // From here on the sandbox exists, and dropping it (on any error) removes the run
        // folder, the processes, the namespaces and the control plane.
        let mut sandbox = Self {
            cp,
            namespace: namespace.to_string(),
            nodes: BTreeMap::new(),
            externals: BTreeMap::new(),
            objects,
            run_dir,
            steps,
            node_kind,
            operator: None,
            relay: None,
            api_port: 0,
            _lan: own_lan,
            ledger,
        };
        for (what, pid) in sandbox.cp.processes() {
            sandbox.ledger.process(pid, &what, None)?;
        }
        sandbox.ledger.kubeconfig(sandbox.cp.admin_kubeconfig())?;
        let api_port = sandbox.cp.api_port()?;
        sandbox.api_port = api_port;
        sandbox.steps.done();

        // The manifests' namespace exists first: the chart lets the node daemons read the key
        // Secrets of that namespace only (nodeSecretAccess, docs/security.md).
        let secret_access = [
            "--set".to_string(),
            "nodeSecretAccess.mode=namespaces".to_string(),
            "--set-json".to_string(),
            format!("nodeSecretAccess.namespaces=[{namespace:?}]"),
        ];
        if kubelets {
            sandbox.begin(&format!(
                "helm install kwire (images {})",
                images.tag_description()
            ))?;
            kubectl_ok(&sandbox.cp, &["create", "namespace", namespace])?;
            // The node DaemonSet needs Pod Security `privileged` (hostNetwork, hostPath,
            // NET_ADMIN); see docs/install.md.
            kubectl_ok(&sandbox.cp, &["create", "namespace", SYSTEM_NAMESPACE])?;
            kubectl_ok(
                &sandbox.cp,
                &[
                    "label",
                    "namespace",
                    SYSTEM_NAMESPACE,
                    "pod-security.kubernetes.io/enforce=privileged",
                ],
            )?;
            run(sandbox
                .cp
                .helm()
                .args([
                    "install",
                    "kwire",
                    &repo().join("charts/kwire").display().to_string(),
                    "--namespace",
                    SYSTEM_NAMESPACE,
                    "--set",
                    &format!("operator.image.repository={}", images.operator_repository),
                    "--set",
                    &format!("node.image.repository={}", images.node_repository),
                    "--set",
                    &format!("operator.image.tag={}", images.tag),
                    "--set",
                    &format!("node.image.tag={}", images.tag),
                    "--wait=false",
                ])
                .args(&secret_access))?;
        } else {
            sandbox.begin("helm install kwire (CRDs, RBAC, ServiceAccounts)")?;
            kubectl_ok(&sandbox.cp, &["create", "namespace", namespace])?;
            run(sandbox
                .cp
                .helm()
                .args([
                    "install",
                    "kwire",
                    &repo().join("charts/kwire").display().to_string(),
                    "--namespace",
                    SYSTEM_NAMESPACE,
                    "--create-namespace",
                    "--wait=false",
                ])
                .args(&secret_access))?;
        }
        kubectl_ok(
            &sandbox.cp,
            &[
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                "crd/interfaces.kwire.dev",
                "crd/peers.kwire.dev",
                "crd/routes.kwire.dev",
                "crd/networks.kwire.dev",
            ],
        )?;
        sandbox.steps.done();

        let externals = if far_sides.is_empty() {
            String::new()
        } else {
            format!(" (+{} external)", far_sides.len())
        };
        sandbox.begin(&format!(
            "{} node namespaces{externals} on the shared LAN{}",
            node_names.len(),
            if kubelets { "" } else { ", Node objects" }
        ))?;
        for (address, name) in &node_addresses {
            let label: String = name
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .take(3)
                .collect();
            let netns = Self::make_netns(&sandbox.ledger, &label)?;
            let address = IpAddr::V4(*address);
            let lan = match shared {
                Some((lan, _)) => lan,
                None => sandbox
                    ._lan
                    .as_ref()
                    .expect("a sandbox without a shared LAN has its own"),
            };
            Self::attach(&sandbox.ledger, lan, &netns, address)?;
            if !kubelets {
                // A kubelet node registers itself.
                register_node(&sandbox.cp, name, address)?;
            }
            let log = sandbox.run_dir.join(format!("node-{name}.log"));
            sandbox.nodes.insert(
                name.clone(),
                SandboxNode {
                    netns,
                    address,
                    daemon: None,
                    log,
                    kubelet: None,
                },
            );
        }
        for side in far_sides {
            let lan = match shared {
                Some((lan, _)) => lan,
                None => sandbox
                    ._lan
                    .as_ref()
                    .expect("a sandbox without a shared LAN has its own"),
            };
            let external = Self::start_far_side(&sandbox.ledger, &sandbox.run_dir, lan, side)?;
            sandbox
                .externals
                .insert(external.side.peer.clone(), external);
        }
        sandbox.steps.done();

        sandbox.begin("API relay into the node namespaces")?;
        sandbox.start_relay()?;
        for node in sandbox.nodes.values() {
            let pid = start_inner_relay(node, &sandbox.run_dir, api_port, Ipv4Addr::LOCALHOST)?;
            sandbox.ledger.process(
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
                let pid = start_inner_relay(node, &sandbox.run_dir, api_port, kubelet::API_VIP)?;
                sandbox.ledger.process(
                    pid,
                    "socat (API relay for pods in the node)",
                    Some(node.netns.name()),
                )?;
            }
        }
        sandbox.steps.done();

        if kubelets {
            sandbox.start_kubelet_nodes(&images)?;
            sandbox.begin("kubectl apply --server-side the manifests")?;
            for f in files {
                kubectl_ok(
                    &sandbox.cp,
                    &[
                        "apply",
                        "--server-side",
                        "-n",
                        namespace,
                        "-f",
                        &f.display().to_string(),
                    ],
                )?;
            }
            sandbox.steps.done();
            sandbox.configure_far_sides()?;
            sandbox.record_ports()?;
            return Ok(sandbox);
        }

        sandbox.begin("kwire-operator under its ServiceAccount")?;
        let operator_kubeconfig = sandbox
            .cp
            .service_account_kubeconfig(SYSTEM_NAMESPACE, "kwire-operator")
            .await?;
        let log_path = sandbox.run_dir.join("operator.log");
        let log =
            std::fs::File::create(&log_path).io(|| format!("creating {}", log_path.display()))?;
        let operator = spawn_operator(&operator_bin, &operator_kubeconfig, log, &log_path)?;
        let pid = operator.id();
        sandbox.operator = Some(operator);
        sandbox.ledger.process(pid, "kwire-operator", None)?;
        sandbox.steps.done();

        sandbox.begin("kwire-node in each namespace under its ServiceAccount")?;
        let node_kubeconfig = sandbox
            .cp
            .service_account_kubeconfig(SYSTEM_NAMESPACE, "kwire-node")
            .await?;
        for name in &node_names {
            sandbox.start_daemon(name, &node_bin, &node_kubeconfig)?;
        }
        sandbox.steps.done();

        sandbox.begin("kubectl apply --server-side the manifests")?;
        for f in files {
            kubectl_ok(
                &sandbox.cp,
                &[
                    "apply",
                    "--server-side",
                    "-n",
                    namespace,
                    "-f",
                    &f.display().to_string(),
                ],
            )?;
        }
        sandbox.steps.done();

        sandbox.configure_far_sides()?;
        sandbox.record_ports()?;
        Ok(sandbox)
    }

    /// Configures the far side of every external Peer, once the operator has published what
    /// it needs.
    fn configure_far_sides(&mut self) -> Result<()> {
        if self.externals.is_empty() {
            return Ok(());
        }
        let peers: Vec<String> = self.externals.keys().cloned().collect();
        self.begin(&format!(
            "far side of {} configured with wg",
            peers.join(", ")
        ))?;
        for peer in &peers {
            self.configure_far_side(peer)?;
        }
        self.steps.done();
        Ok(())
    }

    /// Makes every node a kubelet node, waits for the Nodes to be Ready, points the
    /// `kubernetes` Service at the nodes' API relay, and waits for the chart's operator
    /// Deployment and node DaemonSet to be rolled out (their real probes passing).
    fn start_kubelet_nodes(&mut self, images: &kubelet::Images) -> Result<()> {
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

    /// The far side of an external Peer, before its peer is known: its namespace on the
    /// LAN at the Peer's endpoint, and a wireguard-go device with its key, port and tunnel
    /// address.
    fn start_far_side(
        ledger: &Ledger,
        run_dir: &Path,
        lan: &Lan,
        side: FarSide,
    ) -> Result<ExternalPeer> {
        let netns = Self::make_netns(ledger, "x")?;
        Self::attach(ledger, lan, &netns, IpAddr::V4(side.lan_address))?;
        let device = unique_name("kx");
        let socket = Path::new("/var/run/wireguard").join(format!("{device}.sock"));
        ledger.link(&device, Some(netns.name()))?;
        ledger.socket(&socket)?;
        let log = run_dir.join(format!("external-{}.log", side.peer));
        let file = std::fs::File::create(&log).io(|| format!("creating {}", log.display()))?;
        // In the foreground, so that the child is wireguard-go itself (a pid to record and
        // kill). LOG_LEVEL is left out: it made configuration hang on this kind of machine.
        let child = Command::new("ip")
            .args(["netns", "exec", netns.name(), "wireguard-go", "-f", &device])
            .env_remove("LOG_LEVEL")
            .stdin(Stdio::null())
            .stdout(
                file.try_clone()
                    .io(|| format!("opening {}", log.display()))?,
            )
            .stderr(file)
            .spawn()
            .map_err(|source| Error::Spawn {
                what: "starting wireguard-go (apt-get install wireguard-go)".into(),
                source,
            })?;
        let pid = child.id();
        let mut external = ExternalPeer {
            side,
            netns,
            device,
            log,
            wireguard_go: Some(child),
            socket,
        };
        ledger.process(
            pid,
            &format!("wireguard-go (far side of Peer {})", external.side.peer),
            Some(external.netns.name()),
        )?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !external.socket.exists() {
            let exited = external
                .wireguard_go
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                return Err(Error::Failed {
                    command: format!("wireguard-go -f {}", external.device),
                    stderr: format!(
                        "{status}: {}",
                        std::fs::read_to_string(&external.log).unwrap_or_default()
                    ),
                });
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout(format!(
                    "wireguard-go did not create {}",
                    external.socket.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let key_file = run_dir.join(format!("external-{}.key", external.side.peer));
        write_secret_file(&key_file, external.side.private_key())?;
        for argv in external::device_commands(
            &external.device,
            external.side.listen_port,
            &key_file,
            external.side.tunnel_address,
        ) {
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            external.netns.exec(&argv)?;
        }
        Ok(external)
    }

    /// Gives the far side of external Peer `peer` its peer, the kwire Interface, once the
    /// operator has published the Interface's key and addresses (and the pre-shared key).
    fn configure_far_side(&self, peer: &str) -> Result<()> {
        let ext = self
            .externals
            .get(peer)
            .ok_or_else(|| Error::State(format!("no external Peer {peer}")))?;
        let side = &ext.side;
        let deadline = Instant::now() + FAR_SIDE_WAIT;
        let (interface, psk_secret) = loop {
            check_interrupted()?;
            let interface = self.get_one("interface", &side.interface)?;
            let published = interface.as_ref().is_some_and(|i| {
                i["status"]["publicKey"].as_str().is_some() && !status_addresses(i).is_empty()
            });
            let psk_secret = match &side.preshared_key {
                None => Some(None),
                Some(PresharedKeySource::Secret { name, key }) => {
                    Some(Some((name.clone(), key.clone())))
                }
                Some(PresharedKeySource::Generated) => self
                    .get_one("peer", peer)?
                    .and_then(|p| {
                        p["status"]["resolved"]["presharedKeySecret"]
                            .as_str()
                            .map(str::to_owned)
                    })
                    .map(|name| Some((name, "presharedKey".to_string()))),
            };
            if let (Some(interface), true, Some(psk_secret)) = (interface, published, psk_secret) {
                break (interface, psk_secret);
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout(format!(
                    "the far side of Peer {peer} needs Interface {}'s status.publicKey and status.addresses{}, \
                     not published after {}s: is kwire-operator running?\n{}",
                    side.interface,
                    if side.preshared_key.is_some() {
                        " and the pre-shared key's Secret"
                    } else {
                        ""
                    },
                    FAR_SIDE_WAIT.as_secs(),
                    self.logs_tail(15)
                )));
            }
            std::thread::sleep(Duration::from_millis(250));
        };
        let node_name = interface["spec"]["nodeName"].as_str().unwrap_or_default();
        let node = self.nodes.get(node_name).ok_or_else(|| {
            Error::State(format!(
                "Interface {} is on node {node_name}, which the sandbox does not run",
                side.interface
            ))
        })?;
        let listen_port = interface["spec"]["listenPort"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| {
                Error::Unexpected(format!("Interface {} has no listenPort", side.interface))
            })?;
        let routes: Vec<IpNet> = self
            .objects
            .iter()
            .filter_map(|o| match o {
                KwireObject::Route(r) if r.spec.interface.as_str() == side.interface => {
                    r.spec.destination.net().ok()
                }
                _ => None,
            })
            .collect();
        let far_peer = FarSidePeer {
            public_key: interface["status"]["publicKey"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            endpoint: SocketAddr::new(node.address, listen_port),
            allowed_ips: external::far_side_allowed_ips(&status_addresses(&interface), &routes),
            persistent_keepalive: side.persistent_keepalive,
        };
        let psk_file = match psk_secret {
            None => None,
            Some((secret, key)) => {
                let value = self.secret_key(&secret, &key)?;
                let file = self.run_dir.join(format!("external-{peer}.psk"));
                write_secret_file(&file, &value)?;
                Some(file)
            }
        };
        for argv in external::peer_commands(&ext.device, &far_peer, psk_file.as_deref()) {
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            ext.netns.exec(&argv)?;
        }
        Ok(())
    }

    /// Key `key` of Secret `name` in the sandbox namespace, as base64 text (stored either
    /// as the 32 key bytes or as their base64, the two forms kwire reads).
    fn secret_key(&self, name: &str, key: &str) -> Result<String> {
        let secret =
            self.kubectl_json(&["get", "secret", name, "-n", &self.namespace, "-o", "json"])?;
        let missing = || {
            Error::Unexpected(format!(
                "Secret {}/{name} has no WireGuard key in {key:?}",
                self.namespace
            ))
        };
        let stored = secret["data"][key]
            .as_str()
            .and_then(|v| BASE64.decode(v).ok())
            .ok_or_else(missing)?;
        if stored.len() == 32 {
            return Ok(BASE64.encode(stored));
        }
        let text = String::from_utf8(stored).map_err(|_| missing())?;
        let text = text.trim();
        match BASE64.decode(text) {
            Ok(bytes) if bytes.len() == 32 => Ok(text.to_string()),
            _ => Err(missing()),
        }
    }

    /// `kubectl apply --server-side -f -` of `yaml` into the sandbox namespace; returns
    /// kubectl's output.
    pub fn apply_yaml(&self, yaml: &str) -> Result<String> {
        kubectl_stdin(
            &self.cp,
            &["apply", "--server-side", "-n", &self.namespace, "-f", "-"],
            yaml,
        )
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
        let holder = node.netns.pids_named("wireguard-go").into_iter().next();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .io(|| format!("opening {}", node.log.display()))?;
        let mut cmd = Command::new("nsenter");
        match holder {
            Some(pid) => cmd.arg(format!("--mount=/proc/{pid}/ns/mnt")),
            // No wireguard-go left to adopt: a private, empty /run/wireguard as at start.
            None => {
                return Err(Error::State(format!(
                    "no wireguard-go runs on node {name}: use start_daemon"
                )));
            }
        };
        cmd.arg(format!("--net=/var/run/netns/{}", node.netns.name()))
            .arg("--")
            .args(&command.argv)
            .env_clear()
            .envs(command.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(
                log.try_clone()
                    .io(|| format!("opening {}", node.log.display()))?,
            )
            .stderr(log);
        let child = cmd.spawn().map_err(|source| Error::Spawn {
            what: "starting the daemon with nsenter".into(),
            source,
        })?;
        let pid = child.id();
        node.daemon = Some(child);
        let netns = node.netns.name().to_string();
        self.ledger
            .process(pid, &format!("kwire-node of {name}"), Some(&netns))?;
        Ok(())
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

// Operator control for the operator's end-to-end tests (tests/tests/operator_e2e.rs):
// restart the sandbox's operator, stop it, and run more replicas (leader election).

/// An extra `kwire-operator` process started by [`Sandbox::spawn_operator`]; killed when
/// dropped.
pub struct OperatorProcess {
    pub name: String,
    pub log: PathBuf,
    child: Option<Child>,
}

impl OperatorProcess {
    /// The process ID, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills it the hard way (SIGKILL, like a crashed pod): no Lease release, nothing.
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child
                .kill()
                .io(|| format!("killing operator {}", self.name))?;
            child
                .wait()
                .io(|| format!("waiting for operator {}", self.name))?;
        }
        Ok(())
    }

    /// Whether the process still runs.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Where it serves `/metrics`, from the line it logs at start.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        operator_metrics_addr(&self.log)
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// The `/metrics` address an operator logged in `log` (the last one: logs are appended).
pub fn operator_metrics_addr(log: &Path) -> Option<std::net::SocketAddr> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines()
        .rev()
        .filter(|l| l.contains("serving /healthz"))
        .find_map(|l| {
            let at = l.find("addr")? + 4;
            l[at..]
                .trim_start_matches(|c: char| !c.is_ascii_digit())
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
}

/// `GET http://<addr>/metrics` of an operator, as text.
pub fn operator_metrics(addr: std::net::SocketAddr) -> Result<String> {
    use std::io::Read as _;
    let what = || format!("GET http://{addr}/metrics");
    let mut stream =
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).io(what)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .io(what)?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .io(what)?;
    let mut response = String::new();
    stream.read_to_string(&mut response).io(what)?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .ok_or_else(|| Error::Unexpected(format!("no HTTP body from {addr}")))?;
    Ok(body)
}

/// The sum of every sample of `metric` (all label sets) in a metrics text whose labels
/// contain every one of `labels` (`key="value"`).
pub fn metric_sum(text: &str, metric: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name_labels, value) = l.rsplit_once(' ')?;
            let name = name_labels.split('{').next()?;
            (name == metric && labels.iter().all(|want| name_labels.contains(want)))
                .then(|| value.parse::<f64>().ok())?
        })
        .fold(0.0, |a, b| a + b)
}

impl Sandbox {
    /// The log file of the sandbox's own operator.
    pub fn operator_log(&self) -> PathBuf {
        self.run_dir.join("operator.log")
    }

    /// Where the sandbox's own operator serves `/metrics` (it listens on a free port).
    pub fn operator_metrics_addr(&self) -> Option<std::net::SocketAddr> {
        operator_metrics_addr(&self.operator_log())
    }

    /// Stops the sandbox's own operator (SIGKILL); [`Sandbox::restart_operator`] starts it
    /// again.
    pub fn stop_operator(&mut self) -> Result<()> {
        if let Some(mut child) = self.operator.take() {
            child.kill().io(|| "killing kwire-operator".into())?;
            child.wait().io(|| "waiting for kwire-operator".into())?;
        }
        Ok(())
    }

    /// Kills the sandbox's own operator and starts it again as it was started, appending
    /// to its log.
    pub async fn restart_operator(&mut self) -> Result<()> {
        self.stop_operator()?;
        let kubeconfig = self
            .cp
            .service_account_kubeconfig(SYSTEM_NAMESPACE, "kwire-operator")
            .await?;
        let log_path = self.operator_log();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .io(|| format!("opening {}", log_path.display()))?;
        let child = spawn_operator(
            &workspace_binary("kwire-operator")?,
            &kubeconfig,
            log,
            &log_path,
        )?;
        let pid = child.id();
        self.operator = Some(child);
        self.ledger.process(pid, "kwire-operator", None)?;
        Ok(())
    }

    /// Starts one more `kwire-operator` under the chart's ServiceAccount with `args` (plus a
    /// free metrics port and text logs), logging to `operator-<name>.log` in the run folder.
    pub async fn spawn_operator(&self, name: &str, args: &[&str]) -> Result<OperatorProcess> {
        let kubeconfig = self
            .cp
            .service_account_kubeconfig(SYSTEM_NAMESPACE, "kwire-operator")
            .await?;
        let log = self.run_dir.join(format!("operator-{name}.log"));
        let file = std::fs::File::create(&log).io(|| format!("creating {}", log.display()))?;
        let child = Command::new(workspace_binary("kwire-operator")?)
            .args(["--metrics-addr", "127.0.0.1:0", "--log-format", "text"])
            .args(args)
            .env("KUBECONFIG", &kubeconfig)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(
                file.try_clone()
                    .io(|| format!("opening {}", log.display()))?,
            )
            .stderr(file)
            .spawn()
            .map_err(|source| Error::Spawn {
                what: format!("starting kwire-operator {name}"),
                source,
            })?;
        self.ledger
            .process(child.id(), &format!("kwire-operator {name}"), None)?;
        Ok(OperatorProcess {
            name: name.to_string(),
            log,
            child: Some(child),
        })
    }
}

/// Starts `kwire-operator` with `kubeconfig`, both output streams into `log` (open on
/// `log_path`, named in errors).
fn spawn_operator(
    binary: &Path,
    kubeconfig: &Path,
    log: std::fs::File,
    log_path: &Path,
) -> Result<std::process::Child> {
    Command::new(binary)
        .args(["--metrics-addr", "127.0.0.1:0", "--log-format", "text"])
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(
            log.try_clone()
                .io(|| format!("opening {}", log_path.display()))?,
        )
        .stderr(log)
        .spawn()
        .map_err(|source| Error::Spawn {
            what: "starting kwire-operator".into(),
            source,
        })
}
