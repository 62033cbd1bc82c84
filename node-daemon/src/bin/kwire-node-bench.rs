//! `kwire-node-bench`: how the node daemon's kernel work compares with WireGuard's and
//! iproute2's own tools on the same machine, in the same run. Prints a table; asserts
//! nothing (CI never times anything).
//!
//! ```sh
//! cargo build --release -p kwire-node-daemon --bins
//! sudo target/release/kwire-node-bench            # --peers 10000 --routes 1000 --idle-peers 100 --runs 3
//! ```
//!
//! Everything happens in a network namespace the bench creates (with a private
//! `/run/wireguard`) and deletes on exit, with every process in it, also on failure.
//! Rows:
//! - N peers onto an existing wireguard-go device: kwire's delta apply (plan against the
//!   state after the last apply, one UAPI request) vs `wg setconf` of the same peers;
//! - one peer changed on that device: kwire's delta vs `wg set … peer` and `wg syncconf`;
//! - a no-op reconcile of N peers: kwire's full path (reads the device back, plans, writes
//!   nothing) and delta path vs `wg syncconf` of an unchanged file;
//! - M routes added and removed: kwire pipelined (and one request at a time) vs `ip -batch`;
//! - the RSS of an idle `kwire-node` with K peers (its wireguard-go is counted apart).

mod bench_common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use bench_common::{Namespace, Process, Scratch, load_average, run};
use clap::Parser;
use ipnet::IpNet;
use kwire_node_daemon::Dataplane;
use kwire_node_daemon::apply::{KernelConfig, KernelDataplane, connect};
use kwire_node_daemon::backend::WireguardBackend;
use kwire_node_daemon::metrics::Metrics;
use kwire_node_daemon::model::{
    DesiredDevice, DesiredNode, DesiredRoute, IfaceName, OwnerRef, PeerConfig, PrivateKey,
    PublicKey, RouteId, RouteKey, TABLE_MAIN,
};
use kwire_node_daemon::plan::{RouteTarget, Step};
use kwire_node_daemon::run::Reconciler;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "kwire-node-bench",
    about = "kwire-node vs wg/ip on this machine"
)]
struct Args {
    /// Peers on the big device.
    #[arg(long, default_value_t = 10_000)]
    peers: usize,
    /// Routes added and removed.
    #[arg(long, default_value_t = 1_000)]
    routes: usize,
    /// Peers of the idle daemon whose memory is measured.
    #[arg(long, default_value_t = 100)]
    idle_peers: usize,
    /// Repetitions of each measurement; the median is printed.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Internal: run the measurements (inside the namespace).
    #[arg(long, hide = true)]
    inner: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.inner {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        return runtime.block_on(inner(args));
    }
    outer(&args)
}

fn outer(args: &Args) -> Result<()> {
    ensure!(
        nix::unistd::Uid::effective().is_root(),
        "needs root (network namespaces, TUN devices)"
    );
    for tool in ["ip", "wg", "wireguard-go", "unshare"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ensure!(found, "{tool} is not installed");
    }
    let ns = Namespace::new(format!("kwbench{}", std::process::id()))?;
    let me = std::env::current_exe()?;
    let status = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.0,
            "unshare",
            "--mount",
            "--propagation",
            "private",
        ])
        .args(["sh", "-c"])
        .arg("mkdir -p /run/wireguard && mount -t tmpfs kwire-bench /run/wireguard && exec \"$@\"")
        .arg("kwire-node-bench")
        .arg(&me)
        .args(["--inner", "--peers", &args.peers.to_string()])
        .args(["--routes", &args.routes.to_string()])
        .args(["--idle-peers", &args.idle_peers.to_string()])
        .args(["--runs", &args.runs.to_string()])
        .status()?;
    drop(ns);
    if !status.success() {
        bail!("the measurements failed ({status})");
    }
    Ok(())
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn keypair() -> (PrivateKey, PublicKey) {
    let private = PrivateKey::generate().expect("the system random number generator");
    let public = private.public_key();
    (private, public)
}

/// Peer `i`: an address in 10.128.0.0/9 and an endpoint on the (absent) LAN.
fn peer_config(i: usize) -> PeerConfig {
    let host = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 128, 0, 0)) + i as u32 + 1);
    PeerConfig {
        endpoint: Some(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(
                192,
                168,
                (i / 250) as u8 % 250,
                (i % 250) as u8 + 1,
            )),
            51820,
        )),
        allowed_ips: [IpNet::new(IpAddr::V4(host), 32).expect("a /32")].into(),
        persistent_keepalive: None,
        preshared_key: None,
    }
}

fn route_destination(base: u8, i: usize) -> IpNet {
    let addr = Ipv4Addr::new(10, base + (i / 256) as u8, (i % 256) as u8, 0);
    IpNet::new(IpAddr::V4(addr), 24).expect("a /24")
}

/// A `wg setconf` file for the same peers.
fn wg_config(private: &PrivateKey, port: u16, peers: &BTreeMap<PublicKey, PeerConfig>) -> String {
    let mut out = format!(
        "[Interface]\nPrivateKey = {}\nListenPort = {port}\n",
        private.to_base64().as_str()
    );
    for (key, p) in peers {
        let _ = write!(out, "\n[Peer]\nPublicKey = {key}\nAllowedIPs = ");
        let ips: Vec<String> = p.allowed_ips.iter().map(ToString::to_string).collect();
        out.push_str(&ips.join(", "));
        if let Some(e) = p.endpoint {
            let _ = write!(out, "\nEndpoint = {e}");
        }
        out.push('\n');
    }
    out
}

fn wg_socket_ready(name: &str) -> bool {
    std::os::unix::net::UnixStream::connect(format!("/run/wireguard/{name}.sock")).is_ok()
}

/// A wireguard-go device for the reference tools, up, with an address.
fn reference_device(name: &str, address: &str) -> Result<Process> {
    let child = Command::new("wireguard-go")
        .args(["-f", name])
        .env_remove("LOG_LEVEL")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting wireguard-go")?;
    let process = Process(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !wg_socket_ready(name) {
        ensure!(
            Instant::now() < deadline,
            "wireguard-go {name} did not start"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    run(Command::new("ip").args(["addr", "add", address, "dev", name]))?;
    run(Command::new("ip").args(["link", "set", name, "up"]))?;
    Ok(process)
}

fn timed(cmd: &mut Command) -> Result<Duration> {
    let start = Instant::now();
    run(cmd)?;
    Ok(start.elapsed())
}

struct Row {
    what: String,
    kwire: String,
    reference: String,
    comparison: String,
}

async fn inner(args: Args) -> Result<()> {
    let scratch = Scratch(std::env::temp_dir().join(format!("kwire-bench-{}", std::process::id())));
    std::fs::create_dir_all(&scratch.0)?;
    let n = args.peers;
    let runs = args.runs.max(1);
    eprintln!("generating {n} key pairs");
    let peers: BTreeMap<PublicKey, PeerConfig> =
        (0..n).map(|i| (keypair().1, peer_config(i))).collect();
    let (device_key, _) = keypair();

    // ---- the reference: wg setconf / set / syncconf, ip -batch ----
    let config = scratch.0.join("wgref.conf");
    std::fs::write(&config, wg_config(&device_key, 51001, &peers))?;
    let changed_config = scratch.0.join("wgref-changed.conf");
    let mut changed = peers.clone();
    let first_key = *peers.keys().next().expect("at least one peer");
    changed
        .get_mut(&first_key)
        .expect("the first peer")
        .persistent_keepalive = Some(25);
    let mut text = wg_config(&device_key, 51001, &changed);
    text = text.replacen(
        &format!("PublicKey = {first_key}\n"),
        &format!("PublicKey = {first_key}\nPersistentKeepalive = 25\n"),
        1,
    );
    std::fs::write(&changed_config, text)?;

    let mut setconf = Vec::new();
    let mut set_one = Vec::new();
    let mut syncconf_noop = Vec::new();
    let mut syncconf_one = Vec::new();
    let mut batch_add = Vec::new();
    let mut batch_del = Vec::new();
    let routes_add = scratch.0.join("routes-add.batch");
    let routes_del = scratch.0.join("routes-del.batch");
    let (mut add, mut del) = (String::new(), String::new());
    for i in 0..args.routes {
        let dst = route_destination(210, i);
        let _ = writeln!(add, "route add {dst} dev wgref proto 76");
        let _ = writeln!(del, "route del {dst} dev wgref proto 76");
    }
    std::fs::write(&routes_add, add)?;
    std::fs::write(&routes_del, del)?;

    // ---- kwire ----
    let name = IfaceName::new("wgkw")?;
    let owner: OwnerRef = "bench/wgkw".parse()?;
    let base_device = DesiredDevice {
        owner: owner.clone(),
        private_key: device_key.clone(),
        listen_port: Some(51002),
        addresses: ["10.99.0.1/16".parse()?].into(),
        mtu: None,
        peers: BTreeMap::new(),
        forwarding: false,
    };
    let node = |peers: &BTreeMap<PublicKey, PeerConfig>, routes: usize| {
        let mut device = base_device.clone();
        device.peers = peers.clone();
        let mut desired = DesiredNode::default();
        desired.devices.insert(name.clone(), device);
        for i in 0..routes {
            desired.routes.insert(
                RouteKey::new(TABLE_MAIN, route_destination(200, i)),
                DesiredRoute {
                    device: name.clone(),
                    via: None,
                    metric: None,
                },
            );
        }
        desired
    };
    let empty = node(&BTreeMap::new(), 0);
    let full = node(&peers, 0);
    let one_changed = node(&changed, 0);
    let with_routes = node(&peers, args.routes);

    let dataplane = KernelDataplane::new(
        connect()?,
        KernelConfig {
            backend: WireguardBackend::Userspace,
            state_file: scratch.0.join("node-state.json"),
            sysctl_root: "/proc/sys".into(),
            wireguard_go: "wireguard-go".into(),
        },
        None,
    );
    let mut rec = Reconciler::new(dataplane, Arc::new(Metrics::default()));
    let mut apply_all = Vec::new();
    let mut change_one = Vec::new();
    let mut change_one_writes = 0;
    let mut noop_full = Vec::new();
    let mut noop_delta = Vec::new();
    let mut noop_writes = 0;
    let mut routes_pipelined = Vec::new();
    let mut routes_removed = Vec::new();
    let mut routes_sequential = Vec::new();
    let mut apply_all_writes = 0;
    let (mut plan_only, mut request_only, mut replay_only) = (Vec::new(), Vec::new(), Vec::new());
    let mut route_writes = 0;
    // Reference and kwire take turns, so that a busy machine weighs on both alike.
    let mut loads = vec![load_average()];
    for run_no in 0..runs {
        loads.push(load_average());
        eprintln!(
            "reference run {}/{runs} (load average {})",
            run_no + 1,
            loads.last().map(String::as_str).unwrap_or_default()
        );
        let device = reference_device("wgref", "10.98.0.1/16")?;
        setconf.push(timed(
            Command::new("wg").arg("setconf").arg("wgref").arg(&config),
        )?);
        set_one.push(timed(Command::new("wg").args([
            "set",
            "wgref",
            "peer",
            &first_key.to_string(),
            "persistent-keepalive",
            if run_no % 2 == 0 { "25" } else { "0" },
        ]))?);
        run(Command::new("wg").arg("setconf").arg("wgref").arg(&config))?;
        syncconf_noop.push(timed(
            Command::new("wg").arg("syncconf").arg("wgref").arg(&config),
        )?);
        syncconf_one.push(timed(
            Command::new("wg")
                .arg("syncconf")
                .arg("wgref")
                .arg(&changed_config),
        )?);
        batch_add.push(timed(Command::new("ip").arg("-batch").arg(&routes_add))?);
        batch_del.push(timed(Command::new("ip").arg("-batch").arg(&routes_del))?);
        drop(device);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Path::new("/sys/class/net/wgref").exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        loads.push(load_average());
        eprintln!(
            "kwire run {}/{runs} (load average {})",
            run_no + 1,
            loads.last().map(String::as_str).unwrap_or_default()
        );
        let created = rec.reconcile_full(&empty).await?;
        ensure!(
            created.report.is_success(),
            "creating the device: {:?}",
            created.report.errors
        );
        // Where the time of the big apply goes, apart from wireguard-go itself.
        let before = rec.dataplane_mut().observe().await?;
        let start = Instant::now();
        let big = kwire_node_daemon::plan(&full, &before);
        plan_only.push(start.elapsed());
        let start = Instant::now();
        let request = kwire_node_daemon::uapi::set_request(&big.steps);
        request_only.push(start.elapsed());
        drop(request);
        let mut replayed = before.clone();
        let start = Instant::now();
        kwire_node_daemon::kernel_model::apply_steps(&mut replayed, &big.steps)?;
        replay_only.push(start.elapsed());

        let start = Instant::now();
        let outcome = rec.reconcile_delta(&full).await?;
        apply_all.push(start.elapsed());
        ensure!(outcome.report.is_success(), "{:?}", outcome.report.errors);
        apply_all_writes = outcome.report.writes;

        for (i, target) in [&one_changed, &full, &one_changed, &full]
            .into_iter()
            .enumerate()
        {
            let start = Instant::now();
            let outcome = rec.reconcile_delta(target).await?;
            change_one.push(start.elapsed());
            ensure!(
                outcome.report.is_success() && outcome.plan.steps.len() == 1,
                "change {i}"
            );
            change_one_writes = outcome.report.writes;
        }

        let start = Instant::now();
        let outcome = rec.reconcile_delta(&full).await?;
        noop_delta.push(start.elapsed());
        noop_writes += outcome.report.writes;
        let start = Instant::now();
        let outcome = rec.reconcile_full(&full).await?;
        noop_full.push(start.elapsed());
        ensure!(
            outcome.plan.steps.is_empty(),
            "a no-op planned {}",
            outcome.plan
        );
        noop_writes += outcome.report.writes;
        ensure!(noop_writes == 0, "a no-op reconcile wrote to the kernel");

        let start = Instant::now();
        let outcome = rec.reconcile_delta(&with_routes).await?;
        routes_pipelined.push(start.elapsed());
        ensure!(outcome.report.is_success(), "{:?}", outcome.report.errors);
        route_writes = outcome.report.writes;
        let start = Instant::now();
        let outcome = rec.reconcile_delta(&full).await?;
        routes_removed.push(start.elapsed());
        ensure!(outcome.report.is_success(), "{:?}", outcome.report.errors);

        // The same additions, one request at a time (what apply did before pipelining).
        let steps: Vec<Step> = (0..args.routes)
            .map(|i| Step::AddRoute {
                id: RouteId {
                    table: TABLE_MAIN,
                    destination: route_destination(200, i),
                    metric: 0,
                },
                route: RouteTarget {
                    device: name.clone(),
                    via: None,
                },
            })
            .collect();
        let start = Instant::now();
        for step in &steps {
            rec.dataplane_mut().execute(step).await?;
        }
        routes_sequential.push(start.elapsed());
        let cleaned = rec.reconcile_full(&full).await?;
        ensure!(cleaned.report.is_success(), "{:?}", cleaned.report.errors);

        let deleted = rec.reconcile_full(&DesiredNode::default()).await?;
        ensure!(deleted.report.is_success(), "{:?}", deleted.report.errors);
    }
    drop(rec);

    // ---- memory of an idle daemon ----
    eprintln!("idle daemon with {} peers", args.idle_peers);
    let (rss, hwm, wg_rss) = idle_memory(&args, &scratch.0).await?;

    // ---- the table ----
    let pct =
        |a: Duration, b: Duration| format!("{:.2}%", 100.0 * a.as_secs_f64() / b.as_secs_f64());
    let ratio = |a: Duration, b: Duration| format!("{:.2}×", a.as_secs_f64() / b.as_secs_f64());
    let setconf_m = median(setconf.clone());
    let rows = vec![
        Row {
            what: format!("{n} peers onto an existing device"),
            kwire: format!(
                "{} ({apply_all_writes} write)",
                ms(median(apply_all.clone()))
            ),
            reference: format!("wg setconf: {}", ms(setconf_m)),
            comparison: ratio(median(apply_all), setconf_m),
        },
        Row {
            what: "… of which kwire's own work".into(),
            kwire: format!(
                "plan {}, UAPI request text {}, state replay {}",
                ms(median(plan_only)),
                ms(median(request_only)),
                ms(median(replay_only))
            ),
            reference: "the rest is wireguard-go".into(),
            comparison: "-".into(),
        },
        Row {
            what: format!("change 1 peer of {n}"),
            kwire: format!(
                "{} ({change_one_writes} write)",
                ms(median(change_one.clone()))
            ),
            reference: format!(
                "wg set: {}; wg syncconf: {}",
                ms(median(set_one)),
                ms(median(syncconf_one))
            ),
            comparison: format!("{} of wg setconf", pct(median(change_one), setconf_m)),
        },
        Row {
            what: format!("no-op reconcile, {n} peers (full: read back + plan)"),
            kwire: format!("{} ({} writes)", ms(median(noop_full.clone())), noop_writes),
            reference: format!(
                "wg syncconf (same file): {}",
                ms(median(syncconf_noop.clone()))
            ),
            comparison: ratio(median(noop_full), median(syncconf_noop)),
        },
        Row {
            what: format!("no-op reconcile, {n} peers (delta: plan only)"),
            kwire: format!("{} (0 writes)", ms(median(noop_delta.clone()))),
            reference: "-".into(),
            comparison: format!("{} of wg setconf", pct(median(noop_delta), setconf_m)),
        },
        Row {
            what: format!("add {} routes", args.routes),
            kwire: format!(
                "{} pipelined ({route_writes} writes); {} one at a time",
                ms(median(routes_pipelined.clone())),
                ms(median(routes_sequential))
            ),
            reference: format!("ip -batch: {}", ms(median(batch_add.clone()))),
            comparison: ratio(median(routes_pipelined), median(batch_add)),
        },
        Row {
            what: format!("remove {} routes", args.routes),
            kwire: format!("{} pipelined", ms(median(routes_removed.clone()))),
            reference: format!("ip -batch: {}", ms(median(batch_del.clone()))),
            comparison: ratio(median(routes_removed), median(batch_del)),
        },
        Row {
            what: format!("kwire-node RSS, idle, {} peers", args.idle_peers),
            kwire: format!(
                "{:.1} MiB (peak {:.1} MiB)",
                rss as f64 / 1024.0,
                hwm as f64 / 1024.0
            ),
            reference: format!(
                "goal 20 MiB; its wireguard-go: {:.1} MiB",
                wg_rss as f64 / 1024.0
            ),
            comparison: pct_of(rss, 20 * 1024),
        },
    ];
    print_table(&rows, &args, runs, &loads);
    Ok(())
}

fn pct_of(kib: u64, of: u64) -> String {
    format!("{:.0}% of the goal", 100.0 * kib as f64 / of as f64)
}

fn print_table(rows: &[Row], args: &Args, runs: usize, loads: &[String]) {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let wg_go = Command::new("wireguard-go")
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .unwrap_or_default();
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let load = load_average();
    let before = loads.first().cloned().unwrap_or_default();
    let during = loads.iter().skip(1).cloned().collect::<Vec<_>>().join(", ");
    println!(
        "machine: {cpu}, {cores} cores, Linux {}, {wg_go}; load average (1 min) {before} before the runs, {during} at the start of each run, {load} at the end; kwire built {profile}; median of {runs} runs; {} peers, {} routes",
        kernel.trim(),
        args.peers,
        args.routes
    );
    println!();
    println!("| operation | kwire-node | reference on this machine | kwire vs reference |");
    println!("|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} |",
            r.what, r.kwire, r.reference, r.comparison
        );
    }
}

/// Kibibytes of `VmRSS` and `VmHWM` of a process.
fn memory_of(pid: u32) -> Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64> {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no {name} for PID {pid}"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
        .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    text.split_whitespace().nth(1)?.parse().ok()
}

/// Runs `kwire-node --desired-file` with `idle_peers` peers, waits until it is ready and
/// idle, and returns its VmRSS and VmHWM and its wireguard-go's VmRSS (KiB).
async fn idle_memory(args: &Args, dir: &Path) -> Result<(u64, u64, u64)> {
    let daemon = std::env::current_exe()?.with_file_name("kwire-node");
    ensure!(
        daemon.exists(),
        "{} is missing: cargo build -p kwire-node-daemon --bins (same profile as the bench)",
        daemon.display()
    );
    let (private, _) = keypair();
    let mut yaml = format!(
        "devices:\n  wgidle:\n    owner: bench/idle\n    privateKey: {}\n    listenPort: 51003\n    addresses: [10.97.0.1/16]\n    peers:\n",
        private.to_base64().as_str()
    );
    for i in 0..args.idle_peers {
        let p = peer_config(i);
        let _ = write!(
            yaml,
            "      - publicKey: {}\n        endpoint: {}\n        allowedIPs: [{}]\n        persistentKeepalive: 25\n",
            keypair().1,
            p.endpoint.expect("an endpoint"),
            p.allowed_ips.iter().next().expect("an address")
        );
    }
    let file = dir.join("idle.yaml");
    std::fs::write(&file, yaml)?;
    let metrics: SocketAddr = "127.0.0.1:19464".parse()?;
    let child = Command::new(&daemon)
        .args(["--backend", "userspace", "--resync-period", "30s"])
        .arg("--desired-file")
        .arg(&file)
        .arg("--state-file")
        .arg(dir.join("idle-state.json"))
        .arg("--metrics-addr")
        .arg(metrics.to_string())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting kwire-node")?;
    let daemon = Process(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while http_status(metrics, "/readyz") != Some(200) {
        ensure!(Instant::now() < deadline, "kwire-node did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Idle: past the first reconcile and one resync-free stretch.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (rss, hwm) = memory_of(daemon.0.id())?;
    let wg_rss = wireguard_go_pids()
        .into_iter()
        .filter_map(|pid| memory_of(pid).ok())
        .map(|(rss, _)| rss)
        .max()
        .unwrap_or(0);
    // The device outlives the daemon by design; the namespace takes it away.
    drop(daemon);
    Ok((rss, hwm, wg_rss))
}

/// The wireguard-go processes of this network namespace.
fn wireguard_go_pids() -> Vec<u32> {
    let here = std::fs::read_link("/proc/self/ns/net").ok();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim_end() == "wireguard-go")
                && std::fs::read_link(format!("/proc/{pid}/ns/net")).ok() == here
        })
        .collect()
}
