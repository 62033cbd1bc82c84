//! Kubelet nodes: each node of the sandbox a real Kubernetes node, as users run kwire.
//!
//! A node is its network namespace on the LAN (as for process nodes) plus a private mount
//! namespace, in which:
//!
//! - `/var/lib` and `/var/log` are the node's own folders and `/run` a tmpfs of its own, so
//!   that the hostPath volumes of the chart (`/var/lib/kwire`, `/var/run/wireguard`), the
//!   kubelet's root (`/var/lib/kubelet`, device-plugin socket included), pod logs, the CNI
//!   plugins' state and containerd's runtime state are per node, as on separate machines,
//!   and disappear with the namespace;
//! - `containerd` (Debian's, with `runc`) runs with a configuration of the node's own
//!   (socket in the node's folder, `restrict_oom_score_adj`, the bridge CNI plugin with a
//!   pod subnet per node, the sandbox's local pause image);
//! - the `kubelet` and `kube-proxy` built from `k8s.io/kubernetes` run, entered into that
//!   mount and network namespace (`nsenter`). The kubelet registers its Node itself with a
//!   client certificate of `system:node:<name>` signed by the control plane's CA; pods go
//!   under a cgroup root of the node's own (`/kwire-<sandbox>-<node>` in every cgroup v1
//!   hierarchy; the kubelet runs with `failCgroupV1: false`).
//!
//! Images come from OCI archives (`scripts/build-images.sh`), imported into each node's
//! containerd: no registry. The API server listens on the host's loopback; the node reaches
//! it through the sandbox's relay at `127.0.0.1:<port>` and, for pods off the host network,
//! at [`API_VIP`], which the `kubernetes` Service's EndpointSlice names and kube-proxy
//! translates `10.0.0.1:443` to.
//!
//! `tests/control-plane/README.md` lists what each setting is for.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use ipnet::Ipv4Net;

use crate::control_plane::{ControlPlane, bin_dir};
use crate::error::{Error, IoContext as _, Result, run};
use crate::process::{exited, kill_until_gone, spawn_logged, stop, wait_until};

/// The address every kubelet node has on its loopback, where its API relay also listens:
/// the endpoint of the `kubernetes` Service, so that pods reach the API server through
/// kube-proxy and in-cluster configuration, like on a real cluster.
pub const API_VIP: Ipv4Addr = Ipv4Addr::new(10, 211, 56, 1);

/// The Service address range of the local control plane (`--service-cluster-ip-range`);
/// `kubernetes` is `10.0.0.1`.
pub const SERVICE_CIDR: &str = "10.0.0.0/24";

/// The pod address range of the cluster; node `i` gets `10.244.<i>.0/24`.
pub const CLUSTER_CIDR: &str = "10.244.0.0/16";

/// Where the cgroup v1 hierarchies are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The image archives a kubelet sandbox imports into every node, and the references the
/// chart is installed with.
#[derive(Debug, Clone, Default)]
pub struct Images {
    /// The OCI archives: operator, node, pause.
    pub archives: Vec<PathBuf>,
    /// `kwire/operator`, as a user sets `operator.image.repository`.
    pub operator_repository: String,
    /// `kwire/node`.
    pub node_repository: String,
    /// The tag of both: the chart's `appVersion`.
    pub tag: String,
    /// The full reference of the pause image (containerd's `sandbox_image`).
    pub pause: String,
}

impl Images {
    /// `kwire/operator:<tag>, kwire/node:<tag>`, for progress lines.
    pub fn tag_description(&self) -> String {
        format!(
            "{}:{tag}, {}:{tag}",
            self.operator_repository,
            self.node_repository,
            tag = self.tag
        )
    }
}

/// The folder `scripts/build-images.sh` writes its archives to: `$KWIRE_IMAGES_DIR`, else
/// `$CARGO_TARGET_DIR/images`, else `target/images` of this workspace.
pub fn images_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("KWIRE_IMAGES_DIR") {
        return dir.into();
    }
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
            PathBuf::from,
        )
        .join("images")
}

/// The chart's `appVersion`, which is the images' tag.
pub fn chart_app_version() -> Result<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/kwire/Chart.yaml");
    let text = std::fs::read_to_string(&path).io(|| format!("reading {}", path.display()))?;
    text.lines()
        .find_map(|l| l.strip_prefix("appVersion:"))
        .map(|v| v.trim().trim_matches('"').to_string())
        .ok_or_else(|| Error::Unexpected(format!("{} has no appVersion", path.display())))
}

/// The archives of the images `scripts/build-images.sh` built for the chart's version, or
/// an error naming that command.
pub fn image_archives() -> Result<Images> {
    let tag = chart_app_version()?;
    let dir = images_dir();
    let mut archives = Vec::new();
    for name in ["kwire-operator", "kwire-node", "kwire-sandbox-pause"] {
        let path = dir.join(format!("{name}-{tag}.oci.tar"));
        if !path.is_file() {
            return Err(Error::Missing(format!(
                "{} is missing: kubelet nodes run kwire from its images; build them with                  `bash scripts/build-images.sh`",
                path.display()
            )));
        }
        archives.push(path);
    }
    Ok(Images {
        archives,
        operator_repository: "kwire/operator".into(),
        node_repository: "kwire/node".into(),
        pause: format!("docker.io/kwire/sandbox-pause:{tag}"),
        tag,
    })
}

/// The EndpointSlice of the `kubernetes` Service: [`API_VIP`] at the API server's port.
pub fn kubernetes_endpoint_slice(api_port: u16) -> String {
    serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "kubernetes",
            "namespace": "default",
            "labels": {
                "kubernetes.io/service-name": "kubernetes",
                "endpointslice.kubernetes.io/managed-by": "sandbox.kwire.dev",
            },
        },
        "addressType": "IPv4",
        "endpoints": [{ "addresses": [API_VIP.to_string()], "conditions": { "ready": true } }],
        "ports": [{ "name": "https", "port": api_port, "protocol": "TCP" }],
    })
    .to_string()
}

/// What [`KubeletNode::start`] needs to know of one node.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub name: String,
    /// Its network namespace (already on the LAN, with the API relay running).
    pub netns: String,
    /// Its address on the LAN (the Node's InternalIP).
    pub address: Ipv4Addr,
    /// Its pod subnet (the bridge CNI plugin's range).
    pub pod_cidr: Ipv4Net,
    /// Its folder (configuration, sockets, `/var/lib` and `/var/log` of the node). Short:
    /// containerd's socket lives there and socket paths are limited to 107 bytes.
    pub dir: PathBuf,
    /// Its cgroup root, a single path element (`kwire-<sandbox>-<node>`).
    pub cgroup: String,
    /// The API server's port (on `127.0.0.1` and [`API_VIP`] in the node).
    pub api_port: u16,
    /// The pause image containerd uses for pod sandboxes (imported from the archives).
    pub pause_image: String,
}

/// One running kubelet node. Dropping it stops everything in it: the kubelet and kube-proxy,
/// every container (by its cgroups), containerd with its shims (by the network namespace),
/// then removes its cgroups. The node's mount namespace, and every mount in it, goes with
/// its last process.
#[derive(Debug)]
pub struct KubeletNode {
    pub spec: NodeSpec,
    containerd: Option<Child>,
    kubelet: Option<Child>,
    proxy: Option<Child>,
    cgroups: Vec<PathBuf>,
}

impl KubeletNode {
    /// The cgroup folders a node named by `spec` makes (for the crash record, before they
    /// are made).
    pub fn cgroup_dirs(spec: &NodeSpec) -> Result<Vec<PathBuf>> {
        Ok(hierarchies()?
            .into_iter()
            .map(|h| h.join(&spec.cgroup))
            .collect())
    }

    /// Starts containerd, imports `images` (OCI archives) into it, then starts the kubelet
    /// and kube-proxy. `record` is called with each started process (pid, what) before this
    /// returns, so that the crash record lists it. Returns once the processes run; the
    /// caller waits for the Node to be Ready.
    pub fn start(
        spec: NodeSpec,
        cp: &ControlPlane,
        images: &[PathBuf],
        mut record: impl FnMut(u32, &str) -> Result<()>,
    ) -> Result<Self> {
        let mut node = Self {
            cgroups: Vec::new(),
            containerd: None,
            kubelet: None,
            proxy: None,
            spec,
        };
        let dir = node.spec.dir.clone();
        for sub in ["var-lib", "var-log", "cni", "containerd"] {
            let d = dir.join(sub);
            std::fs::create_dir_all(&d).io(|| format!("creating {}", d.display()))?;
        }
        write(&dir.join("containerd.toml"), &containerd_config(&node.spec))?;
        write(
            &dir.join("cni/10-kwire-sandbox.conflist"),
            &cni_config(node.spec.pod_cidr),
        )?;
        let (cert, key) = client_certificate(
            cp,
            &dir,
            &format!("system:node:{}", node.spec.name),
            Some("system:nodes"),
        )?;
        write(
            &dir.join("kubelet.kubeconfig"),
            &kubeconfig(cp, node.spec.api_port, &cert, &key),
        )?;
        let (cert, key) = client_certificate(cp, &dir, "system:kube-proxy", None)?;
        write(
            &dir.join("kube-proxy.kubeconfig"),
            &kubeconfig(cp, node.spec.api_port, &cert, &key),
        )?;
        write(
            &dir.join("kubelet.yaml"),
            &kubelet_config(&node.spec, cp.ca_file()),
        )?;
        node.cgroups = make_cgroups(&node.spec.cgroup)?;

        // containerd, in a mount namespace of the node's own (see the module's docs).
        let log = dir.join("containerd.log");
        let mounts = format!(
            "mount --bind {lib} /var/lib && mount --bind {logs} /var/log && \
             mount -t tmpfs -o mode=755 kwire-node-run /run && exec containerd --config {conf}",
            lib = dir.join("var-lib").display(),
            logs = dir.join("var-log").display(),
            conf = dir.join("containerd.toml").display(),
        );
        let mut containerd = spawn_logged(
            // nsenter, not `ip netns exec`: that would mount a sysfs of the namespace's own
            // over /sys and hide the cgroup hierarchies the kubelet and runc need.
            Command::new("nsenter").args([
                &format!("--net=/run/netns/{}", node.spec.netns),
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                &mounts,
            ]),
            &log,
            &format!("containerd of node {}", node.spec.name),
        )?;
        let containerd_pid = containerd.id();
        record(containerd_pid, "containerd")?;
        let socket = node.socket();
        let waited = wait_until(
            &format!("containerd of node {} to listen", node.spec.name),
            Duration::from_secs(30),
            || exited(&mut containerd, &log),
            || Ok(socket.exists().then_some(())),
        );
        node.containerd = Some(containerd);
        waited?;

        for archive in images {
            run(Command::new("ctr")
                .arg("--address")
                .arg(&socket)
                .args(["--namespace", "k8s.io", "images", "import"])
                .arg(archive))?;
        }

        let kubelet_log = dir.join("kubelet.log");
        let kubelet = spawn_logged(
            node.enter()
                .arg(bin_dir().join("kubelet"))
                .arg(format!("--config={}", dir.join("kubelet.yaml").display()))
                .arg(format!(
                    "--kubeconfig={}",
                    dir.join("kubelet.kubeconfig").display()
                ))
                .arg(format!("--hostname-override={}", node.spec.name))
                .arg(format!("--node-ip={}", node.spec.address))
                .arg("--v=1"),
            &kubelet_log,
            &format!("the kubelet of node {}", node.spec.name),
        )?;
        record(kubelet.id(), "kubelet")?;
        node.kubelet = Some(kubelet);

        let proxy = spawn_logged(
            node.enter()
                .arg(bin_dir().join("kube-proxy"))
                .arg(format!(
                    "--kubeconfig={}",
                    dir.join("kube-proxy.kubeconfig").display()
                ))
                .arg(format!("--hostname-override={}", node.spec.name))
                .args([
                    "--proxy-mode=iptables",
                    &format!("--cluster-cidr={CLUSTER_CIDR}"),
                    "--healthz-bind-address=127.0.0.1:10256",
                    "--metrics-bind-address=127.0.0.1:10249",
                    // Leave the host-wide conntrack table size and timeouts alone.
                    "--conntrack-max-per-core=0",
                    "--conntrack-tcp-timeout-established=0",
                    "--conntrack-tcp-timeout-close-wait=0",
                    "--v=1",
                ]),
            &dir.join("kube-proxy.log"),
            &format!("kube-proxy of node {}", node.spec.name),
        )?;
        record(proxy.id(), "kube-proxy")?;
        node.proxy = Some(proxy);
        Ok(node)
    }

    /// containerd's socket.
    pub fn socket(&self) -> PathBuf {
        self.spec.dir.join("containerd.sock")
    }

    /// The pid of containerd, whose mount and network namespaces are the node's.
    pub fn containerd_pid(&self) -> Option<u32> {
        self.containerd.as_ref().map(Child::id)
    }

    /// A command that runs in the node's mount and network namespaces (`nsenter` into
    /// containerd's); add the program and its arguments.
    pub fn enter(&self) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!(
            "--target={}",
            self.containerd_pid().unwrap_or_default()
        ))
        .args(["--mount", "--net", "--"]);
        cmd
    }

    /// The node's logs (containerd, kubelet, kube-proxy), last `lines` of each.
    pub fn logs_tail(&self, lines: usize) -> String {
        let mut out = String::new();
        for name in ["containerd", "kubelet", "kube-proxy"] {
            let path = self.spec.dir.join(format!("{name}.log"));
            let _ = writeln!(
                out,
                "--- {} of node {} ({})\n{}",
                name,
                self.spec.name,
                path.display(),
                crate::process::tail(&path, lines)
            );
        }
        out
    }

    /// The containers' log files on this node (`/var/log/pods/…` of the node), named by
    /// pod and container.
    pub fn container_logs(&self) -> Vec<(String, PathBuf)> {
        let mut out = Vec::new();
        let pods = self.spec.dir.join("var-log/pods");
        for pod in std::fs::read_dir(&pods).into_iter().flatten().flatten() {
            for container in std::fs::read_dir(pod.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let mut files: Vec<PathBuf> = std::fs::read_dir(container.path())
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|f| f.path())
                    .collect();
                files.sort();
                if let Some(last) = files.pop() {
                    out.push((
                        format!(
                            "pod {} container {} on node {}",
                            pod.file_name().to_string_lossy(),
                            container.file_name().to_string_lossy(),
                            self.spec.name
                        ),
                        last,
                    ));
                }
            }
        }
        out
    }

    /// Stops everything of the node (see the type's docs). Safe to call twice.
    pub fn stop(&mut self) {
        for child in [self.kubelet.as_mut(), self.proxy.as_mut()]
            .into_iter()
            .flatten()
        {
            stop(child, Duration::from_secs(2));
        }
        // Containers (and pod sandboxes), whatever namespaces they are in.
        kill_cgroup_processes(&self.cgroups);
        // containerd, its shims and anything else in the node's network namespace.
        if let Some(c) = self.containerd.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        kill_until_gone(50, || crate::netns::pids_in(&self.spec.netns));
        remove_cgroups(&self.cgroups);
    }
}

impl Drop for KubeletNode {
    fn drop(&mut self) {
        self.stop();
    }
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).io(|| format!("writing {}", path.display()))
}

/// containerd's configuration for one node. Its root (images, snapshots) is in the node's
/// `/var/lib`, its state (shim sockets, FIFOs, runc's state) in the node's `/run`.
fn containerd_config(spec: &NodeSpec) -> String {
    let dir = spec.dir.display();
    format!(
        r#"version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
# Snapshotters and plugins this machine has no use for (and would warn about).
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{dir}/containerd.sock"

[ttrpc]
  address = "{dir}/containerd.sock.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.grpc.v1.cri"]
  # No registry: the pod sandbox image is imported from an archive like the others.
  sandbox_image = "{pause}"
  # This machine's processes lack CAP_SYS_RESOURCE: runc cannot lower oom_score_adj
  # below its own, and every pod sandbox would fail without this.
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "/run/containerd/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{dir}/cni"
    max_conf_num = 1

[plugins."io.containerd.internal.v1.opt"]
  path = "/var/lib/containerd/opt"
"#,
        pause = spec.pause_image,
    )
}

/// The bridge CNI network of one node: pods on `cni0` in `pod_cidr`, the bridge their
/// gateway, their traffic to the outside masqueraded.
fn cni_config(pod_cidr: Ipv4Net) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "kwire-sandbox",
        "plugins": [{
            "type": "bridge",
            "bridge": "cni0",
            "isGateway": true,
            "ipMasq": true,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{ "subnet": pod_cidr.to_string() }]],
                "routes": [{ "dst": "0.0.0.0/0" }],
            },
        }],
    })
    .to_string()
}

/// The kubelet's configuration file.
fn kubelet_config(spec: &NodeSpec, ca_file: &Path) -> String {
    format!(
        r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine mounts cgroup v1 controllers (cgroup2 beside them); kubelets from 1.35 on
# refuse that unless told otherwise. No systemd: the cgroupfs driver.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /{cgroup}
failSwapOn: false
containerRuntimeEndpoint: unix://{dir}/containerd.sock
address: {address}
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: false
  x509:
    clientCAFile: {ca}
authorization:
  mode: AlwaysAllow
# The default is a host folder; this one is in the node's own /var/lib.
volumePluginDir: /var/lib/kubelet/volumeplugins
resolvConf: /etc/resolv.conf
maxPods: 30
serializeImagePulls: false
# The images are imported, not pulled: never collect them, never evict for disk.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 1Mi
  nodefs.available: 1%
  nodefs.inodesFree: 1%
  imagefs.available: 1%
nodeStatusUpdateFrequency: 5s
shutdownGracePeriod: 0s
"#,
        cgroup = spec.cgroup,
        dir = spec.dir.display(),
        address = spec.address,
        ca = ca_file.display(),
    )
}

/// A kubeconfig for the API server through the node's relay, with a client certificate.
fn kubeconfig(cp: &ControlPlane, port: u16, cert: &str, key: &str) -> String {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    format!(
        r#"apiVersion: v1
kind: Config
clusters:
- name: sandbox
  cluster:
    server: https://127.0.0.1:{port}
    certificate-authority-data: {ca}
users:
- name: node
  user:
    client-certificate-data: {cert}
    client-key-data: {key}
contexts:
- name: sandbox
  context:
    cluster: sandbox
    user: node
current-context: sandbox
"#,
        ca = b64(cp.ca_pem()),
        cert = b64(cert),
        key = b64(key),
    )
}

/// A client certificate for `cn` (and organization `o`) signed by the control plane's CA,
/// as PEM (certificate, key). The files are made in `dir` and removed.
fn client_certificate(
    cp: &ControlPlane,
    dir: &Path,
    cn: &str,
    o: Option<&str>,
) -> Result<(String, String)> {
    let base = dir.join(format!("client-{}", cn.replace(':', "-")));
    let key = base.with_extension("key");
    let csr = base.with_extension("csr");
    let crt = base.with_extension("crt");
    let ext = base.with_extension("ext");
    let subject = match o {
        Some(o) => format!("/O={o}/CN={cn}"),
        None => format!("/CN={cn}"),
    };
    run(Command::new("openssl")
        .args([
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &subject,
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&csr))?;
    write(
        &ext,
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
    )?;
    let serial = format!(
        "0x{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    );
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "7", "-set_serial", &serial, "-in"])
        .arg(&csr)
        .arg("-CA")
        .arg(cp.ca_file())
        .arg("-CAkey")
        .arg(cp.ca_key_file())
        .arg("-extfile")
        .arg(&ext)
        .arg("-out")
        .arg(&crt))?;
    let cert = std::fs::read_to_string(&crt).io(|| format!("reading {}", crt.display()))?;
    let key_pem = std::fs::read_to_string(&key).io(|| format!("reading {}", key.display()))?;
    for f in [&key, &csr, &crt, &ext] {
        let _ = std::fs::remove_file(f);
    }
    Ok((cert, key_pem))
}

/// The cgroup hierarchies mounted under [`CGROUP_ROOT`] (each a folder with
/// `cgroup.procs`): the v1 controllers, and cgroup2 (`unified`) beside them, where runc
/// also makes the containers' cgroups on such a hybrid host. At least one must be v1.
fn hierarchies() -> Result<Vec<PathBuf>> {
    let root = Path::new(CGROUP_ROOT);
    let mut out = Vec::new();
    let mut v1 = false;
    for entry in std::fs::read_dir(root).io(|| format!("listing {CGROUP_ROOT}"))? {
        let path = entry.io(|| format!("listing {CGROUP_ROOT}"))?.path();
        if path.join("cgroup.procs").is_file() {
            v1 |= !path.join("cgroup.controllers").exists();
            out.push(path);
        }
    }
    if !v1 {
        return Err(Error::Missing(format!(
            "no cgroup v1 hierarchy under {CGROUP_ROOT}: kubelet nodes are set up for a host \
             with cgroup v1 controllers (failCgroupV1: false)"
        )));
    }
    out.sort();
    Ok(out)
}

/// Makes the cgroup root `name` in every v1 hierarchy; the cpuset one gets its parent's
/// CPUs and memory nodes (a new cpuset is empty, and nothing could run in it).
fn make_cgroups(name: &str) -> Result<Vec<PathBuf>> {
    let mut made = Vec::new();
    for h in hierarchies()? {
        let dir = h.join(name);
        std::fs::create_dir_all(&dir).io(|| format!("creating cgroup {}", dir.display()))?;
        for file in ["cpuset.cpus", "cpuset.mems"] {
            if h.join(file).is_file() {
                let value =
                    std::fs::read_to_string(h.join(file)).io(|| format!("reading {file}"))?;
                std::fs::write(dir.join(file), value.trim())
                    .io(|| format!("writing {}", dir.join(file).display()))?;
            }
        }
        made.push(dir);
    }
    Ok(made)
}

/// Every cgroup folder under `dir`, deepest first.
fn subtree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(subtree(&e.path()));
            }
        }
    }
    out.push(dir.to_path_buf());
    out
}

/// The pids in the cgroup trees of `dirs`.
pub fn cgroup_pids(dirs: &[PathBuf]) -> Vec<u32> {
    let mut pids: Vec<u32> = dirs
        .iter()
        .flat_map(|d| subtree(d))
        .filter_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
        .flat_map(|t| {
            t.lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// Kills every process in the cgroup trees of `dirs`, until none is left (5 s at most).
pub fn kill_cgroup_processes(dirs: &[PathBuf]) {
    kill_until_gone(100, || cgroup_pids(dirs));
}

/// Removes the cgroup trees of `dirs`, deepest first (a cgroup goes once its last process
/// has left; retried for up to 5 s).
pub fn remove_cgroups(dirs: &[PathBuf]) {
    for _ in 0..100 {
        let mut left = false;
        for d in dirs {
            for sub in subtree(d) {
                if sub.exists() && std::fs::remove_dir(&sub).is_err() {
                    left = true;
                }
            }
        }
        if !left {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> NodeSpec {
        NodeSpec {
            name: "b".into(),
            netns: "kwb1x0".into(),
            address: Ipv4Addr::new(10, 211, 55, 11),
            pod_cidr: "10.244.1.0/24".parse().unwrap(),
            dir: PathBuf::from("/tmp/kwire-sandbox-1-0/k1"),
            cgroup: "kwire-1-0-b".into(),
            api_port: 23456,
            pause_image: "docker.io/kwire/sandbox-pause:0.1.0".into(),
        }
    }

    #[test]
    fn containerd_listens_in_the_node_folder_and_uses_the_local_pause_image() {
        let text = containerd_config(&spec());
        assert!(text.contains(r#"address = "/tmp/kwire-sandbox-1-0/k1/containerd.sock""#));
        assert!(text.contains(r#"sandbox_image = "docker.io/kwire/sandbox-pause:0.1.0""#));
        assert!(text.contains("restrict_oom_score_adj = true"));
        assert!(text.contains(r#"conf_dir = "/tmp/kwire-sandbox-1-0/k1/cni""#));
    }

    #[test]
    fn the_kubelet_accepts_cgroup_v1_under_the_node_root() {
        let text = kubelet_config(&spec(), Path::new("/ca.crt"));
        for line in [
            "failCgroupV1: false",
            "cgroupDriver: cgroupfs",
            "cgroupRoot: /kwire-1-0-b",
            "address: 10.211.55.11",
            "containerRuntimeEndpoint: unix:///tmp/kwire-sandbox-1-0/k1/containerd.sock",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
    }

    #[test]
    fn pods_get_the_node_subnet() {
        let conf: serde_json::Value =
            serde_json::from_str(&cni_config("10.244.1.0/24".parse().unwrap())).unwrap();
        assert_eq!(
            conf["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
            "10.244.1.0/24"
        );
        assert_eq!(conf["plugins"][0]["type"], "bridge");
    }
}
