//! kwire end to end on this one machine, no cluster needed: `kwire sandbox up` and
//! `kwire sandbox down`, and the fixtures of kwire's end-to-end tests.
//!
//! - [`control_plane`]: a real local kube-apiserver, etcd and kube-controller-manager.
//! - [`netns`]: network namespaces as nodes, joined by a LAN.
//! - [`kubelet`]: kubelet nodes (containerd, kubelet, kube-proxy in a node's namespaces),
//!   on which the chart's pods run from images built here.
//! - [`process`]: starting child processes with their log files, waiting for them.
//! - [`sandbox`]: the whole installation (chart, operator, one node daemon per namespace,
//!   the far sides of external Peers) from manifest files.
//! - [`external`]: how an external Peer's far side is played, with plain `wg`.
//! - [`record`]: the crash record each sandbox keeps of what it made.
//! - [`teardown`]: removing what the records of crashed sandboxes list.
//!
//! Needs root, `ip`, `wg`, `wireguard-go`, `socat`, and the workspace's binaries
//! (`cargo build --workspace --bins`); the control plane's binaries are built from
//! `tests/control-plane`.

//! Errors: every module returns this crate's typed [`Error`] (see [`Result`]), each variant
//! saying what failed (the command and its stderr, the path, the API request, what was
//! waited for) and, where there is one, what to do about it. Callers that use `anyhow`
//! convert with `?`; a caller that must tell an interruption from a failure matches
//! [`Error::Interrupted`].

pub mod control_plane;
mod error;
pub mod external;
pub mod kubelet;
pub mod netns;
pub mod process;
pub mod record;
pub mod sandbox;
pub mod teardown;

pub use error::{Error, Result};
