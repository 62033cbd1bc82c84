//! `kwire-operator`: flags, logging, probes, leader election; the controllers live in the library.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use clap::{Parser, ValueEnum};
use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use kwire_operator::context::Config;
use kwire_operator::controllers::run::{Options, run};
use kwire_operator::http::{Health, serve};
use kwire_operator::ipam::Pool;
use kwire_operator::metrics::Metrics;
use tracing_subscriber::EnvFilter;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

/// kwire's cluster-wide controller: keys, addresses, peer resolution, topology checks.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address pool for Networks with spec.prefixLength, as CIDR or NAME=CIDR (repeatable).
    #[arg(long = "pool", env = "KWIRE_POOLS", value_delimiter = ',')]
    pools: Vec<String>,
    /// Where /metrics, /healthz and /readyz are served.
    #[arg(long, env = "KWIRE_METRICS_ADDR", default_value = "127.0.0.1:8080")]
    metrics_addr: SocketAddr,
    /// Watch kwire objects and Secrets in this namespace only (default: all namespaces).
    #[arg(long, env = "KWIRE_NAMESPACE")]
    namespace: Option<String>,
    #[arg(long, env = "KWIRE_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Run the controllers only while holding a Lease (for more than one replica).
    #[arg(long, env = "KWIRE_LEADER_ELECTION")]
    leader_election: bool,
    /// Name of the Lease used for leader election.
    #[arg(long, default_value = "kwire-operator")]
    leader_election_lease: String,
    /// Namespace of the Lease (default: the client's namespace, e.g. the pod's).
    #[arg(long, env = "POD_NAMESPACE")]
    leader_election_namespace: Option<String>,
    /// This replica's identity for the Lease and for Events: the pod name. Without it, the
    /// hostname (a pod's hostname is its name), else a random name; never the pid.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Seconds between full reconciles of every object (the safety net behind watches).
    #[arg(long, default_value_t = 300)]
    resync_seconds: u64,
    /// Seconds a leader's Lease lasts without renewal: how long a crashed leader blocks a
    /// standby replica.
    #[arg(long, default_value_t = 10)]
    leader_election_lease_seconds: u64,
    /// Seconds before the Lease expires at which the leader renews it.
    #[arg(long, default_value_t = 3)]
    leader_election_renew_margin_seconds: u64,
    /// `persistentKeepalive` (seconds, 0 = off) for Peers that set none.
    #[arg(long)]
    default_keepalive: Option<u16>,
}

fn init_logging(format: LogFormat) {
    use std::io::IsTerminal as _;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a person at a terminal, never in files or log collectors.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// A client whose every request is counted in `kwire_operator_api_requests_total`.
async fn counted_client(metrics: Arc<Metrics>) -> anyhow::Result<Client> {
    let config = kube::Config::infer().await?;
    let count =
        tower::util::MapRequestLayer::new(move |request: http::Request<kube::client::Body>| {
            metrics.request(request.method(), request.uri());
            request
        });
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&count)
        .build())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_logging(args.log_format);
    let pools = Pool::parse_all(&args.pools)?;
    for pool in &pools {
        tracing::info!(%pool, "address pool");
    }
    let metrics = Arc::new(Metrics::default());
    let client = counted_client(metrics.clone())
        .await
        .context("connecting to the Kubernetes API (in-cluster config or KUBECONFIG)")?;
    let health = Health::default();
    let mut server = tokio::spawn(serve(args.metrics_addr, metrics.clone(), health.clone()));
    let identity = kwire_operator::identity::of_this_replica(args.identity.as_deref())?;
    tracing::info!(identity = %identity.name, from = %identity.source, "replica identity");
    let options = Options {
        namespace: args.namespace.clone(),
        config: Config {
            pools,
            resync: Duration::from_secs(args.resync_seconds.max(10)),
            default_keepalive: args.default_keepalive,
        },
        instance: Some(identity.name.clone()),
    };
    // The probe server runs as long as the rest: if it stops, so does the process.
    let operate = operate(&args, client, options, identity.name, metrics, health);
    tokio::select! {
        result = operate => {
            server.abort();
            result
        }
        stopped = &mut server => Err(match stopped {
            Ok(Ok(())) => anyhow!("the /healthz, /readyz and /metrics server stopped"),
            Ok(Err(error)) => anyhow!(error).context(format!(
                "serving /healthz, /readyz and /metrics on {}",
                args.metrics_addr
            )),
            Err(error) => anyhow!("the /healthz, /readyz and /metrics server stopped: {error}"),
        }),
    }
}

/// Runs the controllers, under leader election if asked, until a shutdown signal (or the
/// loss of the Lease, an error).
async fn operate(
    args: &Args,
    client: Client,
    options: Options,
    identity: String,
    metrics: Arc<Metrics>,
    health: Health,
) -> anyhow::Result<()> {
    if !args.leader_election {
        metrics.leader.set(1);
        return run(client, options, metrics, health, shutdown_signal())
            .await
            .map_err(Into::into);
    }

    let lease_ns = args
        .leader_election_namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    if args.leader_election_renew_margin_seconds >= args.leader_election_lease_seconds {
        bail!(
            "--leader-election-renew-margin-seconds ({}) must be below --leader-election-lease-seconds ({})",
            args.leader_election_renew_margin_seconds,
            args.leader_election_lease_seconds
        );
    }
    let manager = LeaseManagerBuilder::new(client.clone(), &args.leader_election_lease)
        .with_namespace(&lease_ns)
        .with_identity(&identity)
        .with_duration(args.leader_election_lease_seconds)
        .with_grace(args.leader_election_renew_margin_seconds)
        .build()
        .await
        .context("setting up the leader election Lease")?;
    let (mut leading, lease_task) = manager.watch().await;
    health.standby.store(true, Ordering::SeqCst);
    tracing::info!(%identity, lease = %args.leader_election_lease, namespace = %lease_ns, "waiting for leadership");
    let mut shutdown = Box::pin(shutdown_signal());
    loop {
        if *leading.borrow_and_update() {
            break;
        }
        tokio::select! {
            changed = leading.changed() => changed.context("the leader election task stopped")?,
            () = &mut shutdown => {
                drop(leading);
                let _ = lease_task.await;
                return Ok(());
            }
        }
    }
    health.standby.store(false, Ordering::SeqCst);
    metrics.leader.set(1);
    tracing::info!("leading: starting the controllers");
    let mut watch_lost = leading.clone();
    let lost = async move {
        loop {
            if watch_lost.changed().await.is_err() || !*watch_lost.borrow_and_update() {
                return;
            }
        }
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<bool>();
    let stop = async move {
        tokio::select! {
            () = lost => { let _ = stop_tx.send(true); }
            () = shutdown => { let _ = stop_tx.send(false); }
        }
    };
    let result = run(client, options, metrics.clone(), health.clone(), stop).await;
    metrics.leader.set(0);
    // After a stopped task, `stop` never completed: the sender is gone and this is false.
    let lost_leadership = stop_rx.await.unwrap_or(false);
    drop(leading);
    if let Ok(Ok(manager)) = lease_task.await {
        let _ = manager.release().await;
    }
    result?;
    if lost_leadership {
        bail!("lost the leader lease; exiting so that a fresh process competes again");
    }
    Ok(())
}
