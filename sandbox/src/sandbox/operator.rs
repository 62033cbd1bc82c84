//! The operator of process nodes: the sandbox's own `kwire-operator` process, and the
//! controls the operator's end-to-end tests use (tests/tests/operator_e2e.rs): restart it,
//! stop it, run more replicas (leader election), read their metrics.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use super::{SYSTEM_NAMESPACE, Sandbox, workspace_binary};
use crate::error::{Error, IoContext as _, Result};
use crate::process::spawn_logged;

// Operator control for the operator's end-to-end tests (tests/tests/operator_e2e.rs):
// restart the sandbox's operator, stop it, and run more replicas (leader election).

/// An extra `kwire-operator` process started by [`Sandbox::spawn_operator`]; killed when
/// dropped.
pub struct OperatorProcess {
    pub name: String,
    pub log: PathBuf,
    child: Option<Child>,
}

impl OperatorProcess {
    /// The process ID, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills it the hard way (SIGKILL, like a crashed pod): no Lease release, nothing.
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child
                .kill()
                .io(|| format!("killing operator {}", self.name))?;
            child
                .wait()
                .io(|| format!("waiting for operator {}", self.name))?;
        }
        Ok(())
    }

    /// Whether the process still runs.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Where it serves `/metrics`, from the line it logs at start.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        operator_metrics_addr(&self.log)
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// The `/metrics` address an operator logged in `log` (the last one: logs are appended).
pub fn operator_metrics_addr(log: &Path) -> Option<std::net::SocketAddr> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines()
        .rev()
        .filter(|l| l.contains("serving /healthz"))
        .find_map(|l| {
            let at = l.find("addr")? + 4;
            l[at..]
                .trim_start_matches(|c: char| !c.is_ascii_digit())
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
}

/// `GET http://<addr>/metrics` of an operator, as text.
pub fn operator_metrics(addr: std::net::SocketAddr) -> Result<String> {
    use std::io::Read as _;
    let what = || format!("GET http://{addr}/metrics");
    let mut stream =
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).io(what)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .io(what)?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .io(what)?;
    let mut response = String::new();
    stream.read_to_string(&mut response).io(what)?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .ok_or_else(|| Error::Unexpected(format!("no HTTP body from {addr}")))?;
    Ok(body)
}

/// The sum of every sample of `metric` (all label sets) in a metrics text whose labels
/// contain every one of `labels` (`key="value"`).
pub fn metric_sum(text: &str, metric: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name_labels, value) = l.rsplit_once(' ')?;
            let name = name_labels.split('{').next()?;
            (name == metric && labels.iter().all(|want| name_labels.contains(want)))
                .then(|| value.parse::<f64>().ok())?
        })
        .fold(0.0, |a, b| a + b)
}

impl Sandbox {
    /// The log file of the sandbox's own operator.
    pub fn operator_log(&self) -> PathBuf {
        self.run_dir.join("operator.log")
    }

    /// Where the sandbox's own operator serves `/metrics` (it listens on a free port).
    pub fn operator_metrics_addr(&self) -> Option<std::net::SocketAddr> {
        operator_metrics_addr(&self.operator_log())
    }

    /// Process nodes: the sandbox's own `kwire-operator` (`binary`) under the chart's
    /// ServiceAccount, logging to [`Sandbox::operator_log`].
    pub(super) async fn start_operator(&mut self, binary: &Path) -> Result<()> {
        self.begin("kwire-operator under its ServiceAccount")?;
        let kubeconfig = self
            .cp
            .service_account_kubeconfig(SYSTEM_NAMESPACE, "kwire-operator")
            .await?;
        let child = spawn_operator(
            binary,
            &kubeconfig,
            &[],
            &self.operator_log(),
            "kwire-operator",
        )?;
        let pid = child.id();
        self.operator = Some(child);
        self.ledger.process(pid, "kwire-operator", None)?;
        self.steps.done();
        Ok(())
    }

    /// Stops the sandbox's own operator (SIGKILL); [`Sandbox::restart_operator`] starts it
    /// again.
    pub fn stop_operator(&mut self) -> Result<()> {
        if let Some(mut child) = self.operator.take() {
            child.kill().io(|| "killing kwire-operator".into())?;
            child.wait().io(|| "waiting for kwire-operator".into())?;
        }
        Ok(())
    }

    /// Kills the sandbox's own operator and starts it again as it was started, appending
    /// to its log.
    pub async fn restart_operator(&mut self) -> Result<()> {
        self.stop_operator()?;
        let kubeconfig = self
            .cp
            .service_account_kubeconfig(SYSTEM_NAMESPACE, "kwire-operator")
            .await?;
        let child = spawn_operator(
            &workspace_binary("kwire-operator")?,
            &kubeconfig,
            &[],
            &self.operator_log(),
            "kwire-operator",
        )?;
        let pid = child.id();
        self.operator = Some(child);
        self.ledger.process(pid, "kwire-operator", None)?;
        Ok(())
    }

    /// Starts one more `kwire-operator` under the chart's ServiceAccount with `args` (plus a
    /// free metrics port and text logs), logging to `operator-<name>.log` in the run folder.
    pub async fn spawn_operator(&self, name: &str, args: &[&str]) -> Result<OperatorProcess> {
        let kubeconfig = self
            .cp
            .service_account_kubeconfig(SYSTEM_NAMESPACE, "kwire-operator")
            .await?;
        let log = self.run_dir.join(format!("operator-{name}.log"));
        // A fresh log: the name may have been used before.
        std::fs::File::create(&log).io(|| format!("creating {}", log.display()))?;
        let child = spawn_operator(
            &workspace_binary("kwire-operator")?,
            &kubeconfig,
            args,
            &log,
            &format!("kwire-operator {name}"),
        )?;
        self.ledger
            .process(child.id(), &format!("kwire-operator {name}"), None)?;
        Ok(OperatorProcess {
            name: name.to_string(),
            log,
            child: Some(child),
        })
    }
}

/// Starts `kwire-operator` (`binary`) with `kubeconfig`, a free metrics port, text logs and
/// `args`, its output appended to `log`; `what` names it in errors.
fn spawn_operator(
    binary: &Path,
    kubeconfig: &Path,
    args: &[&str],
    log: &Path,
    what: &str,
) -> Result<Child> {
    spawn_logged(
        Command::new(binary)
            .args(["--metrics-addr", "127.0.0.1:0", "--log-format", "text"])
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info"),
        log,
        what,
    )
}
