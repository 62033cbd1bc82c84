//! `kwire-mesh-bench`: a FullMesh of N members in the sandbox, against the same mesh
//! written as explicit Peers and against the same mesh configured by hand (issue 15).
//!
//! For each N (`--sizes`, default 8, 16, 32) and each form, a fresh sandbox of N + 1
//! network-namespace nodes (from `Node` documents; the last one joins later) with the real
//! control plane, the chart, one node daemon per node and an operator started by the bench
//! (`--resync-seconds`, so that one resync fits in the measured window):
//!
//! - **Mesh**: the N members are labelled; the bench applies two Networks and one Mesh.
//! - **Peers** (reference): the same mesh written by hand as N Interfaces (the same spec the
//!   operator generates: the two Networks, device, port) and N(N−1)/2 Peers with the same
//!   keepalive, one Peer per pair (a Peer configures both ends).
//! - **Floor** (reference, in the Mesh form's sandbox before the Mesh is applied):
//!   `wg genkey`, `wireguard-go`, `ip address`, `ip link` and one `wg set` per node with
//!   its N−1 peers, run one after the other from the bench in the same namespaces.
//!
//! Measured for each form:
//! - **connected**: from the first command (`kubectl apply`, or the floor's first
//!   `wg genkey`) until every member's device reports a handshake with each of its N−1
//!   peers (`wg show … dump` in every node, polled in parallel without pause; a keepalive
//!   of 25 s makes every pair shake hands as soon as it is configured);
//! - **join**: from labelling node N+1 (Mesh) or applying its Interface and its N Peers
//!   (Peers) until all N+1 devices have a handshake with each other member;
//! - the API requests of the operator (its `kwire_operator_api_requests_total`) and of the
//!   node daemons (the API server's `apiserver_flowcontrol_dispatched_requests_total` of a
//!   FlowSchema matching the node ServiceAccount, shared by all daemons: shown per daemon,
//!   the mean of the N+1; a FlowSchema for the operator's ServiceAccount cross-checks the
//!   method against the operator's own count), during the connect and during the join;
//! - memory: the operator's `VmRSS` and `VmHWM`, and the `VmRSS` of the first member's
//!   daemon, once connected;
//! - **writes in an unchanged resync**: over one operator resync period with nothing
//!   changing (it holds two node daemon resyncs of 10 s), the operator's API writes (Lease
//!   renewals left out), the node daemons' API writes to kwire objects (the API server's
//!   `apiserver_request_total` for kwire.dev minus the operator's), and the daemons' kernel
//!   writes (`kwire_node_kernel_writes_total`, all nodes);
//! - **pings lost across a node daemon restart**: the daemon of the third member is killed
//!   and started again (it adopts its devices), while the first member pings the second
//!   (an untouched pair) and the third, every 50 ms; lost = ping's own counters.
//!
//! ```sh
//! cargo build -p kwire-operator -p kwire-node-daemon -p kwire-tests --bins
//! sudo ./target/debug/kwire-mesh-bench --sizes 8,16,32
//! ```
//!
//! It prints Markdown tables (for docs/performance.md) and the load average before and
//! after each sandbox; it asserts nothing about time.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use clap::Parser;
use kwire_tests::bench::{label, run_ok};
use kwire_tests::mesh::{ContinuousPing, MeshSpec, ObjectCounts, node_documents, set_member};
use kwire_tests::netns::can_run_network_tests;
use kwire_tests::sandbox::{OperatorProcess, Sandbox, metric_sum, operator_metrics};
use kwire_tests::wait::wait_for;
use serde_json::Value;

#[derive(Parser)]
#[command(
    name = "kwire-mesh-bench",
    about = "A FullMesh of N members vs the same mesh as Peers and by hand, in the sandbox"
)]
struct Args {
    /// Member counts.
    #[arg(long, value_delimiter = ',', default_values_t = [8, 16, 32])]
    sizes: Vec<usize>,
    /// The operator's --resync-seconds; the unchanged-resync window is one period.
    #[arg(long, default_value_t = 20)]
    resync_seconds: u64,
    /// Give up on a step after this long.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

const NAMESPACE: &str = "mesh-bench";
const SPEC: MeshSpec<'static> = MeshSpec {
    name: "bench",
    label: "example.com/mesh-bench",
    cidr_v4: "10.62.0.0/24",
    cidr_v6: "fd00:62::/64",
    device: "wgbench",
    port: 51920,
    keepalive: 25,
};
const NODE_METRICS_PORT: u16 = 9090;
/// The node whose daemon is restarted (index into the members).
const RESTARTED: usize = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    Mesh,
    Peers,
}

impl Form {
    fn name(self) -> &'static str {
        match self {
            Form::Mesh => "Mesh",
            Form::Peers => "explicit Peers",
        }
    }
}

fn node_names(n: usize) -> Vec<String> {
    (1..=n + 1).map(|i| format!("m{i:02}")).collect()
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or("?".into(), |k| format!("{:.1}", k as f64 / 1024.0))
}

fn both(c: Connected) -> String {
    format!("{} / {}", secs(c.half), secs(c.all))
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

// --- the manifests --------------------------------------------------------------------

/// The explicit form of members `members`: their Interfaces and, when `peers_of` is
/// given, the Peers of that member with each other member (else every pair's Peer).
fn explicit_manifest(members: &[String], peers_of: Option<&str>) -> String {
    let mut out = String::new();
    let interface = |node: &str| {
        format!(
            "apiVersion: kwire.dev/v1alpha1\nkind: Interface\nmetadata: {{name: {node}-{device}}}\n\
             spec:\n  nodeName: {node}\n  deviceName: {device}\n  listenPort: {port}\n  \
             networks: [{{name: {mesh}-v4}}, {{name: {mesh}-v6}}]\n---\n",
            device = SPEC.device,
            port = SPEC.port,
            mesh = SPEC.name,
        )
    };
    let peer = |a: &str, b: &str| {
        format!(
            "apiVersion: kwire.dev/v1alpha1\nkind: Peer\nmetadata: {{name: {a}-{b}}}\n\
             spec:\n  interface: {a}-{device}\n  remote: {{interface: {b}-{device}}}\n  \
             persistentKeepalive: {keepalive}\n---\n",
            device = SPEC.device,
            keepalive = SPEC.keepalive,
        )
    };
    match peers_of {
        Some(new) => {
            out.push_str(&interface(new));
            for other in members.iter().filter(|m| *m != new) {
                out.push_str(&peer(other, new));
            }
        }
        None => {
            out.push_str(&networks_manifest());
            for m in members {
                out.push_str(&interface(m));
            }
            for (i, a) in members.iter().enumerate() {
                for b in &members[i + 1..] {
                    out.push_str(&peer(a, b));
                }
            }
        }
    }
    out
}

/// The Mesh's two Networks alone (the first part of its manifest).
fn networks_manifest() -> String {
    let full = SPEC.manifest();
    let mesh_at = full.find("kind: Mesh").expect("the manifest has a Mesh");
    let cut = full[..mesh_at]
        .rfind("apiVersion")
        .expect("the Mesh has an apiVersion");
    full[..cut].to_string()
}

/// FlowSchemas that classify the node daemons' and the operator's requests apart, so that
/// the API server counts them (`apiserver_flowcontrol_dispatched_requests_total`).
fn flow_schemas() -> String {
    [("node", "kwire-node"), ("operator", "kwire-operator")]
        .iter()
        .map(|(who, account)| {
            format!(
                "apiVersion: flowcontrol.apiserver.k8s.io/v1\nkind: FlowSchema\n\
                 metadata: {{name: kwire-bench-{who}}}\nspec:\n  \
                 priorityLevelConfiguration: {{name: workload-high}}\n  matchingPrecedence: 100\n  \
                 distinguisherMethod: {{type: ByUser}}\n  rules:\n  - subjects:\n    \
                 - kind: ServiceAccount\n      serviceAccount: {{name: {account}, namespace: kwire-system}}\n    \
                 resourceRules:\n    - verbs: ['*']\n      apiGroups: ['*']\n      resources: ['*']\n      \
                 clusterScope: true\n      namespaces: ['*']\n    nonResourceRules:\n    \
                 - verbs: ['*']\n      nonResourceURLs: ['*']\n---\n"
            )
        })
        .collect()
}

// --- reading the sandbox --------------------------------------------------------------

/// Peers of `device` with a handshake, per node, from `wg show all dump` read in every
/// node at once.
fn handshakes(sandbox: &Sandbox, nodes: &[String], device: &str) -> Vec<Result<usize>> {
    std::thread::scope(|s| {
        let handles: Vec<_> = nodes
            .iter()
            .map(|n| {
                s.spawn(move || -> Result<usize> {
                    let node = sandbox.nodes.get(n).context("no such node")?;
                    let dump = node.wg_show()?;
                    Ok(kwire_tests::mesh::wg_peers(&dump, device)
                        .iter()
                        .filter(|p| p.latest_handshake > 0)
                        .count())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| bail!("a reader panicked")))
            .collect()
    })
}

/// When every member had all its handshakes, and when half of them had.
#[derive(Debug, Clone, Copy, Default)]
struct Connected {
    all: Duration,
    half: Duration,
}

/// Waits until each of `nodes` has a handshake with the `nodes.len() - 1` others on
/// `device`, polling without pause; returns when it saw that, measured from `t0`, and
/// when it saw it on half of them.
fn wait_connected(
    sandbox: &Sandbox,
    nodes: &[String],
    device: &str,
    t0: Instant,
    timeout: Duration,
) -> Result<Connected> {
    let want = nodes.len() - 1;
    let mut last = Vec::new();
    let mut first_done: Vec<Option<Duration>> = vec![None; nodes.len()];
    wait_for_every_zero(
        &format!("{want} peers with a handshake on {device} of every member"),
        timeout,
        || {
            let counts = handshakes(sandbox, nodes, device);
            let at = t0.elapsed();
            for (done, count) in first_done.iter_mut().zip(&counts) {
                if done.is_none() && matches!(count, Ok(n) if *n == want) {
                    *done = Some(at);
                }
            }
            last = counts
                .into_iter()
                .map(|c| c.map_or(-1, |n| n as i64))
                .collect();
            if first_done.iter().any(Option::is_none) {
                return Ok(None);
            }
            let mut times: Vec<Duration> = first_done.iter().flatten().copied().collect();
            times.sort();
            Ok(Some(Connected {
                all: at,
                half: times[(times.len() - 1) / 2],
            }))
        },
    )
    .with_context(|| format!("handshakes last seen per node: {last:?}"))
}

fn wait_for_every_zero<T>(
    what: &str,
    timeout: Duration,
    check: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    kwire_tests::wait::wait_for_every(Duration::ZERO, what, timeout, check).map(|(v, _)| v)
}

/// Each member's first IPv4 address, by node (every Interface of the namespace).
fn v4_by_node(sandbox: &Sandbox) -> Result<BTreeMap<String, IpAddr>> {
    let mut out = BTreeMap::new();
    for i in sandbox.get("interfaces")? {
        let node = i["spec"]["nodeName"].as_str().unwrap_or_default();
        let v4 = i["status"]["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str()?.split('/').next()?.parse::<IpAddr>().ok())
            .find(IpAddr::is_ipv4);
        if let Some(v4) = v4 {
            out.insert(node.to_string(), v4);
        }
    }
    Ok(out)
}

fn admin_kubectl(sandbox: &Sandbox, args: &[&str]) -> Result<String> {
    let out = sandbox
        .cp
        .kubectl()
        .args(args)
        .output()
        .context("running kubectl")?;
    ensure!(
        out.status.success(),
        "kubectl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn apiserver_metrics(sandbox: &Sandbox) -> Result<String> {
    admin_kubectl(sandbox, &["get", "--raw", "/metrics"])
}

/// What the API server and the operator had counted at one moment.
#[derive(Debug, Clone, Default)]
struct Counts {
    /// Requests the API server dispatched for the node daemons / the operator (APF).
    node_requests: f64,
    operator_requests_apf: f64,
    /// The operator's own count: all requests, writes except Lease renewals, writes to
    /// kwire objects.
    operator_requests: f64,
    operator_writes: f64,
    operator_kwire_writes: f64,
    operator_reconciles: f64,
    /// Writes to kwire.dev objects the API server served (anyone's).
    kwire_writes: f64,
    /// The node daemons' kernel writes (all nodes).
    kernel_writes: f64,
}

impl Counts {
    fn read(sandbox: &Sandbox, operator: &OperatorProcess, kernel: bool) -> Result<Self> {
        let api = apiserver_metrics(sandbox)?;
        let dispatched = |who: &str| {
            metric_sum(
                &api,
                "apiserver_flowcontrol_dispatched_requests_total",
                &[&format!("flow_schema=\"kwire-bench-{who}\"")],
            )
        };
        let kwire_writes = ["APPLY", "PATCH", "PUT", "POST", "DELETE"]
            .iter()
            .map(|verb| {
                metric_sum(
                    &api,
                    "apiserver_request_total",
                    &["group=\"kwire.dev\"", &format!("verb=\"{verb}\"")],
                )
            })
            .sum();
        let addr = operator
            .metrics_addr()
            .context("the operator logged no metrics address")?;
        let op = operator_metrics(addr)?;
        let mut operator_requests = 0.0;
        let mut operator_writes = 0.0;
        let mut operator_kwire_writes = 0.0;
        for line in op
            .lines()
            .filter(|l| l.starts_with("kwire_operator_api_requests_total{"))
        {
            let Some((labels, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let value: f64 = value.parse().unwrap_or(0.0);
            let field = |key: &str| label(labels, key);
            operator_requests += value;
            let (verb, resource) = (field("verb"), field("resource"));
            if matches!(verb.as_str(), "create" | "update" | "patch" | "delete")
                && !resource.starts_with("leases")
            {
                operator_writes += value;
                if ["interfaces", "peers", "routes", "networks", "meshes"]
                    .iter()
                    .any(|k| resource.starts_with(k))
                {
                    operator_kwire_writes += value;
                }
            }
        }
        let mut kernel_writes = 0.0;
        if kernel {
            for node in sandbox.nodes.values() {
                let (code, body) = node.netns.http_get(NODE_METRICS_PORT, "/metrics")?;
                ensure!(code == 200, "a node daemon's /metrics answered {code}");
                kernel_writes += metric_sum(&body, "kwire_node_kernel_writes_total", &[]);
            }
        }
        Ok(Self {
            node_requests: dispatched("node"),
            operator_requests_apf: dispatched("operator"),
            operator_requests,
            operator_writes,
            operator_kwire_writes,
            operator_reconciles: metric_sum(&op, "kwire_operator_reconciles_total", &[]),
            kwire_writes,
            kernel_writes,
        })
    }

    fn minus(&self, before: &Self) -> Self {
        Self {
            node_requests: self.node_requests - before.node_requests,
            operator_requests_apf: self.operator_requests_apf - before.operator_requests_apf,
            operator_requests: self.operator_requests - before.operator_requests,
            operator_writes: self.operator_writes - before.operator_writes,
            operator_kwire_writes: self.operator_kwire_writes - before.operator_kwire_writes,
            operator_reconciles: self.operator_reconciles - before.operator_reconciles,
            kwire_writes: self.kwire_writes - before.kwire_writes,
            kernel_writes: self.kernel_writes - before.kernel_writes,
        }
    }
}

// --- the floor: by hand with wg and ip -------------------------------------------------

/// The floor's devices, deleted when dropped (wireguard-go exits with its device).
struct Floor<'a> {
    sandbox: &'a Sandbox,
    devices: Vec<(String, String)>,
    keys: PathBuf,
}

impl Drop for Floor<'_> {
    fn drop(&mut self) {
        for (node, device) in &self.devices {
            if let Some(n) = self.sandbox.nodes.get(node) {
                let _ = n.netns.try_exec(&["ip", "link", "del", device]);
            }
        }
        let _ = std::fs::remove_dir_all(&self.keys);
    }
}

fn floor_device(i: usize) -> String {
    format!("kmb{}x{i}", std::process::id() % 100_000)
}

/// Configures the mesh of `members` by hand and returns the time from the first command
/// to every device's handshake with every other, and the commands run.
fn floor(sandbox: &Sandbox, members: &[String], timeout: Duration) -> Result<(Duration, usize)> {
    let keys = std::env::temp_dir().join(format!("kwire-mesh-bench-keys-{}", std::process::id()));
    std::fs::create_dir_all(&keys)?;
    let mut guard = Floor {
        sandbox,
        devices: Vec::new(),
        keys: keys.clone(),
    };
    let port = SPEC.port + 1;
    let mut commands = 0;
    let t0 = Instant::now();
    // Keys.
    let mut public = Vec::new();
    for i in 0..members.len() {
        let private = run_ok(Command::new("wg").arg("genkey"))?;
        let file = keys.join(format!("{i}.key"));
        std::fs::write(&file, format!("{private}\n"))?;
        let mut child = Command::new("wg")
            .arg("pubkey")
            .stdin(std::fs::File::open(&file)?)
            .stdout(Stdio::piped())
            .spawn()?;
        let mut text = String::new();
        std::io::Read::read_to_string(child.stdout.as_mut().context("no stdout")?, &mut text)?;
        ensure!(child.wait()?.success(), "wg pubkey failed");
        public.push(text.trim().to_string());
        commands += 2;
    }
    // Devices.
    for (i, node) in members.iter().enumerate() {
        let ns = sandbox.nodes[node].netns.name().to_string();
        let device = floor_device(i);
        guard.devices.push((node.clone(), device.clone()));
        run_ok(
            Command::new("ip")
                .args(["netns", "exec", &ns, "wireguard-go", &device])
                .env_remove("LOG_LEVEL"),
        )?;
        let socket = PathBuf::from(format!("/run/wireguard/{device}.sock"));
        kwire_tests::wait::wait_for_every(
            Duration::from_millis(1),
            &format!("{} to appear", socket.display()),
            Duration::from_secs(10),
            || Ok(socket.exists().then_some(())),
        )?;
        let v4 = format!("10.63.0.{}/24", i + 1);
        let v6 = format!("fd00:63::{:x}/64", i + 1);
        for argv in [
            vec!["ip", "address", "add", &v4, "dev", &device],
            vec!["ip", "address", "add", &v6, "dev", &device],
            vec!["ip", "link", "set", &device, "up"],
        ] {
            run_ok(Command::new("ip").args(["netns", "exec", &ns]).args(&argv))?;
        }
        commands += 4;
    }
    // Peers: one `wg set` per device with all the others.
    for (i, node) in members.iter().enumerate() {
        let ns = sandbox.nodes[node].netns.name().to_string();
        let key = keys.join(format!("{i}.key"));
        let mut argv: Vec<String> = vec![
            "wg".into(),
            "set".into(),
            floor_device(i),
            "listen-port".into(),
            port.to_string(),
            "private-key".into(),
            key.display().to_string(),
        ];
        for (j, other) in members.iter().enumerate().filter(|(j, _)| *j != i) {
            argv.extend([
                "peer".into(),
                public[j].clone(),
                "endpoint".into(),
                format!("{}:{port}", sandbox.nodes[other].address),
                "allowed-ips".into(),
                format!("10.63.0.{}/32,fd00:63::{:x}/128", j + 1, j + 1),
                "persistent-keepalive".into(),
                SPEC.keepalive.to_string(),
            ]);
        }
        run_ok(Command::new("ip").args(["netns", "exec", &ns]).args(&argv))?;
        commands += 1;
    }
    let want = members.len() - 1;
    let devices = guard.devices.clone();
    let took = wait_for_every_zero(
        "every hand-made device to shake hands with every other",
        timeout,
        || {
            let mut all = true;
            for (_, device) in &devices {
                let dump = run_ok(Command::new("wg").args(["show", device, "dump"]))?;
                // `wg show <device> dump`: the device's line has 4 fields, a peer's 8.
                let shaken = dump
                    .lines()
                    .map(|l| l.split('\t').collect::<Vec<_>>())
                    .filter(|f| f.len() == 8 && f[4].parse::<u64>().unwrap_or(0) > 0)
                    .count();
                if shaken != want {
                    all = false;
                    break;
                }
            }
            Ok(all.then(|| t0.elapsed()))
        },
    )?;
    // A check, not timed: the first member answers pings from the last over the floor.
    let last = &sandbox.nodes[&members[members.len() - 1]];
    ensure!(
        last.netns
            .wait_for_ping("10.63.0.1".parse()?, Duration::from_secs(10))
            .is_some(),
        "the hand-made mesh does not answer pings"
    );
    drop(guard);
    Ok((took, commands))
}

// --- one form at one size -------------------------------------------------------------

#[derive(Debug, Default)]
struct Run {
    n: usize,
    form: Option<Form>,
    load_before: String,
    load_after: String,
    apply: Duration,
    connected: Connected,
    join: Connected,
    connect_counts: Counts,
    join_counts: Counts,
    resync_counts: Counts,
    operator_rss: Option<u64>,
    operator_hwm: Option<u64>,
    daemon_rss: Option<u64>,
    objects: Option<ObjectCounts>,
    lost_untouched: u64,
    sent_untouched: u64,
    lost_restarted: u64,
    sent_restarted: u64,
    floor: Option<(Duration, usize)>,
}

async fn run_form(args: &Args, n: usize, form: Form) -> Result<Run> {
    let mut run = Run {
        n,
        form: Some(form),
        load_before: load(),
        ..Run::default()
    };
    eprintln!("== {n} members, {} (load {})", form.name(), run.load_before);
    let names = node_names(n);
    let members: Vec<String> = names[..n].to_vec();
    let joiner = names[n].clone();
    let labelled: &[String] = match form {
        Form::Mesh => &members,
        Form::Peers => &[],
    };
    let manifest =
        std::env::temp_dir().join(format!("kwire-mesh-bench-{}-{n}.yaml", std::process::id()));
    std::fs::write(&manifest, node_documents(&names, SPEC.label, labelled))?;
    let up = Sandbox::up(std::slice::from_ref(&manifest), NAMESPACE, false).await;
    let _ = std::fs::remove_file(&manifest);
    let mut sandbox = up?;

    if form == Form::Mesh {
        eprint!("  {:<58}", "floor: the same mesh by hand (wg, ip)");
        let floor = floor(&sandbox, &members, args.timeout)?;
        eprintln!(" ok  {:>6.1}s", floor.0.as_secs_f64());
        run.floor = Some(floor);
    }

    // The bench's own operator (its resync period, its process), and the FlowSchemas.
    eprint!("  {:<58}", "FlowSchemas; the bench's operator the leader");
    let began = Instant::now();
    sandbox.apply_yaml(&flow_schemas())?;
    wait_for(
        "the FlowSchemas to be in use",
        args.timeout,
        || -> Result<Option<()>> {
            let out = admin_kubectl(
                &sandbox,
                &[
                    "get",
                    "flowschemas",
                    "kwire-bench-node",
                    "kwire-bench-operator",
                    "-o",
                    "json",
                ],
            )?;
            let list: Value = serde_json::from_str(&out)?;
            let ready = list["items"].as_array().is_some_and(|items| {
                items.len() == 2
                    && items.iter().all(|fs| {
                        fs["status"]["conditions"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .any(|c| c["type"] == "Dangling" && c["status"] == "False")
                    })
            });
            Ok(ready.then_some(()))
        },
    )?;
    sandbox.stop_operator()?;
    let resync = args.resync_seconds.to_string();
    let operator = sandbox
        .spawn_operator("bench", &["--resync-seconds", &resync])
        .await?;
    wait_for("the bench's operator to lead", args.timeout, || {
        let addr = operator.metrics_addr().context("no metrics address yet")?;
        let m = operator_metrics(addr)?;
        Ok((metric_sum(&m, "kwire_operator_leader", &[]) >= 1.0).then_some(()))
    })?;
    eprintln!(" ok  {:>6.1}s", began.elapsed().as_secs_f64());

    // Connect.
    eprint!(
        "  {:<58}",
        format!("{}: apply, every pair connected", form.name())
    );
    let before = Counts::read(&sandbox, &operator, false)?;
    let manifest = match form {
        Form::Mesh => SPEC.manifest(),
        Form::Peers => explicit_manifest(&members, None),
    };
    let t0 = Instant::now();
    sandbox.apply_yaml(&manifest)?;
    run.apply = t0.elapsed();
    run.connected = wait_connected(&sandbox, &members, SPEC.device, t0, args.timeout)
        .with_context(|| sandbox.logs_tail(10))?;
    run.connect_counts = Counts::read(&sandbox, &operator, false)?.minus(&before);
    eprintln!(" ok  {:>6.1}s", run.connected.all.as_secs_f64());
    let op_pid = operator.pid().context("the operator is not running")?;
    run.operator_rss = status_kib(op_pid, "VmRSS:");
    run.operator_hwm = status_kib(op_pid, "VmHWM:");
    let daemon_pid = sandbox.nodes[&members[0]]
        .daemon
        .as_ref()
        .map(std::process::Child::id)
        .context("the first member's daemon is not running")?;
    run.daemon_rss = status_kib(daemon_pid, "VmRSS:");

    // Join.
    eprint!("  {:<58}", format!("{}: node {} joins", form.name(), n + 1));
    let before = Counts::read(&sandbox, &operator, false)?;
    let t1 = Instant::now();
    match form {
        Form::Mesh => set_member(&sandbox, &joiner, SPEC.label, true).await?,
        Form::Peers => {
            let mut with = members.clone();
            with.push(joiner.clone());
            sandbox.apply_yaml(&explicit_manifest(&with, Some(&joiner)))?;
        }
    }
    let all: Vec<String> = names.clone();
    run.join = wait_connected(&sandbox, &all, SPEC.device, t1, args.timeout)
        .with_context(|| sandbox.logs_tail(10))?;
    run.join_counts = Counts::read(&sandbox, &operator, false)?.minus(&before);
    eprintln!(" ok  {:>6.1}s", run.join.all.as_secs_f64());
    run.objects = Some(ObjectCounts::read(&sandbox)?);

    // Writes over one unchanged resync period of the operator.
    eprint!(
        "  {:<58}",
        format!("{}: nothing changes for {resync} s", form.name())
    );
    let before = Counts::read(&sandbox, &operator, true)?;
    // Not a settle: the window measured is one resync period.
    tokio::time::sleep(Duration::from_secs(args.resync_seconds)).await;
    run.resync_counts = Counts::read(&sandbox, &operator, true)?.minus(&before);
    eprintln!(" ok");

    // A node daemon restarts while pings run.
    eprint!(
        "  {:<58}",
        format!(
            "{}: the daemon of {} restarts",
            form.name(),
            members[RESTARTED]
        )
    );
    let began = Instant::now();
    let v4 = v4_by_node(&sandbox)?;
    let from = sandbox.nodes[&members[0]].netns.name().to_string();
    let untouched = ContinuousPing::start(
        &from,
        *v4.get(&members[1])
            .context("no address of the second member")?,
        "untouched pair",
    )?;
    let restarted = ContinuousPing::start(
        &from,
        *v4.get(&members[RESTARTED])
            .context("no address of the restarted member")?,
        "pair with the restarted node",
    )?;
    untouched.wait_replies(20, Duration::from_secs(10))?;
    restarted.wait_replies(20, Duration::from_secs(10))?;
    let name = members[RESTARTED].clone();
    let command = sandbox.daemon_command(&name)?;
    sandbox.kill_daemon(&name)?;
    sandbox.respawn_daemon(&name, &command)?;
    let node = &sandbox.nodes[&name];
    wait_for("the restarted daemon to be ready", args.timeout, || {
        let (code, _) = node.netns.http_get(NODE_METRICS_PORT, "/readyz")?;
        Ok((code == 200).then_some(()))
    })?;
    let u = untouched.finish()?;
    let r = restarted.finish()?;
    (run.lost_untouched, run.sent_untouched) = (u.lost, u.transmitted);
    (run.lost_restarted, run.sent_restarted) = (r.lost, r.transmitted);
    eprintln!(" ok  {:>6.1}s", began.elapsed().as_secs_f64());

    drop(operator);
    drop(sandbox);
    run.load_after = load();
    Ok(run)
}

// --- the tables -----------------------------------------------------------------------

fn print_tables(runs: &[Run]) {
    println!(
        "| N | form | objects applied | apply (kubectl) | every member has all N−1 handshakes: half of them / all | node N+1 joins: half / all N+1 have it all |"
    );
    println!("|---|---|---|---|---|---|");
    for r in runs {
        let form = r.form.unwrap_or(Form::Mesh);
        if let Some((took, commands)) = r.floor {
            println!(
                "| {} | floor: by hand ({commands} commands of wg, wireguard-go, ip) | - | - | - / {} | - |",
                r.n,
                secs(took)
            );
        }
        let applied = match form {
            Form::Mesh => 3,
            Form::Peers => 2 + r.n + r.n * (r.n - 1) / 2,
        };
        println!(
            "| {} | {} | {applied} | {} | {} | {} |",
            r.n,
            form.name(),
            secs(r.apply),
            both(r.connected),
            both(r.join)
        );
    }
    println!();
    println!(
        "| N | form | kwire objects after the join | operator API requests: connect / join (writes) | node daemon API requests, per daemon: connect / join | operator VmRSS / VmHWM | first member's daemon VmRSS |"
    );
    println!("|---|---|---|---|---|---|---|");
    for r in runs {
        let daemons = (r.n + 1) as f64;
        let objects = r.objects.map_or("?".into(), |o| {
            format!(
                "{} ({} Interfaces, {} Peers)",
                o.total(),
                o.interfaces,
                o.peers
            )
        });
        println!(
            "| {} | {} | {objects} | {:.0} ({:.0}) / {:.0} ({:.0}) | {:.1} / {:.1} | {} / {} MiB | {} MiB |",
            r.n,
            r.form.unwrap_or(Form::Mesh).name(),
            r.connect_counts.operator_requests,
            r.connect_counts.operator_writes,
            r.join_counts.operator_requests,
            r.join_counts.operator_writes,
            r.connect_counts.node_requests / daemons,
            r.join_counts.node_requests / daemons,
            mib(r.operator_rss),
            mib(r.operator_hwm),
            mib(r.daemon_rss)
        );
    }
    println!();
    println!(
        "| N | form | unchanged resync window: operator writes (its reconciles) | node daemons' API writes (all) | node daemons' kernel writes (all) | pings lost across a daemon restart: untouched pair | pair with the restarted node |"
    );
    println!("|---|---|---|---|---|---|---|");
    for r in runs {
        let c = &r.resync_counts;
        println!(
            "| {} | {} | {:.0} ({:.0}) | {:.0} | {:.0} | {} of {} | {} of {} |",
            r.n,
            r.form.unwrap_or(Form::Mesh).name(),
            c.operator_writes,
            c.operator_reconciles,
            c.kwire_writes - c.operator_kwire_writes,
            c.kernel_writes,
            r.lost_untouched,
            r.sent_untouched,
            r.lost_restarted,
            r.sent_restarted
        );
    }
    println!();
    println!("Cross-check of the API server's count (APF) against the operator's own:");
    for r in runs {
        println!(
            "- N={} {}: operator connect {:.0} by APF vs {:.0} by its metric; join {:.0} vs {:.0}; load {} before, {} after",
            r.n,
            r.form.unwrap_or(Form::Mesh).name(),
            r.connect_counts.operator_requests_apf,
            r.connect_counts.operator_requests,
            r.join_counts.operator_requests_apf,
            r.join_counts.operator_requests,
            r.load_before,
            r.load_after
        );
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    if let Err(why) = can_run_network_tests() {
        bail!("the sandbox cannot run here: {why}");
    }
    println!(
        "kwire-mesh-bench --sizes {:?}: load {} at start",
        args.sizes,
        load()
    );
    let mut runs = Vec::new();
    for &n in &args.sizes {
        ensure!(n >= 3, "a size must be at least 3 members");
        for form in [Form::Mesh, Form::Peers] {
            match run_form(&args, n, form).await {
                Ok(run) => runs.push(run),
                Err(e) => {
                    eprintln!("\n{n} members, {}: {e:#}", form.name());
                    print_tables(&runs);
                    return Err(e);
                }
            }
        }
    }
    print_tables(&runs);
    println!("load {} at the end", load());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_explicit_form_has_one_peer_per_pair() {
        let members = node_names(3)[..3].to_vec();
        let all = explicit_manifest(&members, None);
        assert_eq!(all.matches("kind: Interface").count(), 3);
        assert_eq!(all.matches("kind: Peer").count(), 3);
        assert_eq!(all.matches("kind: Network").count(), 2);
        assert!(!all.contains("kind: Mesh"));
        let join = explicit_manifest(&node_names(3), Some("m04"));
        assert_eq!(join.matches("kind: Interface").count(), 1);
        assert_eq!(join.matches("kind: Peer").count(), 3);
        assert!(join.contains("name: m01-m04"));
    }
}
