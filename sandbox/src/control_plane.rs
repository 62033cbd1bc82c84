//! A real local Kubernetes control plane for tests: etcd, kube-apiserver and
//! (unless asked not to) kube-controller-manager built from their Go modules (see
//! `tests/control-plane/README.md`), listening on 127.0.0.1 only.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! use kwire_sandbox::control_plane::ControlPlane;
//! let cp = ControlPlane::shared().await?;
//! let ns = cp.namespace("links").await?;            // fresh namespace, deleted on drop
//! let admin = cp.client().await?;                  // system:masters
//! let operator = cp.client_for_service_account(ns.name(), "kwire-operator").await?; // real RBAC
//! # let _ = (admin, operator); Ok(()) }
//! ```
//!
//! # Design
//!
//! Starting and stopping reuse `tests/control-plane/up.sh` and `down.sh`, the
//! scripts people use by hand, so there is one source of truth for flags,
//! certificates and tokens: what a test sees is what a developer debugging it
//! with `up.sh` sees. The scripts start the daemons detached, so they outlive
//! the `up.sh` process that started them; `PR_SET_PDEATHSIG` (e.g. `setpriv
//! --pdeathsig KILL`) would not fit there: it fires when the *thread* that
//! forked dies, i.e. when `up.sh` (or the test thread that happened to start
//! the shared control plane) ends, not when the test process does. Instead
//! `up.sh` is given `KWIRE_CP_WATCH_PID=<this process>` and starts a watchdog
//! that runs `down.sh` (kill exactly the started pids, remove the run folder)
//! within half a second of this process exiting, however it exits: test
//! binaries never run destructors for statics, and a test run can be killed.
//!
//! One control plane is started per test binary ([`ControlPlane::shared`]);
//! tests isolate themselves with [`ControlPlane::namespace`]. Clients are
//! built anew for each call rather than stored: every `#[tokio::test]` has its
//! own runtime, and a client's connection tasks die with the runtime that
//! made them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::error::{Error, IoContext as _, Result};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

/// Lifetime of the ServiceAccount tokens handed out by
/// [`ControlPlane::service_account_token`]: longer than any test run.
const TOKEN_EXPIRATION_SECONDS: i64 = 24 * 60 * 60;

/// The binaries `tests/control-plane/build.sh` makes for the control plane.
const BINARIES: [&str; 5] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kubectl",
    "helm",
];

/// The binaries kubelet nodes need besides [`BINARIES`] (also built by `build.sh`).
pub const KUBELET_NODE_BINARIES: [&str; 3] = ["kube-scheduler", "kubelet", "kube-proxy"];

/// `tests/control-plane` in this repository (found from where this crate was built: the
/// scripts and the binaries they build stay in the source tree).
pub fn scripts_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/control-plane");
    dir.canonicalize().unwrap_or(dir)
}

/// `tests/control-plane/bin`, where `build.sh` puts the binaries.
pub fn bin_dir() -> PathBuf {
    scripts_dir().join("bin")
}

/// Path of the `kubectl` binary built by `build.sh` (it may not exist yet).
pub fn kubectl_path() -> PathBuf {
    bin_dir().join("kubectl")
}

/// Path of the `helm` binary built by `build.sh` (it may not exist yet).
pub fn helm_path() -> PathBuf {
    bin_dir().join("helm")
}

/// Runs `tests/control-plane/build.sh`, which returns at once when the
/// binaries are current and otherwise builds them (many minutes when cold).
/// Set `KWIRE_CP_NO_BUILD=1` to never build: then missing binaries are an
/// error naming the command to run.
pub fn ensure_built() -> Result<()> {
    ensure_built_only(&BINARIES)
}

/// [`ensure_built`] for some of the binaries only.
fn ensure_built_only(names: &[&str]) -> Result<()> {
    let script = scripts_dir().join("build.sh");
    let missing: Vec<&str> = names
        .iter()
        .copied()
        .filter(|b| !bin_dir().join(b).is_file())
        .collect();
    if std::env::var_os("KWIRE_CP_NO_BUILD").is_some() {
        if missing.is_empty() {
            return Ok(());
        }
        return Err(Error::Missing(format!(
            "control plane binaries missing ({}); build them with: {}",
            missing.join(", "),
            script.display()
        )));
    }
    if !missing.is_empty() {
        eprintln!(
            "kwire control plane: building {} with {} (a cold build takes about 10 minutes on 2 cores)",
            missing.join(", "),
            script.display()
        );
    }
    // build.sh prints its progress on stderr; let it through (QUIET: nothing
    // when all is current).
    let status = Command::new(&script)
        .args(names)
        .env("QUIET", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()
        .map_err(|source| Error::Spawn {
            what: format!("running {}", script.display()),
            source,
        })?;
    if !status.success() {
        return Err(Error::ControlPlane(format!(
            "{} failed ({status}); run it by hand to see why",
            script.display()
        )));
    }
    Ok(())
}

/// A running control plane (see the module docs).
#[derive(Debug)]
pub struct ControlPlane {
    run_dir: PathBuf,
    api_url: String,
    ca_file: PathBuf,
    ca_pem: String,
    admin_token: String,
    admin_kubeconfig: PathBuf,
    /// Whether dropping this value stops it (false for the shared one, which
    /// the watchdog stops when the process exits).
    stop_on_drop: bool,
}

static SHARED: OnceLock<std::result::Result<ControlPlane, String>> = OnceLock::new();
static COUNTER: AtomicU64 = AtomicU64::new(0);

impl ControlPlane {
    /// The control plane of this test binary, started (and, if needed,
    /// built) by the first caller; later callers wait for it. It is stopped,
    /// and its temporary folder removed, when the test process exits. A
    /// failed start is reported to every caller without retrying.
    pub async fn shared() -> Result<&'static ControlPlane> {
        tokio::task::spawn_blocking(Self::shared_blocking)
            .await
            .map_err(|e| Error::ControlPlane(format!("control plane start task: {e}")))?
    }

    /// [`ControlPlane::shared`] for synchronous code (blocks the thread).
    pub fn shared_blocking() -> Result<&'static ControlPlane> {
        SHARED
            .get_or_init(|| {
                let run_dir = std::env::temp_dir()
                    .join(format!("kwire-control-plane-{}", std::process::id()));
                Self::start_in(run_dir, false, true, true, false).map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| {
                Error::ControlPlane(format!("the shared test control plane did not start: {e}"))
            })
    }

    /// Starts a control plane of its own in `run_dir` (which must not hold a
    /// running one), stopped by `down.sh` when the value is dropped or when
    /// this process exits. For tests that restart or break the control plane;
    /// others should use [`ControlPlane::shared`].
    pub fn start(run_dir: impl Into<PathBuf>) -> Result<ControlPlane> {
        Self::start_in(run_dir.into(), true, true, true, false)
    }

    /// A control plane for kubelet nodes: [`ControlPlane::start_with`] with
    /// kube-controller-manager also running the workload controllers (Deployments,
    /// ReplicaSets, DaemonSets, Node lifecycle) and kube-scheduler beside it; builds the
    /// kubelet and kube-proxy too.
    pub fn start_for_kubelets(run_dir: impl Into<PathBuf>, announce: bool) -> Result<ControlPlane> {
        Self::start_in(run_dir.into(), true, announce, true, true)
    }

    /// [`ControlPlane::start`], with the line on stderr saying it is up only if `announce`
    /// (a caller that reports progress its own way, `kwire sandbox up`, does without).
    /// Without `controller_manager`, only etcd and kube-apiserver run (and only they,
    /// kubectl and helm are built): no garbage collection of owned objects and no namespace
    /// deletion, which a short-lived sandbox does without.
    pub fn start_with(
        run_dir: impl Into<PathBuf>,
        announce: bool,
        controller_manager: bool,
    ) -> Result<ControlPlane> {
        Self::start_in(run_dir.into(), true, announce, controller_manager, false)
    }

    fn start_in(
        run_dir: PathBuf,
        stop_on_drop: bool,
        announce: bool,
        controller_manager: bool,
        workloads: bool,
    ) -> Result<ControlPlane> {
        let mut needed: Vec<&str> = BINARIES
            .into_iter()
            .filter(|b| controller_manager || *b != "kube-controller-manager")
            .collect();
        if workloads {
            needed.extend(KUBELET_NODE_BINARIES);
        }
        ensure_built_only(&needed)?;
        let began = Instant::now();
        let up = scripts_dir().join("up.sh");
        let output = Command::new(&up)
            .arg(&run_dir)
            .env("KWIRE_CP_WATCH_PID", std::process::id().to_string())
            .env(
                "KWIRE_CP_CONTROLLER_MANAGER",
                if controller_manager { "1" } else { "0" },
            )
            .env("KWIRE_CP_WORKLOADS", if workloads { "1" } else { "0" })
            .stdin(Stdio::null())
            .output()
            .map_err(|source| Error::Spawn {
                what: format!("running {}", up.display()),
                source,
            })?;
        if !output.status.success() {
            // up.sh stopped what it had started and kept the folder for its
            // logs; their last lines are in its stderr, quoted below.
            let _ = run_down(&run_dir);
            return Err(Error::ControlPlane(format!(
                "{} {} failed ({}):\n{}",
                up.display(),
                run_dir.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        let env_file = run_dir.join("env");
        let text =
            std::fs::read_to_string(&env_file).io(|| format!("reading {}", env_file.display()))?;
        let env: HashMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
        let var = |k: &str| -> Result<String> {
            env.get(k)
                .map(|v| v.to_string())
                .ok_or_else(|| Error::ControlPlane(format!("{} has no {k}", env_file.display())))
        };
        let ca_file = PathBuf::from(var("KWIRE_CP_CA_FILE")?);
        let ca_pem =
            std::fs::read_to_string(&ca_file).io(|| format!("reading {}", ca_file.display()))?;
        let cp = ControlPlane {
            api_url: var("KWIRE_CP_APISERVER_URL")?,
            admin_token: var("KWIRE_CP_ADMIN_TOKEN")?,
            admin_kubeconfig: PathBuf::from(var("KWIRE_CP_ADMIN_KUBECONFIG")?),
            ca_file,
            ca_pem,
            run_dir,
            stop_on_drop,
        };
        if announce {
            eprintln!(
                "kwire control plane: {} up in {:.1}s (run folder {})",
                cp.api_url,
                began.elapsed().as_secs_f64(),
                cp.run_dir.display()
            );
        }
        Ok(cp)
    }

    /// The apiserver's URL, `https://127.0.0.1:<port>`.
    pub fn api_url(&self) -> &str {
        &self.api_url
    }

    /// The run folder (certificates, logs/, kubeconfigs, pids).
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// The processes `up.sh` started, as `(name, pid)`: the daemons of its `pids` file and the
    /// watchdog (for the sandbox's crash record).
    pub fn processes(&self) -> Vec<(String, u32)> {
        let mut processes: Vec<(String, u32)> =
            std::fs::read_to_string(self.run_dir.join("watchdog.pid"))
                .ok()
                .and_then(|p| p.trim().parse().ok())
                .map(|pid| ("control-plane watchdog".to_string(), pid))
                .into_iter()
                .collect();
        let pids = std::fs::read_to_string(self.run_dir.join("pids")).unwrap_or_default();
        processes.extend(pids.lines().filter_map(|line| {
            let (name, pid) = line.split_once(' ')?;
            Some((name.to_string(), pid.trim().parse().ok()?))
        }));
        processes
    }

    /// PEM of the CA that signed the apiserver's serving certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// File holding [`ControlPlane::ca_pem`].
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// The CA's private key (`pki/ca.key`), for signing the client certificates of kubelet
    /// nodes.
    pub fn ca_key_file(&self) -> PathBuf {
        self.run_dir.join("pki/ca.key")
    }

    /// The apiserver's port on 127.0.0.1.
    pub fn api_port(&self) -> Result<u16> {
        self.api_url
            .rsplit(':')
            .next()
            .and_then(|p| p.trim_end_matches('/').parse().ok())
            .ok_or_else(|| Error::Unexpected(format!("no port in {}", self.api_url)))
    }

    /// A static token of user `kwire-admin` in group `system:masters`.
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// Kubeconfig of the admin user (CA embedded, namespace `default`).
    pub fn admin_kubeconfig(&self) -> &Path {
        &self.admin_kubeconfig
    }

    /// Path of the `kubectl` binary.
    pub fn kubectl_path(&self) -> PathBuf {
        kubectl_path()
    }

    /// Path of the `helm` binary.
    pub fn helm_path(&self) -> PathBuf {
        helm_path()
    }

    /// `kubectl --kubeconfig <admin.kubeconfig>`, ready for more arguments.
    /// Its discovery cache is in the run folder: `$HOME/.kube/cache` is
    /// keyed by host:port, and ports are reused across runs.
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new(kubectl_path());
        cmd.arg("--kubeconfig")
            .arg(&self.admin_kubeconfig)
            .arg("--cache-dir")
            .arg(self.run_dir.join("kubectl-cache"));
        cmd
    }

    /// `helm` with `KUBECONFIG` set to the admin kubeconfig and its cache,
    /// config and data folders inside the run folder (not in `$HOME`).
    pub fn helm(&self) -> Command {
        let mut cmd = Command::new(helm_path());
        let home = self.run_dir.join("helm");
        cmd.env("KUBECONFIG", &self.admin_kubeconfig)
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"));
        cmd
    }

    /// A kubeconfig document for this control plane authenticating with
    /// `token`, whose context defaults to `namespace`.
    pub fn kubeconfig_yaml(&self, user: &str, token: &str, namespace: &str) -> String {
        use std::fmt::Write as _;
        let mut ca = String::new();
        for line in self.ca_pem.lines() {
            let _ = writeln!(ca, "        {line}");
        }
        // JSON strings are valid YAML scalars: no quoting surprises.
        let q = |s: &str| serde_json::Value::from(s).to_string();
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: kwire-test\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca_b64}\nusers:\n- name: {user}\n  user:\n    token: {token}\ncontexts:\n- name: kwire-test\n  context:\n    cluster: kwire-test\n    user: {user}\n    namespace: {ns}\ncurrent-context: kwire-test\n",
            server = q(&self.api_url),
            ca_b64 = q(&BASE64.encode(self.ca_pem.as_bytes())),
            user = q(user),
            token = q(token),
            ns = q(namespace),
        )
    }

    /// A client of the admin user (`system:masters`), default namespace
    /// `default`.
    pub async fn client(&self) -> Result<Client> {
        client_from_kubeconfig_yaml(&self.kubeconfig_yaml(
            "kwire-admin",
            &self.admin_token,
            "default",
        ))
        .await
    }

    /// Creates a namespace named `<prefix>-<unique suffix>` for one test. It
    /// is deleted when the returned value is dropped (or by
    /// [`TestNamespace::delete`]).
    pub async fn namespace(&self, prefix: &str) -> Result<TestNamespace> {
        let name = unique_name(prefix);
        let client = self.client().await?;
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([("kwire.dev/test".to_string(), "true".to_string())].into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .map_err(|source| Error::Kube {
                what: format!("creating namespace {name}"),
                source,
            })?;
        Ok(TestNamespace {
            name,
            client,
            kubeconfig: self.admin_kubeconfig.clone(),
            kubectl_cache: self.run_dir.join("kubectl-cache"),
            deleted: false,
        })
    }

    /// Creates ServiceAccount `namespace/name` unless it exists.
    pub async fn ensure_service_account(&self, namespace: &str, name: &str) -> Result<()> {
        let api = Api::<ServiceAccount>::namespaced(self.client().await?, namespace);
        if api
            .get_opt(name)
            .await
            .map_err(|source| Error::Kube {
                what: format!("reading ServiceAccount {namespace}/{name}"),
                source,
            })?
            .is_some()
        {
            return Ok(());
        }
        let sa = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                ..ObjectMeta::default()
            },
            ..ServiceAccount::default()
        };
        match api.create(&PostParams::default(), &sa).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.is_already_exists() => Ok(()),
            Err(source) => Err(Error::Kube {
                what: format!("creating ServiceAccount {namespace}/{name}"),
                source,
            }),
        }
    }

    /// A token of ServiceAccount `namespace/name` (created if missing) from
    /// the TokenRequest API, valid for a day.
    pub async fn service_account_token(&self, namespace: &str, name: &str) -> Result<String> {
        self.ensure_service_account(namespace, name).await?;
        let api = Api::<ServiceAccount>::namespaced(self.client().await?, namespace);
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                expiration_seconds: Some(TOKEN_EXPIRATION_SECONDS),
                ..TokenRequestSpec::default()
            }),
            ..TokenRequest::default()
        };
        let answer = api
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .map_err(|source| Error::Kube {
                what: format!("TokenRequest for ServiceAccount {namespace}/{name}"),
                source,
            })?;
        answer
            .status
            .and_then(|s| s.token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Error::Unexpected(format!(
                    "TokenRequest for {namespace}/{name} returned no token"
                ))
            })
    }

    /// A client authenticated as ServiceAccount `namespace/name` (created if
    /// missing) with a TokenRequest token: it has exactly the permissions
    /// RBAC grants that ServiceAccount. Its default namespace is `namespace`.
    pub async fn client_for_service_account(&self, namespace: &str, name: &str) -> Result<Client> {
        let token = self.service_account_token(namespace, name).await?;
        let user = format!("system:serviceaccount:{namespace}:{name}");
        client_from_kubeconfig_yaml(&self.kubeconfig_yaml(&user, &token, namespace)).await
    }

    /// Writes a kubeconfig for ServiceAccount `namespace/name` (created if
    /// missing) into the run folder and returns its path: for running the
    /// operator or a node daemon as a child process (`KUBECONFIG=<path>`).
    pub async fn service_account_kubeconfig(&self, namespace: &str, name: &str) -> Result<PathBuf> {
        let token = self.service_account_token(namespace, name).await?;
        let user = format!("system:serviceaccount:{namespace}:{name}");
        let dir = self.run_dir.join("kubeconfigs");
        std::fs::create_dir_all(&dir).io(|| format!("creating {}", dir.display()))?;
        let path = dir.join(format!("{namespace}.{name}.kubeconfig"));
        std::fs::write(&path, self.kubeconfig_yaml(&user, &token, namespace))
            .io(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// Stops this control plane now (`down.sh`): kills its processes and
    /// removes its run folder. The shared one cannot be stopped this way.
    pub fn stop(mut self) -> Result<()> {
        if !self.stop_on_drop {
            return Err(Error::State(
                "the shared control plane stops when the test process exits".into(),
            ));
        }
        self.stop_on_drop = false;
        run_down(&self.run_dir)
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if self.stop_on_drop
            && let Err(e) = run_down(&self.run_dir)
        {
            eprintln!("kwire control plane: {e:#}");
        }
    }
}

fn run_down(run_dir: &Path) -> Result<()> {
    let down = scripts_dir().join("down.sh");
    let output = Command::new(&down)
        .arg(run_dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| Error::Spawn {
            what: format!("running {}", down.display()),
            source,
        })?;
    if !output.status.success() {
        return Err(Error::ControlPlane(format!(
            "{} {} failed ({}):\n{}",
            down.display(),
            run_dir.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    Ok(())
}

/// A namespace for one test, deleted when dropped.
pub struct TestNamespace {
    name: String,
    client: Client,
    kubeconfig: PathBuf,
    kubectl_cache: PathBuf,
    deleted: bool,
}

impl std::fmt::Debug for TestNamespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestNamespace")
            .field("name", &self.name)
            .finish()
    }
}

impl TestNamespace {
    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// An admin client (made in the runtime that called
    /// [`ControlPlane::namespace`]).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// `Api<K>` of the admin client in this namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Deletes the namespace now (without waiting for its finalization).
    pub async fn delete(mut self) -> Result<()> {
        self.deleted = true;
        match Api::<Namespace>::all(self.client.clone())
            .delete(&self.name, &DeleteParams::background())
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.is_not_found() => Ok(()),
            Err(source) => Err(Error::Kube {
                what: format!("deleting namespace {}", self.name),
                source,
            }),
        }
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if self.deleted {
            return;
        }
        // Drop cannot await, and the test's runtime may be shutting down:
        // kubectl does it synchronously, without waiting for finalization.
        let _ = Command::new(kubectl_path())
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(&self.kubectl_cache)
            .args([
                "delete",
                "namespace",
                &self.name,
                "--wait=false",
                "--ignore-not-found",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

async fn client_from_kubeconfig_yaml(yaml: &str) -> Result<Client> {
    let kubeconfig = Kubeconfig::from_yaml(yaml).map_err(|source| Error::Kubeconfig {
        what: "parsing generated kubeconfig".into(),
        source,
    })?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|source| Error::Kubeconfig {
            what: "loading generated kubeconfig".into(),
            source,
        })?;
    Client::try_from(config).map_err(|source| Error::Kube {
        what: "building kube client".into(),
        source,
    })
}

/// `<prefix>-<suffix>`: a DNS-1123 label unique within this process and,
/// with high probability, across processes.
fn unique_name(prefix: &str) -> String {
    let mut clean: String = prefix
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    clean.truncate(40);
    let clean = clean.trim_matches('-');
    let clean = if clean.is_empty() { "test" } else { clean };
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{clean}-{n}-{:x}", (nanos ^ std::process::id()) & 0xff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_are_dns_labels() {
        let a = unique_name("My_Test::links");
        let b = unique_name("My_Test::links");
        assert_ne!(a, b);
        for n in [a, unique_name("---"), unique_name(&"x".repeat(100))] {
            assert!(n.len() <= 63, "{n}");
            assert!(
                n.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{n}"
            );
            assert!(!n.starts_with('-') && !n.ends_with('-'), "{n}");
        }
    }
}
