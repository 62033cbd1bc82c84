//! `kwire-e2e-bench`: from `kubectl apply` of a Peer to its first handshake and to
//! `Connected` in its status, end to end in the sandbox.
//!
//! Brings up the sandbox (local control plane, chart, operator, one node daemon per network
//! namespace) with two Interfaces on two nodes and no Peer, waits until both are Ready, and
//! then, `--runs` times:
//!
//! 1. `kubectl apply --server-side` one Peer linking the two Interfaces (one Peer object
//!    configures both ends: A's device gets B as a peer and B's gets A) at t0;
//! 2. records, from t0, when the Peer appears in the API, when the operator has filled
//!    `status.resolved`, when each kernel has the peer entry and when each reports a
//!    handshake (both read from wireguard-go's UAPI every `--poll`, the kernel's truth), and
//!    when the status says `Ready=True`, `Connected=True` (the local node) and the remote
//!    end's handshake (`remoteEnd.latestHandshake`, the remote node), from a watch;
//! 3. deletes the Peer and waits until both kernels have no peer and the object is gone.
//!
//! The reference, measured in the same run in the same namespaces: what WireGuard itself
//! needs, by hand with `wireguard-go`, `wg` and `ip` (two devices started, configured and
//! the first ping reply through them; and, on two running devices, a peer added on both
//! sides with a keepalive until both report the handshake: the floor of step 2).
//!
//! ```sh
//! cargo build --workspace --bins
//! sudo ./target/debug/kwire-e2e-bench --runs 20
//! ```
//!
//! It prints Markdown tables (for docs/performance.md); it asserts nothing about time.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use clap::Parser;
use futures::StreamExt as _;
use kube::Api;
use kube::runtime::{WatchStreamExt as _, watcher};
use kwire_crds::v1alpha1::Peer;
use kwire_tests::bench::run_ok;
use kwire_tests::netns::can_run_network_tests;
use kwire_tests::sandbox::Sandbox;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::mpsc;

#[derive(Parser)]
#[command(
    name = "kwire-e2e-bench",
    about = "kubectl apply of a Peer to its first handshake and Connected, in the sandbox"
)]
struct Args {
    /// Apply/delete cycles.
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// The Peer's spec.persistentKeepalive (0: none; then no handshake happens without
    /// traffic, and the handshake milestones are not reached).
    #[arg(long, default_value_t = 25)]
    keepalive: u16,
    /// How often the kernels are read.
    #[arg(long, default_value = "2ms", value_parser = humantime::parse_duration)]
    poll: Duration,
    /// Give up on a run's remaining milestones after this long.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Pause between runs (after the previous Peer is gone).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pause: Duration,
    /// Runs of each reference measurement (0: skip them).
    #[arg(long, default_value_t = 20)]
    reference_runs: usize,
    /// Print every run's timeline: each status change of the Peer and the kernels' milestones.
    #[arg(long)]
    verbose: bool,
}

const NAMESPACE: &str = "e2e-bench";
const PEER: &str = "alpha-bravo";
const DEVICE: &str = "wg0";
const NODES: [&str; 2] = ["alpha", "bravo"];

fn interfaces_manifest() -> String {
    let mut out = String::new();
    for (i, node) in NODES.iter().enumerate() {
        out.push_str(&format!(
            "apiVersion: kwire.dev/v1alpha1\nkind: Interface\nmetadata:\n  name: {node}-{DEVICE}\nspec:\n  nodeName: {node}\n  deviceName: {DEVICE}\n  listenPort: 51820\n  addresses: [10.44.0.{}/24]\n---\n",
            i + 1
        ));
    }
    out
}

fn peer_manifest(keepalive: u16) -> String {
    let keepalive = if keepalive > 0 {
        format!("  persistentKeepalive: {keepalive}\n")
    } else {
        String::new()
    };
    format!(
        "apiVersion: kwire.dev/v1alpha1\nkind: Peer\nmetadata:\n  name: {PEER}\nspec:\n  interface: {a}-{DEVICE}\n  remote:\n    interface: {b}-{DEVICE}\n{keepalive}",
        a = NODES[0],
        b = NODES[1],
    )
}

// ---------------------------------------------------------------------------------------
// The kernel's view, through wireguard-go's UAPI socket.

/// What a device reports: how many peers, and how many of them have had a handshake.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct DeviceView {
    peers: usize,
    handshaken: usize,
    /// Bytes received and sent, over all peers (handshake messages count).
    rx: u64,
    tx: u64,
}

/// Parses the answer to `get=1` (key=value lines, a `public_key` line starts each peer).
fn parse_uapi(text: &str) -> DeviceView {
    let mut view = DeviceView::default();
    let mut this_peer_handshaken = false;
    let mut in_peer = false;
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        match key {
            "public_key" => {
                if in_peer && this_peer_handshaken {
                    view.handshaken += 1;
                }
                in_peer = true;
                this_peer_handshaken = false;
                view.peers += 1;
            }
            "last_handshake_time_sec" | "last_handshake_time_nsec" if value != "0" => {
                this_peer_handshaken = true;
            }
            "rx_bytes" => view.rx += value.parse::<u64>().unwrap_or(0),
            "tx_bytes" => view.tx += value.parse::<u64>().unwrap_or(0),
            _ => {}
        }
    }
    if in_peer && this_peer_handshaken {
        view.handshaken += 1;
    }
    view
}

/// Reads a device through its UAPI socket (one request, as `wg show` makes).
async fn read_device(socket: &Path) -> std::io::Result<DeviceView> {
    let mut stream = tokio::net::UnixStream::connect(socket).await?;
    stream.write_all(b"get=1\n\n").await?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.ends_with(b"\n\n") && buf.windows(6).any(|w| w == b"errno=") {
            break;
        }
    }
    Ok(parse_uapi(&String::from_utf8_lossy(&buf)))
}

/// The UAPI socket of the device of the daemon with `pid`: each daemon has a private
/// `/run/wireguard` in its own mount namespace, reachable through `/proc/<pid>/root`.
fn daemon_socket(pid: u32, device: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/root/run/wireguard/{device}.sock"))
}

// ---------------------------------------------------------------------------------------
// The API's view, through a watch.

enum WatchEvent {
    Applied(Box<Peer>),
    Deleted,
}

fn spawn_watch(
    client: kube::Client,
) -> (
    mpsc::UnboundedReceiver<(Instant, WatchEvent)>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let api: Api<Peer> = Api::namespaced(client, NAMESPACE);
        let stream = watcher(api, watcher::Config::default()).default_backoff();
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            let at = Instant::now();
            let event = match event {
                Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => {
                    WatchEvent::Applied(Box::new(p))
                }
                Ok(watcher::Event::Delete(_)) => WatchEvent::Deleted,
                Ok(_) => continue,
                Err(e) => {
                    eprintln!("watch: {e}");
                    continue;
                }
            };
            if tx.send((at, event)).is_err() {
                return;
            }
        }
    });
    (rx, task)
}

/// One line about a Peer's status, for `--verbose`.
fn describe(peer: &Peer) -> String {
    let Some(status) = &peer.status else {
        return "no status".into();
    };
    let conditions: Vec<String> = status
        .conditions
        .iter()
        .map(|c| format!("{}={}/{}", c.type_, c.status, c.reason))
        .collect();
    let remote = status.remote_end.as_ref().map(|r| {
        format!(
            "remoteEnd(configured={:?}, handshake={})",
            r.configured,
            r.latest_handshake.is_some()
        )
    });
    format!(
        "rv {} resolved={} {} {}",
        peer.metadata.resource_version.as_deref().unwrap_or("?"),
        status.resolved.is_some(),
        conditions.join(" "),
        remote.unwrap_or_default()
    )
}

fn condition_true(peer: &Peer, kind: &str) -> bool {
    peer.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == kind && c.status == "True")
    })
}

// ---------------------------------------------------------------------------------------
// One run.

/// When each milestone was reached, from t0 (the start of `kubectl apply`).
#[derive(Debug, Default, Clone)]
struct Milestones {
    applied: Option<Duration>,
    created: Option<Duration>,
    resolved: Option<Duration>,
    configured: [Option<Duration>; 2],
    handshake: [Option<Duration>; 2],
    ready: Option<Duration>,
    connected: Option<Duration>,
    remote_handshake: Option<Duration>,
    /// The last kernel read, and the longest time between two (this process may be
    /// descheduled on a loaded machine: kernel milestones are late by up to that much).
    last_read: Option<Duration>,
    max_read_gap: Duration,
    /// The last read of each kernel.
    views: [DeviceView; 2],
    /// Whether the slow first handshake was reported (`--verbose`).
    slow_reported: bool,
    /// Whether both kernels were seen in the state of crossed first initiations: no
    /// handshake, an initiation (148 B) received and an initiation and a response (240 B)
    /// sent by each.
    crossed: bool,
}

fn both(pair: [Option<Duration>; 2]) -> Option<Duration> {
    Some(pair[0]?.max(pair[1]?))
}

impl Milestones {
    fn complete(&self, keepalive: bool) -> bool {
        let base = self.applied.is_some()
            && self.created.is_some()
            && self.resolved.is_some()
            && both(self.configured).is_some()
            && self.ready.is_some();
        base && (!keepalive
            || (both(self.handshake).is_some()
                && self.connected.is_some()
                && self.remote_handshake.is_some()))
    }

    fn on_peer(&mut self, at: Duration, peer: &Peer) {
        self.created.get_or_insert(at);
        let status = peer.status.as_ref();
        let resolved = status.and_then(|s| s.resolved.as_ref());
        if resolved.is_some_and(|r| r.public_key.is_some() && r.local_public_key.is_some()) {
            self.resolved.get_or_insert(at);
        }
        if condition_true(peer, "Ready") {
            self.ready.get_or_insert(at);
        }
        if condition_true(peer, "Connected") {
            self.connected.get_or_insert(at);
        }
        if status
            .and_then(|s| s.remote_end.as_ref())
            .is_some_and(|r| r.latest_handshake.is_some())
        {
            self.remote_handshake.get_or_insert(at);
        }
    }

    fn on_device(&mut self, node: usize, at: Duration, view: DeviceView) {
        self.views[node] = view;
        if self.handshake.iter().all(Option::is_none)
            && view.handshaken == 0
            && self
                .views
                .iter()
                .all(|v| v.handshaken == 0 && v.rx >= 148 && v.tx >= 240)
        {
            self.crossed = true;
        }
        if view.peers > 0 {
            self.configured[node].get_or_insert(at);
        }
        if view.handshaken > 0 {
            self.handshake[node].get_or_insert(at);
        }
    }
}

struct Bench {
    args: Args,
    kubectl: Vec<std::ffi::OsString>,
    sockets: [PathBuf; 2],
    events: mpsc::UnboundedReceiver<(Instant, WatchEvent)>,
}

impl Bench {
    fn kubectl(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.kubectl[0]);
        cmd.args(&self.kubectl[1..]);
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        cmd
    }

    async fn poll_devices(&self, t0: Instant, m: &mut Milestones) {
        for (node, socket) in self.sockets.iter().enumerate() {
            match read_device(socket).await {
                Ok(view) => m.on_device(node, t0.elapsed(), view),
                Err(e) => eprintln!("reading {}: {e}", socket.display()),
            }
        }
        let now = t0.elapsed();
        if let Some(last) = m.last_read.replace(now) {
            m.max_read_gap = m.max_read_gap.max(now - last);
        }
    }

    async fn one_run(&mut self) -> Result<(Milestones, Option<Duration>)> {
        let keepalive = self.args.keepalive > 0;
        let manifest = peer_manifest(self.args.keepalive);
        // Nothing of the previous run may count for this one.
        while self.events.try_recv().is_ok() {}

        let mut m = Milestones::default();
        let t0 = Instant::now();
        let mut apply = self
            .kubectl()
            .args(["apply", "--server-side", "-n", NAMESPACE, "-f", "-"])
            .spawn()
            .context("starting kubectl apply")?;
        let mut stdin = apply.stdin.take().context("kubectl stdin")?;
        stdin.write_all(manifest.as_bytes()).await?;
        drop(stdin);
        let mut apply_wait = Box::pin(apply.wait_with_output());
        let mut tick = tokio::time::interval(self.args.poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let deadline = tokio::time::Instant::now() + self.args.timeout;
        while !m.complete(keepalive) {
            tokio::select! {
                out = &mut apply_wait, if m.applied.is_none() => {
                    let out = out?;
                    ensure!(out.status.success(), "kubectl apply: {}", String::from_utf8_lossy(&out.stderr));
                    m.applied = Some(t0.elapsed());
                }
                event = self.events.recv() => match event {
                    Some((at, WatchEvent::Applied(peer))) if peer.metadata.name.as_deref() == Some(PEER) => {
                        let at = at.saturating_duration_since(t0);
                        if self.args.verbose {
                            eprintln!("    {:>9}  {}", ms(at), describe(&peer));
                        }
                        m.on_peer(at, &peer);
                    }
                    Some(_) => {}
                    None => bail!("the watch ended"),
                },
                _ = tick.tick() => {
                    let before = m.clone();
                    self.poll_devices(t0, &mut m).await;
                    if self.args.verbose
                        && !m.slow_reported
                        && m.handshake.iter().all(Option::is_none)
                        && both(m.configured).is_some_and(|c| t0.elapsed() > c + Duration::from_millis(100))
                    {
                        m.slow_reported = true;
                        for (name, view) in NODES.iter().zip(m.views) {
                            eprintln!("    {:>9}  kernel of {name}: no handshake 100 ms after configured; rx {} B, tx {} B", ms(t0.elapsed()), view.rx, view.tx);
                        }
                    }
                    if self.args.verbose {
                        for (node, name) in NODES.iter().enumerate() {
                            if let (None, Some(at)) = (before.configured[node], m.configured[node]) {
                                eprintln!("    {:>9}  kernel of {name}: peer configured", ms(at));
                            }
                            if let (None, Some(at)) = (before.handshake[node], m.handshake[node]) {
                                eprintln!("    {:>9}  kernel of {name}: handshake", ms(at));
                            }
                        }
                    }
                }
                () = tokio::time::sleep_until(deadline) => {
                    eprintln!("  run timed out after {:?}: {m:?}", self.args.timeout);
                    break;
                }
            }
        }

        // Delete, and wait until both kernels have no peer and the object is gone.
        let t1 = Instant::now();
        let out = self
            .kubectl()
            .args(["delete", "peer", PEER, "-n", NAMESPACE, "--wait=false"])
            .output()
            .await?;
        ensure!(
            out.status.success(),
            "kubectl delete: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut gone = false;
        let mut kernel_clean: Option<Duration> = None;
        let deadline = tokio::time::Instant::now() + self.args.timeout;
        while !(gone && kernel_clean.is_some()) {
            tokio::select! {
                event = self.events.recv() => match event {
                    Some((_, WatchEvent::Deleted)) => gone = true,
                    Some(_) => {}
                    None => bail!("the watch ended"),
                },
                _ = tick.tick(), if kernel_clean.is_none() => {
                    let mut peers = 0;
                    for socket in &self.sockets {
                        peers += read_device(socket).await.map(|v| v.peers).unwrap_or(1);
                    }
                    if peers == 0 {
                        kernel_clean = Some(t1.elapsed());
                    }
                }
                () = tokio::time::sleep_until(deadline) => bail!("the Peer was not removed within {:?}", self.args.timeout),
            }
        }
        Ok((m, kernel_clean))
    }
}

// ---------------------------------------------------------------------------------------
// The reference: WireGuard by hand.

struct RefDevice<'a> {
    ns: &'a str,
    name: String,
    key_file: PathBuf,
    public_key: String,
    underlay: String,
    overlay: String,
    port: u16,
}

fn in_ns(ns: &str, argv: &[&str]) -> Result<String> {
    run_ok(Command::new("ip").args(["netns", "exec", ns]).args(argv))
}

fn ref_socket(device: &RefDevice<'_>) -> PathBuf {
    PathBuf::from(format!("/run/wireguard/{}.sock", device.name))
}

fn start_ref_device(d: &RefDevice<'_>) -> Result<()> {
    // Without LOG_LEVEL: it made configuration hang on these machines.
    run_ok(
        Command::new("ip")
            .args(["netns", "exec", d.ns, "wireguard-go", &d.name])
            .env_remove("LOG_LEVEL"),
    )?;
    let socket = ref_socket(d);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !socket.exists() {
        ensure!(
            Instant::now() < deadline,
            "{} did not appear",
            socket.display()
        );
        std::thread::sleep(Duration::from_micros(200));
    }
    in_ns(
        d.ns,
        &[
            "wg",
            "set",
            &d.name,
            "listen-port",
            &d.port.to_string(),
            "private-key",
            d.key_file.to_str().unwrap(),
        ],
    )?;
    in_ns(d.ns, &["ip", "address", "add", &d.overlay, "dev", &d.name])?;
    in_ns(d.ns, &["ip", "link", "set", &d.name, "up"])?;
    Ok(())
}

fn add_ref_peer(d: &RefDevice<'_>, other: &RefDevice<'_>, keepalive: Option<u16>) -> Result<()> {
    let endpoint = format!("{}:{}", other.underlay, other.port);
    let allowed = format!("{}/32", other.overlay.split('/').next().unwrap());
    let mut argv = vec![
        "wg",
        "set",
        &d.name,
        "peer",
        &other.public_key,
        "endpoint",
        &endpoint,
        "allowed-ips",
        &allowed,
    ];
    let keepalive = keepalive.map(|k| k.to_string());
    if let Some(k) = &keepalive {
        argv.extend(["persistent-keepalive", k]);
    }
    in_ns(d.ns, &argv)?;
    Ok(())
}

fn stop_ref_device(d: &RefDevice<'_>) {
    let _ = in_ns(d.ns, &["ip", "link", "del", &d.name]);
    let socket = ref_socket(d);
    let deadline = Instant::now() + Duration::from_secs(5);
    while socket.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Reference 1: start two devices, configure both, first ping reply through the link.
/// Reference 2: on two running devices, add the peer on both sides (with a keepalive, as
/// the bench's Peer) and wait until both report a handshake.
async fn reference(
    sandbox: &Sandbox,
    runs: usize,
    keepalive: u16,
    poll: Duration,
) -> Result<(Vec<Duration>, Vec<Duration>)> {
    let dir = sandbox.run_dir.join("reference");
    std::fs::create_dir_all(&dir)?;
    let mut devices = Vec::new();
    for (i, name) in NODES.iter().enumerate() {
        let node = &sandbox.nodes[*name];
        let key_file = dir.join(format!("{name}.key"));
        let private = run_ok(Command::new("wg").arg("genkey"))?;
        std::fs::write(&key_file, format!("{private}\n"))?;
        let public = {
            use std::io::Write as _;
            let mut child = Command::new("wg")
                .arg("pubkey")
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()?;
            child
                .stdin
                .take()
                .context("wg pubkey stdin")?
                .write_all(private.as_bytes())?;
            String::from_utf8(child.wait_with_output()?.stdout)?
                .trim()
                .to_string()
        };
        devices.push(RefDevice {
            ns: node.netns.name(),
            // Both namespaces share the host's /run/wireguard: the names must differ.
            name: format!("wgref{i}"),
            key_file,
            public_key: public,
            underlay: node.address.to_string(),
            overlay: format!("10.45.0.{}/24", i + 1),
            port: 51900 + i as u16,
        });
    }
    let (a, b) = (&devices[0], &devices[1]);
    let target = b.overlay.split('/').next().unwrap().to_string();

    let mut first_ping = Vec::new();
    for _ in 0..runs {
        let t0 = Instant::now();
        start_ref_device(a)?;
        start_ref_device(b)?;
        add_ref_peer(a, b, None)?;
        add_ref_peer(b, a, None)?;
        let replied = Command::new("ip")
            .args([
                "netns", "exec", a.ns, "ping", "-n", "-q", "-c", "1", "-W", "5",
            ])
            .arg(&target)
            .output()?
            .status
            .success();
        let took = t0.elapsed();
        stop_ref_device(a);
        stop_ref_device(b);
        ensure!(replied, "the reference ping got no reply");
        first_ping.push(took);
    }

    let mut handshake = Vec::new();
    if runs > 0 {
        start_ref_device(a)?;
        start_ref_device(b)?;
        let keepalive = (keepalive > 0).then_some(keepalive).or(Some(25));
        for _ in 0..runs {
            let t0 = Instant::now();
            add_ref_peer(a, b, keepalive)?;
            add_ref_peer(b, a, keepalive)?;
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let va = read_device(&ref_socket(a)).await?;
                let vb = read_device(&ref_socket(b)).await?;
                if va.handshaken > 0 && vb.handshaken > 0 {
                    break;
                }
                ensure!(Instant::now() < deadline, "no reference handshake in 30 s");
                tokio::time::sleep(poll).await;
            }
            handshake.push(t0.elapsed());
            in_ns(
                a.ns,
                &["wg", "set", &a.name, "peer", &b.public_key, "remove"],
            )?;
            in_ns(
                b.ns,
                &["wg", "set", &b.name, "peer", &a.public_key, "remove"],
            )?;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        stop_ref_device(a);
        stop_ref_device(b);
    }
    Ok((first_ping, handshake))
}

// ---------------------------------------------------------------------------------------
// Figures.

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// `| label | p50 | p99 | min | max | n |`, or dashes when no sample was taken.
fn row(label: &str, samples: impl IntoIterator<Item = Option<Duration>>, runs: usize) -> String {
    let mut values: Vec<Duration> = samples.into_iter().flatten().collect();
    values.sort();
    if values.is_empty() {
        return format!("| {label} | - | - | - | - | 0/{runs} |");
    }
    format!(
        "| {label} | {} | {} | {} | {} | {}/{runs} |",
        ms(percentile(&values, 50.0)),
        ms(percentile(&values, 99.0)),
        ms(values[0]),
        ms(values[values.len() - 1]),
        values.len(),
    )
}

fn diff(later: Option<Duration>, earlier: Option<Duration>) -> Option<Duration> {
    Some(later?.saturating_sub(earlier?))
}

fn print_tables(
    runs: &[(Milestones, Option<Duration>)],
    reference: &(Vec<Duration>, Vec<Duration>),
) {
    let n = runs.len();
    let col = |f: &dyn Fn(&Milestones) -> Option<Duration>| -> Vec<Option<Duration>> {
        runs.iter().map(|(m, _)| f(m)).collect()
    };
    println!("\n| milestone, from the start of `kubectl apply` | p50 | p99 | min | max | runs |");
    println!("|---|---|---|---|---|---|");
    for (label, f) in [
        (
            "`kubectl apply` returned",
            &(|m: &Milestones| m.applied) as &dyn Fn(&Milestones) -> Option<Duration>,
        ),
        ("Peer in the API (watch event)", &|m| m.created),
        ("`status.resolved` filled by the operator", &|m| m.resolved),
        ("peer configured in both kernels", &|m| both(m.configured)),
        ("first handshake, both kernels", &|m| both(m.handshake)),
        ("`Ready=True` in status", &|m| m.ready),
        ("`Connected=True` in status", &|m| m.connected),
        (
            "remote end's handshake in status (`remoteEnd.latestHandshake`)",
            &|m| m.remote_handshake,
        ),
    ] {
        println!("{}", row(label, col(f), n));
    }
    println!(
        "{}",
        row(
            "`kubectl delete` to no peer in either kernel",
            runs.iter().map(|(_, d)| *d),
            n
        )
    );

    println!(
        "\nRuns whose first initiations crossed (both kernels: an initiation received, an initiation and a response sent, no handshake): **{} of {n}**",
        runs.iter().filter(|(m, _)| m.crossed).count()
    );
    println!(
        "\n| milestone, from the Peer's creation in the API (kwire's share) | p50 | p99 | min | max | runs |"
    );
    println!("|---|---|---|---|---|---|");
    for (label, f) in [
        (
            "`status.resolved` filled by the operator",
            &(|m: &Milestones| m.resolved) as &dyn Fn(&Milestones) -> Option<Duration>,
        ),
        ("peer configured in both kernels", &|m| both(m.configured)),
        ("first handshake, both kernels", &|m| both(m.handshake)),
        ("`Connected=True` in status", &|m| m.connected),
        ("remote end's handshake in status", &|m| m.remote_handshake),
    ] {
        println!("{}", row(label, col(&|m| diff(f(m), m.created)), n));
    }

    println!("\n| breakdown (per run, then percentiles) | p50 | p99 | min | max | runs |");
    println!("|---|---|---|---|---|---|");
    for (label, f) in [
        (
            "apply → Peer in the API (kubectl, API server)",
            &(|m: &Milestones| m.created) as &dyn Fn(&Milestones) -> Option<Duration>,
        ),
        ("Peer in the API → resolved (operator)", &|m| {
            diff(m.resolved, m.created)
        }),
        (
            "resolved → configured in both kernels (node daemons)",
            &|m| diff(both(m.configured), m.resolved),
        ),
        (
            "configured → handshake in both kernels (WireGuard)",
            &|m| diff(both(m.handshake), both(m.configured)),
        ),
        (
            "handshake → `Connected=True` (local node's report)",
            &|m| diff(m.connected, both(m.handshake)),
        ),
        (
            "handshake → remote end's handshake (remote node's report)",
            &|m| diff(m.remote_handshake, both(m.handshake)),
        ),
    ] {
        println!("{}", row(label, col(f), n));
    }

    let (first_ping, handshake) = reference;
    if !first_ping.is_empty() {
        println!("\n| reference, by hand on this machine | p50 | p99 | min | max | runs |");
        println!("|---|---|---|---|---|---|");
        println!(
            "{}",
            row(
                "start 2 wireguard-go devices, configure both, first ping reply",
                first_ping.iter().copied().map(Some),
                first_ping.len()
            )
        );
        println!(
            "{}",
            row(
                "`wg set` the peer on 2 running devices (keepalive) → handshake on both",
                handshake.iter().copied().map(Some),
                handshake.len()
            )
        );
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    if let Err(why) = can_run_network_tests() {
        bail!("the sandbox cannot run here: {why}");
    }
    let manifest =
        std::env::temp_dir().join(format!("kwire-e2e-bench-{}.yaml", std::process::id()));
    std::fs::write(&manifest, interfaces_manifest())?;
    let up = Sandbox::up(std::slice::from_ref(&manifest), NAMESPACE, false).await;
    let _ = std::fs::remove_file(&manifest);
    let sandbox = up?;

    eprint!("  {:<58}", "both Interfaces Ready");
    let began = Instant::now();
    loop {
        let pending = sandbox.not_true("interfaces", "Ready")?;
        if pending.is_empty() && sandbox.get("interfaces")?.len() == NODES.len() {
            break;
        }
        if began.elapsed() > Duration::from_secs(120) {
            bail!(
                "Interfaces not Ready: {pending:?}\n{}",
                sandbox.logs_tail(20)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(" ok  {:>6.1}s", began.elapsed().as_secs_f64());

    let mut pids = Vec::new();
    for name in NODES {
        let node = &sandbox.nodes[name];
        let pid = node
            .daemon
            .as_ref()
            .map(std::process::Child::id)
            .with_context(|| format!("the daemon of {name} is not running"))?;
        pids.push(pid);
    }
    let sockets = [
        daemon_socket(pids[0], DEVICE),
        daemon_socket(pids[1], DEVICE),
    ];
    for socket in &sockets {
        let view = read_device(socket)
            .await
            .with_context(|| format!("reading {}", socket.display()))?;
        ensure!(view.peers == 0, "{} already has peers", socket.display());
    }

    eprint!("  {:<58}", "reference runs (wireguard-go, wg, ip by hand)");
    let began = Instant::now();
    let refs = reference(&sandbox, args.reference_runs, args.keepalive, args.poll).await?;
    eprintln!(" ok  {:>6.1}s", began.elapsed().as_secs_f64());

    let client = sandbox.cp.client().await?;
    let (events, watch_task) = spawn_watch(client);
    // `kubectl` with the sandbox's kubeconfig and cache, as an async command template.
    let template = sandbox.cp.kubectl();
    let mut kubectl = vec![template.get_program().to_os_string()];
    kubectl.extend(template.get_args().map(|a| a.to_os_string()));
    let mut bench = Bench {
        args,
        kubectl,
        sockets,
        events,
    };
    // Let the watch list once before the first run.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut results = Vec::new();
    for i in 0..bench.args.runs {
        let (m, deleted) = bench.one_run().await?;
        eprintln!(
            "  run {:>2}: resolved {:>7} configured {:>7} handshake {:>7} Connected {:>9} remote {:>9} (kernel reads up to {} apart)",
            i + 1,
            m.resolved.map(ms).unwrap_or_default(),
            both(m.configured).map(ms).unwrap_or_default(),
            both(m.handshake).map(ms).unwrap_or_default(),
            m.connected.map(ms).unwrap_or_default(),
            m.remote_handshake.map(ms).unwrap_or_default(),
            ms(m.max_read_gap),
        );
        results.push((m, deleted));
        tokio::time::sleep(bench.args.pause).await;
    }

    println!(
        "\nkwire end to end: {} runs, Peer with persistentKeepalive {}, kernels read every {:?}",
        results.len(),
        bench.args.keepalive,
        bench.args.poll
    );
    // The status may only say Connected once a kernel has a handshake: earlier, it repeats
    // what it saw of an earlier link (a stale observation). The kernels' milestones are late
    // by up to the longest gap between two reads.
    let early = results
        .iter()
        .filter(|(m, _)| {
            m.connected.is_some_and(|c| {
                m.handshake
                    .iter()
                    .flatten()
                    .min()
                    .is_none_or(|first| c + m.max_read_gap < *first)
            })
        })
        .count();
    if early > 0 {
        println!(
            "WARNING: in {early} run(s) the status said Connected before either kernel had a handshake (stale status)"
        );
    }
    let gaps: Vec<Duration> = results.iter().map(|(m, _)| m.max_read_gap).collect();
    if let Some(worst) = gaps.iter().max() {
        println!(
            "longest gap between two kernel reads: {} (kernel milestones are late by up to that much)",
            ms(*worst)
        );
    }
    print_tables(&results, &refs);
    watch_task.abort();
    drop(bench);
    drop(sandbox);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_uapi_answer_counts_peers_and_handshakes() {
        let text = "private_key=aa\nlisten_port=51820\npublic_key=bb\nlast_handshake_time_sec=0\nlast_handshake_time_nsec=0\npublic_key=cc\nlast_handshake_time_sec=1700000000\nlast_handshake_time_nsec=5\nerrno=0\n\n";
        assert_eq!(
            parse_uapi(text),
            DeviceView {
                peers: 2,
                handshaken: 1,
                rx: 0,
                tx: 0,
            }
        );
        assert_eq!(parse_uapi("errno=0\n\n"), DeviceView::default());
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let samples: Vec<Duration> = (1..=20).map(Duration::from_millis).collect();
        assert_eq!(percentile(&samples, 50.0), Duration::from_millis(10));
        assert_eq!(percentile(&samples, 99.0), Duration::from_millis(20));
    }
}
