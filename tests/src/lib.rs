//! Shared fixtures for kwire integration tests.

pub mod control_plane;
pub mod netns;
pub mod sandbox;
