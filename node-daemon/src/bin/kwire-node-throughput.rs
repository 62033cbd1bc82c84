//! `kwire-node-throughput`: iperf3 through a WireGuard link that two `kwire-node` daemons
//! configured, beside the same link configured by hand with `wg` and `ip`, on the same
//! backend (wireguard-go), in the same run. Prints a table; asserts nothing (CI never
//! times anything).
//!
//! ```sh
//! apt-get install -y iperf3
//! cargo build --release -p kwire-node-daemon --bins
//! sudo target/release/kwire-node-throughput            # --runs 5 --seconds 10
//! ```
//!
//! Two network namespaces, `a` and `b`, joined by a veth pair (10.77.0.1/24 and
//! 10.77.0.2/24, MTU 1500 or `--underlay-mtu`) stand for two nodes on a LAN. On that underlay:
//! - the hand link: `wireguard-go` started by hand in each namespace, configured with
//!   `wg set` (key, port, the other end as peer with its endpoint) and `ip addr`/`ip link`
//!   (10.78.0.1 ↔ 10.78.0.2), WireGuard's default MTU;
//! - the kwire link: one `kwire-node --desired-file` per namespace (10.79.0.1 ↔ 10.79.0.2),
//!   the daemons left running during the measurement as on a node, no `mtu` set so the
//!   daemon picks its default.
//!
//! `iperf3 -s` runs in `b`; `iperf3 -c` in `a` sends for `--seconds` through one link, then
//! the other, alternating (hand, kwire, hand, kwire …) so that load on the machine weighs
//! on both alike; the table gives the median of `--runs` runs of each and the machine's
//! load average before the runs and at the start of each. The namespaces, with every
//! process in them, are deleted on exit, also on failure.

mod bench_common;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use bench_common::{Namespace, Process, Scratch, load_average, run};
use clap::Parser;
use kwire_node_daemon::model::PrivateKey;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "kwire-node-throughput",
    about = "iperf3 through a kwire-configured WireGuard link vs a hand-made one"
)]
struct Args {
    /// Runs of each link; the median is printed.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Seconds of each iperf3 run.
    #[arg(long, default_value_t = 10)]
    seconds: u32,
    /// iperf3's parallel streams (`-P`).
    #[arg(long, default_value_t = 1)]
    streams: u32,
    /// The MTU of the veth underlay. The hand link keeps WireGuard's default (1420, what
    /// `wireguard-go`/`ip link add` give); kwire without `mtu` takes the underlay's minus 80.
    #[arg(long, default_value_t = 1500, value_parser = clap::value_parser!(u32).range(1360..=65535))]
    underlay_mtu: u32,
}

impl Namespace {
    /// A command run inside the namespace.
    fn exec(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.0]).arg(program);
        cmd
    }

    /// The MTU of a link in the namespace.
    fn mtu(&self, link: &str) -> Result<u32> {
        let text = self.ip(&["-o", "link", "show", "dev", link])?;
        text.split_whitespace()
            .skip_while(|w| *w != "mtu")
            .nth(1)
            .and_then(|m| m.parse().ok())
            .with_context(|| format!("no MTU for {link} in {text:?}"))
    }
}

/// wireguard-go's UAPI sockets of the bench's devices, removed on drop: wireguard-go
/// killed with its namespace cannot remove them itself.
struct Sockets(Vec<PathBuf>);

impl Drop for Sockets {
    fn drop(&mut self) {
        for socket in &self.0 {
            let _ = std::fs::remove_file(socket);
        }
    }
}

/// The UAPI socket of a wireguard-go device.
fn socket_of(device: &str) -> PathBuf {
    PathBuf::from(format!("/run/wireguard/{device}.sock"))
}

fn spawn(mut cmd: Command, log: &Path) -> Result<Process> {
    let file = std::fs::File::create(log)?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    Ok(Process(child))
}

/// Polls `ready` every 20 ms for up to `limit`.
fn wait_for(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + limit;
    while !ready() {
        ensure!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// One end of a link: its namespace, device, address on the link and key.
struct End<'a> {
    ns: &'a Namespace,
    underlay: &'static str,
    device: String,
    address: &'static str,
    port: u16,
    key: PrivateKey,
}

fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(
        nix::unistd::Uid::effective().is_root(),
        "needs root (network namespaces, TUN devices)"
    );
    for tool in ["ip", "wg", "wireguard-go", "iperf3"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ensure!(
            found,
            "{tool} is not installed (apt-get install -y iperf3 wireguard-go wireguard-tools iproute2)"
        );
    }
    let daemon = std::env::current_exe()?.with_file_name("kwire-node");
    ensure!(
        daemon.exists(),
        "{} is missing: cargo build --release -p kwire-node-daemon --bins",
        daemon.display()
    );
    let id = std::process::id();
    // Dropped last: after the namespaces and their processes.
    let _sockets = Sockets(
        ["wgha", "wghb", "wgka", "wgkb"]
            .iter()
            .map(|p| socket_of(&format!("{p}{}", id % 100_000)))
            .collect(),
    );
    let scratch = Scratch(std::env::temp_dir().join(format!("kwire-throughput-{id}")));
    std::fs::create_dir_all(&scratch.0)?;
    let a = Namespace::new(format!("kwtpa{id}"))?;
    let b = Namespace::new(format!("kwtpb{id}"))?;
    let result = measure(&args, &daemon, &scratch.0, &a, &b);
    if result.is_err() {
        eprintln!("logs of the processes: {}", scratch.0.display());
        for entry in std::fs::read_dir(&scratch.0)?.flatten() {
            if entry.path().extension().is_some_and(|e| e == "log") {
                let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(10).collect();
                eprintln!("--- {}", entry.path().display());
                for line in tail.into_iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
    }
    drop(a);
    drop(b);
    result
}

fn measure(args: &Args, daemon: &Path, dir: &Path, a: &Namespace, b: &Namespace) -> Result<()> {
    let id = std::process::id() % 100_000;
    // The underlay: a veth pair, one end in each namespace.
    let (va, vb) = (format!("kwtva{id}"), format!("kwtvb{id}"));
    run(Command::new("ip").args([
        "link", "add", &va, "netns", &a.0, "type", "veth", "peer", "name", &vb, "netns", &b.0,
    ]))?;
    a.ip(&["addr", "add", "10.77.0.1/24", "dev", &va])?;
    b.ip(&["addr", "add", "10.77.0.2/24", "dev", &vb])?;
    let mtu = args.underlay_mtu.to_string();
    a.ip(&["link", "set", &va, "mtu", &mtu, "up"])?;
    b.ip(&["link", "set", &vb, "mtu", &mtu, "up"])?;
    let underlay_mtu = a.mtu(&va)?;

    let key = || PrivateKey::generate().context("the system random number generator");
    // Device names carry the process id: wireguard-go's sockets in /run/wireguard are
    // shared by the namespaces.
    let hand = [
        End {
            ns: a,
            underlay: "10.77.0.1",
            device: format!("wgha{id}"),
            address: "10.78.0.1",
            port: 51901,
            key: key()?,
        },
        End {
            ns: b,
            underlay: "10.77.0.2",
            device: format!("wghb{id}"),
            address: "10.78.0.2",
            port: 51902,
            key: key()?,
        },
    ];
    let kwire = [
        End {
            ns: a,
            underlay: "10.77.0.1",
            device: format!("wgka{id}"),
            address: "10.79.0.1",
            port: 51911,
            key: key()?,
        },
        End {
            ns: b,
            underlay: "10.77.0.2",
            device: format!("wgkb{id}"),
            address: "10.79.0.2",
            port: 51912,
            key: key()?,
        },
    ];

    // ---- the hand link: wireguard-go, wg set, ip ----
    let mut processes = Vec::new();
    for (i, end) in hand.iter().enumerate() {
        let other = &hand[1 - i];
        let mut cmd = end.ns.exec("wireguard-go");
        cmd.args(["-f", &end.device]).env_remove("LOG_LEVEL");
        processes.push(spawn(cmd, &dir.join(format!("{}.log", end.device)))?);
        let socket = socket_of(&end.device);
        wait_for(
            &format!("wireguard-go {}", end.device),
            Duration::from_secs(10),
            || std::os::unix::net::UnixStream::connect(&socket).is_ok(),
        )?;
        let key_file = dir.join(format!("{}.key", end.device));
        std::fs::write(&key_file, end.key.to_base64().as_str())?;
        run(end
            .ns
            .exec("wg")
            .args(["set", &end.device, "private-key"])
            .arg(&key_file)
            .args(["listen-port", &end.port.to_string()])
            .args(["peer", &other.key.public_key().to_string()])
            .args(["allowed-ips", &format!("{}/32", other.address)])
            .args(["endpoint", &format!("{}:{}", other.underlay, other.port)]))?;
        end.ns.ip(&[
            "addr",
            "add",
            &format!("{}/24", end.address),
            "dev",
            &end.device,
        ])?;
        end.ns.ip(&["link", "set", &end.device, "up"])?;
    }

    // ---- the kwire link: one kwire-node --desired-file per namespace ----
    for (i, end) in kwire.iter().enumerate() {
        let other = &kwire[1 - i];
        let file = dir.join(format!("{}.yaml", end.device));
        let mut yaml = String::new();
        let _ = write!(
            yaml,
            "devices:\n  {dev}:\n    owner: bench/{dev}\n    privateKey: {key}\n    listenPort: {port}\n    addresses: [{addr}/24]\n    peers:\n      - publicKey: {peer}\n        endpoint: {endpoint}:{peer_port}\n        allowedIPs: [{peer_addr}/32]\n",
            dev = end.device,
            key = end.key.to_base64().as_str(),
            port = end.port,
            addr = end.address,
            peer = other.key.public_key(),
            endpoint = other.underlay,
            peer_port = other.port,
            peer_addr = other.address,
        );
        std::fs::write(&file, yaml)?;
        let mut cmd = end.ns.exec(daemon);
        cmd.args(["--backend", "userspace"])
            .arg("--desired-file")
            .arg(&file)
            .arg("--state-file")
            .arg(dir.join(format!("{}-state.json", end.device)))
            .arg("--key-dir")
            .arg(dir.join(format!("{}-keys", end.device)))
            .env("RUST_LOG", "warn");
        processes.push(spawn(
            cmd,
            &dir.join(format!("kwire-node-{}.log", end.device)),
        )?);
    }
    for end in &kwire {
        wait_for(
            &format!("kwire-node configuring {}", end.device),
            Duration::from_secs(30),
            || {
                let up = end
                    .ns
                    .ip(&["-o", "addr", "show", "dev", &end.device, "up"])
                    .is_ok_and(|t| t.contains(&format!("{}/24", end.address)));
                let peers = end
                    .ns
                    .exec("wg")
                    .args(["show", &end.device, "peers"])
                    .output()
                    .is_ok_and(|o| o.status.success() && !o.stdout.trim_ascii().is_empty());
                up && peers
            },
        )?;
    }

    // Both links carry traffic before the measurement: the first handshake is not timed.
    for (end, far) in [(&hand[0], &hand[1]), (&kwire[0], &kwire[1])] {
        run(end
            .ns
            .exec("ping")
            .args(["-c", "3", "-i", "0.2", "-W", "5", far.address]))
        .with_context(|| format!("ping through {}", end.device))?;
    }
    let mtus = [
        (
            hand[0].ns.mtu(&hand[0].device)?,
            hand[1].ns.mtu(&hand[1].device)?,
        ),
        (
            kwire[0].ns.mtu(&kwire[0].device)?,
            kwire[1].ns.mtu(&kwire[1].device)?,
        ),
    ];

    let mut server = b.exec("iperf3");
    server.args(["-s", "-p", "5201"]);
    processes.push(spawn(server, &dir.join("iperf3-server.log"))?);
    wait_for("iperf3 -s", Duration::from_secs(10), || {
        b.exec("ss")
            .args(["-Htln", "sport = :5201"])
            .output()
            .is_ok_and(|o| !o.stdout.trim_ascii().is_empty())
    })?;

    let runs = args.runs.max(1);
    let before = load_average();
    let (mut hand_mbps, mut kwire_mbps) = (Vec::new(), Vec::new());
    let mut loads = Vec::new();
    for run_no in 1..=runs {
        for (label, far, out) in [
            ("hand", &hand[1], &mut hand_mbps),
            ("kwire", &kwire[1], &mut kwire_mbps),
        ] {
            let load = load_average();
            let mbps = iperf(a, far.address, args)?;
            eprintln!("{label} run {run_no}/{runs}: {mbps:.0} Mbit/s (load average {load})");
            loads.push(format!("{label} {load}"));
            out.push(mbps);
        }
    }
    drop(processes);

    let (hand_m, kwire_m) = (median(&hand_mbps), median(&kwire_mbps));
    print_table(Table {
        args,
        underlay_mtu,
        mtus,
        hand: (&hand_mbps, hand_m),
        kwire: (&kwire_mbps, kwire_m),
        before: &before,
        loads: &loads,
    });
    ensure!(hand_m > 0.0, "the hand link moved nothing");
    Ok(())
}

/// Mbit/s received by the server in one iperf3 run from `a` to `address`.
fn iperf(a: &Namespace, address: &str, args: &Args) -> Result<f64> {
    let out = run(a.exec("iperf3").args([
        "-c",
        address,
        "-p",
        "5201",
        "-t",
        &args.seconds.to_string(),
        "-P",
        &args.streams.to_string(),
        "-J",
    ]))?;
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("iperf3 -J printed no JSON")?;
    let bits = report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .with_context(|| format!("no end.sum_received.bits_per_second: {}", report["error"]))?;
    Ok(bits / 1e6)
}

fn median(samples: &[f64]) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

struct Table<'a> {
    args: &'a Args,
    underlay_mtu: u32,
    /// (a, b) MTUs of the hand link, then of the kwire link.
    mtus: [(u32, u32); 2],
    hand: (&'a [f64], f64),
    kwire: (&'a [f64], f64),
    before: &'a str,
    loads: &'a [String],
}

fn print_table(t: Table<'_>) {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let version = |program: &str, arg: &str| {
        Command::new(program)
            .arg(arg)
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_string()
            })
            .unwrap_or_default()
    };
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    println!(
        "machine: {cpu}, {cores} cores, Linux {}, {}, {}; kwire built {profile}; underlay: veth, MTU {}; {} runs of {} s each per link, alternating, {} stream(s)",
        kernel.trim(),
        version("wireguard-go", "--version"),
        version("iperf3", "--version"),
        t.underlay_mtu,
        t.args.runs.max(1),
        t.args.seconds,
        t.args.streams,
    );
    println!(
        "load average (1 min): {} before the runs; at the start of each run: {}; {} at the end",
        t.before,
        t.loads.join(", "),
        load_average()
    );
    println!();
    let runs = |samples: &[f64]| {
        samples
            .iter()
            .map(|m| format!("{m:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("| link | device MTU (a, b) | median Mbit/s | runs (Mbit/s) | vs the hand link |");
    println!("|---|---|---|---|---|");
    println!(
        "| by hand (`wg set`, `ip`) | {}, {} | {:.0} | {} | 1.00× |",
        t.mtus[0].0,
        t.mtus[0].1,
        t.hand.1,
        runs(t.hand.0)
    );
    println!(
        "| kwire (`kwire-node --desired-file`, no `mtu`) | {}, {} | {:.0} | {} | {:.2}× (goal ≥ 0.95×) |",
        t.mtus[1].0,
        t.mtus[1].1,
        t.kwire.1,
        runs(t.kwire.0),
        t.kwire.1 / t.hand.1
    );
}
