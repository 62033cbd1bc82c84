//! Meshes: one object that links every selected node (issue 15).
//!
//! This crate is pure (no API client, no runtime, no I/O) so that the operator, the node
//! daemon and the CLI can all use the same expansion:
//!
//! - [`api`]: the `Mesh` kind's spec and status (defined in `kwire-crds`, re-exported);
//! - [`expand()`]: a Mesh over a list of nodes → members (one generated Interface each) and,
//!   per member, its peers and what goes through each;
//! - [`generate`]: the Interface object of a member, owned by its Mesh;
//! - [`members`]: a Mesh read back from its generated Interfaces, as node daemons see it;
//! - [`check`]: what `kwire lint` will report (no hub, no gateway, clashes, overlaps, names);
//! - [`health`]: a member's bounded summary of its peers.
//!
//! It also holds the pure core of the hand-written kinds, which the operator re-exports and
//! the CLI uses offline, so that the `kwire` binary needs no controller code:
//!
//! - [`world`]: a snapshot of Networks, Interfaces, Peers, Routes and Nodes, with lookups;
//! - [`ipam`]: address allocation inside a Network and carving Networks from pools;
//! - [`resolve`]: a Peer's far side (endpoint, key, allowed IPs) from a [`world::World`];
//! - [`topology`]: the cross-object checks behind `TopologyValid` and `kwire lint`;
//! - [`condition`] and [`reasons`]: the conditions those planners return, and their reasons.
//!
//! See `docs/decisions/0010-mesh-kind.md`.

pub mod api;
pub mod check;
pub mod expand;
pub mod generate;
pub mod health;
pub mod members;
pub mod names;
pub mod node;
pub mod selector;

pub mod condition;
pub mod ipam;
pub mod reasons;
pub mod resolve;
pub mod topology;
pub mod world;

/// Builders of API objects and worlds for tests, here and in the operator's tests.
#[cfg(any(test, feature = "testing"))]
pub mod fixtures;

pub use api::{Mesh, MeshSpec, MeshStatus};
pub use expand::{Decisions, ExpandError, Expansion, Member, PeerLink, Role, expand};
pub use node::MeshNode;
