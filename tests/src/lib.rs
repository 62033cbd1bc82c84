//! Shared fixtures for kwire integration tests.
//!
//! The fixtures live in the `kwire-sandbox` crate, which the `kwire sandbox` command uses
//! too; they are re-exported here under the paths the tests have always used
//! (`kwire_tests::sandbox::Sandbox`, `kwire_tests::netns::Netns`, …).

pub use kwire_sandbox::{control_plane, kubelet, netns, sandbox};

pub mod bench;
pub mod mesh;
pub mod node_status;
pub mod wait;
