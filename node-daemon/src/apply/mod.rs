//! Executing plans: the [`Dataplane`] trait, its real implementation
//! ([`KernelDataplane`]) and a fake ([`RecordingDataplane`]), and [`apply`].
//!
//! Guarantees of [`apply`]:
//! - steps run in plan order;
//! - a failed step skips the remaining steps *of the same device* (they build
//!   on it) and every other device goes on;
//! - every error is collected in the [`ApplyReport`], none is lost;
//! - error messages never contain key material (keys only travel inside
//!   redacted types and are handed to wireguard-control, whose errors are I/O
//!   errors without the request).

mod kernel;
mod recording;

use std::collections::BTreeSet;
use std::future::Future;
use std::io;
use std::path::PathBuf;

pub use kernel::{KernelConfig, KernelDataplane, connect};
pub use recording::RecordingDataplane;

use crate::model::{IfaceName, ObservedNode};
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
    #[error("rejected by the model: {0}")]
    Rejected(#[from] crate::sim::SimError),
    #[error("injected failure")]
    Injected,
}

/// One failed step.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {source}")]
pub struct ApplyError {
    pub device: Option<IfaceName>,
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

/// Executes `plan` on `dataplane`. See the module docs for the guarantees.
pub async fn apply<D: Dataplane>(plan: &Plan, dataplane: &mut D) -> ApplyReport {
    let start = dataplane.writes();
    let mut report = ApplyReport::default();
    let mut failed: BTreeSet<IfaceName> = BTreeSet::new();
    for step in &plan.steps {
        if step.device().is_some_and(|d| failed.contains(d)) {
            tracing::debug!(%step, "skipped: an earlier step of this device failed");
            report.skipped += 1;
            continue;
        }
        match dataplane.execute(step).await {
            Ok(()) => {
                tracing::info!(%step, "applied");
                report.applied += 1;
            }
            Err(error) => {
                tracing::warn!(%step, %error, "step failed");
                if let Some(device) = step.device() {
                    failed.insert(device.clone());
                }
                report.errors.push(ApplyError {
                    device: step.device().cloned(),
                    step: step.to_string(),
                    source: error,
                });
            }
        }
    }
    report.writes = dataplane.writes() - start;
    report
}

#[cfg(test)]
mod tests;
