//! kwire's operator as a library, so that the binary stays thin and the pure core
//! (`ipam`, `resolve`, `topology`, `status`) can be reused offline by a CLI. WireGuard keys
//! are `kwire_crds::keys`, shared with the node daemon and the CLI.

pub mod ipam;
pub mod reasons;
pub mod resolve;
pub mod status;
pub mod world;

pub mod context;
pub mod controllers;
pub mod error;
#[cfg(test)]
mod fake_api;
#[cfg(test)]
mod fixtures;
pub mod http;
pub mod identity;
pub mod metrics;
pub mod secrets;
pub mod topology;
pub mod written;
