//! The kwire API (`kwire.dev/v1alpha1`): types, validation and the generated CRDs.
//!
//! This crate has no client and no runtime, so the operator, the node daemon and
//! the CLI can all depend on it cheaply.

pub mod crd;
pub mod docs;
pub mod keys;
pub mod manifest;
pub mod names;
pub mod schema;
pub mod v1alpha1;

pub use keys::{KeyError, PresharedKey, PrivateKey, PublicKey};
