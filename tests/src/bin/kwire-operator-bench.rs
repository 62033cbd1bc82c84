//! `kwire-operator-bench`: the operator's cold start at scale, on the local control plane.
//!
//! Creates Nodes, one Network and N Interfaces with K Peers each (no node daemons: only the
//! operator's work is measured), then starts `kwire-operator` under the chart's
//! ServiceAccount and measures:
//! - the time until every Interface has a key and an address and every Peer is resolved;
//! - the API requests it made (its `kwire_operator_api_requests_total`, cross-checked with
//!   the API server's `apiserver_request_total` for the status patches only it sends);
//! - the writes it makes during a following resync in which nothing changed (goal: zero).
//!
//! The references, measured in the same run on the same API server: creating the objects
//! from a plain client, which is about the write volume the operator has to make; and (with
//! the operator stopped) a plain client giving fresh copies of the objects the statuses the
//! operator wrote, one server-side apply each, the least the cold start must make the API
//! server do. The time to ready comes from a watch on the Interfaces and Peers.
//!
//! ```sh
//! cargo build --workspace --bins
//! ./target/debug/kwire-operator-bench --interfaces 1000 --peers-per-interface 5
//! ```
//!
//! It prints a table (Markdown, for docs/performance.md); it asserts nothing about time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use clap::Parser;
use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kwire_crds::v1alpha1::{Interface, Network, Peer};
use kwire_tests::bench::label;
use kwire_tests::control_plane::ControlPlane;
use kwire_tests::node_status::heartbeat;
use kwire_tests::sandbox::{
    SYSTEM_NAMESPACE, metric_sum, operator_metrics, operator_metrics_addr, workspace_binary,
};
use serde_json::json;
use tokio::sync::Semaphore;

#[derive(Parser)]
#[command(
    name = "kwire-operator-bench",
    about = "Cold start of kwire-operator at scale"
)]
struct Args {
    #[arg(long, default_value_t = 1000)]
    interfaces: u32,
    /// Peers per Interface (each links it to another Interface on another node).
    #[arg(long, default_value_t = 5)]
    peers_per_interface: u32,
    /// Interfaces per node.
    #[arg(long, default_value_t = 10)]
    per_node: u32,
    /// The operator's --resync-seconds (the no-op resync is measured over one period).
    #[arg(long, default_value_t = 300)]
    resync_seconds: u64,
    /// Concurrent requests when creating the objects.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Give up after this long.
    #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// The operator binary (default: target/release/kwire-operator if built, else debug).
    #[arg(long)]
    operator: Option<PathBuf>,
    /// Node churn: kubelet-like status updates of every Node for this long (0: skip).
    #[arg(long, default_value_t = 5)]
    churn_minutes: u64,
    /// Node churn: one update of every Node this often.
    #[arg(long, default_value_t = 10)]
    heartbeat_seconds: u64,
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// The PIDs of the control plane's processes, from its `pids` file.
fn control_plane_pids(cp: &ControlPlane) -> Vec<(String, u32)> {
    std::fs::read_to_string(cp.run_dir().join("pids"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (name, pid) = l.split_once(' ')?;
            Some((name.to_string(), pid.trim().parse().ok()?))
        })
        .collect()
}

fn control_plane_cpu(cp: &ControlPlane) -> BTreeMap<String, f64> {
    control_plane_pids(cp)
        .into_iter()
        .filter_map(|(name, pid)| Some((name, cpu_seconds(pid)?)))
        .collect()
}

const NS: &str = "bench";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Kills the operator when the benchmark ends, however it ends.
struct Operator(Child);

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `make(i)` for `0..n` with at most `concurrency` in flight; returns the time taken.
async fn create_all<F, Fut>(n: u32, concurrency: usize, make: F) -> Result<Duration>
where
    F: Fn(u32) -> Fut,
    Fut: std::future::Future<Output = Result<()>> + Send + 'static,
{
    let start = Instant::now();
    let gate = Arc::new(Semaphore::new(concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let permit = gate.clone().acquire_owned().await?;
        let fut = make(i);
        tasks.spawn(async move {
            let result = fut.await;
            drop(permit);
            result
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(start.elapsed())
}

fn interface_name(i: u32) -> String {
    format!("if-{i:04}")
}

/// The Interfaces linked to Interface `i`: `i + d` for a few strides, never on its own node,
/// each unordered pair once.
fn partners(i: u32, n: u32, k: u32) -> Vec<u32> {
    (1..=k).map(|s| (i + s * 37) % n).collect()
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn requests_table(metrics: &str) -> BTreeMap<(String, String), f64> {
    let mut out = BTreeMap::new();
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("kwire_operator_api_requests_total{"))
    {
        let Some((labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let field = |key: &str| label(labels, key);
        *out.entry((field("verb"), field("resource"))).or_insert(0.0) +=
            value.parse::<f64>().unwrap_or(0.0);
    }
    out
}

fn start_operator(bin: &Path, kubeconfig: &Path, resync: u64, log: &Path) -> Result<Operator> {
    let log_file = std::fs::File::create(log)?;
    Ok(Operator(
        Command::new(bin)
            .args([
                "--metrics-addr",
                "127.0.0.1:0",
                "--log-format",
                "text",
                "--resync-seconds",
            ])
            .arg(resync.to_string())
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "warn,kwire_operator::http=info")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .context("starting kwire-operator")?,
    ))
}

/// Waits until the operator's reconcile counter stops moving for 3 s; returns its metrics.
async fn wait_quiet(addr: std::net::SocketAddr, at_most: Duration) -> Result<String> {
    let start = Instant::now();
    let mut previous = operator_metrics(addr)?;
    loop {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let now = operator_metrics(addr)?;
        let count = |m: &str| metric_sum(m, "kwire_operator_reconciles_total", &[]);
        if count(&now) == count(&previous) || start.elapsed() > at_most {
            return Ok(now);
        }
        previous = now;
    }
}

fn is_write(verb: &str) -> bool {
    matches!(verb, "create" | "update" | "patch" | "delete")
}

fn interface_ready(i: &Interface) -> bool {
    i.status
        .as_ref()
        .is_some_and(|s| s.public_key.is_some() && !s.addresses.is_empty())
}

fn peer_resolved(p: &Peer) -> bool {
    p.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Resolved" && c.status == "True")
    })
}

/// Watches Interfaces and Peers until `interfaces` are keyed and addressed and `peers` are
/// resolved, and returns the instant the watch saw the last of them.
async fn ready_instant(
    if_api: Api<Interface>,
    peer_api: Api<Peer>,
    interfaces: usize,
    peers: usize,
) -> Result<Instant> {
    use futures::StreamExt as _;
    use kube::ResourceExt as _;
    use kube::runtime::watcher;
    enum Seen {
        Interface(String, bool),
        Peer(String, bool),
    }
    fn seen<K: kube::Resource + Clone>(
        event: watcher::Event<K>,
        wrap: impl Fn(String, bool) -> Seen,
        ready: impl Fn(&K) -> bool,
    ) -> Vec<Seen> {
        match event {
            watcher::Event::Apply(o) | watcher::Event::InitApply(o) => {
                vec![wrap(o.name_any(), ready(&o))]
            }
            watcher::Event::Delete(o) => vec![wrap(o.name_any(), false)],
            watcher::Event::Init | watcher::Event::InitDone => Vec::new(),
        }
    }
    let ifs = watcher(if_api, watcher::Config::default())
        .map(|e| e.map(|e| seen(e, Seen::Interface, interface_ready)));
    let ps = watcher(peer_api, watcher::Config::default())
        .map(|e| e.map(|e| seen(e, Seen::Peer, peer_resolved)));
    let mut events = futures::stream::select(ifs.boxed(), ps.boxed());
    let (mut ready_ifs, mut ready_peers) = (
        std::collections::HashSet::new(),
        std::collections::HashSet::new(),
    );
    while let Some(batch) = events.next().await {
        for seen in batch? {
            let (set, name, ready) = match seen {
                Seen::Interface(name, ready) => (&mut ready_ifs, name, ready),
                Seen::Peer(name, ready) => (&mut ready_peers, name, ready),
            };
            if ready {
                set.insert(name);
            } else {
                set.remove(&name);
            }
        }
        if ready_ifs.len() >= interfaces && ready_peers.len() >= peers {
            return Ok(Instant::now());
        }
    }
    bail!("the readiness watch ended")
}

async fn progress(interfaces: &Api<Interface>, peers: &Api<Peer>) -> Result<(usize, usize)> {
    let cached = ListParams::default().match_any();
    let ready_ifs = interfaces
        .list(&cached)
        .await?
        .items
        .iter()
        .filter(|i| interface_ready(i))
        .count();
    let resolved = peers
        .list(&cached)
        .await?
        .items
        .iter()
        .filter(|p| peer_resolved(p))
        .count();
    Ok((ready_ifs, resolved))
}

fn apiserver_status_patches(cp: &ControlPlane) -> Result<f64> {
    let out = cp.kubectl().args(["get", "--raw", "/metrics"]).output()?;
    ensure!(out.status.success(), "kubectl get --raw /metrics failed");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut total = 0.0;
    for resource in ["interfaces", "peers", "networks"] {
        total += metric_sum(
            &text,
            "apiserver_request_total",
            &[
                "verb=\"APPLY\"",
                &format!("resource=\"{resource}\""),
                "subresource=\"status\"",
                "group=\"kwire.dev\"",
            ],
        );
    }
    Ok(total)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    let n = args.interfaces;
    let k = args.peers_per_interface;
    ensure!(
        k * 37 < n / 2,
        "too many peers per interface for {n} interfaces"
    );
    ensure!(
        n / args.per_node <= 1000,
        "at most 1000 Interfaces per Network (/22): raise --per-node"
    );
    let nodes = n.div_ceil(args.per_node);
    let release = repo().join("target/release/kwire-operator");
    let operator_bin = match &args.operator {
        Some(path) => path.clone(),
        None if release.exists() => release,
        None => workspace_binary("kwire-operator")?,
    };
    eprintln!("operator binary: {}", operator_bin.display());
    let run_dir = std::env::temp_dir().join(format!("kwire-operator-bench-{}", std::process::id()));
    std::fs::create_dir_all(&run_dir)?;
    let result = bench(&args, n, k, nodes, &operator_bin, &run_dir).await;
    let _ = std::fs::remove_dir_all(&run_dir);
    result
}

async fn bench(
    args: &Args,
    n: u32,
    k: u32,
    nodes: u32,
    operator_bin: &Path,
    run_dir: &Path,
) -> Result<()> {
    eprintln!("starting the control plane");
    let cp = ControlPlane::start(run_dir.with_extension("control-plane"))?;
    let out = cp
        .helm()
        .args(["install", "kwire"])
        .arg(repo().join("charts/kwire"))
        .args([
            "--namespace",
            SYSTEM_NAMESPACE,
            "--create-namespace",
            "--wait=false",
            // The benchmark's Interfaces keep generated keys in Secrets and no
            // node daemon runs: without this, the chart's default admission
            // policy (nodeSecretAccess.mode none) rejects them.
            "--set",
            "nodeSecretAccess.admissionPolicy=false",
        ])
        .output()?;
    ensure!(
        out.status.success(),
        "helm install: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cp
        .kubectl()
        .args([
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/interfaces.kwire.dev",
            "crd/peers.kwire.dev",
            "crd/networks.kwire.dev",
            "crd/routes.kwire.dev",
        ])
        .output()?;
    ensure!(out.status.success(), "CRDs not established");
    let client = cp.client().await?;
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": NS}}))?,
        )
        .await?;

    eprintln!(
        "creating {nodes} Nodes, 1 Network, {n} Interfaces, {} Peers",
        n * k
    );
    let node_api = Api::<Node>::all(client.clone());
    let t_nodes = create_all(nodes, args.concurrency, |i| {
        let api = node_api.clone();
        async move {
            let name = format!("node-{i:03}");
            api.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": name}}))?)
                .await?;
            api.patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"addresses": [{"type": "InternalIP", "address": format!("10.200.{}.{}", i / 250, i % 250 + 1)}]}})),
            )
            .await?;
            Ok(())
        }
    })
    .await?;
    // One Network per device index: the Interfaces of a node are in disjoint networks.
    for j in 0..args.per_node {
        Api::<Network>::namespaced(client.clone(), NS)
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({
                    "apiVersion": "kwire.dev/v1alpha1", "kind": "Network",
                    "metadata": {"name": format!("net-{j}")},
                    "spec": {"cidr": format!("10.64.{}.0/{}", j * 4, 22)}
                }))?,
            )
            .await?;
    }
    let if_api = Api::<Interface>::namespaced(client.clone(), NS);
    let per_node = args.per_node;
    let t_ifs = create_all(n, args.concurrency, |i| {
        let api = if_api.clone();
        async move {
            let obj: Interface = serde_json::from_value(json!({
                "apiVersion": "kwire.dev/v1alpha1", "kind": "Interface",
                "metadata": {"name": interface_name(i)},
                "spec": {
                    "nodeName": format!("node-{:03}", i / per_node),
                    "deviceName": format!("wg{}", i % per_node),
                    "listenPort": 51820 + i % per_node,
                    "networks": [{"name": format!("net-{}", i % per_node)}],
                }
            }))?;
            api.create(&PostParams::default(), &obj).await?;
            Ok(())
        }
    })
    .await?;
    let peer_api = Api::<Peer>::namespaced(client.clone(), NS);
    let t_peers = create_all(n * k, args.concurrency, |j| {
        let api = peer_api.clone();
        async move {
            let (i, s) = (j / k, j % k);
            let remote = partners(i, n, k)[s as usize];
            let obj: Peer = serde_json::from_value(json!({
                "apiVersion": "kwire.dev/v1alpha1", "kind": "Peer",
                "metadata": {"name": format!("p-{i:04}-{remote:04}")},
                "spec": {
                    "interface": interface_name(i),
                    "remote": {"interface": interface_name(remote)},
                    "persistentKeepalive": 25,
                }
            }))?;
            api.create(&PostParams::default(), &obj).await?;
            Ok(())
        }
    })
    .await?;
    let created = n + n * k + nodes + per_node;
    let t_create = t_nodes + t_ifs + t_peers;
    eprintln!(
        "created {created} objects in {:.1}s ({:.0}/s)",
        t_create.as_secs_f64(),
        f64::from(created) / t_create.as_secs_f64()
    );

    // Cold start.
    let kubeconfig = cp
        .service_account_kubeconfig(SYSTEM_NAMESPACE, "kwire-operator")
        .await?;
    let log = run_dir.join("operator.log");
    let before_patches = apiserver_status_patches(&cp)?;
    let cp_cpu_before = control_plane_cpu(&cp);
    // The instant the last object became ready, from watches (the polling below only
    // prints progress: its 2 s period would round the time up by as much).
    let ready_at = tokio::spawn(ready_instant(
        if_api.clone(),
        peer_api.clone(),
        n as usize,
        (n * k) as usize,
    ));
    let started = Instant::now();
    let operator = start_operator(operator_bin, &kubeconfig, args.resync_seconds, &log)?;
    let pid = operator.0.id();
    let mut last = (0, 0);
    let mut first_resolved = None;
    let (done, metrics_done) = loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = progress(&if_api, &peer_api).await?;
        if now.1 > 0 && first_resolved.is_none() {
            first_resolved = Some(started.elapsed());
        }
        if now != last {
            eprintln!(
                "  {:>6.1}s  Interfaces with key and address {:>5}/{n}  Peers resolved {:>5}/{}",
                started.elapsed().as_secs_f64(),
                now.0,
                now.1,
                n * k
            );
            last = now;
        }
        if now == (n as usize, (n * k) as usize) {
            let addr = operator_metrics_addr(&log)
                .ok_or_else(|| anyhow!("no metrics address in {}", log.display()))?;
            let metrics = operator_metrics(addr)?;
            let at = ready_at.await.context("the readiness watch")??;
            break (at.saturating_duration_since(started), metrics);
        }
        if started.elapsed() > args.timeout {
            bail!("not converged after {}s", args.timeout.as_secs());
        }
    };
    let addr = operator_metrics_addr(&log).ok_or_else(|| anyhow!("no metrics address"))?;
    let rss_cold = rss_kib(pid);
    let operator_cpu = cpu_seconds(pid).unwrap_or_default();
    let cp_cpu: Vec<String> = control_plane_cpu(&cp)
        .into_iter()
        .map(|(name, after)| {
            format!(
                "{name} {:.0} s",
                after - cp_cpu_before.get(&name).copied().unwrap_or(0.0)
            )
        })
        .collect();
    let topology_checks = metric_sum(&metrics_done, "kwire_operator_topology_checks_total", &[]);
    let reconciles_cold = metric_sum(&metrics_done, "kwire_operator_reconciles_total", &[]);
    let failures_cold = failures_by_error(&metrics_done);
    let holds_cold = metric_sum(&metrics_done, "kwire_operator_status_holds_total", &[]);
    let apiserver_patches = apiserver_status_patches(&cp)? - before_patches;

    // Let the triggers of the cold start settle, then measure one resync period.
    wait_quiet(addr, Duration::from_secs(120)).await?;
    let quiet_start = operator_metrics(addr)?;
    let window = Duration::from_secs(args.resync_seconds + args.resync_seconds / 10 + 10);
    eprintln!("measuring a no-op resync over {}s", window.as_secs());
    tokio::time::sleep(window).await;
    let quiet_end = operator_metrics(addr)?;
    let rss_after = rss_kib(pid);
    drop(operator);

    // A restart: every object listed and reconciled again, nothing to change.
    let log2 = run_dir.join("operator-restarted.log");
    let restarted = Instant::now();
    let operator = start_operator(operator_bin, &kubeconfig, args.resync_seconds, &log2)?;
    let objects_total = f64::from(n + n * k + args.per_node);
    let addr2 = loop {
        if let Some(a) = operator_metrics_addr(&log2) {
            break a;
        }
        ensure!(
            restarted.elapsed() < Duration::from_secs(60),
            "the restarted operator logs no metrics address"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let restart_done = loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let m = operator_metrics(addr2)?;
        if metric_sum(&m, "kwire_operator_reconciles_total", &[]) >= objects_total {
            break restarted.elapsed();
        }
        ensure!(
            restarted.elapsed() < args.timeout,
            "the restarted operator did not reconcile everything"
        );
    };
    let after_restart = wait_quiet(addr2, Duration::from_secs(120)).await?;
    drop(operator);

    // Reference 2, with the operator stopped: the same Interfaces and Peers created afresh in
    // another namespace, then a plain client gives each the status the operator gave its
    // twin (one server-side apply per object, as the operator's first status write is).
    // That is the least the operator's cold start must make the API server do.
    eprintln!("reference 2: fresh copies of the objects, one status apply each");
    let t_applies = reference_status_applies(
        &client,
        &if_api.get(&interface_name(0)).await?,
        &peer_api
            .get(&{
                let remote = partners(0, n, k)[0];
                format!("p-{:04}-{remote:04}", 0)
            })
            .await?,
        n,
        k,
        args.concurrency,
    )
    .await?;
    let restart_requests = requests_table(&after_restart);
    // A fold from 0.0, not `sum()`: f64's empty sum is -0.0, which prints as "-0".
    let restart_writes: f64 = restart_requests
        .iter()
        .filter(|(k, _)| is_write(&k.0))
        .fold(0.0, |sum, (_, v)| sum + v);
    let restart_reads: f64 = restart_requests
        .iter()
        .filter(|(k, _)| !is_write(&k.0))
        .fold(0.0, |sum, (_, v)| sum + v);
    let restart_reconciles = metric_sum(&after_restart, "kwire_operator_reconciles_total", &[]);

    let churn = if args.churn_minutes > 0 {
        Some(
            churn(
                args,
                &client,
                nodes,
                operator_bin,
                &kubeconfig,
                &run_dir.join("operator-churn.log"),
            )
            .await?,
        )
    } else {
        None
    };

    // The table.
    let cold = requests_table(&metrics_done);
    let (start_q, end_q) = (requests_table(&quiet_start), requests_table(&quiet_end));
    let reconciles_resync = metric_sum(&quiet_end, "kwire_operator_reconciles_total", &[])
        - metric_sum(&quiet_start, "kwire_operator_reconciles_total", &[]);
    let mut writes_resync = 0.0;
    let mut reads_resync = 0.0;
    for (key, end) in &end_q {
        let delta = end - start_q.get(key).copied().unwrap_or(0.0);
        if is_write(&key.0) {
            writes_resync += delta;
        } else {
            reads_resync += delta;
        }
    }
    let total_cold: f64 = cold.values().sum();
    let writes_cold: f64 = cold
        .iter()
        .filter(|(k, _)| is_write(&k.0))
        .fold(0.0, |sum, (_, v)| sum + v);
    let objects = f64::from(n + n * k + args.per_node);
    println!(
        "\n### Cold start: {n} Interfaces, {} Peers, {} Networks, {nodes} Nodes (no node daemons)\n",
        n * k,
        args.per_node
    );
    println!("| measure | value |\n|---|---|");
    println!(
        "| reference: a plain client creating the {created} objects ({} in flight) | {:.1} s ({:.0} objects/s) |",
        args.concurrency,
        t_create.as_secs_f64(),
        f64::from(created) / t_create.as_secs_f64()
    );
    println!(
        "| reference 2: a plain client giving {} fresh Interfaces and Peers the status the operator wrote (one server-side apply each, {} in flight) | {:.1} s |",
        n + n * k,
        args.concurrency,
        t_applies.as_secs_f64()
    );
    println!(
        "| operator start → first Peer resolved | {:.1} s |",
        first_resolved.unwrap_or_default().as_secs_f64()
    );
    println!(
        "| operator start → every Interface keyed and addressed, every Peer resolved | **{:.1} s** |",
        done.as_secs_f64()
    );
    println!(
        "| CPU used meanwhile: operator / control plane | {operator_cpu:.0} s / {} |",
        cp_cpu.join(", ")
    );
    println!(
        "| reconciles / whole-world topology checks until then | {reconciles_cold:.0} / {topology_checks:.0} |"
    );
    println!(
        "| reconciles that failed until then, by error (each retried with backoff) | {} |",
        if failures_cold.is_empty() {
            "0".to_string()
        } else {
            failures_cold.join(", ")
        }
    );
    println!(
        "| status writes held back while an object waited on the operator's own work | {holds_cold:.0} |"
    );
    println!(
        "| API requests until then (operator's count) | {total_cold:.0} ({:.2} per object), of which writes {writes_cold:.0} |",
        total_cold / objects
    );
    println!(
        "| status applies seen by the API server (`apiserver_request_total`, kwire.dev …/status) | {apiserver_patches:.0} |"
    );
    println!(
        "| operator peak memory (VmHWM) after the cold start / after the resync | {} / {} MiB |",
        rss_cold.map_or("?".into(), |r| format!("{:.0}", r as f64 / 1024.0)),
        rss_after.map_or("?".into(), |r| format!("{:.0}", r as f64 / 1024.0))
    );
    println!(
        "| no-op resync ({} s period, {:.0} s window): reconciles | {reconciles_resync:.0} |",
        args.resync_seconds,
        window.as_secs_f64()
    );
    println!("| no-op resync: API writes (goal 0) | **{writes_resync:.0}** |");
    println!("| no-op resync: API reads | {reads_resync:.0} |");
    println!(
        "| restart: every object reconciled again after | {:.1} s ({restart_reconciles:.0} reconciles) |",
        restart_done.as_secs_f64()
    );
    println!("| restart: API writes (goal 0) | **{restart_writes:.0}** |");
    println!("| restart: API reads (lists and watches included) | {restart_reads:.0} |");
    println!("\nRequests of the cold start by verb and resource:\n");
    println!("| verb | resource | requests |\n|---|---|---|");
    for ((verb, resource), count) in &cold {
        println!("| {verb} | {resource} | {count:.0} |");
    }
    if let Some(c) = &churn {
        c.print(nodes, args);
    }
    if writes_resync > 0.0 {
        println!("\nWrites during the no-op resync:\n");
        for (key, end) in &end_q {
            let delta = end - start_q.get(key).copied().unwrap_or(0.0);
            if is_write(&key.0) && delta > 0.0 {
                println!("- {} {}: {delta:.0}", key.0, key.1);
            }
        }
    }
    Ok(())
}

fn node_ip(i: u32) -> String {
    format!("10.200.{}.{}", i / 250, i % 250 + 1)
}

/// What the churn phase measured.
struct Churn {
    window: Duration,
    updates: u64,
    reconciles: f64,
    writes: f64,
    moved: String,
    dependents: usize,
    rewritten: usize,
    others_rewritten: usize,
    move_writes: f64,
    move_reconciles: f64,
}

impl Churn {
    fn print(&self, nodes: u32, args: &Args) {
        println!(
            "\n### Node churn: {nodes} Nodes, one kubelet-like status update each every {} s for {:.0} s\n",
            args.heartbeat_seconds,
            self.window.as_secs_f64()
        );
        println!("| measure | value |\n|---|---|");
        println!(
            "| reference: Node status updates sent (conditions, images, allocatable; addresses unchanged) | {} |",
            self.updates
        );
        println!(
            "| operator reconciles meanwhile | **{:.0}** |",
            self.reconciles
        );
        println!(
            "| operator API writes meanwhile (goal 0) | **{:.0}** |",
            self.writes
        );
        println!(
            "| one Node's InternalIP changed ({}): objects whose status carried it / rewritten / others rewritten | {} / {} / {} |",
            self.moved, self.dependents, self.rewritten, self.others_rewritten
        );
        println!(
            "| … operator reconciles / writes for it | {:.0} / {:.0} |",
            self.move_reconciles, self.move_writes
        );
    }
}

/// resourceVersion and status text of every Interface and Peer of the benchmark namespace.
async fn statuses(client: &kube::Client) -> Result<BTreeMap<String, (String, String)>> {
    let mut out = BTreeMap::new();
    let lp = ListParams::default();
    for i in Api::<Interface>::namespaced(client.clone(), NS)
        .list(&lp)
        .await?
    {
        out.insert(
            format!("Interface/{}", i.metadata.name.clone().unwrap_or_default()),
            (
                i.metadata.resource_version.clone().unwrap_or_default(),
                serde_json::to_string(&i.status)?,
            ),
        );
    }
    for p in Api::<Peer>::namespaced(client.clone(), NS)
        .list(&lp)
        .await?
    {
        out.insert(
            format!("Peer/{}", p.metadata.name.clone().unwrap_or_default()),
            (
                p.metadata.resource_version.clone().unwrap_or_default(),
                serde_json::to_string(&p.status)?,
            ),
        );
    }
    Ok(out)
}

/// Node churn with a fresh operator whose resync period is longer than the window, so that
/// every reconcile counted comes from the churn: kubelet-like updates of every Node, then one
/// Node's address changed.
async fn churn(
    args: &Args,
    client: &kube::Client,
    nodes: u32,
    operator_bin: &Path,
    kubeconfig: &Path,
    log: &Path,
) -> Result<Churn> {
    let window = Duration::from_secs(args.churn_minutes * 60);
    let resync = window.as_secs() * 4 + 600;
    let started = Instant::now();
    let operator = start_operator(operator_bin, kubeconfig, resync, log)?;
    let addr = loop {
        if let Some(a) = operator_metrics_addr(log) {
            break a;
        }
        ensure!(
            started.elapsed() < Duration::from_secs(60),
            "the churn operator logs no metrics address"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let begin = wait_quiet(addr, Duration::from_secs(300)).await?;
    let totals = |m: &str| {
        let writes = requests_table(m)
            .iter()
            .filter(|(k, _)| is_write(&k.0) && k.1 != "leases")
            .fold(0.0, |sum, (_, v)| sum + v);
        (
            metric_sum(m, "kwire_operator_reconciles_total", &[]),
            writes,
        )
    };
    let (r0, w0) = totals(&begin);
    eprintln!(
        "node churn: every Node every {}s for {}s",
        args.heartbeat_seconds,
        window.as_secs()
    );
    let node_api = Api::<Node>::all(client.clone());
    let churn_start = Instant::now();
    let mut beat = 0u64;
    let mut updates = 0u64;
    while churn_start.elapsed() < window {
        let round = Instant::now();
        beat += 1;
        create_all(nodes, args.concurrency, |i| {
            let api = node_api.clone();
            async move {
                api.patch_status(
                    &format!("node-{i:03}"),
                    &PatchParams::default(),
                    &Patch::Merge(heartbeat(&node_ip(i), &format!("node-{i:03}"), beat)),
                )
                .await?;
                Ok(())
            }
        })
        .await?;
        updates += u64::from(nodes);
        // Paced like a kubelet: the pause is the subject of the benchmark, not a settle.
        let next = round + Duration::from_secs(args.heartbeat_seconds);
        tokio::time::sleep_until(next.into()).await;
    }
    let window = churn_start.elapsed();
    let end = wait_quiet(addr, Duration::from_secs(300)).await?;
    let (r1, w1) = totals(&end);

    // One Node moves.
    let moved = 0u32;
    let (old_ip, new_ip) = (node_ip(moved), "10.201.0.1".to_string());
    let before = statuses(client).await?;
    let carries = |status: &str, ip: &str| {
        status.contains(&format!("\"{ip}:")) || status.contains(&format!("\"{ip}\""))
    };
    let dependents: Vec<String> = before
        .iter()
        .filter(|(_, (_, s))| carries(s, &old_ip))
        .map(|(k, _)| k.clone())
        .collect();
    node_api
        .patch_status(
            &format!("node-{moved:03}"),
            &PatchParams::default(),
            &Patch::Merge(heartbeat(&new_ip, &format!("node-{moved:03}"), beat + 1)),
        )
        .await?;
    let moved_at = Instant::now();
    loop {
        let now = statuses(client).await?;
        if dependents
            .iter()
            .all(|k| now.get(k).is_some_and(|(_, s)| carries(s, &new_ip)))
        {
            break;
        }
        ensure!(
            moved_at.elapsed() < Duration::from_secs(120),
            "the objects on node-{moved:03} did not follow its new address"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let after_move = wait_quiet(addr, Duration::from_secs(120)).await?;
    let (r2, w2) = totals(&after_move);
    let after = statuses(client).await?;
    let changed: Vec<&String> = after
        .iter()
        .filter(|(k, (rv, _))| before.get(*k).is_none_or(|(old, _)| old != rv))
        .map(|(k, _)| k)
        .collect();
    let rewritten = changed.iter().filter(|k| dependents.contains(k)).count();
    drop(operator);
    Ok(Churn {
        window,
        updates,
        reconciles: r1 - r0,
        writes: w1 - w0,
        moved: format!("node-{moved:03} {old_ip} → {new_ip}"),
        dependents: dependents.len(),
        rewritten,
        others_rewritten: changed.len() - rewritten,
        move_writes: w2 - w1,
        move_reconciles: r2 - r1,
    })
}

/// `error count` for every error label of `kwire_operator_reconcile_failures_total`.
fn failures_by_error(metrics: &str) -> Vec<String> {
    let mut by_error: std::collections::BTreeMap<String, f64> = std::collections::BTreeMap::new();
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("kwire_operator_reconcile_failures_total{"))
    {
        let Some((labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let error = labels
            .split("error=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or("?");
        *by_error.entry(error.to_string()).or_default() += value.parse::<f64>().unwrap_or(0.0);
    }
    by_error
        .into_iter()
        .filter(|(_, n)| *n > 0.0)
        .map(|(error, n)| format!("{error} {n:.0}"))
        .collect()
}

/// Creates `n` Interfaces and `n * k` Peers in a namespace of their own (untimed), then
/// times a plain client giving each the status of `interface` or `peer` (one server-side
/// status apply per object, `concurrency` in flight).
async fn reference_status_applies(
    client: &kube::Client,
    interface: &Interface,
    peer: &Peer,
    n: u32,
    k: u32,
    concurrency: usize,
) -> Result<Duration> {
    const REF_NS: &str = "bench-reference";
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": REF_NS}}))?,
        )
        .await?;
    let if_api = Api::<Interface>::namespaced(client.clone(), REF_NS);
    let peer_api = Api::<Peer>::namespaced(client.clone(), REF_NS);
    let copy = |spec: serde_json::Value, kind: &str, name: String| json!({"apiVersion": "kwire.dev/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec});
    let if_spec = serde_json::to_value(&interface.spec)?;
    let peer_spec = serde_json::to_value(&peer.spec)?;
    create_all(n, concurrency, |i| {
        let (api, obj) = (
            if_api.clone(),
            copy(if_spec.clone(), "Interface", interface_name(i)),
        );
        async move {
            api.create(&PostParams::default(), &serde_json::from_value(obj)?)
                .await?;
            Ok(())
        }
    })
    .await?;
    create_all(n * k, concurrency, |j| {
        let (api, obj) = (
            peer_api.clone(),
            copy(peer_spec.clone(), "Peer", format!("p-{j:05}")),
        );
        async move {
            api.create(&PostParams::default(), &serde_json::from_value(obj)?)
                .await?;
            Ok(())
        }
    })
    .await?;
    let status = |kind: &str, status: serde_json::Value| json!({"apiVersion": "kwire.dev/v1alpha1", "kind": kind, "status": status});
    let if_status = status("Interface", serde_json::to_value(&interface.status)?);
    let peer_status = status("Peer", serde_json::to_value(&peer.status)?);
    let params = PatchParams::apply("kwire-operator-bench").force();
    let t_ifs = create_all(n, concurrency, |i| {
        let (api, body, params) = (if_api.clone(), if_status.clone(), params.clone());
        async move {
            api.patch_status(&interface_name(i), &params, &Patch::Apply(body))
                .await?;
            Ok(())
        }
    })
    .await?;
    let t_peers = create_all(n * k, concurrency, |j| {
        let (api, body, params) = (peer_api.clone(), peer_status.clone(), params.clone());
        async move {
            api.patch_status(&format!("p-{j:05}"), &params, &Patch::Apply(body))
                .await?;
            Ok(())
        }
    })
    .await?;
    Ok(t_ifs + t_peers)
}
