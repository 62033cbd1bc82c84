//! The cluster side of a sandbox: the local control plane, the chart installed with real
//! helm, the manifests applied, and reading objects back with kubectl.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use kwire_crds::manifest::KwireObject;
use serde_json::Value;

use super::{NodeKind, SYSTEM_NAMESPACE, Sandbox, Steps, check_interrupted, repo};
use crate::control_plane::ControlPlane;
use crate::error::{Error, IoContext as _, Result, describe, failed, run};
use crate::kubelet;
use crate::netns::Lan;
use crate::record::Ledger;

impl Sandbox {
    /// Starts the crash record, the sandbox's own LAN (unless `own_lan` is false: its nodes
    /// go on a LAN its caller owns), the run folder and the local control plane; from then
    /// on the sandbox exists, and dropping it (on any error) removes all it made.
    pub(super) fn start_control_plane(
        files: &[PathBuf],
        namespace: &str,
        objects: Vec<KwireObject>,
        mut steps: Steps,
        own_lan: bool,
        controller_manager: bool,
        node_kind: NodeKind,
    ) -> Result<Self> {
        let kubelets = node_kind == NodeKind::Kubelet;
        // The record comes first: everything below is written into it before or as it is
        // made. Its id is unique per sandbox: tests run several at once in one process.
        static SANDBOXES: AtomicU32 = AtomicU32::new(0);
        let id = format!(
            "{}-{}",
            std::process::id(),
            SANDBOXES.fetch_add(1, Ordering::Relaxed)
        );
        // On an error below, dropping the ledger removes what was made so far.
        let ledger = Ledger::create(&id, namespace, files)?;
        let own_lan = if own_lan {
            Some(Lan::in_namespace(Self::make_netns(&ledger, "sw")?)?)
        } else {
            None
        };
        let run_dir = std::env::temp_dir().join(format!("kwire-sandbox-{id}"));
        ledger.folder(&run_dir)?;
        std::fs::create_dir_all(&run_dir).io(|| format!("creating {}", run_dir.display()))?;
        let cp_dir = run_dir.with_extension("control-plane");
        ledger.folder(&cp_dir)?;

        check_interrupted()?;
        steps.start(if kubelets {
            "local control plane (etcd, kube-apiserver, controller-manager, scheduler)"
        } else if controller_manager {
            "local control plane (etcd, kube-apiserver, controller-manager)"
        } else {
            "local control plane (etcd, kube-apiserver)"
        });
        // The step line says it is up; tests (quiet) get the control plane's own line.
        let cp = if kubelets {
            ControlPlane::start_for_kubelets(cp_dir, steps.quiet)?
        } else {
            ControlPlane::start_with(cp_dir, steps.quiet, controller_manager)?
        };
        let mut sandbox = Self {
            cp,
            namespace: namespace.to_string(),
            nodes: BTreeMap::new(),
            externals: BTreeMap::new(),
            objects,
            run_dir,
            steps,
            node_kind,
            operator: None,
            relay: None,
            api_port: 0,
            _lan: own_lan,
            ledger,
        };
        for (what, pid) in sandbox.cp.processes() {
            sandbox.ledger.process(pid, &what, None)?;
        }
        sandbox.ledger.kubeconfig(sandbox.cp.admin_kubeconfig())?;
        sandbox.api_port = sandbox.cp.api_port()?;
        sandbox.steps.done();
        Ok(sandbox)
    }

    /// `helm install` of the chart: on process nodes its CRDs, RBAC and ServiceAccounts
    /// (the workloads run as processes); on kubelet nodes the whole chart with `images`.
    /// Waits for the CRDs to be established.
    pub(super) fn install_chart(&mut self, images: &kubelet::Images) -> Result<()> {
        let namespace = self.namespace.clone();
        // The manifests' namespace exists first: the chart lets the node daemons read the key
        // Secrets of that namespace only (nodeSecretAccess, docs/security.md).
        let secret_access = [
            "--set".to_string(),
            "nodeSecretAccess.mode=namespaces".to_string(),
            "--set-json".to_string(),
            format!("nodeSecretAccess.namespaces=[{namespace:?}]"),
        ];
        let chart = repo().join("charts/kwire").display().to_string();
        let mut install = self.cp.helm();
        install.args(["install", "kwire", &chart, "--namespace", SYSTEM_NAMESPACE]);
        if self.node_kind == NodeKind::Kubelet {
            self.begin(&format!(
                "helm install kwire (images {})",
                images.tag_description()
            ))?;
            // The node DaemonSet needs Pod Security `privileged` (hostNetwork, hostPath,
            // NET_ADMIN); see docs/install.md.
            kubectl_ok(&self.cp, &["create", "namespace", SYSTEM_NAMESPACE])?;
            kubectl_ok(
                &self.cp,
                &[
                    "label",
                    "namespace",
                    SYSTEM_NAMESPACE,
                    "pod-security.kubernetes.io/enforce=privileged",
                ],
            )?;
            install.args([
                "--set",
                &format!("operator.image.repository={}", images.operator_repository),
                "--set",
                &format!("node.image.repository={}", images.node_repository),
                "--set",
                &format!("operator.image.tag={}", images.tag),
                "--set",
                &format!("node.image.tag={}", images.tag),
            ]);
        } else {
            self.begin("helm install kwire (CRDs, RBAC, ServiceAccounts)")?;
            install.arg("--create-namespace");
        }
        kubectl_ok(&self.cp, &["create", "namespace", &namespace])?;
        run(install.arg("--wait=false").args(&secret_access))?;
        kubectl_ok(
            &self.cp,
            &[
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                "crd/interfaces.kwire.dev",
                "crd/peers.kwire.dev",
                "crd/routes.kwire.dev",
                "crd/networks.kwire.dev",
            ],
        )?;
        self.steps.done();
        Ok(())
    }

    /// `kubectl apply --server-side` of the manifest files into the sandbox namespace.
    pub(super) fn apply_manifests(&mut self, files: &[PathBuf]) -> Result<()> {
        self.begin("kubectl apply --server-side the manifests")?;
        for f in files {
            kubectl_ok(
                &self.cp,
                &[
                    "apply",
                    "--server-side",
                    "-n",
                    &self.namespace,
                    "-f",
                    &f.display().to_string(),
                ],
            )?;
        }
        self.steps.done();
        Ok(())
    }

    /// The kwire objects of the sandbox namespace as JSON (`kubectl get … -o json`).
    pub fn get(&self, kinds: &str) -> Result<Vec<Value>> {
        let list = self.kubectl_json(&["get", kinds, "-n", &self.namespace, "-o", "json"])?;
        Ok(list["items"].as_array().cloned().unwrap_or_default())
    }

    /// One object of the sandbox namespace as JSON, `None` when it does not exist.
    pub fn get_one(&self, kind: &str, name: &str) -> Result<Option<Value>> {
        let list = self.kubectl_json(&[
            "get",
            kind,
            "-n",
            &self.namespace,
            "--field-selector",
            &format!("metadata.name={name}"),
            "-o",
            "json",
        ])?;
        Ok(list["items"].as_array().and_then(|i| i.first()).cloned())
    }

    fn kubectl_json(&self, args: &[&str]) -> Result<Value> {
        let out = run(self.cp.kubectl().args(args))?;
        serde_json::from_slice(&out.stdout).map_err(|source| Error::Json {
            what: format!("the output of kubectl {}", args.join(" ")),
            source,
        })
    }

    /// Key `key` of Secret `name` in the sandbox namespace, as base64 text (stored either
    /// as the 32 key bytes or as their base64, the two forms kwire reads).
    pub(super) fn secret_key(&self, name: &str, key: &str) -> Result<String> {
        let secret =
            self.kubectl_json(&["get", "secret", name, "-n", &self.namespace, "-o", "json"])?;
        let missing = || {
            Error::Unexpected(format!(
                "Secret {}/{name} has no WireGuard key in {key:?}",
                self.namespace
            ))
        };
        let stored = secret["data"][key]
            .as_str()
            .and_then(|v| BASE64.decode(v).ok())
            .ok_or_else(missing)?;
        if stored.len() == 32 {
            return Ok(BASE64.encode(stored));
        }
        let text = String::from_utf8(stored).map_err(|_| missing())?;
        let text = text.trim();
        match BASE64.decode(text) {
            Ok(bytes) if bytes.len() == 32 => Ok(text.to_string()),
            _ => Err(missing()),
        }
    }

    /// `kubectl apply --server-side -f -` of `yaml` into the sandbox namespace; returns
    /// kubectl's output.
    pub fn apply_yaml(&self, yaml: &str) -> Result<String> {
        kubectl_stdin(
            &self.cp,
            &["apply", "--server-side", "-n", &self.namespace, "-f", "-"],
            yaml,
        )
    }
}

pub(super) fn kubectl_ok(cp: &ControlPlane, args: &[&str]) -> Result<()> {
    run(cp.kubectl().args(args))?;
    Ok(())
}

/// `kubectl <args>` with `input` on its standard input; returns its standard output.
pub(super) fn kubectl_stdin(cp: &ControlPlane, args: &[&str], input: &str) -> Result<String> {
    let mut cmd = cp.kubectl();
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| Error::Spawn {
        what: format!("running {}", describe(&cmd)),
        source,
    })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .io(|| "writing to kubectl".into())?;
    }
    let out = child
        .wait_with_output()
        .io(|| format!("waiting for {}", describe(&cmd)))?;
    if !out.status.success() {
        return Err(failed(&cmd, &out));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Registers the Node object of a process node: its name, the `kwire.dev/sandbox` label
/// and the `labels` its Node document gave, then its address. Applied with a field
/// manager of its own, so that `kubectl apply` of the manifests (which holds that Node
/// document too) keeps the sandbox's label.
pub(super) fn register_node(
    cp: &ControlPlane,
    name: &str,
    address: IpAddr,
    labels: &BTreeMap<String, String>,
) -> Result<()> {
    kubectl_stdin(
        cp,
        &[
            "apply",
            "--server-side",
            "--field-manager=kwire-sandbox",
            "-f",
            "-",
        ],
        &node_manifest(name, labels).to_string(),
    )?;
    let patch = format!(
        "{{\"status\":{{\"addresses\":[{{\"type\":\"InternalIP\",\"address\":\"{address}\"}},{{\"type\":\"Hostname\",\"address\":\"{name}\"}}]}}}}"
    );
    kubectl_ok(
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
    )
}

/// The Node object a process node is registered with.
pub(super) fn node_manifest(name: &str, labels: &BTreeMap<String, String>) -> Value {
    let mut all = labels.clone();
    all.insert("kwire.dev/sandbox".into(), "true".into());
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": all},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registered_node_carries_its_declared_labels_and_the_sandbox_label() {
        let labels = BTreeMap::from([
            (
                "topology.kubernetes.io/zone".to_string(),
                "east".to_string(),
            ),
            ("kwire.dev/mesh".to_string(), "overlay".to_string()),
        ]);
        assert_eq!(
            node_manifest("a", &labels),
            serde_json::json!({
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": "a", "labels": {
                    "kwire.dev/mesh": "overlay",
                    "kwire.dev/sandbox": "true",
                    "topology.kubernetes.io/zone": "east",
                }},
            })
        );
        assert_eq!(
            node_manifest("b", &BTreeMap::new())["metadata"]["labels"],
            serde_json::json!({"kwire.dev/sandbox": "true"})
        );
    }
}
