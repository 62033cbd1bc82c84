//! kwire's operator as a library, so that the binary stays thin. The pure core it plans with
//! (`world`, `ipam`, `resolve`, `topology`, `reasons`) lives in `kwire-mesh`, shared with the
//! CLI and the node daemon, and is re-exported here under its old paths. WireGuard keys are
//! `kwire_crds::keys`, shared with the node daemon and the CLI.

pub use kwire_mesh::{ipam, reasons, resolve, topology, world};
pub mod status;

pub mod context;
pub mod controllers;
pub mod error;
#[cfg(test)]
mod fake_api;
#[cfg(test)]
use kwire_mesh::fixtures;
pub mod http;
pub mod identity;
pub mod metrics;
pub mod secrets;
pub mod written;
