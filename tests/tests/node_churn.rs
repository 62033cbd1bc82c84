//! Kubelets update their Node all the time; kwire reads only its addresses. On the real local
//! control plane, with the operator under the chart's ServiceAccount and no node daemons:
//!
//! 0. the cold start (every object created before the operator starts) writes each key
//!    Secret, each Interface's and each Peer's status once, and one Event for the
//!    Network's allocations: no status that only said "waiting for the operator";
//! 1. heartbeats (conditions, images, allocatable changing; addresses not) on every Node,
//!    several rounds: the operator runs no reconcile and makes no write;
//! 2. one Node's `InternalIP` changes: exactly the objects whose status carried the old
//!    address (the Interface on the node, the Peers with an endpoint on it) are rewritten,
//!    with the new address, and nothing else is.
//!
//! The end of each phase is an event, not a time: Node events reach the operator in order,
//! so once a later, relevant change (the address of a Node with no Interface, which only
//! makes the operator check its topology again) has been taken in, every heartbeat before
//! it has been too. The counts are asserted; nothing about time is.
//! (`cargo test -p kwire-tests --test node_churn -- --nocapture`; the benchmark at scale is
//! `kwire-operator-bench --churn-minutes 5`, docs/performance.md.)

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, ensure};
use kwire_tests::control_plane::ControlPlane;
use kwire_tests::netns::can_run_network_tests;
use kwire_tests::node_status::heartbeat;
use kwire_tests::sandbox::{metric_sum, operator_metrics, operator_metrics_addr, workspace_binary};
use kwire_tests::wait::{settled, wait_for};
use serde_json::Value;

const NODES: usize = 20;
const ROUNDS: u64 = 5;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn kubectl(cp: &ControlPlane, args: &[&str], input: Option<&str>) -> Result<String> {
    let mut cmd = cp.kubectl();
    cmd.args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    if let Some(text) = input {
        use std::io::Write as _;
        child
            .stdin
            .take()
            .ok_or_else(|| anyhow!("no stdin"))?
            .write_all(text.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "kubectl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn node_name(ns: &str, i: usize) -> String {
    format!("{ns}-n{i:02}")
}

fn address(i: usize) -> String {
    format!("10.210.0.{}", i + 1)
}

/// A kubelet-like status update of Node `name` (see [`heartbeat`]).
fn beat(cp: &ControlPlane, name: &str, ip: &str, beat: u64) -> Result<()> {
    let patch = heartbeat(ip, name, beat).to_string();
    kubectl(
        cp,
        &[
            "patch",
            "node",
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            &patch,
        ],
        None,
    )?;
    Ok(())
}

struct Operator {
    child: Child,
    log: PathBuf,
}

impl Operator {
    fn metrics(&mut self) -> Result<String> {
        if let Some(status) = self.child.try_wait()? {
            anyhow::bail!(
                "the operator exited ({status}):\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
        let addr = operator_metrics_addr(&self.log)
            .ok_or_else(|| anyhow!("the operator does not serve its metrics yet"))?;
        Ok(operator_metrics(addr)?)
    }

    /// Waits until its reconciles and writes have stood still for 10 reads; returns them.
    fn quiet(&mut self, timeout: Duration) -> Result<(f64, f64)> {
        let (counted, _) = settled("the operator's reconciles and writes", timeout, 10, || {
            self.metrics().map(|m| {
                let (r, w, _) = counts(&m);
                (r, w)
            })
        })?;
        Ok(counted)
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// (reconciles, writes, topology checks) from the operator's metrics.
fn counts(metrics: &str) -> (f64, f64, f64) {
    let writes = ["create", "update", "patch", "delete"]
        .iter()
        .map(|verb| {
            metric_sum(
                metrics,
                "kwire_operator_api_requests_total",
                &[&format!("verb=\"{verb}\"")],
            )
        })
        .sum::<f64>()
        // Lease renewals are not the operator's output.
        - metric_sum(
            metrics,
            "kwire_operator_api_requests_total",
            &["resource=\"leases\""],
        );
    (
        metric_sum(metrics, "kwire_operator_reconciles_total", &[]),
        writes,
        metric_sum(metrics, "kwire_operator_topology_checks_total", &[]),
    )
}

/// resourceVersion and status text of every Interface and Peer of the namespace.
fn statuses(cp: &ControlPlane, ns: &str) -> Result<BTreeMap<String, (String, String)>> {
    let list: Value = serde_json::from_str(&kubectl(
        cp,
        &["get", "interfaces,peers", "-n", ns, "-o", "json"],
        None,
    )?)?;
    Ok(list["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|o| {
            (
                format!(
                    "{}/{}",
                    o["kind"].as_str().unwrap_or(""),
                    o["metadata"]["name"].as_str().unwrap_or("")
                ),
                (
                    o["metadata"]["resourceVersion"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                    o["status"].to_string(),
                ),
            )
        })
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelet_heartbeats_cost_nothing_and_an_address_change_rewrites_only_its_dependents()
-> Result<()> {
    // Root is not needed, but the chart and the operator binary are the end-to-end setup.
    if let Err(why) = can_run_network_tests() {
        eprintln!("SKIPPED node churn: {why}");
        return Ok(());
    }
    let cp = ControlPlane::shared().await?;
    let ns = cp.namespace("node-churn").await?;
    let result = churn(cp, ns.name()).await;
    // Nodes are cluster-scoped: remove them whatever happened.
    let names: Vec<String> = (0..=NODES).map(|i| node_name(ns.name(), i)).collect();
    let mut args = vec!["delete", "node", "--ignore-not-found", "--wait=false"];
    args.extend(names.iter().map(String::as_str));
    let _ = kubectl(cp, &args, None);
    let _ = kubectl(
        cp,
        &["delete", "namespace", ns.name(), "--wait=false"],
        None,
    );
    result
}

async fn churn(cp: &ControlPlane, ns: &str) -> Result<()> {
    let out = cp
        .helm()
        .args(["install", "kwire"])
        .arg(repo().join("charts/kwire"))
        .args(["--namespace", ns, "--wait=false"])
        // Generated keys and no node daemon: the default admission policy
        // (nodeSecretAccess none) would refuse the Interfaces.
        .args(["--set", "nodeSecretAccess.admissionPolicy=false"])
        .output()?;
    ensure!(
        out.status.success(),
        "helm install: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    kubectl(
        cp,
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/interfaces.kwire.dev",
            "crd/peers.kwire.dev",
            "crd/networks.kwire.dev",
        ],
        None,
    )?;

    // NODES Nodes with one Interface each, Peers in a ring, and one Node with none.
    let mut yaml = String::new();
    for i in 0..=NODES {
        yaml.push_str(&format!(
            "---\napiVersion: v1\nkind: Node\nmetadata:\n  name: {}\n",
            node_name(ns, i)
        ));
    }
    kubectl(cp, &["apply", "-f", "-"], Some(&yaml))?;
    for i in 0..=NODES {
        let name = node_name(ns, i);
        beat(cp, &name, &address(i), 0)?;
    }
    let mut yaml = String::from(
        "apiVersion: kwire.dev/v1alpha1\nkind: Network\nmetadata: {name: ring}\nspec: {cidr: 10.70.0.0/24}\n",
    );
    for i in 0..NODES {
        yaml.push_str(&format!(
            "---\napiVersion: kwire.dev/v1alpha1\nkind: Interface\nmetadata: {{name: if-{i:02}}}\nspec: {{nodeName: {}, deviceName: wg0, listenPort: 51820, networks: [{{name: ring}}]}}\n",
            node_name(ns, i)
        ));
        yaml.push_str(&format!(
            "---\napiVersion: kwire.dev/v1alpha1\nkind: Peer\nmetadata: {{name: p-{i:02}}}\nspec: {{interface: if-{i:02}, remote: {{interface: if-{:02}}}}}\n",
            (i + 1) % NODES
        ));
    }
    kubectl(cp, &["apply", "-n", ns, "-f", "-"], Some(&yaml))?;

    let kubeconfig = cp.service_account_kubeconfig(ns, "kwire-operator").await?;
    let dir = std::env::temp_dir().join(format!("kwire-node-churn-{ns}"));
    std::fs::create_dir_all(&dir)?;
    let log = dir.join("operator.log");
    let file = std::fs::File::create(&log)?;
    let child = Command::new(workspace_binary("kwire-operator")?)
        .args([
            "--metrics-addr",
            "127.0.0.1:0",
            "--log-format",
            "text",
            "--namespace",
            ns,
        ])
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()
        .context("starting kwire-operator")?;
    let mut operator = Operator { child, log };

    wait_for("every Peer resolved", Duration::from_secs(120), || {
        let list: Value = serde_json::from_str(&kubectl(
            cp,
            &["get", "peers", "-n", ns, "-o", "json"],
            None,
        )?)?;
        let resolved = list["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter(|p| {
                        p["status"]["conditions"].as_array().is_some_and(|c| {
                            c.iter()
                                .any(|c| c["type"] == "Resolved" && c["status"] == "True")
                        })
                    })
                    .count()
            })
            .unwrap_or(0);
        Ok((resolved == NODES).then_some(()))
    })?;
    let quiet = operator.quiet(Duration::from_secs(120))?;
    let metrics = operator.metrics()?;
    let before = counts(&metrics);
    println!("  settled after the cold start: {quiet:?} (reconciles, writes)");

    // 0. The cold start's writes, by verb and resource.
    let requests = |verb: &str, resource: &str| {
        metric_sum(
            &metrics,
            "kwire_operator_api_requests_total",
            &[
                &format!("verb=\"{verb}\""),
                &format!("resource=\"{resource}\""),
            ],
        )
    };
    let written = [
        ("create", "secrets", NODES),
        ("patch", "interfaces/status", NODES),
        ("patch", "peers/status", NODES),
        ("patch", "networks/status", 1),
        ("create", "events", 1),
    ];
    println!(
        "  cold start of {NODES} Interfaces, {NODES} Peers, 1 Network: {} writes",
        before.1
    );
    for (verb, resource, want) in written {
        let got = requests(verb, resource);
        println!("    {verb} {resource}: {got}");
        ensure!(
            got == want as f64,
            "the cold start sent {got} `{verb} {resource}`, expected {want} (one per object)"
        );
    }
    ensure!(
        before.1 == written.iter().map(|w| w.2 as f64).sum::<f64>(),
        "the cold start made {} writes, more than one per object: {metrics}",
        before.1
    );

    // 1. Heartbeats, then a fence: a Node with no Interface gets a new address.
    let mut fence_beat = 0;
    for round in 1..=ROUNDS {
        for i in 0..NODES {
            let name = node_name(ns, i);
            beat(cp, &name, &address(i), round)?;
        }
        fence_beat = round;
    }
    let fence = node_name(ns, NODES);
    beat(cp, &fence, "10.210.1.1", fence_beat)?;
    let (after_churn, _) = wait_for(
        "the fence taken in (a topology check after it)",
        Duration::from_secs(60),
        || {
            let now = counts(&operator.metrics()?);
            Ok((now.2 > before.2).then_some(now))
        },
    )?;
    let reconciles = after_churn.0 - before.0;
    let writes = after_churn.1 - before.1;
    println!(
        "  {ROUNDS} heartbeat rounds on {NODES} Nodes ({} Node updates): {reconciles} reconciles, {writes} writes",
        ROUNDS as usize * NODES
    );
    ensure!(
        reconciles == 0.0,
        "heartbeats caused {reconciles} reconciles"
    );
    ensure!(writes == 0.0, "heartbeats caused {writes} writes");

    // 2. One Node's InternalIP changes.
    let moved = 5;
    let (old_ip, new_ip) = (address(moved), "10.210.2.6".to_string());
    let statuses_before = statuses(cp, ns)?;
    let dependents: BTreeSet<String> = statuses_before
        .iter()
        .filter(|(_, (_, status))| {
            status.contains(&format!("\"{old_ip}:")) || status.contains(&format!("\"{old_ip}\""))
        })
        .map(|(k, _)| k.clone())
        .collect();
    ensure!(
        !dependents.is_empty(),
        "no status carries {old_ip}: {statuses_before:?}"
    );
    let name = node_name(ns, moved);
    beat(cp, &name, &new_ip, ROUNDS + 1)?;
    wait_for(
        "every dependent to carry the new address",
        Duration::from_secs(60),
        || {
            let now = statuses(cp, ns)?;
            Ok(dependents
                .iter()
                .all(|k| {
                    now.get(k)
                        .is_some_and(|(_, s)| s.contains(&new_ip) && !s.contains(&old_ip))
                })
                .then_some(()))
        },
    )?;
    operator.quiet(Duration::from_secs(60))?;
    let statuses_after = statuses(cp, ns)?;
    let rewritten: BTreeSet<String> = statuses_after
        .iter()
        .filter(|(k, (rv, _))| statuses_before.get(*k).is_none_or(|(old, _)| old != rv))
        .map(|(k, _)| k.clone())
        .collect();
    let after = counts(&operator.metrics()?);
    println!(
        "  {name} moved {old_ip} -> {new_ip}: rewritten {rewritten:?} (depended on it: {dependents:?}); {} reconciles, {} writes",
        after.0 - after_churn.0,
        after.1 - after_churn.1
    );
    ensure!(
        rewritten == dependents,
        "rewritten {rewritten:?}, but the objects whose status carried {old_ip} are {dependents:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
