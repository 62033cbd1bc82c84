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
    // Declared last: dropped after the node namespaces are gone.
    _lan: Lan,
}

impl Sandbox {
    /// Brings up everything for the manifests in `files`, applied into `namespace`.
    pub async fn up(files: &[PathBuf], namespace: &str, quiet: bool) -> Result<Self> {
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
            .filter_map(|o| {
                if let KwireObject::Interface(i) = o {
                    Some(i.spec.node_name.to_string())
                } else {
                    None
                }
            })
            .collect();
        node_names.sort();
        node_names.dedup();
        ensure!(
            !node_names.is_empty(),
            "the manifests name no Interface, so no node"
        );

        steps.start("binaries (kwire-operator, kwire-node)");
        let operator_bin = workspace_binary("kwire-operator")?;
        let node_bin = workspace_binary("kwire-node")?;
        steps.done();

        // Unique per sandbox: tests run several at once in one process.
        static SANDBOXES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = SANDBOXES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let run_dir =
            std::env::temp_dir().join(format!("kwire-sandbox-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&run_dir)?;
        steps.start("local control plane (etcd, kube-apiserver, controller-manager)");
        // Beside the run folder, not in it: the control plane removes its own folder when it
        // stops, after the sandbox's Drop has removed the rest.
        let cp = ControlPlane::start(run_dir.with_extension("control-plane"))?;
        let api_port: u16 = cp
            .api_url()
            .rsplit(':')
            .next()
            .and_then(|p| p.trim_end_matches('/').parse().ok())
            .ok_or_else(|| anyhow!("no port in {}", cp.api_url()))?;
        steps.done();

        steps.start("helm install kwire (CRDs, RBAC, ServiceAccounts)");
        let out = cp
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
            &cp,
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
        kubectl_ok(&cp, &["create", "namespace", namespace])?;
        steps.done();

        let lan = Lan::new()?;
        let mut sandbox = Self {
            cp,
            namespace: namespace.to_string(),
            nodes: BTreeMap::new(),
            objects,
            run_dir,
            steps,
            operator: None,
            relay: None,
            api_port,
            _lan: lan,
        };
        sandbox.steps.start(&format!(
            "{} node namespaces on a LAN, Node objects",
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
            let address: IpAddr = format!("10.211.55.{}", 10 + i).parse()?;
            sandbox._lan.attach(&netns, address, 24)?;
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
        let names: Vec<String> = sandbox.nodes.keys().cloned().collect();
        for name in names {
            sandbox.start_daemon(&name, &node_bin, &node_kubeconfig)?;
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

    /// Waits until every Interface, Peer and Route is Ready and every Peer Connected.
    pub fn wait_ready(&self, timeout: Duration) -> Result<Duration> {
        let start = Instant::now();
        loop {
            let mut pending = self.not_true("interfaces,peers,routes", "Ready")?;
            pending.extend(self.not_true("peers", "Connected")?);
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
