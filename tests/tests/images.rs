//! The container images that `scripts/build-images.sh` writes as OCI image
//! archives: their names, configs and contents, and their programs run
//! inside their own root file systems with `runc`.
//!
//! `cargo test -p kwire-tests --test images -- --nocapture`. Reads the
//! archives from `target/images/` (or `KWIRE_IMAGES_DIR`); it does not build
//! them and fails, naming the command, when they are missing. Needs root
//! (`runc`, root-owned files), `umoci`, `runc` and `tar`.
//!
//! For each archive: the index names the image as `ctr images import` and
//! `skopeo` read it; the image config has the entrypoint, user, PATH and
//! labels the chart and the release expect; `umoci unpack` makes an OCI
//! runtime bundle of it, whose root file system must hold what the program
//! needs and nothing of the build host; then `runc` runs the program (read-only
//! root, the image's user) and the pause image is stopped with SIGTERM and
//! SIGINT.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, ensure};
use kwire_tests::kubelet::{chart_app_version, images_dir};
use kwire_tests::wait::wait_for;
use serde_json::Value;

/// The chart's appVersion: the images' tag.
fn app_version() -> Result<String> {
    Ok(chart_app_version()?)
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
        .with_context(|| format!("running {} (is it installed?)", describe(cmd)))
}

/// Runs `cmd` and returns its stdout and stderr together, or fails with them.
fn run_ok(cmd: &mut Command) -> Result<String> {
    let out = output(cmd)?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        out.status.success(),
        "{} failed ({}):\n{text}",
        describe(cmd),
        out.status
    );
    Ok(text)
}

fn read_json(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// A scratch folder for one image: the unpacked layout, the runtime bundle and
/// runc's state. Dropping it deletes every container runc still knows there
/// (which also removes their cgroups), then the folder.
struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn new(name: &str) -> Result<Self> {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("images-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self { dir })
    }

    fn layout(&self) -> PathBuf {
        self.dir.join("layout")
    }

    fn bundle(&self) -> PathBuf {
        self.dir.join("bundle")
    }

    fn rootfs(&self) -> PathBuf {
        self.bundle().join("rootfs")
    }

    /// `runc` with its state in this folder, not in /run/runc.
    fn runc(&self) -> Command {
        let mut cmd = Command::new("runc");
        cmd.arg("--root").arg(self.dir.join("runc-state"));
        cmd
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Ok(out) = self.runc().args(["list", "--quiet"]).output() {
            for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = self.runc().args(["delete", "--force", id]).output();
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("could not remove {}: {e}", self.dir.display());
        }
    }
}

/// What one image must be.
struct Expected {
    /// `kwire-<file>-<version>.oci.tar`, `docker.io/kwire/<file>:<version>`.
    file: &'static str,
    entrypoint: &'static [&'static str],
    uid: u64,
    gid: u64,
    /// Files the root file system must have.
    present: &'static [&'static str],
    /// Files it must not have.
    absent: &'static [&'static str],
}

/// What `scripts/build-images.sh` removes from every root file system: the
/// build host's resolver and name, and apt's state.
const NOTHING_OF_THE_HOST: &[&str] = &[
    "etc/resolv.conf",
    "etc/hostname",
    "etc/apt",
    "var/lib/apt",
    "var/cache/apt",
];

const OPERATOR: Expected = Expected {
    file: "operator",
    entrypoint: &["/usr/local/bin/kwire-operator"],
    uid: 65532,
    gid: 65532,
    present: &[
        "usr/local/bin/kwire-operator",
        "lib64/ld-linux-x86-64.so.2",
        "var/lib/dpkg/status.d/libc6",
        "var/lib/dpkg/status.d/libgcc-s1",
        "usr/share/doc/libc6/copyright",
    ],
    // The binary and its C runtime only: no shell, no package manager.
    absent: &[
        "bin/sh",
        "usr/bin/sh",
        "bin/bash",
        "usr/bin/dpkg",
        "usr/bin/apt",
    ],
};

const NODE: Expected = Expected {
    file: "node",
    entrypoint: &["/usr/local/bin/kwire-node"],
    uid: 0,
    gid: 0,
    present: &[
        "usr/local/bin/kwire-node",
        "usr/bin/wireguard-go",
        "usr/bin/wg",
        "bin/ip",
        "var/lib/dpkg/status.d/wireguard-go",
        "var/lib/dpkg/status.d/wireguard-tools",
        "var/lib/dpkg/status.d/iproute2",
    ],
    absent: &["usr/bin/dpkg", "usr/bin/apt", "usr/share/man"],
};

const PAUSE: Expected = Expected {
    file: "sandbox-pause",
    entrypoint: &["/bin/busybox", "sh", "-c"],
    uid: 65535,
    gid: 65535,
    present: &["bin/busybox", "var/lib/dpkg/status.d/busybox-static"],
    // busybox alone: no libraries, no users.
    absent: &["lib", "lib64", "etc/passwd", "usr/lib"],
};

/// Unpacks the archive of `expected` into `scratch` and checks its index,
/// config and root file system; returns the image config.
fn unpack_and_check(expected: &Expected, version: &str, scratch: &Scratch) -> Result<Value> {
    let archive = images_dir().join(format!("kwire-{}-{version}.oci.tar", expected.file));
    ensure!(
        archive.is_file(),
        "{} is missing: build the images first with `bash scripts/build-images.sh` \
         (or point KWIRE_IMAGES_DIR at the folder given to its --out)",
        archive.display()
    );
    let name = format!("docker.io/kwire/{}:{version}", expected.file);
    println!("{}: {name}", archive.display());

    let layout = scratch.layout();
    std::fs::create_dir_all(&layout)?;
    run_ok(
        Command::new("tar")
            .arg("-xf")
            .arg(&archive)
            .arg("-C")
            .arg(&layout),
    )?;

    // The index: one manifest, named for containerd and tagged for skopeo.
    let index = read_json(&layout.join("index.json"))?;
    let manifests = index["manifests"]
        .as_array()
        .ok_or_else(|| anyhow!("index.json has no manifests: {index}"))?;
    ensure!(manifests.len() == 1, "one manifest expected: {index}");
    let annotations = &manifests[0]["annotations"];
    ensure!(
        annotations["io.containerd.image.name"] == name.as_str(),
        "io.containerd.image.name should be {name}: {annotations}"
    );
    ensure!(
        annotations["org.opencontainers.image.ref.name"] == version,
        "org.opencontainers.image.ref.name should be {version}: {annotations}"
    );

    // The image config.
    let blob = |digest: &Value| -> Result<Value> {
        let digest = digest
            .as_str()
            .and_then(|d| d.strip_prefix("sha256:"))
            .ok_or_else(|| anyhow!("not a sha256 digest: {digest}"))?;
        read_json(&layout.join("blobs/sha256").join(digest))
    };
    let manifest = blob(&manifests[0]["digest"])?;
    let image = blob(&manifest["config"]["digest"])?;
    let config = &image["config"];
    ensure!(image["os"] == "linux" && image["architecture"] == "amd64");
    let entrypoint: Vec<&str> = config["Entrypoint"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    ensure!(
        entrypoint.starts_with(expected.entrypoint),
        "entrypoint {entrypoint:?} should start with {:?}",
        expected.entrypoint
    );
    ensure!(
        config["User"] == format!("{}:{}", expected.uid, expected.gid).as_str(),
        "user should be {}:{}: {}",
        expected.uid,
        expected.gid,
        config["User"]
    );
    ensure!(
        config["Env"]
            .as_array()
            .is_some_and(|env| env.iter().any(|e| e
                .as_str()
                .is_some_and(|e| e.starts_with("PATH=") && e.contains("/usr/bin")))),
        "no PATH in {}",
        config["Env"]
    );
    let labels = &config["Labels"];
    ensure!(
        labels["org.opencontainers.image.version"] == version,
        "labels: {labels}"
    );
    ensure!(
        labels["org.opencontainers.image.source"]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "labels: {labels}"
    );

    // The runtime bundle and its root file system.
    run_ok(
        Command::new("umoci")
            .arg("unpack")
            .arg("--image")
            .arg(format!("{}:{version}", layout.display()))
            .arg(scratch.bundle()),
    )?;
    let rootfs = scratch.rootfs();
    for path in expected.present {
        ensure!(
            std::fs::symlink_metadata(rootfs.join(path)).is_ok(),
            "{name} lacks /{path}; it has: {}",
            listing(&rootfs)
        );
    }
    for path in expected.absent.iter().chain(NOTHING_OF_THE_HOST) {
        ensure!(
            std::fs::symlink_metadata(rootfs.join(path)).is_err(),
            "{name} should not have /{path}"
        );
    }
    let bundle = read_json(&scratch.bundle().join("config.json"))?;
    let user = &bundle["process"]["user"];
    ensure!(
        user["uid"] == expected.uid && user["gid"] == expected.gid,
        "umoci's runtime config runs {name} as {user}, not {}:{}",
        expected.uid,
        expected.gid
    );
    println!(
        "  entrypoint {entrypoint:?}, user {}, {} files",
        config["User"],
        count_files(&rootfs)?
    );
    Ok(image)
}

/// The top two levels of a root file system, for error messages.
fn listing(rootfs: &Path) -> String {
    let mut names = Vec::new();
    for top in std::fs::read_dir(rootfs).into_iter().flatten().flatten() {
        let name = top.file_name().to_string_lossy().into_owned();
        names.push(name.clone());
        for sub in std::fs::read_dir(top.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            names.push(format!("{name}/{}", sub.file_name().to_string_lossy()));
        }
    }
    names.sort();
    names.join(" ")
}

fn count_files(dir: &Path) -> Result<usize> {
    let mut n = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        n += 1;
        if entry.file_type()?.is_dir() {
            n += count_files(&entry.path())?;
        }
    }
    Ok(n)
}

/// Points the bundle's process at `args`, without a terminal, on a read-only
/// root (as the chart runs both images).
fn set_process(scratch: &Scratch, args: &[&str]) -> Result<()> {
    let path = scratch.bundle().join("config.json");
    let mut config = read_json(&path)?;
    config["process"]["args"] = args.iter().map(|a| Value::from(*a)).collect();
    config["process"]["terminal"] = Value::Bool(false);
    config["root"]["readonly"] = Value::Bool(true);
    std::fs::write(&path, serde_json::to_vec_pretty(&config)?)
        .with_context(|| format!("writing {}", path.display()))
}

/// Runs `args` in the image's root file system with `runc run` and returns
/// what it printed.
fn run_in_image(scratch: &Scratch, id: &str, args: &[&str]) -> Result<String> {
    set_process(scratch, args)?;
    let mut cmd = scratch.runc();
    cmd.args(["run", "--bundle"]).arg(scratch.bundle()).arg(id);
    let text = run_ok(&mut cmd).with_context(|| format!("running {args:?} in the image"))?;
    println!(
        "  runc: {} -> {}",
        args.join(" "),
        text.lines().next().unwrap_or("")
    );
    Ok(text)
}

fn require_root() -> Result<()> {
    let out = run_ok(Command::new("id").arg("-u"))?;
    ensure!(
        out.trim() == "0",
        "the image tests need root (runc, root-owned files in the images); run them as root"
    );
    Ok(())
}

#[test]
fn operator_image_runs_its_binary_as_non_root_with_nothing_else() -> Result<()> {
    require_root()?;
    let version = app_version()?;
    let scratch = Scratch::new("operator")?;
    unpack_and_check(&OPERATOR, &version, &scratch)?;
    let id = format!("kwire-images-operator-{}", std::process::id());
    let out = run_in_image(
        &scratch,
        &id,
        &["/usr/local/bin/kwire-operator", "--version"],
    )?;
    ensure!(
        out.trim() == format!("kwire-operator {version}"),
        "kwire-operator --version printed {out:?}"
    );
    let help = run_in_image(&scratch, &id, &["/usr/local/bin/kwire-operator", "--help"])?;
    ensure!(help.contains("Usage:"), "kwire-operator --help: {help}");
    Ok(())
}

#[test]
fn node_image_runs_its_binary_and_carries_wireguard_go_wg_and_ip() -> Result<()> {
    require_root()?;
    let version = app_version()?;
    let scratch = Scratch::new("node")?;
    unpack_and_check(&NODE, &version, &scratch)?;
    let id = format!("kwire-images-node-{}", std::process::id());
    let out = run_in_image(&scratch, &id, &["/usr/local/bin/kwire-node", "--version"])?;
    ensure!(
        out.trim() == format!("kwire-node {version}"),
        "kwire-node --version printed {out:?}"
    );
    // The tools the daemon runs or an operator uses through `kubectl exec`,
    // found through the image's PATH, with their libraries.
    let wg = run_in_image(&scratch, &id, &["wg", "--version"])?;
    ensure!(wg.contains("wireguard-tools"), "wg --version: {wg}");
    let wireguard_go = run_in_image(&scratch, &id, &["wireguard-go", "--version"])?;
    ensure!(
        wireguard_go.contains("wireguard-go"),
        "wireguard-go --version: {wireguard_go}"
    );
    let ip = run_in_image(&scratch, &id, &["ip", "-V"])?;
    ensure!(ip.contains("iproute2"), "ip -V: {ip}");
    // ip reaches netlink: the container's own loopback device.
    let links = run_in_image(&scratch, &id, &["ip", "-o", "link", "show"])?;
    ensure!(links.contains("lo:"), "ip link show: {links}");
    Ok(())
}

/// The state of container `id` as runc reports it (`running`, `stopped`).
fn runc_status(scratch: &Scratch, id: &str) -> Result<String> {
    let out = output(scratch.runc().args(["state", id]))?;
    ensure!(
        out.status.success(),
        "runc state {id}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let state: Value = serde_json::from_slice(&out.stdout)?;
    state["status"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("runc state {id}: {state}"))
}

#[test]
fn sandbox_pause_image_waits_and_exits_on_sigterm_and_sigint() -> Result<()> {
    require_root()?;
    let version = app_version()?;
    let scratch = Scratch::new("sandbox-pause")?;
    let image = unpack_and_check(&PAUSE, &version, &scratch)?;
    let entrypoint: Vec<String> = image["config"]["Entrypoint"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect();
    let args: Vec<&str> = entrypoint.iter().map(String::as_str).collect();
    ensure!(
        args.len() == 4,
        "the pause entrypoint should be busybox sh -c SCRIPT: {args:?}"
    );
    for signal in ["TERM", "INT"] {
        let id = format!("kwire-images-pause-{signal}-{}", std::process::id());
        set_process(&scratch, &args)?;
        // A detached container keeps runc's stdout and stderr: a file, not a
        // pipe that would never close.
        let log_path = scratch.dir.join(format!("{id}.log"));
        let log = std::fs::File::create(&log_path)?;
        let mut run = scratch.runc();
        run.args(["run", "--detach", "--bundle"])
            .arg(scratch.bundle())
            .arg(&id)
            .stdout(log.try_clone()?)
            .stderr(log);
        let status = run.stdin(Stdio::null()).status()?;
        ensure!(
            status.success(),
            "{} failed ({status}): {}",
            describe(&run),
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        // The shell has set its trap once it has started its `sleep`: only
        // then is the signal sure to be handled (PID 1 drops signals it has
        // no handler for).
        wait_for(
            "the pause shell to start sleep",
            Duration::from_secs(20),
            || {
                let ps = run_ok(scratch.runc().args(["ps", &id]))?;
                Ok(ps.contains("sleep").then_some(()))
            },
        )?;
        ensure!(runc_status(&scratch, &id)? == "running");
        run_ok(scratch.runc().args(["kill", &id, signal]))?;
        let (_, took) = wait_for(
            &format!("the pause container to stop on SIG{signal}"),
            Duration::from_secs(20),
            || Ok((runc_status(&scratch, &id)? == "stopped").then_some(())),
        )?;
        println!("  SIG{signal}: stopped after {took:?}");
        run_ok(scratch.runc().args(["delete", &id]))?;
    }
    Ok(())
}
