//! The validation matrix, offline: every manifest under `tests/bad-manifests/` is rejected
//! with the field and message its header names, every manifest under
//! `tests/valid-manifests/` and `examples/` is accepted. The same files go through a real
//! API server in the `kwire-tests` crate; this copy runs in milliseconds and keeps
//! `kwire lint` honest.

use std::path::{Path, PathBuf};

use kwire_crds::manifest::validate_like_api_server;
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .flat_map(|p| if p.is_dir() { yaml_files(&p) } else { vec![p] })
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_saphyr::from_multiple::<Value>(&text)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

fn header(path: &Path, key: &str) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("# {key}: ")))
        .unwrap_or_else(|| panic!("{} has no '# {key}:' line", path.display()))
        .to_string()
}

#[test]
fn every_bad_manifest_is_rejected_naming_its_field() {
    let files = yaml_files(&repo().join("tests/bad-manifests"));
    assert!(
        files.len() >= 40,
        "the matrix needs at least 40 bad manifests"
    );
    let mut failures = Vec::new();
    for path in &files {
        let (field, message) = (header(path, "field"), header(path, "message"));
        let docs = documents(path);
        let problems = match docs.as_slice() {
            [object] => validate_like_api_server(object, None),
            [old, new] => {
                let on_create = validate_like_api_server(old, None);
                assert!(
                    on_create.is_empty(),
                    "{}: first document must be valid: {on_create:?}",
                    path.display()
                );
                validate_like_api_server(new, Some(old))
            }
            _ => panic!("{}: one document, or two for an update", path.display()),
        };
        let named = problems
            .iter()
            .any(|p| p.contains(&field) && p.contains(&message));
        if !named {
            failures.push(format!(
                "{}: expected '{field}' and '{message}', got {problems:?}",
                path.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn valid_edge_cases_and_examples_are_accepted() {
    let mut files = yaml_files(&repo().join("tests/valid-manifests"));
    files.extend(yaml_files(&repo().join("examples")));
    assert!(files.len() >= 5);
    let mut failures = Vec::new();
    for path in &files {
        for object in documents(path) {
            let problems = validate_like_api_server(&object, None);
            if !problems.is_empty() {
                failures.push(format!("{}: {problems:?}", path.display()));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
