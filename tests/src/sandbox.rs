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
//! Dropping a [`Sandbox`] removes everything it made: processes, namespaces, the control
//! plane and the run folder.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use kwire_crds::manifest::{KwireObject, parse_manifests};
use serde_json::Value;

use crate::control_plane::ControlPlane;
use crate::netns::{Lan, Netns};

/// The namespace the chart is installed into.
pub const SYSTEM_NAMESPACE: &str = "kwire-system";

/// Where cargo put the workspace's binaries.
pub fn workspace_binary(name: &str) -> Result<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let path = target.join("debug").join(name);
    ensure!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first",
        path.display()
    );
    Ok(path)
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// One node: its namespace, underlay address and daemon.
pub struct SandboxNode {
    pub netns: Netns,
    pub address: IpAddr,
    pub daemon: Option<Child>,
    pub log: PathBuf,
}

impl SandboxNode {
    /// `wg show` as the node's daemon sees it (its private `/run/wireguard`).
    pub fn wg_show(&self) -> Result<String> {
        let pid = self
            .daemon
            .as_ref()
            .ok_or_else(|| anyhow!("the daemon is not running"))?
            .id();
        let out = Command::new("nsenter")
            .args([
                "-t",
                &pid.to_string(),
                "-m",
                "-n",
                "wg",
                "show",
                "all",
                "dump",
            ])
            .output()?;
        ensure!(
            out.status.success(),
            "wg show: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
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
    pub objects: Vec<KwireObject>,
    pub run_dir: PathBuf,
    pub steps: Steps,
    operator: Option<Child>,
    relay: Option<Child>,
    api_port: u16,
    // Declared last: dropped after the node namespaces are gone. `None` when the sandbox's
    // nodes are on a LAN its caller owns.
    _lan: Option<Lan>,
}

impl Sandbox {
    /// Brings up everything for the manifests in `files`, applied into `namespace`, on a LAN
    /// of its own (node `i`, in name order, at `10.211.55.<10 + i>`).
    pub async fn up(files: &[PathBuf], namespace: &str, quiet: bool) -> Result<Self> {
        Self::up_with(files, namespace, quiet, None).await
    }

    fn start_relay(&mut self) -> Result<()> {
        let socket = self.run_dir.join("api.sock");
        let _ = std::fs::remove_file(&socket);
        self.relay = Some(
            Command::new("socat")
                .arg(format!("UNIX-LISTEN:{},fork,reuseaddr", socket.display()))
                .arg(format!("TCP:127.0.0.1:{}", self.api_port))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting socat (apt-get install socat)")?,
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while !socket.exists() {
            ensure!(
                Instant::now() < deadline,
                "socat did not create {}",
                socket.display()
            );
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
            .ok_or_else(|| anyhow!("no node {name}"))?;
        let state = self.run_dir.join(format!("state-{name}"));
        std::fs::create_dir_all(&state)?;
        let args: Vec<String> = [
            "--node-name",
            name,
            "--state-file",
            state.join("node-state.json").to_str().unwrap(),
            "--key-dir",
            state.join("keys").to_str().unwrap(),
            "--metrics-addr",
            "127.0.0.1:9090",
            "--resync-period",
            "10s",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let child = node.netns.spawn(
            node_bin,
            &args,
            &[
                ("KUBECONFIG", kubeconfig.display().to_string()),
                ("RUST_LOG", "info".into()),
            ],
            &node.log,
        )?;
        node.daemon = Some(child);
        Ok(())
    }

    /// Kills a node's daemon the hard way (the data plane stays, as after a crash).
    pub fn kill_daemon(&mut self, name: &str) -> Result<()> {
        let node = self
            .nodes
            .get_mut(name)
            .ok_or_else(|| anyhow!("no node {name}"))?;
        if let Some(mut child) = node.daemon.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// The kwire objects of the sandbox namespace as JSON (`kubectl get … -o json`).
    pub fn get(&self, kinds: &str) -> Result<Vec<Value>> {
        let out = self
            .cp
            .kubectl()
            .args(["get", kinds, "-n", &self.namespace, "-o", "json"])
            .output()?;
        ensure!(
            out.status.success(),
            "kubectl get {kinds}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let list: Value = serde_json::from_slice(&out.stdout)?;
        Ok(list["items"].as_array().cloned().unwrap_or_default())
    }

    /// Objects whose `type` condition is not `True`, as `Kind/name: reason: message`.
    pub fn not_true(&self, kinds: &str, condition: &str) -> Result<Vec<String>> {
        Ok(self
            .get(kinds)?
            .iter()
            .filter_map(|o| {
                let c = o["status"]["conditions"]
                    .as_array()
                    .and_then(|cs| cs.iter().find(|c| c["type"] == condition));
                match c {
                    Some(c) if c["status"] == "True" => None,
                    Some(c) => Some(format!(
                        "{}/{}: {}: {}",
                        o["kind"].as_str()?,
                        o["metadata"]["name"].as_str()?,
                        c["reason"].as_str().unwrap_or(""),
                        c["message"].as_str().unwrap_or("")
                    )),
                    None => Some(format!(
                        "{}/{}: no {condition} condition yet",
                        o["kind"].as_str()?,
                        o["metadata"]["name"].as_str()?
                    )),
                }
            })
            .collect())
    }

    /// Waits until every Interface, Peer and Route is Ready and every Peer Connected (or
    /// idle: configured, nothing sent yet).
    pub fn wait_ready(&self, timeout: Duration) -> Result<Duration> {
        let start = Instant::now();
        loop {
            let mut pending = self.not_true("interfaces,peers,routes", "Ready")?;
            // A link without keepalive handshakes only once traffic flows ("Idle"): the
            // pings that follow are that traffic.
            pending.extend(
                self.not_true("peers", "Connected")?
                    .into_iter()
                    .filter(|p| !p.contains(": Idle: ")),
            );
            if pending.is_empty() {
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                bail!(
                    "not ready after {}s:\n  {}\n{}",
                    timeout.as_secs(),
                    pending.join("\n  "),
                    self.logs_tail(15)
                );
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
        for (name, path) in logs {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(lines).collect();
            let _ = writeln!(out, "--- {name} ({})", path.display());
            for line in tail.iter().rev() {
                let _ = writeln!(out, "{line}");
            }
        }
        out
    }

    /// The pings a user of this topology expects to work: every Peer's remote address from
    /// the local node, and every address inside a Route's destination from the Route's node.
    pub fn expected_pings(&self) -> Result<Vec<Ping>> {
        let interfaces = self.get("interfaces")?;
        let node_of = |name: &str| {
            interfaces
                .iter()
                .find(|i| i["metadata"]["name"] == name)
                .and_then(|i| i["spec"]["nodeName"].as_str().map(str::to_owned))
        };
        let addresses_of = |i: &Value| -> Vec<ipnet::IpNet> {
            i["status"]["addresses"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a.as_str()?.parse().ok())
                .collect()
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
            for address in addresses_of(remote_if) {
                pings.push(Ping {
                    from: from.clone(),
                    to: address.addr(),
                    label: format!("{local} → {remote} ({})", address.addr()),
                });
            }
        }
        for route in self.get("routes")? {
            let Some(destination) = route["spec"]["destination"]
                .as_str()
                .and_then(|d| d.parse::<ipnet::IpNet>().ok())
            else {
                continue;
            };
            let Some(from) = route["spec"]["interface"].as_str().and_then(node_of) else {
                continue;
            };
            for i in &interfaces {
                if i["spec"]["nodeName"].as_str() == Some(from.as_str()) {
                    continue;
                }
                for address in addresses_of(i) {
                    if destination.contains(&address.addr()) {
                        let to_node = i["spec"]["nodeName"].as_str().unwrap_or("?");
                        pings.push(Ping {
                            from: from.clone(),
                            to: address.addr(),
                            label: format!(
                                "{} → {} ({}, route {})",
                                from.to_uppercase(),
                                to_node.to_uppercase(),
                                address.addr(),
                                route["metadata"]["name"].as_str().unwrap_or("?")
                            ),
                        });
                    }
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
                let ok = self.nodes.get(&p.from).is_some_and(|n| {
                    n.netns
                        .wait_for_ping(p.to, Duration::from_secs(10))
                        .is_some()
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
}

/// One expected ping through the overlay.
#[derive(Debug, Clone)]
pub struct Ping {
    pub from: String,
    pub to: IpAddr,
    pub label: String,
}

fn kubectl_ok(cp: &ControlPlane, args: &[&str]) -> Result<()> {
    let out = cp.kubectl().args(args).output()?;
    ensure!(
        out.status.success(),
        "kubectl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn register_node(cp: &ControlPlane, name: &str, address: IpAddr) -> Result<()> {
    let manifest = format!(
        "{{\"apiVersion\":\"v1\",\"kind\":\"Node\",\"metadata\":{{\"name\":\"{name}\",\"labels\":{{\"kwire.dev/sandbox\":\"true\"}}}}}}"
    );
    let path = std::env::temp_dir().join(format!("kwire-node-{name}-{}.json", std::process::id()));
    std::fs::write(&path, manifest)?;
    kubectl_ok(
        cp,
        &["apply", "--server-side", "-f", path.to_str().unwrap()],
    )?;
    let _ = std::fs::remove_file(&path);
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

fn start_inner_relay(node: &SandboxNode, run_dir: &Path, port: u16) -> Result<()> {
    // Runs inside the namespace; killed with it.
    Command::new("ip")
        .args(["netns", "exec", node.netns.name(), "socat"])
        .arg(format!("TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr"))
        .arg(format!(
            "UNIX-CONNECT:{}",
            run_dir.join("api.sock").display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting socat in a node namespace")?;
    Ok(())
}

impl Drop for Sandbox {
    fn drop(&mut self) {
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
        // Namespaces (and the wireguard-go processes in them) go when `nodes` drops; the
        // control plane when `cp` drops. Keep the run folder only when asked to.
        self.nodes.clear();
        if std::env::var_os("KWIRE_KEEP_RUN_DIR").is_none() {
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
        Self::up_with(files, namespace, quiet, Some((lan, first_host))).await
    }

    /// The one way up: on `shared` (a LAN and the first host number) or on a LAN of its own.
    async fn up_with(
        files: &[PathBuf],
        namespace: &str,
        quiet: bool,
        shared: Option<(&Lan, u8)>,
    ) -> Result<Self> {
        let first_host = shared.map_or(10, |(_, first)| first);

        let mut steps = Steps::new(quiet);
        let mut text = String::new();
        for f in files {
            text.push_str(
                &std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?,
            );
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
        ensure!(
            !node_names.is_empty(),
            "the manifests name no Interface, so no node"
        );
        ensure!(
            first_host >= 1 && usize::from(first_host) + node_names.len() <= 255,
            "10.211.55.{first_host} and the {} addresses after it are not all host addresses of 10.211.55.0/24",
            node_names.len() - 1
        );

        steps.start("binaries (kwire-operator, kwire-node)");
        let operator_bin = workspace_binary("kwire-operator")?;
        let node_bin = workspace_binary("kwire-node")?;
        steps.done();

        // Made before the run folder, so that no error path leaks a folder.
        let own_lan = match shared {
            Some(_) => None,
            None => Some(Lan::new()?),
        };
        // Unique per sandbox: tests run several at once in one process.
        static SANDBOXES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = SANDBOXES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let run_dir =
            std::env::temp_dir().join(format!("kwire-sandbox-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&run_dir)?;
        steps.start("local control plane (etcd, kube-apiserver, controller-manager)");
        let cp = match ControlPlane::start(run_dir.with_extension("control-plane")) {
            Ok(cp) => cp,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&run_dir);
                return Err(e);
            }
        };
        // From here on the sandbox exists, and dropping it (on any error) removes the run
        // folder, the processes, the namespaces and the control plane.
        let mut sandbox = Self {
            cp,
            namespace: namespace.to_string(),
            nodes: BTreeMap::new(),
            objects,
            run_dir,
            steps,
            operator: None,
            relay: None,
            api_port: 0,
            _lan: own_lan,
        };
        let api_port: u16 = sandbox
            .cp
            .api_url()
            .rsplit(':')
            .next()
            .and_then(|p| p.trim_end_matches('/').parse().ok())
            .ok_or_else(|| anyhow!("no port in {}", sandbox.cp.api_url()))?;
        sandbox.api_port = api_port;
        sandbox.steps.done();

        sandbox
            .steps
            .start("helm install kwire (CRDs, RBAC, ServiceAccounts)");
        let out = sandbox
            .cp
            .helm()
            .args([
                "install",
                "kwire",
                repo().join("charts/kwire").to_str().unwrap(),
                "--namespace",
                SYSTEM_NAMESPACE,
                "--create-namespace",
                "--wait=false",
            ])
            .output()?;
        ensure!(
            out.status.success(),
            "helm install: {}",
            String::from_utf8_lossy(&out.stderr)
        );
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
        kubectl_ok(&sandbox.cp, &["create", "namespace", namespace])?;
        sandbox.steps.done();

        sandbox.steps.start(&format!(
            "{} node namespaces on the shared LAN, Node objects",
            node_names.len()
        ));
        for (i, name) in node_names.iter().enumerate() {
            let netns = Netns::new(
                &name
                    .chars()
                    .filter(char::is_ascii_alphanumeric)
                    .take(3)
                    .collect::<String>(),
            )?;
            let address: IpAddr = format!("10.211.55.{}", usize::from(first_host) + i).parse()?;
            let lan = match shared {
                Some((lan, _)) => lan,
                None => sandbox
                    ._lan
                    .as_ref()
                    .expect("a sandbox without a shared LAN has its own"),
            };
            lan.attach(&netns, address, 24)?;
            register_node(&sandbox.cp, name, address)?;
            let log = sandbox.run_dir.join(format!("node-{name}.log"));
            sandbox.nodes.insert(
                name.clone(),
                SandboxNode {
                    netns,
                    address,
                    daemon: None,
                    log,
                },
            );
        }
        sandbox.steps.done();

        sandbox.steps.start("API relay into the node namespaces");
        sandbox.start_relay()?;
        for node in sandbox.nodes.values() {
            start_inner_relay(node, &sandbox.run_dir, api_port)?;
        }
        sandbox.steps.done();

        sandbox
            .steps
            .start("kwire-operator under its ServiceAccount");
        let operator_kubeconfig = sandbox
            .cp
            .service_account_kubeconfig(SYSTEM_NAMESPACE, "kwire-operator")
            .await?;
        let log = std::fs::File::create(sandbox.run_dir.join("operator.log"))?;
        sandbox.operator = Some(
            Command::new(&operator_bin)
                .args(["--metrics-addr", "127.0.0.1:0", "--log-format", "text"])
                .env("KUBECONFIG", &operator_kubeconfig)
                .env("RUST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .context("starting kwire-operator")?,
        );
        sandbox.steps.done();

        sandbox
            .steps
            .start("kwire-node in each namespace under its ServiceAccount");
        let node_kubeconfig = sandbox
            .cp
            .service_account_kubeconfig(SYSTEM_NAMESPACE, "kwire-node")
            .await?;
        for name in &node_names {
            sandbox.start_daemon(name, &node_bin, &node_kubeconfig)?;
        }
        sandbox.steps.done();

        sandbox
            .steps
            .start("kubectl apply --server-side the manifests");
        for f in files {
            kubectl_ok(
                &sandbox.cp,
                &[
                    "apply",
                    "--server-side",
                    "-n",
                    namespace,
                    "-f",
                    f.to_str().unwrap(),
                ],
            )?;
        }
        sandbox.steps.done();
        Ok(sandbox)
    }

    /// `kubectl apply --server-side -f -` of `yaml` into the sandbox namespace; returns
    /// kubectl's output.
    pub fn apply_yaml(&self, yaml: &str) -> Result<String> {
        use std::io::Write as _;
        let mut child = self
            .cp
            .kubectl()
            .args(["apply", "--server-side", "-n", &self.namespace, "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .ok_or_else(|| anyhow!("no stdin for kubectl"))?
            .write_all(yaml.as_bytes())?;
        let out = child.wait_with_output()?;
        ensure!(
            out.status.success(),
            "kubectl apply: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
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
            .ok_or_else(|| anyhow!("no node {name}"))?;
        let pid = node
            .daemon
            .as_ref()
            .ok_or_else(|| anyhow!("the daemon of {name} is not running"))?
            .id();
        let split = |bytes: Vec<u8>| -> Vec<std::ffi::OsString> {
            bytes
                .split(|b| *b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| std::ffi::OsStr::from_bytes(s).to_os_string())
                .collect()
        };
        let argv = split(std::fs::read(format!("/proc/{pid}/cmdline"))?);
        ensure!(!argv.is_empty(), "no command line for PID {pid}");
        let env = split(std::fs::read(format!("/proc/{pid}/environ"))?)
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
            .ok_or_else(|| anyhow!("no node {name}"))?;
        ensure!(
            node.daemon.is_none(),
            "the daemon of {name} is still running"
        );
        let holder = node.netns.pids_named("wireguard-go").into_iter().next();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)?;
        let mut cmd = Command::new("nsenter");
        match holder {
            Some(pid) => cmd.arg(format!("--mount=/proc/{pid}/ns/mnt")),
            // No wireguard-go left to adopt: a private, empty /run/wireguard as at start.
            None => bail!("no wireguard-go runs on node {name}: use start_daemon"),
        };
        cmd.arg(format!("--net=/var/run/netns/{}", node.netns.name()))
            .arg("--")
            .args(&command.argv)
            .env_clear()
            .envs(command.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        node.daemon = Some(cmd.spawn().context("starting the daemon with nsenter")?);
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
            child.kill()?;
            child.wait()?;
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
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .ok_or_else(|| anyhow!("no HTTP body from {addr}"))?;
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
            child.kill()?;
            child.wait()?;
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
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.operator_log())?;
        self.operator = Some(
            Command::new(workspace_binary("kwire-operator")?)
                .args(["--metrics-addr", "127.0.0.1:0", "--log-format", "text"])
                .env("KUBECONFIG", &kubeconfig)
                .env("RUST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .context("starting kwire-operator")?,
        );
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
        let file = std::fs::File::create(&log)?;
        let child = Command::new(workspace_binary("kwire-operator")?)
            .args(["--metrics-addr", "127.0.0.1:0", "--log-format", "text"])
            .args(args)
            .env("KUBECONFIG", &kubeconfig)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting kwire-operator {name}"))?;
        Ok(OperatorProcess {
            name: name.to_string(),
            log,
            child: Some(child),
        })
    }
}
