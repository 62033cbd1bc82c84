//! The leader election identity of operator replicas started the way containers start them:
//! each in a PID namespace of its own (so each is pid 1) and a UTS namespace of its own (its
//! own hostname, as a pod's is its name), without `POD_NAME`. Two such replicas must get
//! distinct identities (their hostnames) and exactly one of them must lead.
//!
//! Runs against the real local control plane (`kwire_tests::control_plane`) and the
//! workspace's `kwire-operator` binary (`cargo build -p kwire-operator` first; set
//! `KWIRE_OPERATOR_BIN` to try another one). Creating namespaces needs root: without it the
//! test prints `SKIPPED`, or fails when `KWIRE_REQUIRE_E2E=1`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use kwire_tests::control_plane::ControlPlane;
use kwire_tests::sandbox::{metric_sum, operator_metrics, operator_metrics_addr, workspace_binary};
use kwire_tests::wait::wait_for;

/// Whether this process may create PID and UTS namespaces; `Err(why)` otherwise.
fn can_unshare() -> Result<(), String> {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map_err(|e| format!("cannot run id: {e}"))?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Err("PID and UTS namespaces need root".into());
    }
    for tool in ["unshare", "hostname"] {
        let found = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .output();
        if !found.is_ok_and(|o| o.status.success()) {
            return Err(format!("{tool} is not installed"));
        }
    }
    Ok(())
}

fn skipped(test: &str) -> bool {
    match can_unshare() {
        Ok(()) => false,
        Err(why) if std::env::var_os("KWIRE_REQUIRE_E2E").is_some_and(|v| v == "1") => {
            panic!("{test} cannot run ({why}) and KWIRE_REQUIRE_E2E=1")
        }
        Err(why) => {
            eprintln!("SKIPPED {test}: {why}");
            true
        }
    }
}

fn operator_binary() -> Result<PathBuf> {
    match std::env::var_os("KWIRE_OPERATOR_BIN") {
        Some(path) => Ok(PathBuf::from(path)),
        None => Ok(workspace_binary("kwire-operator")?),
    }
}

/// One operator replica in its own PID and UTS namespaces, killed when dropped.
struct Replica {
    hostname: String,
    log: PathBuf,
    /// `unshare`, whose forked child (pid 1 of the new PID namespace) execs the operator;
    /// `--kill-child` takes the operator down with it.
    child: Child,
}

impl Replica {
    fn start(cp: &ControlPlane, namespace: &str, hostname: &str, dir: &Path) -> Result<Self> {
        let log = dir.join(format!("{hostname}.log"));
        let file = std::fs::File::create(&log)?;
        let child = Command::new("unshare")
            .args(["--uts", "--pid", "--fork", "--kill-child", "--"])
            // Set the hostname, then become the operator (still pid 1).
            .args(["sh", "-c", r#"hostname "$0" && exec "$@""#, hostname])
            .arg(operator_binary()?)
            .args(["--metrics-addr", "127.0.0.1:0", "--log-format", "text"])
            .args(["--namespace", namespace])
            .args([
                "--leader-election",
                "--leader-election-namespace",
                namespace,
            ])
            .env("KUBECONFIG", cp.admin_kubeconfig())
            .env("RUST_LOG", "info")
            .env_remove("POD_NAME")
            .env_remove("KWIRE_NAMESPACE")
            .env_remove("POD_NAMESPACE")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .context("starting unshare")?;
        Ok(Replica {
            hostname: hostname.to_string(),
            log,
            child,
        })
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The `kwire_operator_leader` gauge, once the replica serves its metrics.
    fn leader_gauge(&mut self) -> Result<Option<f64>> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "replica {} exited ({status}):\n{}",
                self.hostname,
                self.log_text()
            );
        }
        let Some(addr) = operator_metrics_addr(&self.log) else {
            return Ok(None);
        };
        let text = operator_metrics(addr)?;
        Ok(Some(metric_sum(&text, "kwire_operator_leader", &[])))
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn kubectl(cp: &ControlPlane, args: &[&str]) -> Result<String> {
    let out = cp.kubectl().args(args).stdin(Stdio::null()).output()?;
    ensure!(
        out.status.success(),
        "kubectl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Installs kwire's CRDs, so that the leader's controllers list and watch as in a cluster.
fn install_crds(cp: &ControlPlane) -> Result<()> {
    let crds = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(kwire_crds::crd::GENERATED_PATH);
    kubectl(
        cp,
        &["apply", "--server-side", "-f", &crds.to_string_lossy()],
    )?;
    kubectl(
        cp,
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/networks.kwire.dev",
            "crd/interfaces.kwire.dev",
            "crd/peers.kwire.dev",
            "crd/routes.kwire.dev",
        ],
    )?;
    Ok(())
}

fn lease_holder(cp: &ControlPlane, namespace: &str) -> Result<Option<String>> {
    let holder = kubectl(
        cp,
        &[
            "get",
            "lease",
            "kwire-operator",
            "-n",
            namespace,
            "-o",
            "jsonpath={.spec.holderIdentity}",
            "--ignore-not-found",
        ],
    )?;
    let holder = holder.trim();
    Ok((!holder.is_empty()).then(|| holder.to_string()))
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_without_pod_name_are_told_apart_by_hostname_and_one_leads() -> Result<()> {
    if skipped("two_replicas_without_pod_name_are_told_apart_by_hostname_and_one_leads") {
        return Ok(());
    }
    let cp = ControlPlane::shared().await?;
    install_crds(cp)?;
    let ns = cp.namespace("op-identity").await?;
    let dir = std::env::temp_dir().join(format!("kwire-operator-identity-{}", ns.name()));
    std::fs::create_dir_all(&dir)?;
    let result = one_leader_among_two(cp, ns.name(), &dir);
    let _ = std::fs::remove_dir_all(&dir);
    ns.delete().await?;
    result
}

fn one_leader_among_two(cp: &ControlPlane, namespace: &str, dir: &Path) -> Result<()> {
    let names = ["kwire-operator-replica-a", "kwire-operator-replica-b"];
    let mut replicas = [
        Replica::start(cp, namespace, names[0], dir)?,
        Replica::start(cp, namespace, names[1], dir)?,
    ];

    // Exactly one leads: the Lease names one replica's hostname, that replica's leader
    // gauge is 1 and the other's 0 (both serve metrics before competing for the Lease).
    let waited = wait_for(
        "the Lease held by one replica's hostname, and only that replica leading",
        Duration::from_secs(90),
        || {
            let holder = lease_holder(cp, namespace)?;
            let gauges = [replicas[0].leader_gauge()?, replicas[1].leader_gauge()?];
            let (Some(holder), [Some(a), Some(b)]) = (holder, gauges) else {
                return Ok(None);
            };
            let Some(leader) = names.iter().position(|n| *n == holder) else {
                bail!("the Lease is held by {holder:?}, which is neither replica's hostname");
            };
            let expected = if leader == 0 { [1.0, 0.0] } else { [0.0, 1.0] };
            Ok(([a, b] == expected).then_some(holder))
        },
    );
    let (leader, took) = match waited {
        Ok(found) => found,
        Err(e) => bail!(
            "{e:#}\n--- {} ---\n{}\n--- {} ---\n{}",
            names[0],
            replicas[0].log_text(),
            names[1],
            replicas[1].log_text()
        ),
    };
    println!(
        "  {leader} leads, the other stands by ({:.1}s after both started)",
        took.as_secs_f64()
    );
    // Each replica calls itself by its hostname.
    for replica in &replicas {
        let log = replica.log_text();
        ensure!(
            log.contains(&format!("identity={}", replica.hostname)),
            "replica {} does not use its hostname as identity:\n{log}",
            replica.hostname
        );
    }
    Ok(())
}
