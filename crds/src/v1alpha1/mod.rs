//! `kwire.dev/v1alpha1`: Network, Interface, Peer, Route and Mesh.

mod common;
mod interface;
pub mod mesh;
mod network;
mod peer;
mod route;

pub use common::*;
pub use interface::*;
pub use mesh::{Mesh, MeshSpec, MeshStatus};
pub use network::*;
pub use peer::*;
pub use route::*;

/// The API group of every kwire kind.
pub const GROUP: &str = "kwire.dev";
/// The version this module describes.
pub const VERSION: &str = "v1alpha1";

use crate::schema::CelRule;

/// The cross-field and transition rules of each kind, keyed by the schema path they sit on.
pub(crate) fn interface_rules() -> &'static [(&'static [&'static str], CelRule)] {
    interface::RULES
}
pub(crate) fn network_rules() -> &'static [(&'static [&'static str], CelRule)] {
    network::RULES
}
pub(crate) fn peer_rules() -> &'static [(&'static [&'static str], CelRule)] {
    peer::RULES
}
pub(crate) fn route_rules() -> &'static [(&'static [&'static str], CelRule)] {
    route::RULES
}
pub(crate) fn mesh_rules() -> &'static [(&'static [&'static str], CelRule)] {
    mesh::RULES
}
