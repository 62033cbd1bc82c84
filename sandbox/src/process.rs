//! Starting the sandbox's long-running child processes: one way, each with its output in a
//! log file of its own, and waiting for what they make.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, IoContext as _, Result, describe};

/// Starts `cmd` with stdin closed and stdout and stderr both appended to `log` (created if
/// needed). `what` names the process in errors ("containerd of node a").
pub fn spawn_logged(cmd: &mut Command, log: &Path, what: &str) -> Result<Child> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .io(|| format!("opening {}", log.display()))?;
    let err = file
        .try_clone()
        .io(|| format!("opening {}", log.display()))?;
    cmd.stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .spawn()
        .map_err(|source| Error::Spawn {
            what: format!("starting {what} ({})", describe(cmd)),
            source,
        })
}

/// Calls `check` until it returns `Some`, every 50 ms for at most `timeout`; fails with a
/// [`Error::Timeout`] saying what was waited for, quoting the last error `check` returned.
/// Returns early with the error of `gone` when it reports that what is being waited on has
/// died (a process that exited).
pub fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut gone: impl FnMut() -> Option<String>,
    mut check: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let start = Instant::now();
    let mut last = None;
    loop {
        crate::sandbox::check_interrupted()?;
        match check() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = Some(e),
        }
        if let Some(why) = gone() {
            return Err(Error::State(format!("{what}: {why}")));
        }
        if start.elapsed() > timeout {
            return Err(Error::Timeout(format!(
                "timed out after {}s waiting for {what}{}",
                timeout.as_secs(),
                last.map(|e| format!(" (last error: {e})"))
                    .unwrap_or_default()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// For [`wait_until`]: why `child` is no longer running, if it is not.
pub fn exited(child: &mut Child, log: &Path) -> Option<String> {
    match child.try_wait() {
        Ok(Some(status)) => Some(format!(
            "it exited ({status}); last lines of {}:\n{}",
            log.display(),
            tail(log, 15)
        )),
        _ => None,
    }
}

/// The last `lines` lines of a log file (empty if it cannot be read).
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Kills (SIGKILL) every process `pids` lists, again and again until it lists none or
/// `rounds` rounds 50 ms apart have passed: what is killed may have started others meanwhile.
pub fn kill_until_gone(rounds: u32, mut pids: impl FnMut() -> Vec<u32>) {
    for _ in 0..rounds {
        let listed = pids();
        if listed.is_empty() {
            return;
        }
        for pid in listed {
            // Gone already (it exited after being listed) is fine.
            let _ = Command::new("kill")
                .args(["-9", &pid.to_string()])
                .stderr(std::process::Stdio::null())
                .status();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends SIGTERM to `child`, waits up to `grace` for it to exit, then kills it.
pub fn stop(child: &mut Child, grace: Duration) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_logged_process_writes_both_streams_to_its_log() {
        let dir = std::env::temp_dir().join(format!("kwire-spawn-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("p.log");
        let mut child = spawn_logged(
            Command::new("sh").args(["-c", "echo out; echo err >&2"]),
            &log,
            "a shell",
        )
        .unwrap();
        assert!(child.wait().unwrap().success());
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.contains("out") && text.contains("err"), "{text}");
        assert_eq!(tail(&log, 1).lines().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn waiting_stops_early_when_the_process_is_gone_and_says_why() {
        let dir = std::env::temp_dir().join(format!("kwire-wait-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("p.log");
        let mut child = spawn_logged(
            Command::new("sh").args(["-c", "echo boom; exit 3"]),
            &log,
            "sh",
        )
        .unwrap();
        let err = wait_until::<()>(
            "a socket",
            Duration::from_secs(30),
            || exited(&mut child, &log),
            || Ok(None),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("a socket") && err.contains("boom"), "{err}");
        let err = wait_until::<()>("never", Duration::ZERO, || None, || Ok(None))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("timed out after 0s waiting for never"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
