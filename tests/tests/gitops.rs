//! GitOps end to end: once the seed relay has converged in a sandbox, the cluster is *in
//! sync* with the manifests in Git, the way Argo CD and Flux see it (see `docs/gitops.md`):
//!
//! - `kubectl diff --server-side` against the manifests shows nothing (exit code 0): kwire's
//!   status writes and the API server's defaults are not drift;
//! - a second `kubectl apply --server-side` changes no object (no `resourceVersion` moves
//!   because of it): nobody fights over a field;
//! - `kubectl wait --for=condition=Ready` succeeds, and every object's
//!   `status.observedGeneration` (and every condition's) equals `metadata.generation`, which
//!   is what kstatus (Flux's `wait`, `kpt live status`) reports as `Current`;
//! - after a change in Git (a Peer's keepalive), the generation moves, kwire catches up to
//!   it, the device follows, and the cluster is in sync with the new manifests again;
//! - the same holds for a converged Mesh (examples/mesh/full-mesh.yaml): its manifests show
//!   no diff and re-applying them writes nothing, although the operator generated an
//!   Interface per member; each generated Interface is the Mesh's child (a controller owner
//!   reference to the Mesh's uid, which Argo CD's resource tree follows) and Current too.
//!
//! Needs root, `ip`, `wg`, `wireguard-go`, `ping` and `socat` (prints `SKIPPED …` and passes
//! otherwise), and the workspace binaries: `cargo build --workspace --bins` first.
//! `cargo test -p kwire-tests --test gitops -- --nocapture` prints what it runs.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, ensure};
use kwire_tests::netns::can_run_network_tests;
use kwire_tests::sandbox::Sandbox;
use kwire_tests::wait::wait_for;
use serde_json::Value;

const NAMESPACE: &str = "gitops";
/// Every kind kwire has, as `kubectl get` takes them.
const KINDS: &str =
    "networks.kwire.dev,interfaces.kwire.dev,peers.kwire.dev,routes.kwire.dev,meshes.kwire.dev";
/// A bound on waiting for convergence, not a timing assertion: other tests share the cores.
const CONVERGE: Duration = Duration::from_secs(300);

fn relay_manifests() -> Result<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/seed/relay.yaml");
    path.canonicalize()
        .with_context(|| format!("finding {}", path.display()))
}

/// Runs kubectl against the sandbox's control plane, with `stdin` on its standard input.
fn kubectl(sandbox: &Sandbox, args: &[&str], stdin: Option<&str>) -> Result<Output> {
    let mut child = sandbox
        .cp
        .kubectl()
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting kubectl")?;
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .ok_or_else(|| anyhow!("kubectl has no stdin"))?
            .write_all(text.as_bytes())?;
    }
    Ok(child.wait_with_output()?)
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `Kind/name` → the object, with managed fields, as the API server has it now.
fn live_objects(sandbox: &Sandbox) -> Result<BTreeMap<String, Value>> {
    let out = kubectl(
        sandbox,
        &[
            "get",
            KINDS,
            "-n",
            NAMESPACE,
            "-o",
            "json",
            "--show-managed-fields",
        ],
        None,
    )?;
    ensure!(out.status.success(), "kubectl get: {}", text(&out));
    let list: Value = serde_json::from_slice(&out.stdout)?;
    Ok(by_key(&list))
}

fn by_key(list: &Value) -> BTreeMap<String, Value> {
    let items = match list["items"].as_array() {
        Some(items) => items.clone(),
        None => vec![list.clone()],
    };
    items
        .into_iter()
        .map(|o| {
            (
                format!(
                    "{}/{}",
                    o["kind"].as_str().unwrap_or("?"),
                    o["metadata"]["name"].as_str().unwrap_or("?")
                ),
                o,
            )
        })
        .collect()
}

/// What an apply of the object's manifest can change: everything but `status`, the
/// resourceVersion, and the managed-fields entries of the status writers (the `status`
/// subresource, where only kwire's operator and node daemons write).
fn apply_view(object: &Value) -> Value {
    let mut o = object.clone();
    if let Some(map) = o.as_object_mut() {
        map.remove("status");
    }
    if let Some(meta) = o["metadata"].as_object_mut() {
        meta.remove("resourceVersion");
        if let Some(Value::Array(entries)) = meta.get_mut("managedFields") {
            entries.retain(|e| e.get("subresource").is_none());
        }
    }
    o
}

/// `kubectl diff --server-side`: must exit 0 with no output.
fn assert_no_diff(sandbox: &Sandbox, file: &str, stdin: Option<&str>) -> Result<()> {
    let out = kubectl(
        sandbox,
        &["diff", "--server-side", "-f", file, "-n", NAMESPACE],
        stdin,
    )?;
    eprintln!(
        "$ kubectl diff --server-side -f {file} -n {NAMESPACE}   # exit code {}",
        out.status.code().unwrap_or(-1)
    );
    ensure!(
        out.status.success() && out.stdout.is_empty(),
        "kubectl diff --server-side reports drift (exit code {:?}):\n{}",
        out.status.code(),
        text(&out)
    );
    Ok(())
}

/// A second `kubectl apply --server-side` must not write any object.
fn assert_reapply_changes_nothing(
    sandbox: &Sandbox,
    file: &str,
    stdin: Option<&str>,
) -> Result<()> {
    let before = live_objects(sandbox)?;
    let out = kubectl(
        sandbox,
        &[
            "apply",
            "--server-side",
            "-f",
            file,
            "-n",
            NAMESPACE,
            "-o",
            "json",
            "--show-managed-fields",
        ],
        stdin,
    )?;
    ensure!(out.status.success(), "kubectl apply: {}", text(&out));
    let applied = by_key(&serde_json::from_slice(&out.stdout)?);
    ensure!(
        applied.keys().all(|k| before.contains_key(k)),
        "the apply returned {:?}, the namespace held {:?}",
        applied.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>()
    );
    // Every object of the namespace, the ones kwire generated from the manifests included.
    let after = live_objects(sandbox)?;
    ensure!(
        after.keys().eq(before.keys()),
        "the namespace held {:?}, and {:?} after the apply",
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>()
    );
    let mut kept = 0;
    let mut status_only = Vec::new();
    let mut changed = Vec::new();
    for (key, old) in &before {
        let new = &after[key];
        let rv = |o: &Value| o["metadata"]["resourceVersion"].as_str().map(str::to_owned);
        // Compared whatever the resourceVersions say, so that the comparison is exercised
        // on every run and not only when a status write races the apply.
        let new = applied.get(key).unwrap_or(new);
        if apply_view(old) != apply_view(new) {
            changed.push(format!(
                "{key}: resourceVersion {:?} -> {:?}\n  before: {}\n  after:  {}",
                rv(old),
                rv(new),
                apply_view(old),
                apply_view(new)
            ));
        } else if rv(old) == rv(new) {
            kept += 1;
        } else {
            // A node daemon or the operator wrote status between our read and the apply;
            // the apply itself returned the object as it was.
            status_only.push(key.clone());
        }
    }
    eprintln!(
        "$ kubectl apply --server-side -f {file} -n {NAMESPACE}   # {kept} of {} objects kept their resourceVersion{}",
        before.len(),
        if status_only.is_empty() {
            String::new()
        } else {
            format!(
                "; status written meanwhile by kwire, nothing else: {}",
                status_only.join(", ")
            )
        }
    );
    ensure!(
        changed.is_empty(),
        "a second server-side apply changed objects:\n{}",
        changed.join("\n")
    );
    Ok(())
}

/// Why objects are not what kstatus calls `Current`: `status.observedGeneration` (or a
/// condition's) differs from `metadata.generation`, or kstatus' own `Reconciling` or
/// `Stalled` condition is `True`.
fn not_current(sandbox: &Sandbox) -> Result<Vec<String>> {
    let mut wrong = Vec::new();
    for (key, o) in live_objects(sandbox)? {
        let generation = o["metadata"]["generation"].as_i64();
        let observed = o["status"]["observedGeneration"].as_i64();
        if generation.is_none() || observed != generation {
            wrong.push(format!(
                "{key}: generation {generation:?}, status.observedGeneration {observed:?}"
            ));
        }
        for c in o["status"]["conditions"].as_array().into_iter().flatten() {
            let seen = c["observedGeneration"].as_i64();
            if seen.is_some() && seen != generation {
                wrong.push(format!(
                    "{key}: condition {} has observedGeneration {seen:?}, generation {generation:?}",
                    c["type"]
                ));
            }
            if (c["type"] == "Reconciling" || c["type"] == "Stalled") && c["status"] == "True" {
                wrong.push(format!("{key}: {} is True: {}", c["type"], c["message"]));
            }
        }
    }
    Ok(wrong)
}

fn wait_current(sandbox: &Sandbox) -> Result<()> {
    let mut wrong = Vec::new();
    wait_for("every object Current (kstatus)", CONVERGE, || {
        wrong = not_current(sandbox)?;
        Ok(wrong.is_empty().then_some(()))
    })
    .with_context(|| {
        format!(
            "not Current (kstatus):\n  {}\n{}",
            wrong.join("\n  "),
            sandbox.logs_tail(15)
        )
    })?;
    Ok(())
}

fn kubectl_wait_ready(sandbox: &Sandbox, what: &[&str]) -> Result<()> {
    let mut args = vec!["wait", "--for=condition=Ready"];
    args.extend_from_slice(what);
    args.extend_from_slice(&["-n", NAMESPACE, "--timeout=300s"]);
    let out = kubectl(sandbox, &args, None)?;
    eprintln!("$ kubectl {}\n{}", args.join(" "), text(&out).trim_end());
    ensure!(
        out.status.success(),
        "kubectl {} failed:\n{}",
        args.join(" "),
        text(&out)
    );
    Ok(())
}

/// The persistent keepalive of the peer with `public_key` on `node`'s devices (`wg show
/// all dump`: the last column of a peer line).
fn keepalive_on_node(sandbox: &Sandbox, node: &str, public_key: &str) -> Result<String> {
    let dump = sandbox
        .nodes
        .get(node)
        .ok_or_else(|| anyhow!("no node {node}"))?
        .wg_show()?;
    // Peer lines have 9 fields; device lines (5, with the private key) are never printed.
    let peers: Vec<Vec<&str>> = dump
        .lines()
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .filter(|f| f.len() == 9)
        .collect();
    peers
        .iter()
        .find(|f| f[1] == public_key)
        .map(|f| f[8].to_string())
        .ok_or_else(|| {
            anyhow!(
                "no peer {public_key} on node {node}; its peers: {:?}",
                peers.iter().map(|f| f[1]).collect::<Vec<_>>()
            )
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn converged_seed_relay_is_in_sync_with_git() -> Result<()> {
    if let Err(why) = can_run_network_tests() {
        eprintln!("SKIPPED converged_seed_relay_is_in_sync_with_git: {why}");
        return Ok(());
    }
    let began = Instant::now();
    let file = relay_manifests()?;
    let file = file.to_str().ok_or_else(|| anyhow!("path is not UTF-8"))?;
    let sandbox = Sandbox::up(&[PathBuf::from(file)], NAMESPACE, false).await?;
    let waited = sandbox.wait_ready(CONVERGE)?;
    eprintln!(
        "seed relay Ready and Connected {:.1}s after the apply\n{}",
        waited.as_secs_f64(),
        sandbox.status_table()
    );

    // In sync: no drift, and re-applying Git writes nothing.
    assert_no_diff(&sandbox, file, None)?;
    assert_reapply_changes_nothing(&sandbox, file, None)?;
    assert_no_diff(&sandbox, file, None)?;

    // Healthy: kubectl wait (what scripts and Argo CD hooks use) and kstatus' Current.
    kubectl_wait_ready(&sandbox, &["interface", "--all"])?;
    kubectl_wait_ready(&sandbox, &[KINDS, "--all"])?;
    let wrong = not_current(&sandbox)?;
    ensure!(
        wrong.is_empty(),
        "not Current (kstatus):\n  {}",
        wrong.join("\n  ")
    );
    eprintln!("every object: status.observedGeneration == metadata.generation (kstatus: Current)");

    // A commit changes one field: a-to-b's keepalive, 15 -> 25 (its first occurrence).
    let manifests = std::fs::read_to_string(file)?;
    ensure!(
        manifests.contains("persistentKeepalive: 15"),
        "{file} changed: the test edits a-to-b's persistentKeepalive: 15"
    );
    let changed = manifests.replacen("persistentKeepalive: 15", "persistentKeepalive: 25", 1);
    let out = kubectl(
        &sandbox,
        &["diff", "--server-side", "-f", "-", "-n", NAMESPACE],
        Some(&changed),
    )?;
    ensure!(
        out.status.code() == Some(1)
            && String::from_utf8_lossy(&out.stdout).contains("persistentKeepalive: 25"),
        "kubectl diff does not show the change from Git (exit code {:?}):\n{}",
        out.status.code(),
        text(&out)
    );
    eprintln!(
        "after the commit, kubectl diff shows it (exit code 1):\n{}",
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with(['+', '-']) && !l.starts_with("+++") && !l.starts_with("---"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    sandbox.apply_yaml(&changed)?;
    let peer = live_objects(&sandbox)?
        .remove("Peer/a-to-b")
        .ok_or_else(|| anyhow!("no Peer a-to-b"))?;
    ensure!(
        peer["metadata"]["generation"].as_i64() == Some(2),
        "the change did not make generation 2: {}",
        peer["metadata"]
    );
    // kubectl wait returns on Ready for generation 2 only, not on generation 1's Ready.
    kubectl_wait_ready(&sandbox, &["peer/a-to-b"])?;
    wait_current(&sandbox)?;
    let b_key = peer["status"]["resolved"]["publicKey"]
        .as_str()
        .ok_or_else(|| anyhow!("a-to-b has no resolved public key"))?
        .to_string();
    let mut keepalive = String::new();
    wait_for("keepalive 25 for b on node a", CONVERGE, || {
        keepalive = keepalive_on_node(&sandbox, "a", &b_key)?;
        Ok((keepalive == "25").then_some(()))
    })
    .with_context(|| {
        format!(
            "node a still has keepalive {keepalive:?} for b\n{}",
            sandbox.logs_tail(15)
        )
    })?;
    eprintln!("generation 2 observed by kwire and on node a's device (keepalive 25)");
    sandbox.wait_ready(CONVERGE)?;
    assert_no_diff(&sandbox, "-", Some(&changed))?;
    assert_reapply_changes_nothing(&sandbox, "-", Some(&changed))?;
    kubectl_wait_ready(&sandbox, &[KINDS, "--all"])?;

    eprintln!(
        "in sync with Git, {:.1}s in all",
        began.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The full mesh of examples/mesh, converged, is in sync with Git, and what the operator
/// generated from it is the Mesh's and nobody else's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn converged_mesh_is_in_sync_with_git_and_owns_what_it_generated() -> Result<()> {
    if let Err(why) = can_run_network_tests() {
        eprintln!("SKIPPED converged_mesh_is_in_sync_with_git_and_owns_what_it_generated: {why}");
        return Ok(());
    }
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/mesh");
    let mesh_file = examples.join("full-mesh.yaml").canonicalize()?;
    let nodes_file = examples.join("full-mesh.nodes.yaml").canonicalize()?;
    let file = mesh_file
        .to_str()
        .ok_or_else(|| anyhow!("path is not UTF-8"))?;
    let sandbox = Sandbox::up(&[mesh_file.clone(), nodes_file], NAMESPACE, false).await?;
    let waited = sandbox.wait_ready(CONVERGE)?;
    eprintln!(
        "Mesh Ready {:.1}s after the apply\n{}",
        waited.as_secs_f64(),
        sandbox.status_table()
    );
    kubectl_wait_ready(&sandbox, &["mesh", "--all"])?;
    wait_current(&sandbox)?;

    let live = live_objects(&sandbox)?;
    let mesh = live
        .get("Mesh/overlay")
        .ok_or_else(|| anyhow!("no Mesh overlay: {:?}", live.keys().collect::<Vec<_>>()))?;
    let uid = mesh["metadata"]["uid"].as_str().unwrap_or_default();
    let generated: Vec<&Value> = live
        .iter()
        .filter(|(k, _)| k.starts_with("Interface/"))
        .map(|(_, o)| o)
        .collect();
    ensure!(
        generated.len() == 3,
        "3 labelled nodes, so 3 generated Interfaces: {:?}",
        live.keys().collect::<Vec<_>>()
    );
    for i in &generated {
        let owners = i["metadata"]["ownerReferences"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        ensure!(
            owners.len() == 1
                && owners[0]["kind"] == "Mesh"
                && owners[0]["name"] == "overlay"
                && owners[0]["uid"] == uid
                && owners[0]["controller"] == true,
            "{} is not the Mesh's child: {owners:?}",
            i["metadata"]["name"]
        );
    }
    eprintln!("3 generated Interfaces, each controlled by Mesh overlay (uid {uid})");

    assert_no_diff(&sandbox, file, None)?;
    assert_reapply_changes_nothing(&sandbox, file, None)?;
    assert_no_diff(&sandbox, file, None)?;
    Ok(())
}
