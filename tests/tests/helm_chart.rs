//! The Helm chart `charts/kwire`: lint, render with several value sets and
//! validate every manifest against Kubernetes' own schemas, reject bad values,
//! then install, upgrade and uninstall it on the local control plane. (The
//! images are tested in `images.rs`.)
//!
//! `cargo test -p kwire-tests --test helm_chart -- --nocapture` (prints the
//! commands and tables). Needs, besides the control plane binaries that
//! `tests/control-plane/build.sh` makes (helm, kubectl, ...):
//!
//! `kubernetes-validate` (`pip install kubernetes-validate`), or its path in
//! `KWIRE_KUBERNETES_VALIDATE`. It is not skipped when missing: the test fails
//! and names the command.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use kwire_tests::control_plane::{self, ControlPlane};
use kwire_tests::wait::wait_for;
use serde_json::{Value, json};

/// The Kubernetes version manifests are validated against: the one the
/// local control plane runs (1.37.x) and `k8s-openapi`'s feature `v1_37`.
/// kubernetes-validate 1.37.0 ships schemas up to exactly this version.
const KUBERNETES_VERSION: &str = "1.37.0";

/// Namespace used when rendering offline.
const RENDER_NAMESPACE: &str = "kwire-system";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn chart_dir() -> PathBuf {
    repo_root().join("charts/kwire")
}

/// A scratch folder of this test binary, under cargo's target/tmp rather than /tmp so that
/// nothing outlives a run outside the build folder; emptied once at the first use.
fn scratch(sub: &str) -> Result<PathBuf> {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    let root = ROOT.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("helm-chart");
        let _ = std::fs::remove_dir_all(&root);
        root
    });
    let dir = root.join(sub);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Builds the control plane binaries once per process (a no-op when current).
fn built() -> Result<()> {
    static BUILT: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    BUILT
        .get_or_init(|| control_plane::ensure_built().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!(e))
}

/// `helm` for offline work (lint, template): its cache, config and data
/// folders in the scratch folder, not in `$HOME`.
fn helm_offline() -> Result<Command> {
    built()?;
    let home = scratch("helm-home")?;
    let mut cmd = Command::new(control_plane::helm_path());
    cmd.env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .stdin(Stdio::null());
    Ok(cmd)
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

fn output(cmd: &mut Command) -> Result<Output> {
    cmd.stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", describe(cmd)))
}

/// Runs `cmd` and returns its stdout, or fails with its stderr.
fn run_ok(cmd: &mut Command) -> Result<String> {
    let out = output(cmd)?;
    if !out.status.success() {
        bail!(
            "{} failed ({}):\n{}{}",
            describe(cmd),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8(out.stdout).context("non-UTF-8 output")
}

/// One document of `helm template`'s output.
#[derive(Debug, Clone)]
struct Doc {
    /// The template it came from (`# Source:` line).
    source: String,
    text: String,
    value: Value,
}

impl Doc {
    fn kind(&self) -> &str {
        self.value["kind"].as_str().unwrap_or_default()
    }
    fn name(&self) -> &str {
        self.value["metadata"]["name"].as_str().unwrap_or_default()
    }
}

/// Splits a multi-document YAML stream as helm prints it (`---` lines) and
/// parses each document; comment-only documents are dropped.
fn split_docs(stream: &str) -> Result<Vec<Doc>> {
    let mut chunks: Vec<String> = vec![String::new()];
    for line in stream.lines() {
        if line.trim_end() == "---" {
            chunks.push(String::new());
        } else {
            let last = chunks.last_mut().expect("never empty");
            last.push_str(line);
            last.push('\n');
        }
    }
    let mut docs = Vec::new();
    // A file of several documents (the CRDs) has one `# Source:` line.
    let mut source = "?".to_string();
    for text in chunks {
        let has_content = text
            .lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
        if let Some(s) = text.lines().find_map(|l| l.strip_prefix("# Source: ")) {
            source = s.to_string();
        }
        if !has_content {
            continue;
        }
        let value: Value = serde_saphyr::from_str(&text)
            .with_context(|| format!("parsing a document of {source}:\n{text}"))?;
        docs.push(Doc {
            source: source.clone(),
            text,
            value,
        });
    }
    Ok(docs)
}

/// A named set of values for `helm template` / `helm install`.
struct ValueSet {
    name: &'static str,
    /// Values files, relative to the chart folder.
    files: &'static [&'static str],
}

const VALUE_SETS: [ValueSet; 3] = [
    ValueSet {
        name: "defaults",
        files: &[],
    },
    ValueSet {
        name: "ha-operator",
        files: &["ci/ha-operator-values.yaml"],
    },
    ValueSet {
        name: "node-kernel",
        files: &["ci/node-kernel-values.yaml"],
    },
];

/// `helm template kwire charts/kwire --include-crds -n kwire-system -f ...`.
fn render(files: &[PathBuf], extra: &[&str]) -> Result<Vec<Doc>> {
    let mut cmd = helm_offline()?;
    cmd.args(["template", "kwire"]).arg(chart_dir()).args([
        "--namespace",
        RENDER_NAMESPACE,
        "--include-crds",
    ]);
    for f in files {
        cmd.arg("--values").arg(f);
    }
    cmd.args(extra);
    split_docs(&run_ok(&mut cmd)?)
}

fn render_set(set: &ValueSet) -> Result<Vec<Doc>> {
    let files: Vec<PathBuf> = set.files.iter().map(|f| chart_dir().join(f)).collect();
    render(&files, &[])
}

fn find<'a>(docs: &'a [Doc], kind: &str, name: &str) -> Result<&'a Value> {
    docs.iter()
        .find(|d| d.kind() == kind && d.name() == name)
        .map(|d| &d.value)
        .ok_or_else(|| {
            let have: Vec<String> = docs
                .iter()
                .map(|d| format!("{}/{}", d.kind(), d.name()))
                .collect();
            anyhow!("no {kind}/{name} rendered; have {have:?}")
        })
}

fn count(docs: &[Doc], kind: &str) -> usize {
    docs.iter().filter(|d| d.kind() == kind).count()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|x| match x {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn first_container(workload: &Value) -> &Value {
    &workload["spec"]["template"]["spec"]["containers"][0]
}

/// Every rule of every Role and ClusterRole: no `*` in any field.
fn assert_no_wildcards(docs: &[Doc]) -> Result<()> {
    for d in docs
        .iter()
        .filter(|d| d.kind() == "Role" || d.kind() == "ClusterRole")
    {
        ensure!(
            d.value["aggregationRule"].is_null(),
            "{} {} aggregates other roles",
            d.kind(),
            d.name()
        );
        for rule in d.value["rules"].as_array().into_iter().flatten() {
            for field in [
                "apiGroups",
                "resources",
                "verbs",
                "resourceNames",
                "nonResourceURLs",
            ] {
                for s in strings(&rule[field]) {
                    ensure!(
                        !s.contains('*'),
                        "{} {} has a wildcard in {field}: {rule}",
                        d.kind(),
                        d.name()
                    );
                }
            }
        }
    }
    Ok(())
}

/// Checks that hold for every value set.
fn check_common(docs: &[Doc]) -> Result<()> {
    for (kind, name) in [
        ("ServiceAccount", "kwire-operator"),
        ("ServiceAccount", "kwire-node"),
        ("ClusterRole", "kwire-operator"),
        ("ClusterRoleBinding", "kwire-operator"),
        ("ClusterRole", "kwire-node"),
        ("ClusterRoleBinding", "kwire-node"),
        ("Role", "kwire-leader-election"),
        ("RoleBinding", "kwire-leader-election"),
        ("Service", "kwire-operator-metrics"),
        ("Service", "kwire-node-metrics"),
        ("Deployment", "kwire-operator"),
        ("DaemonSet", "kwire-node"),
    ] {
        find(docs, kind, name)?;
    }
    // The chart's CRDs are the generated ones.
    let crd_names: BTreeSet<&str> = docs
        .iter()
        .filter(|d| d.kind() == "CustomResourceDefinition")
        .map(Doc::name)
        .collect();
    let expected: BTreeSet<String> = kwire_crds::crd::all()
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    ensure!(
        crd_names == expected.iter().map(String::as_str).collect(),
        "CRDs rendered {crd_names:?}, the types define {expected:?}"
    );
    assert_no_wildcards(docs)?;

    // Every container has requests and limits, probes on the metrics port,
    // and never runs privileged or escalates.
    for (kind, name) in [
        ("Deployment", "kwire-operator"),
        ("DaemonSet", "kwire-node"),
    ] {
        let w = find(docs, kind, name)?;
        let c = first_container(w);
        ensure!(
            c["resources"]["requests"].is_object() && c["resources"]["limits"].is_object(),
            "{kind} {name}: resources {}",
            c["resources"]
        );
        ensure!(c["livenessProbe"]["httpGet"] == json!({"path": "/healthz", "port": "metrics"}));
        ensure!(c["readinessProbe"]["httpGet"] == json!({"path": "/readyz", "port": "metrics"}));
        ensure!(
            c["ports"][0]["name"] == "metrics",
            "{kind} {name}: {}",
            c["ports"]
        );
        let sc = &c["securityContext"];
        ensure!(sc["privileged"] == false, "{kind} {name}: {sc}");
        ensure!(
            sc["allowPrivilegeEscalation"] == false,
            "{kind} {name}: {sc}"
        );
        ensure!(sc["readOnlyRootFilesystem"] == true, "{kind} {name}: {sc}");
        ensure!(
            sc["capabilities"]["drop"] == json!(["ALL"]),
            "{kind} {name}: {sc}"
        );
    }

    // The operator: non-root, no capability at all.
    let op = find(docs, "Deployment", "kwire-operator")?;
    let pod = &op["spec"]["template"]["spec"];
    ensure!(pod["serviceAccountName"] == "kwire-operator");
    ensure!(
        pod["securityContext"]["runAsNonRoot"] == true,
        "{}",
        pod["securityContext"]
    );
    ensure!(first_container(op)["securityContext"]["capabilities"]["add"].is_null());

    // The node daemon: host network, NET_ADMIN only, its node's name, the
    // host folders for state and UAPI sockets, every node.
    let ds = find(docs, "DaemonSet", "kwire-node")?;
    let pod = &ds["spec"]["template"]["spec"];
    let c = first_container(ds);
    ensure!(pod["serviceAccountName"] == "kwire-node");
    ensure!(pod["hostNetwork"] == true);
    ensure!(pod["hostPID"].is_null() && pod["hostIPC"].is_null());
    ensure!(
        c["securityContext"]["capabilities"]["add"] == json!(["NET_ADMIN"]),
        "{}",
        c["securityContext"]
    );
    ensure!(
        c["env"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["name"] == "NODE_NAME"
                && e["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"),
        "no NODE_NAME from spec.nodeName: {}",
        c["env"]
    );
    let host_paths: BTreeSet<String> = pod["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["hostPath"]["path"].as_str().map(str::to_string))
        .collect();
    ensure!(host_paths.contains("/var/lib/kwire"), "{host_paths:?}");
    ensure!(host_paths.contains("/var/run/wireguard"), "{host_paths:?}");
    // Forwarding is a sysctl, and /proc/sys is read-only inside a container.
    ensure!(host_paths.contains("/proc/sys/net"), "{host_paths:?}");
    ensure!(
        pod["tolerations"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|t| t["operator"] == "Exists" && t["key"].is_null()),
        "the node daemon must tolerate every taint: {}",
        pod["tolerations"]
    );
    Ok(())
}

/// The node daemon's command line for the given settings.
fn node_args(backend: &str, resync: &str, port: u16, protocol: u8, log: &str) -> Vec<String> {
    [
        "--node-name",
        "$(NODE_NAME)",
        "--backend",
        backend,
        "--resync-period",
        resync,
        "--state-file",
        "/var/lib/kwire/node-state.json",
        "--metrics-addr",
        &format!("0.0.0.0:{port}"),
        "--route-protocol",
        &protocol.to_string(),
        "--sysctl-root",
        "/host/proc/sys",
        "--log-format",
        log,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn check_defaults(docs: &[Doc]) -> Result<()> {
    let op = find(docs, "Deployment", "kwire-operator")?;
    ensure!(op["spec"]["replicas"] == 1);
    ensure!(op["spec"]["strategy"]["type"] == "Recreate");
    ensure!(
        strings(&first_container(op)["args"])
            == ["--metrics-addr", "0.0.0.0:8080", "--log-format", "json"],
        "operator args {}",
        first_container(op)["args"]
    );
    ensure!(count(docs, "PodDisruptionBudget") == 0);
    ensure!(count(docs, "ServiceMonitor") == 0);
    let ds = find(docs, "DaemonSet", "kwire-node")?;
    let pod = &ds["spec"]["template"]["spec"];
    ensure!(
        strings(&first_container(ds)["args"])
            == with_host(node_args("auto", "30s", 9090, 75, "json")),
        "node args {}",
        first_container(ds)["args"]
    );
    ensure!(pod["priorityClassName"].is_null());
    ensure!(pod["tolerations"] == json!([{"operator": "Exists"}]));
    check_wireguard_host(docs, "json")?;
    ensure!(find(docs, "Service", "kwire-node-metrics")?["spec"]["clusterIP"] == "None");
    Ok(())
}

/// The wireguard host's request folder, shared by both DaemonSets.
const WIREGUARD_HOST_DIR: &str = "/var/run/kwire/wireguard-host";

/// The node daemon's arguments when wireguard-go runs in the wireguard host.
fn with_host(mut args: Vec<String>) -> Vec<String> {
    args.extend([
        "--wireguard-host-dir".to_string(),
        WIREGUARD_HOST_DIR.to_string(),
    ]);
    args
}

fn host_paths(pod: &Value) -> BTreeSet<String> {
    pod["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["hostPath"]["path"].as_str().map(str::to_string))
        .collect()
}

/// The wireguard host DaemonSet (userspace backend): wireguard-go outside the
/// node daemon's container, in pods a kwire upgrade never restarts, with the
/// TUN device, the sockets' folder and the request folder the daemon writes.
fn check_wireguard_host(docs: &[Doc], log: &str) -> Result<()> {
    let host = find(docs, "DaemonSet", "kwire-wireguard")?;
    let node = find(docs, "DaemonSet", "kwire-node")?;
    ensure!(host["spec"]["updateStrategy"] == json!({"type": "OnDelete"}));
    let pod = &host["spec"]["template"]["spec"];
    let c = first_container(host);
    ensure!(pod["hostNetwork"] == true);
    ensure!(pod["automountServiceAccountToken"] == false);
    ensure!(pod["hostPID"].is_null() && pod["hostIPC"].is_null());
    ensure!(
        strings(&c["args"])
            == [
                "wireguard-host",
                "--dir",
                WIREGUARD_HOST_DIR,
                "--log-format",
                log
            ],
        "wireguard host args {}",
        c["args"]
    );
    ensure!(
        c["image"] == first_container(node)["image"],
        "not the node image: {}",
        c["image"]
    );
    // The node daemon's securityContext, exactly: NET_ADMIN only, not privileged.
    ensure!(
        c["securityContext"] == first_container(node)["securityContext"],
        "{} vs {}",
        c["securityContext"],
        first_container(node)["securityContext"]
    );
    ensure!(c["resources"]["requests"].is_object() && c["resources"]["limits"].is_object());
    ensure!(
        c["livenessProbe"].is_null(),
        "a liveness probe would restart every wireguard-go"
    );
    ensure!(pod["tolerations"] == node["spec"]["template"]["spec"]["tolerations"]);
    ensure!(pod["nodeSelector"] == node["spec"]["template"]["spec"]["nodeSelector"]);
    ensure!(
        pod["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|v| v["hostPath"] == json!({"path": "/dev/net/tun", "type": "CharDevice"})),
        "no /dev/net/tun: {}",
        pod["volumes"]
    );
    let paths = host_paths(pod);
    ensure!(
        paths.contains("/var/run/wireguard") && paths.contains(WIREGUARD_HOST_DIR),
        "{paths:?}"
    );
    // The daemon shares the request folder, and needs no TUN device itself.
    let node_paths = host_paths(&node["spec"]["template"]["spec"]);
    ensure!(node_paths.contains(WIREGUARD_HOST_DIR), "{node_paths:?}");
    ensure!(!node_paths.contains("/dev/net/tun"), "{node_paths:?}");
    ensure!(
        first_container(node)["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|m| m["mountPath"] == WIREGUARD_HOST_DIR),
        "{}",
        first_container(node)["volumeMounts"]
    );
    Ok(())
}

/// `node.wireguardHost.enabled: false`: wireguard-go back in the node daemon's
/// container, with the TUN device there, and no second DaemonSet.
#[test]
fn without_the_wireguard_host_the_node_daemon_runs_wireguard_go() -> Result<()> {
    built()?;
    let docs = render(&[], &["--set", "node.wireguardHost.enabled=false"])?;
    ensure!(count(&docs, "DaemonSet") == 1);
    let ds = find(&docs, "DaemonSet", "kwire-node")?;
    ensure!(
        strings(&first_container(ds)["args"]) == node_args("auto", "30s", 9090, 75, "json"),
        "node args {}",
        first_container(ds)["args"]
    );
    let paths = host_paths(&ds["spec"]["template"]["spec"]);
    ensure!(
        paths.contains("/dev/net/tun") && !paths.contains(WIREGUARD_HOST_DIR),
        "{paths:?}"
    );
    Ok(())
}

fn check_ha_operator(docs: &[Doc]) -> Result<()> {
    let op = find(docs, "Deployment", "kwire-operator")?;
    ensure!(op["spec"]["replicas"] == 2);
    ensure!(op["spec"]["strategy"]["type"] == "RollingUpdate");
    ensure!(
        strings(&first_container(op)["args"])
            == [
                "--metrics-addr",
                "0.0.0.0:8080",
                "--pool",
                "10.100.0.0/16",
                "--pool",
                "fd00:100::/48",
                "--leader-election",
                "--default-keepalive",
                "25",
                "--log-format",
                "text",
            ],
        "operator args {}",
        first_container(op)["args"]
    );
    ensure!(
        !op["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"].is_null(),
        "replicas should prefer different nodes"
    );
    let pdb = find(docs, "PodDisruptionBudget", "kwire-operator")?;
    ensure!(pdb["spec"]["minAvailable"] == 1);
    ensure!(
        pdb["spec"]["selector"]["matchLabels"] == op["spec"]["selector"]["matchLabels"],
        "PDB selector {} vs {}",
        pdb["spec"]["selector"],
        op["spec"]["selector"]
    );
    for component in ["operator", "node"] {
        let sm = find(docs, "ServiceMonitor", &format!("kwire-{component}"))?;
        ensure!(sm["apiVersion"] == "monitoring.coreos.com/v1");
        ensure!(sm["metadata"]["labels"]["release"] == "prometheus");
        ensure!(sm["spec"]["endpoints"][0]["port"] == "metrics");
        ensure!(sm["spec"]["endpoints"][0]["interval"] == "15s");
        // It selects the metrics Service of its component.
        let svc = find(docs, "Service", &format!("kwire-{component}-metrics"))?;
        for (k, v) in sm["spec"]["selector"]["matchLabels"]
            .as_object()
            .context("ServiceMonitor without matchLabels")?
        {
            ensure!(&svc["metadata"]["labels"][k] == v, "{component}: label {k}");
        }
    }
    let ds = find(docs, "DaemonSet", "kwire-node")?;
    ensure!(
        strings(&first_container(ds)["args"])
            == with_host(node_args("auto", "30s", 9090, 75, "text"))
    );
    check_wireguard_host(docs, "text")?;
    Ok(())
}

fn check_node_kernel(docs: &[Doc]) -> Result<()> {
    let ds = find(docs, "DaemonSet", "kwire-node")?;
    let pod = &ds["spec"]["template"]["spec"];
    ensure!(pod["priorityClassName"] == "system-node-critical");
    ensure!(
        strings(&first_container(ds)["args"]) == node_args("kernel", "1m", 9190, 99, "json"),
        "node args {}",
        first_container(ds)["args"]
    );
    ensure!(first_container(ds)["ports"][0]["containerPort"] == 9190);
    ensure!(find(docs, "Service", "kwire-node-metrics")?["spec"]["ports"][0]["port"] == 9190);
    // The kernel backend needs no TUN device.
    ensure!(
        !pod["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|v| v["hostPath"]["path"] == "/dev/net/tun"),
        "kernel backend mounts /dev/net/tun: {}",
        pod["volumes"]
    );
    // Nor a wireguard host.
    ensure!(
        count(docs, "DaemonSet") == 1,
        "a second DaemonSet with the kernel backend"
    );
    ensure!(pod["tolerations"].as_array().map(Vec::len) == Some(2));
    ensure!(!pod["affinity"]["nodeAffinity"].is_null());
    ensure!(first_container(ds)["resources"]["limits"]["cpu"] == "1");
    // The operator is as by default.
    let op = find(docs, "Deployment", "kwire-operator")?;
    ensure!(op["spec"]["replicas"] == 1);
    ensure!(count(docs, "PodDisruptionBudget") == 0);
    Ok(())
}

/// `kubernetes-validate`, from `KWIRE_KUBERNETES_VALIDATE` or `PATH`.
fn kubernetes_validate() -> Result<Command> {
    let program = std::env::var_os("KWIRE_KUBERNETES_VALIDATE")
        .unwrap_or_else(|| "kubernetes-validate".into());
    let probe = Command::new(&program)
        .arg("--version")
        .stdin(Stdio::null())
        .output();
    match probe {
        Ok(out) if out.status.success() => Ok(Command::new(program)),
        Ok(out) => bail!(
            "{} --version failed: {}",
            program.to_string_lossy(),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => bail!(
            "kubernetes-validate is not installed ({e}): install it with \
             `pip install kubernetes-validate` (or set KWIRE_KUBERNETES_VALIDATE)"
        ),
    }
}

/// Writes each document but the ServiceMonitors (a Prometheus Operator CRD
/// that kubernetes-validate has no schema for) to its own file and validates
/// them all strictly: unknown fields fail, and so does a kind without schema.
fn validate_docs(set: &str, docs: &[Doc]) -> Result<usize> {
    let dir = scratch(&format!("validate-{set}"))?;
    let mut files = Vec::new();
    for (i, d) in docs.iter().enumerate() {
        if d.kind() == "ServiceMonitor" {
            continue;
        }
        let path = dir.join(format!("{i:02}-{}-{}.yaml", d.kind(), d.name()));
        std::fs::write(&path, &d.text).with_context(|| format!("writing {}", path.display()))?;
        files.push(path);
    }
    let mut cmd = kubernetes_validate()?;
    cmd.args([
        "--kubernetes-version",
        KUBERNETES_VERSION,
        "--strict",
        "--quiet",
    ]);
    cmd.args(&files);
    let out = output(&mut cmd)?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "[{set}] kubernetes-validate --kubernetes-version {KUBERNETES_VERSION} --strict --quiet <{} files>: {}",
        files.len(),
        if out.status.success() && text.trim().is_empty() {
            "all valid"
        } else {
            "FAILED"
        }
    );
    ensure!(
        out.status.success(),
        "[{set}] kubernetes-validate failed:\n{text}"
    );
    // --quiet prints only warnings and failures; "Couldn't find schema" is a
    // warning, and every kind left must have one.
    ensure!(
        text.trim().is_empty(),
        "[{set}] kubernetes-validate warned:\n{text}"
    );
    // Kept for a look when validation fails; removed when it passes.
    let _ = std::fs::remove_dir_all(&dir);
    Ok(files.len())
}

#[test]
fn chart_metadata_and_crds_match_the_generated_ones() -> Result<()> {
    let chart: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(chart_dir().join("Chart.yaml"))?)?;
    ensure!(chart["apiVersion"] == "v2", "{chart}");
    ensure!(chart["name"] == "kwire", "{chart}");
    ensure!(chart["version"] == "0.1.0", "{chart}");
    ensure!(chart["appVersion"] == "0.1.0", "{chart}");
    let generated = std::fs::read(repo_root().join(kwire_crds::crd::GENERATED_PATH))?;
    let in_chart = std::fs::read(chart_dir().join("crds/kwire.dev.yaml"))?;
    ensure!(
        generated == in_chart,
        "charts/kwire/crds/kwire.dev.yaml differs from {}: run `cargo run -p kwire-crds --bin crdgen -- --write`",
        kwire_crds::crd::GENERATED_PATH
    );
    Ok(())
}

/// Every object in values.schema.json is closed: either
/// `additionalProperties: false`, or a map whose values have a schema.
#[test]
fn values_schema_rejects_unknown_keys_everywhere() -> Result<()> {
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(
        chart_dir().join("values.schema.json"),
    )?)?;
    ensure!(schema["$schema"] == "http://json-schema.org/draft-07/schema#");
    fn walk(path: &str, s: &Value, open: &mut Vec<String>) {
        let Some(obj) = s.as_object() else { return };
        let is_object = obj.get("type") == Some(&json!("object"));
        if is_object && path != "/properties/global" {
            match obj.get("additionalProperties") {
                Some(Value::Bool(false)) => {}
                Some(Value::Object(_)) if !obj.contains_key("properties") => {}
                other => open.push(format!("{path}: additionalProperties {other:?}")),
            }
        }
        for (k, v) in obj {
            match v {
                Value::Object(_) => walk(&format!("{path}/{k}"), v, open),
                Value::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        walk(&format!("{path}/{k}/{i}"), item, open);
                    }
                }
                _ => {}
            }
        }
    }
    let mut open = Vec::new();
    walk("", &schema, &mut open);
    ensure!(
        open.is_empty(),
        "open objects in values.schema.json: {open:#?}"
    );
    Ok(())
}

#[test]
fn helm_lint_strict_passes_for_every_value_set() -> Result<()> {
    for set in &VALUE_SETS {
        let mut cmd = helm_offline()?;
        cmd.args(["lint", "--strict"]).arg(chart_dir());
        for f in set.files {
            cmd.arg("--values").arg(chart_dir().join(f));
        }
        let out = run_ok(&mut cmd)?;
        ensure!(
            out.contains("0 chart(s) failed")
                && !out.contains("[WARNING]")
                && !out.contains("[ERROR]"),
            "[{}] helm lint --strict:\n{out}",
            set.name
        );
        println!("[{}] helm lint --strict: ok", set.name);
    }
    Ok(())
}

#[test]
fn rendered_manifests_are_valid_for_every_value_set() -> Result<()> {
    for set in &VALUE_SETS {
        let began = Instant::now();
        let docs = render_set(set)?;
        check_common(&docs).with_context(|| format!("value set {}", set.name))?;
        match set.name {
            "defaults" => check_defaults(&docs),
            "ha-operator" => check_ha_operator(&docs),
            "node-kernel" => check_node_kernel(&docs),
            other => bail!("no checks for value set {other}"),
        }
        .with_context(|| format!("value set {}", set.name))?;
        let validated = validate_docs(set.name, &docs)?;
        let mut kinds: Vec<String> = docs.iter().map(|d| d.kind().to_string()).collect();
        kinds.dedup();
        println!(
            "[{}] {} documents ({} validated, ServiceMonitors skipped) in {:.1}s: {}",
            set.name,
            docs.len(),
            validated,
            began.elapsed().as_secs_f64(),
            kinds.join(", ")
        );
        for d in &docs {
            ensure!(d.source.starts_with("kwire/"), "document from {}", d.source);
        }
    }
    Ok(())
}

/// A values file that must fail: its text, and what the error must name.
struct BadValues {
    what: &'static str,
    yaml: &'static str,
    mentions: &'static str,
}

const BAD_VALUES: &[BadValues] = &[
    BadValues {
        what: "unknown top-level key",
        yaml: "replicaCount: 2\n",
        mentions: "replicaCount",
    },
    BadValues {
        what: "unknown nested key (typo)",
        yaml: "operator:\n  replica: 2\n",
        mentions: "replica",
    },
    BadValues {
        what: "unknown key in a toleration",
        yaml: "node:\n  tolerations:\n    - operater: Exists\n",
        mentions: "operater",
    },
    BadValues {
        what: "string for an integer",
        yaml: "operator:\n  replicas: two\n",
        mentions: "/operator/replicas",
    },
    BadValues {
        what: "string for a boolean",
        yaml: "metrics:\n  serviceMonitor:\n    enabled: \"yes\"\n",
        mentions: "/metrics/serviceMonitor/enabled",
    },
    BadValues {
        what: "map for a list",
        yaml: "operator:\n  pools:\n    v4: 10.0.0.0/8\n",
        mentions: "/operator/pools",
    },
    BadValues {
        what: "pool that is not a CIDR",
        yaml: "operator:\n  pools: [10.0.0.1]\n",
        mentions: "/operator/pools/0",
    },
    BadValues {
        what: "unknown backend",
        yaml: "node:\n  backend: boringtun\n",
        mentions: "/node/backend",
    },
    BadValues {
        what: "resync period without unit",
        yaml: "node:\n  resyncPeriod: 30\n",
        mentions: "/node/resyncPeriod",
    },
    BadValues {
        what: "route protocol of the kernel",
        yaml: "node:\n  routeProtocol: 4\n",
        mentions: "/node/routeProtocol",
    },
    BadValues {
        what: "a default MTU (no component takes one: spec.mtu per Interface)",
        yaml: "defaults:\n  mtu: 1380\n",
        mentions: "/defaults",
    },
    BadValues {
        what: "log format",
        yaml: "logFormat: xml\n",
        mentions: "/logFormat",
    },
];

#[test]
fn bad_values_fail_lint_and_template() -> Result<()> {
    let dir = scratch("bad-values")?;
    println!(
        "{:<32} {:<10} {:<10} error",
        "bad values", "lint", "template"
    );
    for (i, bad) in BAD_VALUES.iter().enumerate() {
        let file = dir.join(format!("bad-{i}.yaml"));
        std::fs::write(&file, bad.yaml)?;
        let mut lint = helm_offline()?;
        lint.args(["lint", "--strict"])
            .arg(chart_dir())
            .arg("--values")
            .arg(&file);
        let mut template = helm_offline()?;
        template
            .args(["template", "kwire"])
            .arg(chart_dir())
            .arg("--values")
            .arg(&file);
        let mut results = Vec::new();
        for cmd in [&mut lint, &mut template] {
            let out = output(cmd)?;
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            ensure!(
                !out.status.success(),
                "{} accepted {} ({:?}):\n{text}",
                describe(cmd),
                bad.what,
                bad.yaml
            );
            ensure!(
                text.contains(bad.mentions),
                "{}: the error for {} does not name {:?}:\n{text}",
                describe(cmd),
                bad.what,
                bad.mentions
            );
            results.push(text);
        }
        let error = results[1]
            .lines()
            .find(|l| l.contains(bad.mentions))
            .unwrap_or_default()
            .trim()
            .to_string();
        println!(
            "{:<32} {:<10} {:<10} {error}",
            bad.what, "rejected", "rejected"
        );
    }
    Ok(())
}

/// `kubectl get <what> -n <ns> -o json`, or None if it does not exist.
fn get_json(cp: &ControlPlane, ns: Option<&str>, what: &str) -> Result<Option<Value>> {
    let mut cmd = cp.kubectl();
    cmd.args(["get", what, "-o", "json", "--ignore-not-found"]);
    if let Some(ns) = ns {
        cmd.args(["-n", ns]);
    }
    let out = run_ok(&mut cmd)?;
    if out.trim().is_empty() {
        return Ok(None);
    }
    Ok(Some(serde_json::from_str(&out)?))
}

fn get_required(cp: &ControlPlane, ns: &str, what: &str) -> Result<Value> {
    get_json(cp, Some(ns), what)?.ok_or_else(|| anyhow!("{what} does not exist in {ns}"))
}

/// Waits until `what` is gone (helm deletes in the background).
fn wait_gone(cp: &ControlPlane, ns: Option<&str>, what: &str) -> Result<()> {
    wait_for(
        &format!("{what} to be gone after helm uninstall"),
        Duration::from_secs(60),
        || Ok(get_json(cp, ns, what)?.is_none().then_some(())),
    )?;
    Ok(())
}

fn release_revision(cp: &ControlPlane, ns: &str, release: &str) -> Result<(u64, String)> {
    let out = run_ok(cp.helm().args(["status", release, "-n", ns, "-o", "json"]))?;
    let status: Value = serde_json::from_str(&out)?;
    Ok((
        status["version"].as_u64().unwrap_or_default(),
        status["info"]["status"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    ))
}

#[tokio::test]
async fn install_upgrade_and_uninstall_on_the_control_plane() -> Result<()> {
    let began = Instant::now();
    let cp = ControlPlane::shared().await?;
    let ns = cp.namespace("kwire-helm").await?;
    let ns_name = ns.name().to_string();
    // The release is named after the namespace: its cluster-scoped objects
    // (ClusterRoles, bindings) cannot collide with another test's.
    let release = ns_name.clone();
    let chart = chart_dir();

    // Install with the default values.
    let notes = run_ok(
        cp.helm()
            .args(["install", &release])
            .arg(&chart)
            .args(["--namespace", &ns_name]),
    )?;
    ensure!(
        notes.contains("examples/seed/relay.yaml") && notes.contains("kubectl get kwire"),
        "NOTES do not say what to apply next:\n{notes}"
    );
    ensure!(release_revision(cp, &ns_name, &release)? == (1, "deployed".to_string()));
    for crd in ["networks", "interfaces", "peers", "routes"] {
        get_json(cp, None, &format!("crd/{crd}.kwire.dev"))?
            .with_context(|| format!("CRD {crd}.kwire.dev not installed"))?;
    }
    let deploy = format!("deployment/{release}-operator");
    let ds = format!("daemonset/{release}-node");
    let pdb = format!("poddisruptionbudget/{release}-operator");
    let d = get_required(cp, &ns_name, &deploy)?;
    ensure!(d["spec"]["replicas"] == 1, "{}", d["spec"]);
    ensure!(!strings(&first_container(&d)["args"]).contains(&"--leader-election".to_string()));
    let n = get_required(cp, &ns_name, &ds)?;
    ensure!(
        strings(&first_container(&n)["args"])
            .windows(2)
            .any(|w| w == ["--resync-period", "30s"])
    );
    ensure!(get_json(cp, Some(&ns_name), &pdb)?.is_none());
    for sa in ["kwire-operator", "kwire-node"] {
        get_required(cp, &ns_name, &format!("serviceaccount/{sa}"))?;
    }

    // A user's object, which uninstalling must leave alone. Its key stays on
    // its node: with the default nodeSecretAccess.mode (none) the chart's
    // admission policy rejects a key in a Secret.
    let interface = "apiVersion: kwire.dev/v1alpha1\nkind: Interface\nmetadata:\n  name: vm01-wg0\nspec:\n  nodeName: vm01\n  deviceName: wg0\n  addresses: [10.0.0.1/24]\n  keyMode: NodeLocal\n";
    let manifest = scratch("install")?.join("interface.yaml");
    std::fs::write(&manifest, interface)?;
    run_ok(
        cp.kubectl()
            .args(["apply", "--server-side", "-n", &ns_name, "-f"])
            .arg(&manifest),
    )?;

    // Upgrade: two operators (leader election, PDB), a slower resync.
    run_ok(
        cp.helm()
            .args(["upgrade", &release])
            .arg(&chart)
            .args(["--namespace", &ns_name])
            .args([
                "--set",
                "operator.replicas=2",
                "--set",
                "node.resyncPeriod=45s",
            ]),
    )?;
    ensure!(release_revision(cp, &ns_name, &release)? == (2, "deployed".to_string()));
    let d = get_required(cp, &ns_name, &deploy)?;
    ensure!(d["spec"]["replicas"] == 2, "{}", d["spec"]);
    ensure!(d["spec"]["strategy"]["type"] == "RollingUpdate");
    ensure!(strings(&first_container(&d)["args"]).contains(&"--leader-election".to_string()));
    let n = get_required(cp, &ns_name, &ds)?;
    let args = strings(&first_container(&n)["args"]);
    ensure!(
        args.windows(2).any(|w| w == ["--resync-period", "45s"]),
        "{args:?}"
    );
    ensure!(
        n["metadata"]["generation"] == 2,
        "DaemonSet generation {}",
        n["metadata"]["generation"]
    );
    let p = get_required(cp, &ns_name, &pdb)?;
    ensure!(p["spec"]["minAvailable"] == 1);

    // A bad value fails the upgrade before anything changes.
    let out = output(
        cp.helm()
            .args(["upgrade", &release])
            .arg(&chart)
            .args(["--namespace", &ns_name, "--reuse-values"])
            .args(["--set", "node.backend=boringtun"]),
    )?;
    ensure!(
        !out.status.success(),
        "helm upgrade accepted node.backend=boringtun"
    );
    ensure!(String::from_utf8_lossy(&out.stderr).contains("/node/backend"));
    ensure!(release_revision(cp, &ns_name, &release)? == (2, "deployed".to_string()));

    // Back to one replica: no leader election, no PDB.
    run_ok(
        cp.helm()
            .args(["upgrade", &release])
            .arg(&chart)
            .args(["--namespace", &ns_name, "--reuse-values"])
            .args(["--set", "operator.replicas=1"]),
    )?;
    ensure!(release_revision(cp, &ns_name, &release)? == (3, "deployed".to_string()));
    let d = get_required(cp, &ns_name, &deploy)?;
    ensure!(d["spec"]["replicas"] == 1);
    ensure!(!strings(&first_container(&d)["args"]).contains(&"--leader-election".to_string()));
    wait_gone(cp, Some(&ns_name), &pdb)?;
    let n = get_required(cp, &ns_name, &ds)?;
    ensure!(
        strings(&first_container(&n)["args"])
            .windows(2)
            .any(|w| w == ["--resync-period", "45s"])
    );

    // Uninstall: the chart's objects go, the CRDs and the user's objects stay.
    run_ok(
        cp.helm()
            .args(["uninstall", &release, "--namespace", &ns_name]),
    )?;
    for what in [
        deploy.as_str(),
        ds.as_str(),
        "serviceaccount/kwire-operator",
        "serviceaccount/kwire-node",
        &format!("service/{release}-operator-metrics"),
        &format!("role/{release}-leader-election"),
    ] {
        wait_gone(cp, Some(&ns_name), what)?;
    }
    for what in [
        format!("clusterrole/{release}-operator"),
        format!("clusterrole/{release}-node"),
        format!("clusterrolebinding/{release}-operator"),
        format!("clusterrolebinding/{release}-node"),
    ] {
        wait_gone(cp, None, &what)?;
    }
    for crd in ["networks", "interfaces", "peers", "routes"] {
        get_json(cp, None, &format!("crd/{crd}.kwire.dev"))?
            .with_context(|| format!("helm uninstall removed CRD {crd}.kwire.dev"))?;
    }
    get_required(cp, &ns_name, "interfaces.kwire.dev/vm01-wg0")
        .context("helm uninstall removed a user's Interface")?;
    println!(
        "helm install, upgrade (1 -> 2 -> 1 replicas, resync 30s -> 45s), rejected bad upgrade, uninstall: ok in {:.1}s",
        began.elapsed().as_secs_f64()
    );
    ns.delete().await?;
    Ok(())
}
