//! Supervision of wireguard-go, the userspace WireGuard used where the kernel
//! has no WireGuard module.
//!
//! One `wireguard-go -f <name>` process per device, started by
//! [`Supervisor::start`], which returns once the process answers on its UAPI
//! socket. When a process exits, the TUN link vanishes with its addresses and
//! routes; the supervisor reports the exit as a [`KernelEvent`] and the run
//! loop performs a full reconcile, which recreates and restores the device.
//!
//! Notes from the spike on this kind of machine:
//! - `LOG_LEVEL` is never set: with it, configuration hung.
//! - The process's stdin, stdout and stderr are `/dev/null`. wireguard-go
//!   must outlive a restart of this daemon (a restart adopts devices), and a
//!   process writing to a pipe whose reader is gone dies of SIGPIPE.
//! - The UAPI socket directory (`/var/run/wireguard`) is shared by every
//!   network namespace of a host: several "nodes" on one host need a private
//!   mount namespace with a tmpfs there, or distinct device names.
//!
//! With a wireguard host ([`Supervisor::with_host`], `--wireguard-host-dir`)
//! the daemon starts no process: it writes the device's request file and waits
//! for the socket; [`host`] keeps the processes, in a pod that outlives the
//! daemon's.

pub mod host;

use std::collections::BTreeMap;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::Command;
use tokio::task::JoinHandle;

use crate::apply::DataplaneError;
use crate::model::IfaceName;
use crate::run::{KernelEvent, KernelEvents};

/// Where wireguard-go puts its UAPI sockets (and where wireguard-control
/// looks first).
pub const SOCKET_DIRS: [&str; 2] = ["/var/run/wireguard", "/run/wireguard"];

/// The UAPI socket of a device, if one exists.
pub fn socket_path(name: &IfaceName) -> Option<PathBuf> {
    SOCKET_DIRS
        .iter()
        .map(|d| Path::new(d).join(format!("{name}.sock")))
        .find(|p| p.exists())
}

/// Whether something listens on the device's UAPI socket.
pub fn socket_answers(name: &IfaceName) -> bool {
    socket_path(name).is_some_and(|p| UnixStream::connect(p).is_ok())
}

struct Child {
    pid: u32,
    waiter: JoinHandle<()>,
}

/// Starts, watches and stops wireguard-go processes, or asks a wireguard host
/// to.
pub struct Supervisor {
    program: PathBuf,
    start_timeout: Duration,
    children: BTreeMap<IfaceName, Child>,
    events: Option<KernelEvents>,
    /// The request folder of a wireguard host, which then runs the processes.
    host_dir: Option<PathBuf>,
}

impl Supervisor {
    /// `program` is the wireguard-go binary; exits are reported on `events`.
    pub fn new(program: impl Into<PathBuf>, events: Option<KernelEvents>) -> Self {
        Self {
            program: program.into(),
            start_timeout: Duration::from_secs(10),
            children: BTreeMap::new(),
            events,
            host_dir: None,
        }
    }

    /// Leaves the processes to the wireguard host that watches `dir`
    /// (`kwire-node wireguard-host --dir <dir>`): a device is asked for with
    /// its request file and given up by deleting it. The daemon then sees an
    /// exit only as the link's removal, which also triggers a full reconcile.
    pub fn with_host(mut self, dir: impl Into<PathBuf>) -> Self {
        self.host_dir = Some(dir.into());
        // The host polls, and its pod may be starting on a fresh node.
        self.start_timeout = Duration::from_secs(30);
        self
    }

    /// PIDs of the processes this supervisor started and that still run.
    pub fn pids(&self) -> BTreeMap<IfaceName, u32> {
        self.children
            .iter()
            .filter(|(_, c)| !c.waiter.is_finished())
            .map(|(n, c)| (n.clone(), c.pid))
            .collect()
    }

    /// Starts `wireguard-go -f <name>` and waits until its UAPI socket answers.
    pub async fn start(&mut self, name: &IfaceName) -> Result<(), DataplaneError> {
        if let Some(dir) = &self.host_dir {
            return request(dir, name, self.start_timeout).await;
        }
        let err = |m: String| DataplaneError::Userspace(m);
        std::fs::create_dir_all(SOCKET_DIRS[0])
            .map_err(|e| err(format!("creating {}: {e}", SOCKET_DIRS[0])))?;
        let mut child = Command::new(&self.program)
            .arg("-f")
            .arg(name.as_str())
            .env_remove("LOG_LEVEL")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(false)
            .spawn()
            .map_err(|e| err(format!("starting {}: {e}", self.program.display())))?;
        let pid = child.id().unwrap_or(0);
        let deadline = tokio::time::Instant::now() + self.start_timeout;
        loop {
            if let Some(status) = child
                .try_wait()
                .map_err(|e| err(format!("waiting for wireguard-go: {e}")))?
            {
                return Err(err(format!(
                    "wireguard-go for {name} exited at start: {status}"
                )));
            }
            if socket_answers(name) {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                let _ = child.start_kill();
                return Err(err(format!(
                    "wireguard-go for {name} did not open its UAPI socket"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let events = self.events.clone();
        let device = name.clone();
        let waiter = tokio::spawn(async move {
            let status = child.wait().await;
            tracing::warn!(device = %device, pid, ?status, "wireguard-go exited");
            if let Some(tx) = events {
                tx.send(KernelEvent::UserspaceExited(device));
            }
        });
        tracing::info!(device = %name, pid, "started wireguard-go");
        if let Some(old) = self.children.insert(name.clone(), Child { pid, waiter })
            && !old.waiter.is_finished()
        {
            tracing::warn!(device = %name, pid = old.pid, "replaced a still running wireguard-go");
        }
        Ok(())
    }

    /// Stops the process of `name` if this supervisor started it: SIGTERM
    /// (wireguard-go then removes its socket and link), SIGKILL after 3 s.
    /// Processes from an earlier run of the daemon exit on their own when
    /// their link is deleted.
    pub async fn stop(&mut self, name: &IfaceName) {
        if let Some(dir) = &self.host_dir {
            return withdraw(dir, name).await;
        }
        let Some(mut child) = self.children.remove(name) else {
            return;
        };
        if child.waiter.is_finished() {
            return;
        }
        // Only signal while our waiter has not reaped it: the PID is still ours.
        let pid = Pid::from_raw(child.pid as i32);
        let _ = kill(pid, Signal::SIGTERM);
        if tokio::time::timeout(Duration::from_secs(3), &mut child.waiter)
            .await
            .is_err()
        {
            if !child.waiter.is_finished() {
                let _ = kill(pid, Signal::SIGKILL);
            }
            let _ = child.waiter.await;
        }
    }
}

/// Writes the request file of `name` (atomically: a temporary file renamed)
/// and waits until the device's UAPI socket answers.
async fn request(dir: &Path, name: &IfaceName, timeout: Duration) -> Result<(), DataplaneError> {
    let err = |m: String| DataplaneError::Userspace(m);
    let path = host::request_path(dir, name);
    if !path.exists() {
        let tmp = path.with_extension("want.tmp");
        std::fs::write(&tmp, b"")
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| {
                err(format!(
                    "writing the wireguard host request {}: {e}",
                    path.display()
                ))
            })?;
        tracing::info!(device = %name, request = %path.display(), "asked the wireguard host for wireguard-go");
    }
    let deadline = tokio::time::Instant::now() + timeout;
    while !socket_answers(name) {
        if tokio::time::Instant::now() > deadline {
            return Err(err(format!(
                "the wireguard host did not start wireguard-go for {name} within {timeout:?} (request {}): is the wireguard host pod running on this node?",
                path.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Deletes the request file of `name` and waits (at most 5 s) until the
/// process stops answering: the host then stops it, and the link goes with it.
async fn withdraw(dir: &Path, name: &IfaceName) {
    let path = host::request_path(dir, name);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(device = %name, request = %path.display(), error = %e, "could not delete the wireguard host request")
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while socket_answers(name) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
