//! `kwire-node`: the node agent. See the crate docs of `kwire_node_daemon`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use kwire_node_daemon::api::{self, ApiConfig};
use kwire_node_daemon::apply::{self, KernelConfig, KernelDataplane};
use kwire_node_daemon::backend::{self, BackendChoice, WireguardBackend};
use kwire_node_daemon::desired_file;
use kwire_node_daemon::metrics::{self, Metrics};
use kwire_node_daemon::model::DesiredNode;
use kwire_node_daemon::ownership::DEFAULT_STATE_FILE;
use kwire_node_daemon::run::{self, Outcome, Reconciler, RunConfig};
use kwire_node_daemon::tasks::Tasks;
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Reconciles kwire's WireGuard devices, addresses and routes on this node.
#[derive(Debug, Parser)]
#[command(name = "kwire-node", version, args_conflicts_with_subcommands = true)]
struct Args {
    #[command(subcommand)]
    command: Option<Mode>,

    /// The Kubernetes node this agent runs on.
    #[arg(long, env = "NODE_NAME")]
    node_name: Option<String>,

    /// How to create WireGuard devices.
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto, env = "KWIRE_BACKEND")]
    backend: BackendChoice,

    /// Period of the full resync that corrects drift (e.g. 30s, 2m).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    resync_period: Duration,

    /// Where kwire records the devices it created.
    #[arg(long, default_value = DEFAULT_STATE_FILE)]
    state_file: PathBuf,

    /// Serve Prometheus metrics on this address.
    #[arg(long)]
    metrics_addr: Option<SocketAddr>,

    /// Where node-local private keys are kept (`keyMode: NodeLocal`), mode 0600.
    #[arg(long, default_value = "/var/lib/kwire/keys")]
    key_dir: PathBuf,

    /// Debugging mode without a cluster: read the desired state from this
    /// YAML/JSON file (re-read when it changes). Without it, the desired state
    /// comes from the Kubernetes API (KUBECONFIG or the in-cluster ServiceAccount).
    #[arg(long)]
    desired_file: Option<PathBuf>,

    /// Reconcile once (full observe, plan, apply) and exit.
    #[arg(long)]
    once: bool,

    /// With --once: print a JSON report (steps, writes, errors, conflicts) on stdout.
    #[arg(long, requires = "once")]
    report_json: bool,

    /// Print the plan against the current kernel state and exit without changing anything.
    #[arg(long)]
    dry_run: bool,

    /// The wireguard-go binary for the userspace backend.
    #[arg(long, default_value = "wireguard-go", env = "KWIRE_WIREGUARD_GO")]
    wireguard_go: PathBuf,

    /// Leave wireguard-go to a wireguard host (`kwire-node wireguard-host`)
    /// watching this folder: a device is asked for by writing `<DIR>/<dev>.want`,
    /// so wireguard-go, and the links, outlive a restart of this daemon.
    /// Without it the daemon starts wireguard-go as its own child.
    #[arg(long, value_name = "DIR")]
    wireguard_host_dir: Option<PathBuf>,

    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    /// Root of the sysctl tree. In a container `/proc/sys` is read-only: mount the
    /// host's `/proc/sys/net` elsewhere and point this at its parent.
    #[arg(long, default_value = "/proc/sys")]
    sysctl_root: PathBuf,

    /// The `rtm_protocol` value that marks kwire's routes (see `ip route show proto 75`).
    /// Change it only if 75 is used by other software on the node.
    #[arg(long, default_value_t = kwire_node_daemon::ownership::ROUTE_PROTOCOL, value_parser = clap::value_parser!(u8).range(5..))]
    route_protocol: u8,
}

#[derive(Debug, clap::Subcommand)]
enum Mode {
    /// Keep one `wireguard-go -f <dev>` per request file `<DIR>/<dev>.want`
    /// written by daemons started with `--wireguard-host-dir <DIR>`. Exits on
    /// SIGTERM and leaves its processes running.
    WireguardHost {
        /// The request folder.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The wireguard-go binary.
        #[arg(long, default_value = "wireguard-go", env = "KWIRE_WIREGUARD_GO")]
        wireguard_go: PathBuf,
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
}

/// Logs go to stderr, coloured only when it is a terminal: a log file or a pipe to a
/// collector gets plain text.
fn init_tracing(format: LogFormat) {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(Mode::WireguardHost {
        dir,
        wireguard_go,
        log_format,
    }) = &args.command
    {
        init_tracing(*log_format);
        kwire_node_daemon::userspace::host::run(dir, wireguard_go, shutdown_signal()).await?;
        return Ok(());
    }
    init_tracing(args.log_format);
    kwire_node_daemon::ownership::configure_route_protocol(args.route_protocol);

    let file_desired = match &args.desired_file {
        Some(path) => Some(desired_file::load(path)?),
        None => None,
    };
    let api = match (&args.desired_file, &args.node_name) {
        (Some(_), _) => None,
        (None, Some(node)) => {
            if args.dry_run || args.once {
                bail!(
                    "--dry-run and --once need --desired-file (use `kwire plan` against a cluster)"
                );
            }
            let client = kube::Client::try_default().await.context(
                "connecting to the Kubernetes API (KUBECONFIG or in-cluster ServiceAccount)",
            )?;
            Some((client, node.clone()))
        }
        (None, None) => bail!(
            "--node-name (or NODE_NAME) is required to read the desired state from the Kubernetes API"
        ),
    };

    // Every task that must run as long as the daemon goes into `tasks`: the first one that
    // ends fails /healthz and makes the daemon exit non-zero (see `kwire_node_daemon::tasks`).
    let metrics = Arc::new(Metrics::default());
    let mut tasks = Tasks::new(metrics.clone());
    let (handle, connection) = apply::connection().context("opening an rtnetlink socket")?;
    tasks.spawn("the rtnetlink connection", async move {
        connection.await;
        Ok::<(), Infallible>(())
    });
    let chosen = if args.dry_run {
        // Creating a probe link is a write; a dry run makes none.
        WireguardBackend::Userspace
    } else if args.backend == BackendChoice::Auto && Path::new("/sys/module/wireguard").exists() {
        WireguardBackend::Kernel
    } else {
        backend::resolve(args.backend, &handle).await
    };
    tracing::info!(node = ?args.node_name, backend = %chosen, "starting");

    let events = run::KernelEvents::new();
    let config = KernelConfig {
        backend: chosen,
        state_file: args.state_file.clone(),
        sysctl_root: args.sysctl_root.clone(),
        wireguard_go: args.wireguard_go.clone(),
    };
    let mut dataplane = KernelDataplane::new(handle, config, Some(events.clone()));
    if let Some(dir) = &args.wireguard_host_dir {
        tracing::info!(dir = %dir.display(), "wireguard-go is left to the wireguard host");
        dataplane = dataplane.with_wireguard_host(dir);
    }
    let mut reconciler = Reconciler::new(dataplane, metrics.clone());

    if let (true, Some(desired)) = (args.dry_run, &file_desired) {
        let plan = reconciler.dry_run(desired).await?;
        println!("{plan}");
        return Ok(());
    }
    if let Err(error) = reconciler.dataplane_mut().repair_state_file().await {
        tracing::warn!(%error, "the state file could not be repaired yet; it is written again with the next change");
    }
    if let (true, Some(desired)) = (args.once, &file_desired) {
        let outcome = reconciler.reconcile_full(desired).await?;
        if args.report_json {
            println!("{}", report_json(&outcome));
        }
        if !outcome.report.is_success() {
            bail!("{} step(s) failed", outcome.report.errors.len());
        }
        return Ok(());
    }

    if let Some(addr) = args.metrics_addr {
        tasks.spawn("the metrics server", metrics::serve(addr, metrics.clone()));
    }
    let monitor = run::kernel_monitor(events.clone()).context("subscribing to rtnetlink events")?;
    tasks.spawn("the kernel event monitor", monitor);
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let stopping = stop_rx.clone();
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };

    let (desired_tx, desired_rx) = watch::channel(file_desired);
    match (&args.desired_file, api) {
        (Some(path), _) => {
            let path = path.clone();
            tasks.spawn("the desired-file watch", async move {
                watch_file(path, desired_tx).await;
                Ok::<(), Infallible>(())
            });
        }
        (None, Some((client, node_name))) => {
            let config = ApiConfig {
                node_name,
                key_dir: args.key_dir.clone(),
                resync_period: args.resync_period,
                metrics: metrics.clone(),
            };
            tasks.spawn(
                "the Kubernetes API side",
                api::drive(
                    client,
                    config,
                    desired_tx,
                    reconciler.subscribe(),
                    stopped(),
                ),
            );
        }
        (None, None) => unreachable!("checked above"),
    }

    let config = RunConfig {
        resync_period: args.resync_period,
        ..RunConfig::default()
    };
    let running = run::run(reconciler, desired_rx, events, config, stopped());
    tokio::pin!(running);
    tokio::select! {
        _ = &mut running => {}
        ended = tasks.ended() => {
            if !*stopping.borrow() {
                tracing::error!(error = %ended,
                    "a part of the daemon that must always run has ended; exiting so that it is restarted (the data plane is left as it is)");
                return Err(anyhow::Error::new(ended).context("a long-lived task ended"));
            }
            // Stopping anyway: the loop is about to return.
            running.await;
        }
    }
    tracing::info!("stopped; the data plane is left as it is");
    Ok(())
}

/// Re-reads the desired file every second; publishes only real changes and
/// keeps the last good state when the file is broken.
async fn watch_file(path: PathBuf, tx: watch::Sender<Option<DesiredNode>>) {
    let mut last_text = std::fs::read(&path).ok();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let text = std::fs::read(&path).ok();
        if text == last_text {
            continue;
        }
        last_text = text;
        match desired_file::load(&path) {
            Ok(node) => {
                let changed = tx.send_if_modified(|current| {
                    if current.as_ref() == Some(&node) {
                        false
                    } else {
                        *current = Some(node);
                        true
                    }
                });
                if changed {
                    tracing::info!(file = %path.display(), "desired state changed");
                }
            }
            Err(e) => tracing::warn!(error = %e, "keeping the last desired state"),
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn report_json(outcome: &Outcome) -> serde_json::Value {
    let r = &outcome.report;
    serde_json::json!({
        "mode": format!("{:?}", outcome.mode).to_lowercase(),
        "steps": outcome.plan.steps.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "applied": r.applied,
        "skipped": r.skipped,
        "writes": r.writes,
        "errors": r.errors.iter().map(|e| serde_json::json!({
            "device": e.device.as_ref().map(ToString::to_string),
            "step": e.step,
            "error": e.source.to_string(),
        })).collect::<Vec<_>>(),
        "conflicts": outcome.plan.conflicts.iter().map(|c| serde_json::json!({
            "reason": c.reason(),
            "message": c.to_string(),
        })).collect::<Vec<_>>(),
    })
}
