//! The cluster-facing commands against a real kube-apiserver (the local control plane of
//! `kwire-tests`): `status` (also as `kubectl kwire status`), `showconf` with and without
//! keys, and `graph`. No operator or node daemon runs: the tests write the status those
//! would write, with `kubectl patch --subresource=status`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kwire_tests::control_plane::{ControlPlane, kubectl_path};
use serde_json::{Value, json};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn control_plane() -> &'static ControlPlane {
    let cp = ControlPlane::shared_blocking().expect("local control plane");
    static CRDS: OnceLock<()> = OnceLock::new();
    CRDS.get_or_init(|| {
        let crds = repo().join(kwire_crds::crd::GENERATED_PATH);
        let out = kubectl(
            cp,
            &["apply", "--server-side", "-f", crds.to_str().unwrap()],
            None,
        );
        assert!(out.status.success(), "installing CRDs: {}", text(&out));
        let out = kubectl(
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
            None,
        );
        assert!(out.status.success(), "CRDs not Established: {}", text(&out));
    });
    cp
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn run(mut cmd: Command, stdin: Option<&str>) -> Output {
    use std::io::Write as _;
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("command runs");
    if let Some(s) = stdin {
        child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    }
    child.wait_with_output().unwrap()
}

fn kubectl(cp: &ControlPlane, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = cp.kubectl();
    cmd.args(args);
    run(cmd, stdin)
}

fn kubectl_ok(cp: &ControlPlane, args: &[&str], stdin: Option<&str>) {
    let out = kubectl(cp, args, stdin);
    assert!(out.status.success(), "kubectl {args:?}: {}", text(&out));
}

fn kwire(cp: &ControlPlane, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kwire"));
    cmd.arg("--kubeconfig")
        .arg(cp.admin_kubeconfig())
        .args(args)
        .env("NO_COLOR", "1");
    run(cmd, None)
}

/// A namespace for one test, deleted (without waiting) when dropped.
struct Namespace {
    cp: &'static ControlPlane,
    name: String,
}

impl Namespace {
    fn new(prefix: &str) -> Self {
        let cp = control_plane();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!("{prefix}-{}-{nanos:x}", std::process::id());
        kubectl_ok(cp, &["create", "namespace", &name], None);
        Namespace { cp, name }
    }

    fn apply(&self, manifests: &str) {
        kubectl_ok(
            self.cp,
            &["apply", "--server-side", "-n", &self.name, "-f", "-"],
            Some(manifests),
        );
    }

    fn patch_status(&self, resource: &str, name: &str, status: Value) {
        let patch = json!({ "status": status }).to_string();
        kubectl_ok(
            self.cp,
            &[
                "patch",
                resource,
                name,
                "-n",
                &self.name,
                "--subresource=status",
                "--type=merge",
                "-p",
                &patch,
            ],
            None,
        );
    }

    fn secret(&self, name: &str, key: &str, value: &str) {
        kubectl_ok(
            self.cp,
            &[
                "create",
                "secret",
                "generic",
                name,
                "-n",
                &self.name,
                &format!("--from-literal={key}={value}"),
            ],
            None,
        );
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = kubectl(
            self.cp,
            &["delete", "namespace", &self.name, "--wait=false"],
            None,
        );
    }
}

fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    k8s_openapi::jiff::Timestamp::from_second(secs)
        .unwrap()
        .to_string()
}

fn condition(type_: &str, status: &str, reason: &str, message: &str) -> Value {
    json!({
        "type": type_, "status": status, "reason": reason, "message": message,
        "lastTransitionTime": rfc3339(SystemTime::now() - Duration::from_secs(3600)),
    })
}

/// Keys in the shape of real ones (32 bytes of base64), one per Interface.
fn public_key(n: u8) -> String {
    kwire_crds::keys::PublicKey::from_bytes([n * 7 + 1; 32]).to_string()
}

/// The seed's relay, with the status the operator and node daemons would have written:
/// a-to-b has a handshake three days old, b-to-c none.
fn relay(ns: &Namespace) {
    ns.apply(&std::fs::read_to_string(repo().join("examples/seed/relay.yaml")).unwrap());
    let interfaces = [
        ("a-wg0-client", "10.1.0.1/24", "10.211.55.10:11111"),
        ("b-wg0-server", "10.1.0.2/24", "10.211.55.11:22222"),
        ("b-wg1-client", "10.2.0.1/24", "10.211.55.11:23333"),
        ("c-wg0-server", "10.2.0.2/24", "10.211.55.12:33333"),
    ];
    for (n, (name, address, endpoint)) in interfaces.iter().enumerate() {
        let key = public_key(n as u8);
        let ready = if *name == "c-wg0-server" {
            condition(
                "Ready",
                "False",
                "PortInUse",
                "UDP port 33333 is in use on node c",
            )
        } else {
            condition("Ready", "True", "Configured", "device configured")
        };
        ns.patch_status(
            "interfaces.kwire.dev",
            name,
            json!({
                "publicKey": key, "publicKeyPrefix": &key[..8],
                "addresses": [address], "endpoint": endpoint,
                "device": {"backend": "userspace", "publicKey": key},
                "conditions": [ready],
            }),
        );
    }
    ns.patch_status(
        "peers.kwire.dev",
        "a-to-b",
        json!({
            "remoteName": "b-wg0-server",
            "resolved": {"endpoint": "10.211.55.11:22222", "publicKey": public_key(1)},
            "latestHandshake": rfc3339(SystemTime::now() - Duration::from_secs(3 * 86_400 + 60)),
            "transfer": {"rxBytes": 1536, "txBytes": 3_145_728},
            "conditions": [condition("Connected", "True", "HandshakeRecent", "handshake seen")],
        }),
    );
    ns.patch_status(
        "peers.kwire.dev",
        "b-to-c",
        json!({
            "remoteName": "c-wg0-server",
            "resolved": {"endpoint": "10.211.55.12:33333", "publicKey": public_key(3)},
            "conditions": [condition("Connected", "False", "NoHandshake", "no handshake yet: is node c reachable on 10.211.55.12:33333?")],
        }),
    );
}

#[test]
fn status_shows_the_relay_with_handshakes_traffic_and_reasons() {
    let ns = Namespace::new("cli-status");
    relay(&ns);
    let out = kwire(ns.cp, &["status", "-n", &ns.name]);
    assert!(out.status.success(), "{}", text(&out));
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    let expected_rows = [
        format!("Namespace {}", ns.name),
        format!(
            "a-wg0-client   a      wg0-client   10.1.0.1/24   11111   {}   userspace   True",
            &public_key(0)[..8]
        ),
        format!(
            "c-wg0-server   c      wg0-server   10.2.0.2/24   33333   {}   userspace   False (PortInUse)",
            &public_key(3)[..8]
        ),
        "a-to-b   a-wg0-client → b-wg0-server   10.211.55.11:22222   3d ago      1.5 KiB   3.0 MiB   HandshakeRecent".to_string(),
        "b-to-c   b-wg1-client → c-wg0-server   10.211.55.12:33333   never       -         -         NoHandshake".to_string(),
        "a-to-c-network   a-wg0-client   10.2.0.0/24   10.1.0.2   -".to_string(),
        "! Interface/c-wg0-server: Ready=False PortInUse: UDP port 33333 is in use on node c".to_string(),
        "! Peer/b-to-c: Connected=False NoHandshake: no handshake yet: is node c reachable on 10.211.55.12:33333?".to_string(),
    ];
    for row in &expected_rows {
        assert!(
            table.lines().any(|l| l == row),
            "missing {row:?} in\n{table}"
        );
    }
    assert!(!table.contains('\x1b'), "no colour when not on a terminal");

    // -o json for scripts.
    let out = kwire(ns.cp, &["status", "-n", &ns.name, "-o", "json"]);
    let json: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let peers = &json["namespaces"][0]["peers"];
    assert_eq!(peers[0]["name"], "a-to-b");
    assert_eq!(peers[0]["txBytes"], 3_145_728);
    assert!(peers[0]["handshakeAgeSeconds"].as_u64().unwrap() >= 3 * 86_400);
    assert_eq!(peers[1]["connected"]["reason"], "NoHandshake");

    // -o yaml too.
    let out = kwire(ns.cp, &["status", "-n", &ns.name, "-o", "yaml"]);
    let yaml = String::from_utf8_lossy(&out.stdout);
    assert!(
        yaml.contains("namespaces:") && yaml.contains("name: a-to-b"),
        "{yaml}"
    );
}

#[test]
fn kubectl_kwire_status_runs_the_plugin() {
    let ns = Namespace::new("cli-plugin");
    relay(&ns);
    let plugin_dir = Path::new(env!("CARGO_BIN_EXE_kubectl-kwire"))
        .parent()
        .unwrap()
        .to_path_buf();
    let path = format!(
        "{}:{}",
        plugin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new(kubectl_path());
    cmd.args(["kwire", "status", "-n", &ns.name])
        .env("PATH", path)
        .env("KUBECONFIG", ns.cp.admin_kubeconfig())
        .env("NO_COLOR", "1");
    let out = run(cmd, None);
    assert!(out.status.success(), "{}", text(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("a-to-b   a-wg0-client → b-wg0-server   10.211.55.11:22222   3d ago"),
        "{table}"
    );
}

#[test]
fn status_of_an_empty_namespace_says_so() {
    let ns = Namespace::new("cli-empty");
    let out = kwire(ns.cp, &["status", "-n", &ns.name]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!("No kwire objects found in namespace {}.\n", ns.name)
    );
}

#[test]
fn graph_from_the_cluster_shows_connected_reasons() {
    let ns = Namespace::new("cli-graph");
    relay(&ns);
    let out = kwire(ns.cp, &["graph", "-n", &ns.name]);
    assert!(out.status.success(), "{}", text(&out));
    let graph = String::from_utf8_lossy(&out.stdout);
    assert!(
        graph.contains("<-->|\"a-to-b: HandshakeRecent\"|"),
        "{graph}"
    );
    assert!(graph.contains("<-->|\"b-to-c: NoHandshake\"|"), "{graph}");
    assert!(graph.contains("linkStyle 1 stroke:#c62828"), "{graph}");
    assert!(graph.contains("PortInUse"), "{graph}");
}

// A key pair made with `wg genkey | tee priv | wg pubkey` (also used by the operator's tests).
const LAPTOP_PRIVATE: &str = "uL05OyKCfPLVOdvOUsn5NJx1oRCuLZt/+9All5kZPVE=";
const LAPTOP_PUBLIC: &str = "d7n3aHWXo8ES1G6Z4qZ6/fhPmKWjCGIl6piHhsMntQ0=";
const PSK: &str = "c2hhcmVkLXNlY3JldC1zaGFyZWQtc2VjcmV0LTMyYnk=";

fn external(ns: &Namespace) {
    let manifests = std::fs::read_to_string(repo().join("examples/external-peer.yaml"))
        .unwrap()
        .replace(
            "OgbUF/E21zi9qHf5h9H6N/iM92nnNYgRtOMhReFm730=",
            LAPTOP_PUBLIC,
        );
    ns.apply(&manifests);
    ns.patch_status(
        "interfaces.kwire.dev",
        "gateway-wg0",
        json!({
            "publicKey": public_key(9), "addresses": ["10.4.0.1/24"],
            "endpoint": "vpn.example.com:51820",
        }),
    );
    ns.secret("laptop-preshared-key", "presharedKey", PSK);
    ns.patch_status(
        "peers.kwire.dev",
        "laptop",
        json!({"resolved": {"allowedIPs": ["10.4.0.2/32"], "presharedKeySecret": "laptop-preshared-key"}}),
    );
}

#[test]
fn showconf_prints_keys_only_when_asked_and_only_the_right_one() {
    let ns = Namespace::new("cli-showconf");
    external(&ns);
    ns.secret("laptop-key", "privateKey", LAPTOP_PRIVATE);
    ns.secret(
        "wrong-key",
        "privateKey",
        "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=",
    );

    let out = kwire(ns.cp, &["showconf", "laptop", "-n", &ns.name]);
    assert!(out.status.success(), "{}", text(&out));
    let conf = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        conf.contains(&format!("PublicKey = {}\n", public_key(9))),
        "{conf}"
    );
    assert!(conf.contains("Address = 10.4.0.2/24\n"), "{conf}");
    assert!(
        conf.contains("Endpoint = vpn.example.com:51820\n"),
        "{conf}"
    );
    assert!(
        !conf.contains(PSK) && !conf.contains(LAPTOP_PRIVATE),
        "{conf}"
    );

    let out = kwire(
        ns.cp,
        &[
            "showconf",
            "laptop",
            "-n",
            &ns.name,
            "--include-private-key",
            "--private-key-secret",
            "laptop-key",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let conf = String::from_utf8_lossy(&out.stdout);
    assert!(
        conf.contains(&format!("PrivateKey = {LAPTOP_PRIVATE}\n")),
        "{conf}"
    );
    assert!(conf.contains(&format!("PresharedKey = {PSK}\n")), "{conf}");

    let out = kwire(
        ns.cp,
        &[
            "showconf",
            "laptop",
            "-n",
            &ns.name,
            "--include-private-key",
            "--private-key-secret",
            "wrong-key",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let error = text(&out);
    assert!(
        error.contains("does not belong to spec.remote.publicKey"),
        "{error}"
    );
    assert!(!error.contains("yAnz5TF"), "{error}");
}

#[test]
fn showconf_exports_a_peer_another_cluster_accepts() {
    let ns = Namespace::new("cli-peer-yaml");
    external(&ns);
    let out = kwire(
        ns.cp,
        &[
            "showconf",
            "laptop",
            "-n",
            &ns.name,
            "-o",
            "peer-yaml",
            "--remote-interface",
            "laptop-wg0",
            "--include-private-key",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let exported = String::from_utf8_lossy(&out.stdout).into_owned();
    // "Another cluster": a second namespace of this one, through the real API server.
    let other = Namespace::new("cli-other-cluster");
    other.apply(&exported);
    let out = kubectl(
        other.cp,
        &[
            "get",
            "peers.kwire.dev",
            "laptop",
            "-n",
            &other.name,
            "-o",
            "json",
        ],
        None,
    );
    let peer: Value = serde_json::from_slice(&out.stdout).expect("the Peer exists");
    assert_eq!(peer["spec"]["remote"]["publicKey"], public_key(9));
    assert_eq!(
        peer["spec"]["remote"]["endpoint"]["host"],
        "vpn.example.com"
    );
    assert_eq!(
        peer["spec"]["presharedKey"]["secretRef"]["name"],
        "laptop-preshared-key"
    );
}
