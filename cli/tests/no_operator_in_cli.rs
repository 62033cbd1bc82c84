//! The `kwire` binary links no operator code (issue 15): what it shares with the operator
//! (the world, IPAM, Peer resolution, the topology checks) comes from `kwire-mesh`, which is
//! pure. This test fails if `kwire-cli` depends on `kwire-operator` again, directly or
//! through another crate of the workspace, as a normal dependency (dev-dependencies, such as
//! the test helpers, are not linked into the binary and are not followed).
//!
//! It reads the workspace's own manifests through `cargo metadata --no-deps`, which needs no
//! registry and no build: only workspace crates can depend on a path crate of the workspace,
//! so following their normal dependencies is enough.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::{Value, json};

const CLI: &str = "kwire-cli";
const OPERATOR: &str = "kwire-operator";

/// The chain of normal dependencies from `from` to `to` among the workspace crates of
/// `metadata` (the output of `cargo metadata --no-deps`), if there is one.
fn dependency_chain(metadata: &Value, from: &str, to: &str) -> Option<Vec<String>> {
    let mut normal: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for package in metadata["packages"].as_array().expect("packages") {
        let name = package["name"].as_str().expect("package name");
        let deps = package["dependencies"].as_array().expect("dependencies");
        let linked = deps
            .iter()
            // `kind` is null for [dependencies], "dev" or "build" for the others.
            .filter(|d| d["kind"].is_null())
            .map(|d| d["name"].as_str().expect("dependency name"));
        normal.entry(name).or_default().extend(linked);
    }
    // Depth first from `from`, remembering the way back.
    let mut seen = BTreeSet::from([from]);
    let mut stack = vec![vec![from]];
    while let Some(path) = stack.pop() {
        let last = *path.last().expect("non-empty path");
        if last == to {
            return Some(path.iter().map(ToString::to_string).collect());
        }
        for &next in normal.get(last).into_iter().flatten() {
            if seen.insert(next) {
                let mut longer = path.clone();
                longer.push(next);
                stack.push(longer);
            }
        }
    }
    None
}

#[test]
fn the_cli_does_not_link_the_operator() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(&cargo)
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap_or_else(|e| panic!("running {cargo} metadata: {e}"));
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: Value = serde_json::from_slice(&output.stdout).expect("cargo metadata JSON");
    let names: Vec<&str> = metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    // Both ends must be there, or the search below would pass by finding nothing.
    assert!(
        names.contains(&CLI),
        "{CLI} not in the workspace: {names:?}"
    );
    assert!(
        names.contains(&OPERATOR),
        "{OPERATOR} not in the workspace: {names:?}"
    );
    if let Some(chain) = dependency_chain(&metadata, CLI, OPERATOR) {
        panic!(
            "the kwire binary links the operator through {}; take what it needs from kwire-mesh",
            chain.join(" → ")
        );
    }
}

fn package(name: &str, deps: &[(&str, Option<&str>)]) -> Value {
    let deps: Vec<Value> = deps
        .iter()
        .map(|(name, kind)| json!({"name": name, "kind": kind}))
        .collect();
    json!({"name": name, "dependencies": deps})
}

#[test]
fn the_search_follows_normal_dependencies_only() {
    let metadata = json!({"packages": [
        package("cli", &[("serde", None), ("lib", None), ("helpers", Some("dev"))]),
        package("lib", &[("pure", None), ("gen", Some("build"))]),
        package("pure", &[("lib", None)]),
        package("helpers", &[("operator", None)]),
        package("gen", &[("operator", None)]),
        package("operator", &[("pure", None)]),
    ]});
    // Through dev- and build-dependencies only: not linked.
    assert_eq!(dependency_chain(&metadata, "cli", "operator"), None);
    // A cycle does not loop; a chain of normal dependencies is found and named.
    assert_eq!(
        dependency_chain(&metadata, "cli", "pure"),
        Some(vec!["cli".into(), "lib".into(), "pure".into()])
    );
    let mut direct = metadata.clone();
    direct["packages"][2] = package("pure", &[("operator", None)]);
    assert_eq!(
        dependency_chain(&direct, "cli", "operator"),
        Some(vec![
            "cli".into(),
            "lib".into(),
            "pure".into(),
            "operator".into()
        ])
    );
}
