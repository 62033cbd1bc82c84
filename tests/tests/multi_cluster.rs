//! Two clusters, one link: `docs/multi-cluster.md`, run.
//!
//! Two sandboxes, each a cluster of its own (local control plane, chart, operator, node
//! daemon), whose node namespaces `east` and `west` share one LAN
//! ([`Sandbox::up_on_lan`]). The page's manifests (` ```yaml ` blocks whose first line is
//! `# <file>.yaml…`) are the clusters' Interfaces, and every ` ```sh ` block of the page is run
//! with bash, in order, in a scratch folder holding those files, with a kubeconfig whose
//! contexts `east` and `west` are the two clusters: the commands a reader types are the ones
//! tested. Then east pings west's overlay address through the tunnel (and back), and both
//! external Peers must be Ready and Connected with the far side's key and endpoint.
//!
//! Needs root, `ip`, `wg`, `wireguard-go`, `ping` and `socat` (prints `SKIPPED …` and passes
//! otherwise), and the workspace binaries: `cargo build --workspace --bins` first.
//! `cargo test -p kwire-tests --test multi_cluster -- --nocapture` prints every command's
//! output (the outputs quoted in the page come from there).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, ensure};
use kwire_tests::control_plane::{ControlPlane, bin_dir};
use kwire_tests::netns::{Lan, can_run_network_tests};
use kwire_tests::sandbox::Sandbox;
use serde_json::Value;

const NAMESPACE: &str = "links";
/// A bound on waiting, not a timing assertion: other tests share the cores.
const CONVERGE: Duration = Duration::from_secs(300);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A folder removed when dropped, also when the test fails.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Self> {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("multi-cluster-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The runnable parts of the page.
#[derive(Debug, Default)]
struct Page {
    /// `(file name, text)` of each ```yaml block that starts with `# <name>.yaml`.
    manifests: Vec<(String, String)>,
    /// Each ```sh block, in order.
    scripts: Vec<String>,
}

fn parse_page(text: &str) -> Page {
    let mut page = Page::default();
    let mut block: Option<(String, Vec<&str>)> = None;
    for line in text.lines() {
        match (&mut block, line.strip_prefix("```")) {
            (None, Some(info)) => block = Some((info.trim().to_string(), Vec::new())),
            (Some(_), Some(rest)) if rest.trim().is_empty() => {
                let (info, lines) = block.take().unwrap_or_default();
                let body = lines.join("\n") + "\n";
                match info.as_str() {
                    "sh" => page.scripts.push(body),
                    "yaml" => {
                        if let Some(name) = lines
                            .first()
                            .and_then(|l| l.strip_prefix("# "))
                            .and_then(|l| l.split([':', ' ']).next())
                            .filter(|n| n.ends_with(".yaml"))
                        {
                            page.manifests.push((name.to_string(), body));
                        }
                    }
                    _ => {}
                }
            }
            (Some((_, lines)), _) => lines.push(line),
            (None, None) => {}
        }
    }
    page
}

/// A kubeconfig with one context per cluster, named after it (as on the page).
fn kubeconfig(clusters: &[(&str, &ControlPlane)]) -> String {
    let q = |s: &str| Value::from(s).to_string();
    let mut text = String::from("apiVersion: v1\nkind: Config\nclusters:\n");
    for (name, cp) in clusters {
        text += &format!(
            "- name: {}\n  cluster:\n    server: {}\n    certificate-authority: {}\n",
            q(name),
            q(cp.api_url()),
            q(&cp.ca_file().display().to_string())
        );
    }
    text += "users:\n";
    for (name, cp) in clusters {
        text += &format!(
            "- name: {}\n  user:\n    token: {}\n",
            q(&format!("{name}-admin")),
            q(cp.admin_token())
        );
    }
    text += "contexts:\n";
    for (name, _) in clusters {
        text += &format!(
            "- name: {}\n  context:\n    cluster: {}\n    user: {}\n",
            q(name),
            q(name),
            q(&format!("{name}-admin"))
        );
    }
    text += &format!("current-context: {}\n", q(clusters[0].0));
    text
}

/// Runs one ```sh block of the page; returns its output (stdout and stderr, interleaved as
/// far as pipes allow: stderr follows stdout).
fn run_script(script: &str, dir: &Path, kubeconfig: &Path) -> Result<String> {
    let path = format!(
        "{}:{}",
        bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .current_dir(dir)
        .env("PATH", path)
        .env("KUBECONFIG", kubeconfig)
        // kubectl's discovery cache is keyed by host:port, and ports are reused across runs.
        .env("KUBECACHEDIR", dir.join("kubectl-cache"))
        .stdin(Stdio::null())
        .output()
        .context("running bash")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        out.status.success(),
        "this block of docs/multi-cluster.md failed ({}):\n{script}\n--- its output:\n{text}",
        out.status
    );
    Ok(text)
}

fn object(sandbox: &Sandbox, kind: &str, name: &str) -> Result<Value> {
    sandbox
        .get(kind)?
        .into_iter()
        .find(|o| o["metadata"]["name"] == name)
        .ok_or_else(|| anyhow!("no {kind} {name} in namespace {}", sandbox.namespace))
}

/// The external Peer `peer` of `here` must point at Interface `far` of `there`, whose only
/// node is `far_node`, and be Ready and Connected.
fn check_peer(
    here: &Sandbox,
    peer: &str,
    there: &Sandbox,
    far: &str,
    far_node: &str,
) -> Result<()> {
    let p = object(here, "peers", peer)?;
    let far_if = object(there, "interfaces", far)?;
    let far_key = far_if["status"]["publicKey"]
        .as_str()
        .ok_or_else(|| anyhow!("{far} has no public key"))?;
    let far_address = there
        .nodes
        .get(far_node)
        .ok_or_else(|| anyhow!("no node {far_node}"))?
        .address;
    let far_endpoint = format!("{far_address}:51820");
    ensure!(
        p["spec"]["remote"]["publicKey"] == far_key
            && p["spec"]["remote"]["endpoint"]["host"] == far_address.to_string()
            && p["spec"]["remote"]["endpoint"]["port"] == 51820,
        "Peer {peer} does not name {far}'s key {far_key} and endpoint {far_endpoint}: {}",
        p["spec"]
    );
    ensure!(
        far_if["status"]["endpoint"] == far_endpoint.as_str(),
        "{far}'s status.endpoint is not its node's underlay address: {}",
        far_if["status"]
    );
    let status = &p["status"];
    ensure!(
        status["resolved"]["publicKey"] == far_key
            && status["resolved"]["endpoint"] == far_endpoint.as_str()
            && status["remoteName"]
                .as_str()
                .is_some_and(|r| r.starts_with("external:")),
        "Peer {peer} resolved to something else: {status}"
    );
    for condition in ["Ready", "Connected"] {
        let c = status["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == condition))
            .ok_or_else(|| anyhow!("Peer {peer} has no {condition} condition: {status}"))?;
        ensure!(c["status"] == "True", "Peer {peer} is not {condition}: {c}");
    }
    ensure!(
        status["latestHandshake"].is_string(),
        "Peer {peer} reports no handshake: {status}"
    );
    // The handshakes come straight over the shared LAN from the far node.
    ensure!(
        status["endpointSeen"] == far_endpoint.as_str(),
        "Peer {peer} last heard from {} rather than {far_endpoint}",
        status["endpointSeen"]
    );
    Ok(())
}

/// `ping -c 3` from `node` of `sandbox` to `to`, after waiting for a first reply; returns
/// the console text.
fn ping(sandbox: &Sandbox, node: &str, to: IpAddr) -> Result<String> {
    let n = sandbox
        .nodes
        .get(node)
        .ok_or_else(|| anyhow!("no node {node}"))?;
    ensure!(
        n.netns.wait_for_ping(to, Duration::from_secs(60)).is_some(),
        "node {node} gets no reply from {to} through the tunnel\n{}",
        sandbox.logs_tail(15)
    );
    let route = n.netns.exec(&["ip", "route", "get", &to.to_string()])?;
    let route = String::from_utf8_lossy(&route.stdout).trim().to_string();
    ensure!(
        route.contains("dev wg0"),
        "{to} is not routed through wg0 on node {node}: {route}"
    );
    let out = n
        .netns
        .exec(&["ping", "-n", "-c", "3", "-i", "0.2", &to.to_string()])?;
    Ok(format!(
        "$ ip route get {to}\n{route}\n$ ping -c 3 {to}\n{}",
        String::from_utf8_lossy(&out.stdout).trim_end()
    ))
}

/// `wg show wg0` as the node's daemon sees it (no private key in the output).
fn wg_show(sandbox: &Sandbox, node: &str) -> Result<String> {
    let pid = sandbox
        .nodes
        .get(node)
        .and_then(|n| n.daemon.as_ref())
        .ok_or_else(|| anyhow!("node {node} has no daemon"))?
        .id();
    let out = Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-m", "-n", "wg", "show", "wg0"])
        .output()?;
    ensure!(
        out.status.success(),
        "wg show: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(format!(
        "$ wg show wg0\n{}",
        String::from_utf8_lossy(&out.stdout).trim_end()
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clusters_linked_by_exported_peers() -> Result<()> {
    if let Err(why) = can_run_network_tests() {
        eprintln!("SKIPPED two_clusters_linked_by_exported_peers: {why}");
        return Ok(());
    }
    let began = Instant::now();
    let page = parse_page(&std::fs::read_to_string(
        repo().join("docs/multi-cluster.md"),
    )?);
    let names: Vec<&str> = page.manifests.iter().map(|(n, _)| n.as_str()).collect();
    ensure!(
        names == ["east.yaml", "west.yaml"] && page.scripts.len() >= 2,
        "docs/multi-cluster.md should hold east.yaml, west.yaml and the sh steps; found {names:?} and {} sh blocks",
        page.scripts.len()
    );

    // Dropped in reverse order, also on failure: clusters, then the files, then the LAN.
    let lan = Lan::new()?;
    let scratch = Scratch::new()?;
    for (name, text) in &page.manifests {
        std::fs::write(scratch.0.join(name), text)?;
    }
    let east =
        Sandbox::up_on_lan(&[scratch.0.join("east.yaml")], NAMESPACE, false, &lan, 10).await?;
    let west =
        Sandbox::up_on_lan(&[scratch.0.join("west.yaml")], NAMESPACE, false, &lan, 20).await?;
    ensure!(
        east.nodes.keys().eq(["east"]) && west.nodes.keys().eq(["west"]),
        "each cluster should have exactly its own node: {:?} / {:?}",
        east.nodes.keys().collect::<Vec<_>>(),
        west.nodes.keys().collect::<Vec<_>>()
    );
    eprintln!(
        "two clusters up in {:.1}s: east {} (node east {}), west {} (node west {})",
        began.elapsed().as_secs_f64(),
        east.cp.api_url(),
        east.nodes["east"].address,
        west.cp.api_url(),
        west.nodes["west"].address
    );

    let config = scratch.0.join("kubeconfig");
    std::fs::write(
        &config,
        kubeconfig(&[("east", &east.cp), ("west", &west.cp)]),
    )?;
    for script in &page.scripts {
        let output = run_script(script, &scratch.0, &config).map_err(|e| {
            anyhow!(
                "{e:#}\n--- cluster east\n{}\n--- cluster west\n{}",
                east.logs_tail(15),
                west.logs_tail(15)
            )
        })?;
        eprintln!("$ {}\n{}", script.trim_end().replace('\n', "\n$ "), output);
    }

    // Everything Ready, both Peers Connected, each pointing at the other cluster's device.
    east.wait_ready(CONVERGE)?;
    west.wait_ready(CONVERGE)?;
    check_peer(&east, "to-west", &west, "west-wg0", "west")?;
    check_peer(&west, "to-east", &east, "east-wg0", "east")?;

    eprintln!(
        "--- node east\n{}",
        ping(&east, "east", "10.60.0.2".parse()?)?
    );
    eprintln!("{}", wg_show(&east, "east")?);
    eprintln!(
        "--- node west\n{}",
        ping(&west, "west", "10.60.0.1".parse()?)?
    );
    eprintln!("--- cluster east\n{}", east.status_table());
    eprintln!("--- cluster west\n{}", west.status_table());
    eprintln!(
        "two clusters linked in {:.1}s",
        began.elapsed().as_secs_f64()
    );
    Ok(())
}

#[test]
fn the_page_parses() {
    let page = parse_page(
        "text\n```yaml\n# a.yaml: x\nkind: A\n```\n```yaml\nkind: B\n```\n```sh\necho 1\n```\n```console\n$ x\n```\n",
    );
    assert_eq!(
        page.manifests,
        vec![("a.yaml".to_string(), "# a.yaml: x\nkind: A\n".to_string())]
    );
    assert_eq!(page.scripts, vec!["echo 1\n".to_string()]);
}
