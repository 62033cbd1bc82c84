//! The sandbox's errors, and the helpers that turn a failed command or file operation into
//! one that says what was being done.

use std::ffi::OsStr;
use std::io;
use std::process::{Command, Output};

/// Everything that can go wrong while bringing a sandbox up, using it, or removing one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A program could not be started at all (missing, not executable).
    #[error("{what}: {source}")]
    Spawn {
        what: String,
        #[source]
        source: io::Error,
    },
    /// A program ran and exited unsuccessfully.
    #[error("{command} failed: {stderr}")]
    Failed { command: String, stderr: String },
    /// Reading or writing a file or folder.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    /// A request to the Kubernetes API.
    #[error("{what}: {source}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
    /// A kubeconfig that does not load (the ones generated for the local control plane).
    #[error("{what}: {source}")]
    Kubeconfig {
        what: String,
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// JSON that does not parse (kubectl output, a crash record).
    #[error("{what}: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    /// The manifest files do not parse.
    #[error(transparent)]
    Manifest(#[from] kwire_crds::manifest::ManifestError),
    /// The manifests ask for something the sandbox cannot build (no node, an external Peer
    /// without what its far side needs).
    #[error("{0}")]
    Topology(String),
    /// This machine lacks something the sandbox needs (a binary, a tool, root).
    #[error("{0}")]
    Missing(String),
    /// The local control plane did not start or stop.
    #[error("{0}")]
    ControlPlane(String),
    /// Something did not happen in time.
    #[error("{0}")]
    Timeout(String),
    /// The call does not fit the sandbox's state (no such node, a daemon not running).
    #[error("{0}")]
    State(String),
    /// An answer without the expected shape (kubectl's JSON, `/proc`, a metrics page).
    #[error("{0}")]
    Unexpected(String),
    /// Ctrl-C or SIGTERM arrived while the sandbox was coming up.
    #[error("interrupted")]
    Interrupted,
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Says what an I/O operation was doing when it failed.
pub(crate) trait IoContext<T> {
    fn io(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn io(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io {
            what: what(),
            source,
        })
    }
}

/// `program arg arg…`, for messages.
pub(crate) fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `cmd` to completion and returns its output whatever the exit status.
pub(crate) fn output(cmd: &mut Command) -> Result<Output> {
    cmd.output().map_err(|source| Error::Spawn {
        what: format!("running {}", describe(cmd)),
        source,
    })
}

/// Runs `cmd` to completion; a non-zero exit is an error quoting its stderr.
pub(crate) fn run(cmd: &mut Command) -> Result<Output> {
    let out = output(cmd)?;
    if !out.status.success() {
        return Err(failed(cmd, &out));
    }
    Ok(out)
}

/// The error for `cmd` having exited unsuccessfully with `out`.
pub(crate) fn failed(cmd: &Command, out: &Output) -> Error {
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    Error::Failed {
        command: describe(cmd),
        stderr: if stderr.is_empty() {
            out.status.to_string()
        } else {
            stderr
        },
    }
}
