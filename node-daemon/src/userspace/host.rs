//! The wireguard host: `kwire-node wireguard-host --dir <DIR>` keeps one
//! `wireguard-go -f <dev>` process per request file `<DIR>/<dev>.want`.
//!
//! On kubelet nodes the node daemon's container is restarted by every upgrade
//! of kwire, and the runtime kills every process of a stopped container: a
//! wireguard-go started by the daemon takes its TUN device, and the links, with
//! it. The wireguard host runs in a pod of its own that is rarely restarted
//! (`updateStrategy: OnDelete`); the daemon, started with
//! `--wireguard-host-dir`, asks for a device by writing its request file
//! (see [`super::Supervisor`]) and gives it up by deleting the file.
//!
//! Deciding is [`plan`] (wanted devices and the state of the children in,
//! actions out); [`run`] reads the folder, applies the actions and watches the
//! children. docs/decisions/0006-wireguard-host.md says why it polls.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::Command;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::SOCKET_DIRS;
use crate::model::IfaceName;

/// The suffix of a request file: `<DIR>/<dev>.want`.
pub const REQUEST_SUFFIX: &str = ".want";

/// How often the folder and the children are looked at.
pub const POLL: Duration = Duration::from_millis(100);

/// A run at least this long resets the restart backoff.
const STEADY: Duration = Duration::from_secs(10);

/// How long a stopped child gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// The request file of a device.
pub fn request_path(dir: &Path, name: &IfaceName) -> PathBuf {
    dir.join(format!("{name}{REQUEST_SUFFIX}"))
}

/// The device a file name asks for, if it is a request file. Temporary files
/// (`<dev>.want.tmp`, written then renamed) and anything else are ignored.
pub fn requested_device(file_name: &str) -> Option<IfaceName> {
    file_name
        .strip_suffix(REQUEST_SUFFIX)
        .and_then(|dev| IfaceName::new(dev).ok())
}

/// What the host knows of the child of one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildState {
    /// Runs (since `started`).
    Running { started: Instant },
    /// Was sent SIGTERM; its stopper has not finished yet.
    Stopping,
    /// Exited without being asked; `failures` quick exits in a row.
    Exited { at: Instant, failures: u32 },
}

/// One thing to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start `wireguard-go -f <dev>`.
    Start(IfaceName),
    /// SIGTERM, then SIGKILL after a grace period.
    Stop(IfaceName),
    /// Drop the record of an exited child that is no longer wanted.
    Forget(IfaceName),
}

/// How long to wait before restarting a child after `failures` quick exits in
/// a row: 0.2 s doubling up to 10 s.
pub fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(6);
    (Duration::from_millis(200) * 2u32.pow(exp)).min(Duration::from_secs(10))
}

/// The quick exits in a row once a child that started at `started` exits at
/// `now`, after `failures` before it.
pub fn failures_after_exit(started: Instant, now: Instant, failures: u32) -> u32 {
    if now.saturating_duration_since(started) >= STEADY {
        1
    } else {
        failures.saturating_add(1)
    }
}

/// Wanted devices and children in, actions out (in device order).
pub fn plan(
    wanted: &BTreeSet<IfaceName>,
    children: &BTreeMap<IfaceName, ChildState>,
    now: Instant,
) -> Vec<Action> {
    let mut actions = Vec::new();
    let names: BTreeSet<&IfaceName> = wanted.iter().chain(children.keys()).collect();
    for name in names {
        let want = wanted.contains(name);
        match (want, children.get(name)) {
            (true, None) => actions.push(Action::Start(name.clone())),
            (true, Some(ChildState::Exited { at, failures })) => {
                if now.saturating_duration_since(*at) >= backoff(*failures) {
                    actions.push(Action::Start(name.clone()));
                }
            }
            (false, Some(ChildState::Running { .. })) => actions.push(Action::Stop(name.clone())),
            (false, Some(ChildState::Exited { .. })) => actions.push(Action::Forget(name.clone())),
            // Running and wanted; stopping (a request made again meanwhile is
            // started once the stop has finished); neither wanted nor known.
            (true, Some(ChildState::Running { .. } | ChildState::Stopping)) => {}
            (false, Some(ChildState::Stopping) | None) => {}
        }
    }
    actions
}

/// Why the host could not run.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error(
        "reading the request folder {dir}: {source} (it is the chart's hostPath /var/run/kwire/wireguard-host; is it mounted?)"
    )]
    ReadDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("creating {dir}: {source}")]
    CreateDir {
        dir: PathBuf,
        source: std::io::Error,
    },
}

/// The devices requested in `dir`.
pub fn read_wanted(dir: &Path) -> Result<BTreeSet<IfaceName>, HostError> {
    let entries = std::fs::read_dir(dir).map_err(|source| HostError::ReadDir {
        dir: dir.to_path_buf(),
        source,
    })?;
    Ok(entries
        .flatten()
        .filter_map(|e| requested_device(&e.file_name().to_string_lossy()))
        .collect())
}

enum Child {
    Running {
        started: Instant,
        process: tokio::process::Child,
    },
    Stopping(JoinHandle<()>),
    Exited {
        at: Instant,
        failures: u32,
    },
}

impl Child {
    fn state(&self) -> ChildState {
        match self {
            Child::Running { started, .. } => ChildState::Running { started: *started },
            Child::Stopping(_) => ChildState::Stopping,
            Child::Exited { at, failures } => ChildState::Exited {
                at: *at,
                failures: *failures,
            },
        }
    }
}

/// Keeps the children of the requests in `dir` until `stop` resolves; then
/// returns, leaving the children running (in a container the runtime ends
/// them with it).
pub async fn run(
    dir: &Path,
    program: &Path,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), HostError> {
    for d in [dir, Path::new(SOCKET_DIRS[0])] {
        std::fs::create_dir_all(d).map_err(|source| HostError::CreateDir {
            dir: d.to_path_buf(),
            source,
        })?;
    }
    tracing::info!(dir = %dir.display(), program = %program.display(), "wireguard host started");
    let mut children: BTreeMap<IfaceName, Child> = BTreeMap::new();
    // Failures carried over a restart that follows an exit.
    let mut failures: BTreeMap<IfaceName, u32> = BTreeMap::new();
    tokio::pin!(stop);
    loop {
        let now = Instant::now();
        // Watch: reap what exited or finished stopping.
        for (name, child) in children.iter_mut() {
            match child {
                Child::Running { started, process } => {
                    if let Ok(Some(status)) = process.try_wait() {
                        let n = failures_after_exit(
                            *started,
                            now,
                            failures.get(name).copied().unwrap_or(0),
                        );
                        tracing::warn!(device = %name, %status, failures = n, "wireguard-go exited; restarting it after {:?}", backoff(n));
                        *child = Child::Exited {
                            at: now,
                            failures: n,
                        };
                    }
                }
                Child::Stopping(stopper) if stopper.is_finished() => {
                    *child = Child::Exited {
                        at: now,
                        failures: 0,
                    };
                }
                _ => {}
            }
        }
        // Stopped children that finished are forgotten at once.
        let wanted = read_wanted(dir)?;
        let states = children
            .iter()
            .map(|(n, c)| (n.clone(), c.state()))
            .collect();
        for action in plan(&wanted, &states, now) {
            match action {
                Action::Start(name) => {
                    if let Some(Child::Exited { failures: n, .. }) = children.get(&name) {
                        failures.insert(name.clone(), *n);
                    }
                    match start(program, &name) {
                        Ok(process) => {
                            tracing::info!(device = %name, pid = process.id(), "started wireguard-go");
                            children.insert(
                                name,
                                Child::Running {
                                    started: now,
                                    process,
                                },
                            );
                        }
                        Err(e) => {
                            let n = failures.get(&name).copied().unwrap_or(0) + 1;
                            tracing::error!(device = %name, error = %e, "could not start {}", program.display());
                            failures.insert(name.clone(), n);
                            children.insert(
                                name,
                                Child::Exited {
                                    at: now,
                                    failures: n,
                                },
                            );
                        }
                    }
                }
                Action::Stop(name) => {
                    if let Some(Child::Running { process, .. }) = children.remove(&name) {
                        tracing::info!(device = %name, "request removed; stopping wireguard-go");
                        children.insert(name, Child::Stopping(tokio::spawn(stop_child(process))));
                    }
                }
                Action::Forget(name) => {
                    children.remove(&name);
                    failures.remove(&name);
                }
            }
        }
        tokio::select! {
            _ = &mut stop => break,
            _ = tokio::time::sleep(POLL) => {}
        }
    }
    tracing::info!(
        running = children.len(),
        "wireguard host stopping; its wireguard-go processes are left running"
    );
    Ok(())
}

fn start(program: &Path, name: &IfaceName) -> std::io::Result<tokio::process::Child> {
    // As in the daemon's own supervisor: no LOG_LEVEL (configuration hung with
    // it), and /dev/null for the standard streams.
    Command::new(program)
        .arg("-f")
        .arg(name.as_str())
        .env_remove("LOG_LEVEL")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(false)
        .spawn()
}

/// SIGTERM (wireguard-go then removes its socket and link), SIGKILL after a
/// grace period. The child is reaped here, so its PID stays ours until then.
async fn stop_child(mut process: tokio::process::Child) {
    if let Some(pid) = process.id() {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
    }
    if tokio::time::timeout(STOP_GRACE, process.wait())
        .await
        .is_err()
    {
        let _ = process.start_kill();
        let _ = process.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn name(s: &str) -> IfaceName {
        IfaceName::new(s).unwrap()
    }

    #[test]
    fn request_files_name_devices_and_temporary_files_are_ignored() {
        assert_eq!(requested_device("wg0.want"), Some(name("wg0")));
        assert_eq!(requested_device("wg0.want.tmp"), None);
        assert_eq!(requested_device("wg0"), None);
        assert_eq!(requested_device(".want"), None);
        assert_eq!(requested_device("a-name-too-long-for-linux.want"), None);
        let dir = Path::new("/x");
        assert_eq!(
            requested_device(
                &request_path(dir, &name("wg1-client"))
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
            ),
            Some(name("wg1-client"))
        );
    }

    #[test]
    fn backoff_doubles_up_to_ten_seconds() {
        assert_eq!(backoff(0), Duration::from_millis(200));
        assert_eq!(backoff(1), Duration::from_millis(200));
        assert_eq!(backoff(2), Duration::from_millis(400));
        assert_eq!(backoff(6), Duration::from_millis(6400));
        assert_eq!(backoff(7), Duration::from_secs(10));
        assert_eq!(backoff(u32::MAX), Duration::from_secs(10));
        let t = Instant::now();
        assert_eq!(failures_after_exit(t, t + Duration::from_secs(1), 3), 4);
        assert_eq!(failures_after_exit(t, t + STEADY, 3), 1);
    }

    #[test]
    fn the_cases() {
        let now = Instant::now();
        let wanted: BTreeSet<_> = ["new", "running", "died", "died-now", "stopping"]
            .into_iter()
            .map(name)
            .collect();
        let children = BTreeMap::from([
            (name("running"), ChildState::Running { started: now }),
            (name("gone"), ChildState::Running { started: now }),
            (
                name("died"),
                ChildState::Exited {
                    at: now - Duration::from_secs(1),
                    failures: 1,
                },
            ),
            (
                name("died-now"),
                ChildState::Exited {
                    at: now,
                    failures: 1,
                },
            ),
            (
                name("died-gone"),
                ChildState::Exited {
                    at: now,
                    failures: 1,
                },
            ),
            (name("stopping"), ChildState::Stopping),
            (name("stop-gone"), ChildState::Stopping),
        ]);
        assert_eq!(
            plan(&wanted, &children, now),
            [
                Action::Start(name("died")),
                Action::Forget(name("died-gone")),
                Action::Stop(name("gone")),
                Action::Start(name("new")),
            ]
        );
    }

    fn is_running(s: Option<&ChildState>) -> bool {
        matches!(s, Some(ChildState::Running { .. }))
    }

    fn is_exited(s: Option<&ChildState>) -> bool {
        matches!(s, Some(ChildState::Exited { .. }))
    }

    fn state() -> impl Strategy<Value = Option<ChildState>> {
        let base = Instant::now();
        prop_oneof![
            Just(None),
            (0u64..100).prop_map(move |s| Some(ChildState::Running {
                started: base + Duration::from_secs(s)
            })),
            Just(Some(ChildState::Stopping)),
            (0u64..100_000, 0u32..20).prop_map(move |(ms, failures)| Some(ChildState::Exited {
                at: base + Duration::from_millis(ms),
                failures
            })),
        ]
    }

    proptest! {
        /// Every action is for the right kind of child, at most one per
        /// device; a wanted device with no child is always started; applied
        /// (a start runs, a stop finishes, a forget forgets) and planned again
        /// once backoffs are over, the plan is empty and exactly the wanted
        /// devices run.
        #[test]
        fn plans_converge(
            devices in proptest::collection::btree_map("[a-e]", (any::<bool>(), state()), 0..5),
            later in 0u64..20,
        ) {
            let now = Instant::now() + Duration::from_secs(later);
            let wanted: BTreeSet<IfaceName> = devices.iter().filter(|(_, (w, _))| *w).map(|(n, _)| name(n)).collect();
            let mut children: BTreeMap<IfaceName, ChildState> = devices.iter()
                .filter_map(|(n, (_, s))| s.map(|s| (name(n), s))).collect();
            let actions = plan(&wanted, &children, now);
            let touched: BTreeSet<&IfaceName> = actions.iter().map(|a| match a {
                Action::Start(n) | Action::Stop(n) | Action::Forget(n) => n,
            }).collect();
            prop_assert_eq!(touched.len(), actions.len());
            for action in &actions {
                match action {
                    Action::Start(n) => prop_assert!(wanted.contains(n) && !is_running(children.get(n)) && children.get(n) != Some(&ChildState::Stopping)),
                    Action::Stop(n) => prop_assert!(!wanted.contains(n) && is_running(children.get(n))),
                    Action::Forget(n) => prop_assert!(!wanted.contains(n) && is_exited(children.get(n))),
                }
            }
            for n in &wanted {
                if !children.contains_key(n) {
                    prop_assert!(actions.contains(&Action::Start(n.clone())));
                }
            }
            // Apply, let stops finish and backoffs pass, and plan until nothing is left to do.
            let far = now + Duration::from_secs(3600);
            for _ in 0..3 {
                for (_, s) in children.iter_mut() {
                    if *s == ChildState::Stopping {
                        *s = ChildState::Exited { at: now, failures: 0 };
                    }
                }
                for action in plan(&wanted, &children, far) {
                    match action {
                        Action::Start(n) => { children.insert(n, ChildState::Running { started: far }); }
                        Action::Stop(n) => { children.insert(n, ChildState::Stopping); }
                        Action::Forget(n) => { children.remove(&n); }
                    }
                }
            }
            prop_assert!(plan(&wanted, &children, far).is_empty());
            let running: BTreeSet<IfaceName> = children.iter()
                .filter(|(_, s)| is_running(Some(s))).map(|(n, _)| n.clone()).collect();
            prop_assert_eq!(running, wanted);
            prop_assert!(children.values().all(|s| is_running(Some(s))));
        }
    }
}
