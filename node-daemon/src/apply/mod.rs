//! Executing plans: the [`Dataplane`] trait, its real implementation
//! ([`KernelDataplane`]), a fake for unit tests (`RecordingDataplane`, `cfg(test)`), and
//! [`apply`].
//!
//! Guarantees of [`apply`]:
//! - steps run in plan order;
//! - consecutive WireGuard steps of one device (key, port, peer removals and
//!   upserts) go to the kernel as one request ([`Dataplane::execute_wireguard`]):
//!   10,000 new peers are one configuration call, like `wg setconf`;
//! - consecutive route steps, which never depend on each other, may be sent
//!   pipelined ([`Dataplane::execute_routes`]); each succeeds or fails on its own;
//! - a failed step skips the remaining steps *of the same device* (they build
//!   on it) and every other device goes on;
//! - every error is collected in the [`ApplyReport`], none is lost;
//! - error messages never contain key material (keys only travel inside
//!   redacted types and are handed to wireguard-control, whose errors are I/O
//!   errors without the request).

mod kernel;
#[cfg(test)]
mod recording;

use std::collections::BTreeSet;
use std::future::Future;
use std::io;
use std::path::PathBuf;

pub use kernel::{KernelConfig, KernelDataplane, StateRepairError, connect, connection};
#[cfg(test)]
pub use recording::RecordingDataplane;

use crate::model::{IfaceName, ObservedNode, RouteKey};
use crate::observe::ObserveError;
use crate::ownership::StateFileError;
use crate::plan::{Plan, Step};

/// The kernel as kwire sees it: read the node, execute a step.
///
/// Implementations make each step idempotent: `EEXIST` on an addition and
/// `ENOENT`/`ESRCH`/`EADDRNOTAVAIL` on a removal count as success.
pub trait Dataplane: Send {
    /// Reads everything kwire plans on.
    fn observe(&mut self) -> impl Future<Output = Result<ObservedNode, ObserveError>> + Send;

    /// Executes one step.
    fn execute(&mut self, step: &Step) -> impl Future<Output = Result<(), DataplaneError>> + Send;

    /// Executes consecutive WireGuard steps of one device ([`Batch::Wireguard`]),
    /// as one request where the dataplane can. On failure it returns the index of
    /// the step that failed: the steps before it were applied, the ones after it
    /// were not. The default runs the steps one by one.
    fn execute_wireguard(
        &mut self,
        steps: &[Step],
    ) -> impl Future<Output = Result<(), (usize, DataplaneError)>> + Send {
        async move {
            for (i, step) in steps.iter().enumerate() {
                self.execute(step).await.map_err(|e| (i, e))?;
            }
            Ok(())
        }
    }

    /// Executes route steps ([`Batch::Routes`]), which do not depend on each
    /// other, and returns one result per step; the dataplane may pipeline them.
    /// The default runs them one by one.
    fn execute_routes(
        &mut self,
        steps: &[Step],
    ) -> impl Future<Output = Vec<Result<(), DataplaneError>>> + Send {
        async move {
            let mut out = Vec::with_capacity(steps.len());
            for step in steps {
                out.push(self.execute(step).await);
            }
            out
        }
    }

    /// How many kernel writes (netlink change requests, WireGuard
    /// configuration calls, sysctl writes, processes started) were attempted
    /// since this dataplane was created.
    fn writes(&self) -> u64;
}

/// Why a step failed. Messages carry no key material.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("device {0} does not exist")]
    NoSuchDevice(IfaceName),
    #[error("a link named {0} already exists")]
    DeviceExists(IfaceName),
    #[error("the kernel refused the request: {0}")]
    Kernel(String),
    #[error("configuring WireGuard failed: {0}")]
    Wireguard(io::Error),
    #[error("writing {path}: {source}")]
    Sysctl { path: PathBuf, source: io::Error },
    #[error("userspace WireGuard: {0}")]
    Userspace(String),
    #[error(transparent)]
    StateFile(#[from] StateFileError),
    /// The fake dataplane's model of the kernel refused the step.
    #[cfg(test)]
    #[error("rejected by the model: {0}")]
    Rejected(#[from] crate::kernel_model::ModelError),
    /// A failure the fake dataplane was told to inject.
    #[cfg(test)]
    #[error("injected failure")]
    Injected,
}

impl DataplaneError {
    /// A condition reason (CamelCase) for the object whose step failed.
    pub fn reason(&self) -> &'static str {
        match self {
            DataplaneError::NoSuchDevice(_) => "DeviceMissing",
            DataplaneError::DeviceExists(_) => "InterfaceNameConflict",
            DataplaneError::Kernel(_) => "KernelRefused",
            DataplaneError::Wireguard(e) if e.raw_os_error() == Some(nix::libc::EADDRINUSE) => {
                "ListenPortInUse"
            }
            DataplaneError::Wireguard(_) => "WireGuardConfigFailed",
            DataplaneError::Sysctl { .. } => "ForwardingFailed",
            DataplaneError::Userspace(_) => "UserspaceWireGuardFailed",
            DataplaneError::StateFile(_) => "StateFileFailed",
            #[cfg(test)]
            DataplaneError::Rejected(_) | DataplaneError::Injected => "ApplyFailed",
        }
    }

    /// What a person can do about it, when there is something obvious.
    pub fn hint(&self) -> Option<&'static str> {
        match self.reason() {
            "ListenPortInUse" => Some(
                "another program on this node holds that UDP port: choose another spec.listenPort or stop that program",
            ),
            "InterfaceNameConflict" => Some(
                "a link not created by kwire has this name: choose another spec.deviceName or remove that link",
            ),
            "UserspaceWireGuardFailed" => {
                Some("check that wireguard-go is installed and /dev/net/tun is available")
            }
            _ => None,
        }
    }
}

/// How [`apply`] groups consecutive steps into one dataplane call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batch<'a> {
    /// WireGuard configuration of this device: one request for the group.
    Wireguard(&'a IfaceName),
    /// Route additions, replacements and removals: independent of each other.
    Routes,
    /// Everything else: one call per step.
    Single,
}

/// The batch a step belongs to.
pub fn batch_of(step: &Step) -> Batch<'_> {
    match step {
        Step::SetPrivateKey { device, .. }
        | Step::SetListenPort { device, .. }
        | Step::UpsertPeer { device, .. }
        | Step::RemovePeer { device, .. }
        | Step::StartHandshake { device, .. } => Batch::Wireguard(device),
        Step::AddRoute { .. } | Step::ReplaceRoute { .. } | Step::RemoveRoute { .. } => {
            Batch::Routes
        }
        _ => Batch::Single,
    }
}

/// One failed step.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {source}")]
pub struct ApplyError {
    pub device: Option<IfaceName>,
    /// The route the step was about, for route steps.
    pub route: Option<RouteKey>,
    /// The step's redacted `Display`.
    pub step: String,
    pub source: DataplaneError,
}

/// What [`apply`] did.
#[derive(Debug, Default)]
pub struct ApplyReport {
    pub applied: usize,
    /// Steps not attempted because an earlier step of their device failed.
    pub skipped: usize,
    /// Kernel writes attempted during this apply.
    pub writes: u64,
    pub errors: Vec<ApplyError>,
}

impl ApplyReport {
    pub fn is_success(&self) -> bool {
        self.errors.is_empty()
    }

    /// The errors of one device.
    pub fn errors_for<'a>(&'a self, device: &'a IfaceName) -> impl Iterator<Item = &'a ApplyError> {
        self.errors
            .iter()
            .filter(move |e| e.device.as_ref() == Some(device))
    }

    /// Devices that had at least one failed step.
    pub fn failed_devices(&self) -> BTreeSet<IfaceName> {
        self.errors
            .iter()
            .filter_map(|e| e.device.clone())
            .collect()
    }
}

/// Steps in a batch above this size are logged one by one at debug level only.
const LOG_EACH_STEP_UP_TO: usize = 32;

/// Executes `plan` on `dataplane`. See the module docs for the guarantees.
pub async fn apply<D: Dataplane>(plan: &Plan, dataplane: &mut D) -> ApplyReport {
    let start = dataplane.writes();
    let mut run = Run {
        report: ApplyReport::default(),
        failed: BTreeSet::new(),
    };
    let steps = &plan.steps;
    let mut i = 0;
    while i < steps.len() {
        let batch = batch_of(&steps[i]);
        let len = match batch {
            Batch::Single => 1,
            _ => steps[i..]
                .iter()
                .take_while(|s| batch_of(s) == batch)
                .count(),
        };
        let group = &steps[i..i + len];
        i += len;
        match batch {
            Batch::Single => {
                let step = &group[0];
                if run.skip(step) {
                    continue;
                }
                let result = dataplane.execute(step).await;
                run.record(step, result, true);
            }
            Batch::Wireguard(device) => {
                if run.failed.contains(device) {
                    group.iter().for_each(|s| {
                        run.skip(s);
                    });
                    continue;
                }
                let verbose = group.len() <= LOG_EACH_STEP_UP_TO;
                match dataplane.execute_wireguard(group).await {
                    Ok(()) => {
                        for step in group {
                            run.record(step, Ok(()), verbose);
                        }
                    }
                    Err((failed_at, error)) => {
                        let failed_at = failed_at.min(group.len() - 1);
                        for step in &group[..failed_at] {
                            run.record(step, Ok(()), verbose);
                        }
                        run.record(&group[failed_at], Err(error), true);
                        for step in &group[failed_at + 1..] {
                            run.skip(step);
                        }
                    }
                }
                if !verbose {
                    tracing::info!(device = %device, steps = group.len(), "applied WireGuard steps in one request");
                }
            }
            Batch::Routes => {
                let runnable: Vec<Step> = group.iter().filter(|s| !run.skip(s)).cloned().collect();
                if runnable.is_empty() {
                    continue;
                }
                let verbose = runnable.len() <= LOG_EACH_STEP_UP_TO;
                let results = dataplane.execute_routes(&runnable).await;
                debug_assert_eq!(results.len(), runnable.len());
                for (step, result) in runnable.iter().zip(results) {
                    run.record(step, result, verbose);
                }
                if !verbose {
                    tracing::info!(steps = runnable.len(), "applied route steps");
                }
            }
        }
    }
    let mut report = run.report;
    report.writes = dataplane.writes() - start;
    report
}

/// Bookkeeping of one [`apply`].
struct Run {
    report: ApplyReport,
    failed: BTreeSet<IfaceName>,
}

impl Run {
    /// Counts `step` as skipped when an earlier step of its device failed.
    fn skip(&mut self, step: &Step) -> bool {
        if step.device().is_some_and(|d| self.failed.contains(d)) {
            tracing::debug!(%step, "skipped: an earlier step of this device failed");
            self.report.skipped += 1;
            true
        } else {
            false
        }
    }

    fn record(&mut self, step: &Step, result: Result<(), DataplaneError>, verbose: bool) {
        match result {
            Ok(()) => {
                if verbose {
                    tracing::info!(%step, "applied");
                } else {
                    tracing::debug!(%step, "applied");
                }
                self.report.applied += 1;
            }
            Err(error) => {
                tracing::warn!(%step, %error, "step failed");
                if let Some(device) = step.device() {
                    self.failed.insert(device.clone());
                }
                self.report.errors.push(ApplyError {
                    device: step.device().cloned(),
                    route: step.route_key(),
                    step: step.to_string(),
                    source: error,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests;
