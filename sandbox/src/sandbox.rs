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
//!
//! The steps of [`Sandbox::up`], each in a module of its own: `layout` decides the nodes
//! and far sides from the manifests; `cluster` starts the control plane, installs the chart
//! and applies the manifests; `nodes` makes the node namespaces and runs process or kubelet
//! nodes (`operator` for the process nodes' operator); `relay` joins the namespaces to the
//! API server; `far_sides` plays external Peers; `checks` verifies the result.

mod checks;
mod cluster;
mod far_sides;
mod layout;
mod nodes;
mod operator;
mod relay;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use kwire_crds::manifest::KwireObject;

use crate::control_plane::ControlPlane;
use crate::error::{Error, Result};
use crate::netns::Lan;
use crate::record::{Ledger, Record};

pub use checks::Ping;
pub use far_sides::ExternalPeer;
pub use nodes::{DaemonCommand, DaemonEvent, SandboxNode, restart_delay};
pub use operator::{OperatorProcess, metric_sum, operator_metrics, operator_metrics_addr};

use layout::Layout;
use nodes::Programs;

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

    /// The one way up: on `shared` (a LAN and the first host number) or on a LAN of its own.
    async fn up_with(
        files: &[PathBuf],
        namespace: &str,
        quiet: bool,
        shared: Option<(&Lan, u8)>,
        controller_manager: bool,
        node_kind: NodeKind,
    ) -> Result<Self> {
        let layout = Layout::read(files, shared.map_or(10, |(_, first)| first))?;
        let mut steps = Steps::new(quiet);
        let programs = Programs::find(&mut steps, node_kind)?;
        let mut sandbox = Self::start_control_plane(
            files,
            namespace,
            layout.objects.clone(),
            steps,
            shared.is_none(),
            controller_manager,
            node_kind,
        )?;
        sandbox.install_chart(&programs.images)?;
        sandbox.make_namespaces(&layout, shared.map(|(lan, _)| lan))?;
        sandbox.start_api_relays()?;
        match node_kind {
            NodeKind::Kubelet => sandbox.start_kubelet_nodes(&programs.images)?,
            NodeKind::Process => {
                sandbox.start_operator(&programs.operator).await?;
                sandbox.start_node_daemons(&programs.node).await?;
            }
        }
        sandbox.apply_manifests(files)?;
        sandbox.configure_far_sides()?;
        sandbox.record_ports()?;
        Ok(sandbox)
    }
}
