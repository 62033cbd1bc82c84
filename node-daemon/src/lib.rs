//! kwire's node agent: reconciles the WireGuard devices, addresses, routes and
//! forwarding switches that kwire wants on this node against the kernel.
//!
//! The seam is `observe -> plan -> apply`:
//! - [`observe`] reads the kernel into an [`model::ObservedNode`], tagging every
//!   device and route [`model::Ownership::Owned`] or `Foreign` ([`ownership`]);
//! - [`plan::plan`] is pure and turns `(DesiredNode, ObservedNode)` into a
//!   [`plan::Plan`];
//! - [`apply::apply`] executes a plan through a [`apply::Dataplane`] (the real
//!   [`apply::KernelDataplane`]; the unit tests have a fake).
//!
//! [`run::run`] drives a [`run::Reconciler`] from a
//! `tokio::sync::watch::Receiver<Option<DesiredNode>>`, which the Kubernetes
//! side (or [`desired_file`]) feeds. Between full observations it plans against
//! [`kernel_model`], the model of the kernel that replays applied steps.
//!
//! Test support (the fake dataplane, injected failures, fail points, fixtures) is
//! `cfg(test)`: none of it is in the `kwire-node` binary.

pub mod api;
pub mod apply;
pub mod backend;
pub mod desired_file;
pub mod kernel_model;
pub mod metrics;
pub mod model;
pub mod observe;
pub mod ownership;
pub mod plan;
pub mod run;
pub mod tasks;
pub mod uapi;
pub mod userspace;
pub mod validate;

#[cfg(test)]
mod fixtures;

pub use apply::{ApplyReport, Dataplane, KernelDataplane, apply};
pub use model::{
    DesiredDevice, DesiredNode, DesiredRoute, IfaceName, NodeForwarding, ObservedNode, OwnerRef,
    PeerConfig, PresharedKey, PrivateKey, PublicKey, RouteKey,
};
pub use plan::{Conflict, Plan, Step, plan};
pub use run::{KernelEvent, KernelEvents, NodeStatus, Reconciler, RunConfig, run};
