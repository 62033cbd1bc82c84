//! The API through a real kube-apiserver: the generated CRDs install and become Established,
//! every example applies, and every manifest of the bad-input matrix is rejected with a message
//! that names its field, while the valid edge cases are accepted.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;
use std::time::Duration;

use kwire_tests::control_plane::ControlPlane;
use kwire_tests::wait::wait_for;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn control_plane() -> &'static ControlPlane {
    let cp = ControlPlane::shared_blocking().expect("local control plane");
    static CRDS: OnceLock<()> = OnceLock::new();
    CRDS.get_or_init(|| install_crds(cp));
    cp
}

fn kubectl(cp: &ControlPlane, args: &[&str]) -> Output {
    cp.kubectl().args(args).output().expect("kubectl runs")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn install_crds(cp: &ControlPlane) {
    let crds = repo().join(kwire_crds::crd::GENERATED_PATH);
    let out = kubectl(
        cp,
        &["apply", "--server-side", "-f", crds.to_str().unwrap()],
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
            "crd/meshes.kwire.dev",
        ],
    );
    assert!(out.status.success(), "CRDs not Established: {}", text(&out));
    // Established does not mean discovery has caught up; kubectl reads discovery.
    let mut listed = String::new();
    wait_for(
        "discovery to list the five kwire CRDs",
        Duration::from_secs(30),
        || {
            listed = text(&kubectl(
                cp,
                &["api-resources", "--categories=kwire", "-o", "name"],
            ));
            let kwire = listed.lines().filter(|l| l.ends_with(".kwire.dev")).count();
            Ok((kwire == kwire_crds::crd::all().len()).then_some(()))
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}; kubectl api-resources said: {listed}"));
}

/// A namespace deleted (without waiting) when the test ends, even by a panic.
struct Namespace<'a> {
    cp: &'a ControlPlane,
    name: String,
}

impl<'a> Namespace<'a> {
    fn new(cp: &'a ControlPlane, prefix: &str) -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("{prefix}-{}-{n}", std::process::id());
        let out = kubectl(cp, &["create", "namespace", &name]);
        assert!(out.status.success(), "{}", text(&out));
        Self { cp, name }
    }
}

impl Drop for Namespace<'_> {
    fn drop(&mut self) {
        let _ = kubectl(
            self.cp,
            &["delete", "namespace", &self.name, "--wait=false"],
        );
    }
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .flat_map(|p| if p.is_dir() { yaml_files(&p) } else { vec![p] })
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn header(path: &Path, key: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("# {key}: ")).map(str::to_owned))
        .unwrap_or_else(|| panic!("{} lacks '# {key}:'", path.display()))
}

/// The documents of a manifest, each as its own temporary file (for update cases).
fn split_documents(path: &Path, dir: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string(path).unwrap();
    text.split("\n---\n")
        .enumerate()
        .map(|(i, doc)| {
            let file = dir.join(format!(
                "{}-{i}.yaml",
                path.file_stem().unwrap().to_string_lossy()
            ));
            std::fs::write(&file, doc).unwrap();
            file
        })
        .collect()
}

#[test]
fn crds_are_established_listed_and_explained() {
    let cp = control_plane();
    let ns = Namespace::new(cp, "crds");
    let out = kubectl(cp, &["get", "kwire", "-n", &ns.name]);
    assert!(out.status.success(), "kubectl get kwire: {}", text(&out));

    let out = kubectl(cp, &["api-resources", "--categories=kwire", "-o", "name"]);
    let listed = text(&out);
    for resource in [
        "networks.kwire.dev",
        "interfaces.kwire.dev",
        "peers.kwire.dev",
        "routes.kwire.dev",
        "meshes.kwire.dev",
    ] {
        assert!(
            listed.contains(resource),
            "{resource} missing from the kwire category: {listed}"
        );
    }

    // The API server publishes a new CRD's OpenAPI schema (what `explain` reads) a moment
    // after the CRD is Established, so the first tries may not find it yet; any other
    // failure ends the wait.
    let mut said = String::new();
    let (explained, _) = wait_for(
        "kubectl explain interface.spec",
        Duration::from_secs(60),
        || {
            let out = kubectl(cp, &["explain", "interface.spec"]);
            said = text(&out);
            if out.status.success() {
                return Ok(Some(said.clone()));
            }
            assert!(said.contains("couldn't find resource"), "{said}");
            Ok(None)
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}; kubectl explain said: {said}"));
    for needle in [
        "nodeName",
        "deviceName",
        "listenPort",
        "The Kubernetes Node that hosts the device",
    ] {
        assert!(
            explained.contains(needle),
            "kubectl explain interface.spec lacks {needle}:\n{explained}"
        );
    }
}

#[test]
fn every_example_applies_with_server_side_apply() {
    let cp = control_plane();
    let ns = Namespace::new(cp, "examples");
    // examples/mesh/*.nodes.yaml are node lists for the offline tools (kwire lint, plan,
    // graph; cli/tests/offline.rs runs them), not objects to apply; the Meshes beside them
    // are applied like every other example.
    let examples: Vec<PathBuf> = yaml_files(&repo().join("examples"))
        .into_iter()
        .filter(|p| !p.to_string_lossy().ends_with(".nodes.yaml"))
        .collect();
    assert!(!examples.is_empty());
    for (i, example) in examples.iter().enumerate() {
        // Each example in its own namespace: several reuse the seed's object names.
        let own = Namespace::new(cp, &format!("example{i}"));
        let file = example.to_str().unwrap();
        for dry_run in [true, false] {
            let mut args = vec!["apply", "--server-side", "-n", &own.name, "-f", file];
            if dry_run {
                args.push("--dry-run=server");
            }
            let out = kubectl(cp, &args);
            assert!(
                out.status.success(),
                "{} (dry run: {dry_run}): {}",
                example.display(),
                text(&out)
            );
        }
        let out = kubectl(cp, &["get", "kwire", "-n", &own.name, "-o", "name"]);
        assert!(
            !text(&out).trim().is_empty(),
            "{} created nothing",
            example.display()
        );
    }
    drop(ns);
}

#[test]
fn bad_manifests_are_rejected_naming_the_field_and_edge_cases_are_accepted() {
    let cp = control_plane();
    let ns = Namespace::new(cp, "matrix");
    let scratch = tempdir();
    let mut table = Vec::new();
    let mut failures = Vec::new();

    let bad = yaml_files(&repo().join("tests/bad-manifests"));
    assert!(
        bad.len() >= 40,
        "the matrix needs at least 40 bad manifests, has {}",
        bad.len()
    );
    for path in &bad {
        let (field, message) = (header(path, "field"), header(path, "message"));
        let docs = split_documents(path, &scratch);
        let target = if docs.len() == 2 {
            // An update: create the first document for real in a namespace of its own.
            let own = Namespace::new(cp, "update");
            let out = kubectl(
                cp,
                &[
                    "apply",
                    "--server-side",
                    "-n",
                    &own.name,
                    "-f",
                    docs[0].to_str().unwrap(),
                ],
            );
            assert!(
                out.status.success(),
                "{}: the original must be accepted: {}",
                path.display(),
                text(&out)
            );
            let out = kubectl(
                cp,
                &[
                    "apply",
                    "--server-side",
                    "-n",
                    &own.name,
                    "-f",
                    docs[1].to_str().unwrap(),
                ],
            );
            (out, own.name.clone())
        } else {
            let out = kubectl(
                cp,
                &[
                    "apply",
                    "--server-side",
                    "--dry-run=server",
                    "-n",
                    &ns.name,
                    "-f",
                    path.to_str().unwrap(),
                ],
            );
            (out, ns.name.clone())
        };
        let (out, _) = target;
        let said = text(&out).trim().replace('\n', " ");
        let named = said.contains(&field) && said.contains(&message);
        table.push((
            path.file_name().unwrap().to_string_lossy().to_string(),
            !out.status.success(),
            said.clone(),
        ));
        if out.status.success() || !named {
            failures.push(format!(
                "{}: expected rejection naming '{field}' and '{message}', got: {said}",
                path.display()
            ));
        }
    }
    for path in yaml_files(&repo().join("tests/valid-manifests")) {
        let out = kubectl(
            cp,
            &[
                "apply",
                "--server-side",
                "--dry-run=server",
                "-n",
                &ns.name,
                "-f",
                path.to_str().unwrap(),
            ],
        );
        table.push((
            path.file_name().unwrap().to_string_lossy().to_string(),
            !out.status.success(),
            text(&out).trim().replace('\n', " "),
        ));
        if !out.status.success() {
            failures.push(format!(
                "{}: valid edge cases were rejected: {}",
                path.display(),
                text(&out)
            ));
        }
    }

    println!("\n{:<58} {:<9} message", "file", "result");
    for (file, rejected, said) in &table {
        let verdict = if *rejected { "rejected" } else { "accepted" };
        let said = said
            .split_once(" is invalid: ")
            .map_or(said.as_str(), |(_, m)| m);
        println!(
            "{file:<58} {verdict:<9} {}",
            said.chars().take(160).collect::<String>()
        );
    }
    let _ = std::fs::remove_dir_all(&scratch);
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        table.len(),
        failures.join("\n")
    );
}

fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kwire-matrix-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
