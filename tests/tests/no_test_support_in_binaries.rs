//! The production binaries carry no test support: no fake dataplane, no injected
//! failures, no fail points. Test support lives behind `cfg(test)` (or a `testing` cargo
//! feature that no production build enables), so none of its code, and none of its
//! messages, reaches `kwire-node`, `kwire-operator` or the `kwire` CLI.
//!
//! The test reads the binaries that `cargo build --workspace --bins` left in
//! `target/debug` (the README's test command builds them before it runs the tests) and
//! looks for strings that only test support contains: its error messages, and its type
//! names, which would appear in the symbol table of any code of it that was linked in.

use anyhow::{Context as _, Result};
use kwire_tests::sandbox::workspace_binary;

/// The production binaries of the workspace.
const BINARIES: [&str; 4] = ["kwire-node", "kwire-operator", "kwire", "kubectl-kwire"];

/// Strings found only in test support.
const MARKERS: [&str; 4] = [
    // The node daemon's fake dataplane, its injected observe and apply failures, and the
    // error it turns a refusal of the kernel model into.
    "RecordingDataplane",
    "injected failure",
    "rejected by the model",
    // The node daemon's fail points in its status report task. (The operator's injected
    // task failures say "injected failure in …" too; its production builds keep only an
    // empty `Faults` type whose hooks change nothing.)
    "fail_points",
];

/// Where `needle` occurs in `haystack`, if it does.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    let mut from = 0;
    while let Some(i) = haystack[from..].iter().position(|&b| b == first) {
        let at = from + i;
        if haystack[at + 1..].starts_with(rest) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

#[test]
fn the_production_binaries_contain_no_test_support() -> Result<()> {
    let mut found = Vec::new();
    for name in BINARIES {
        let path = workspace_binary(name)?;
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        for marker in MARKERS {
            if let Some(at) = find(&bytes, marker.as_bytes()) {
                found.push(format!("{} has {marker:?} at byte {at}", path.display()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "test support compiled into production binaries:\n{}",
        found.join("\n")
    );
    Ok(())
}

#[test]
fn the_search_finds_a_marker_anywhere_and_only_where_it_is() {
    let bytes = b"\0\x7fELF..injected failur\0injected failure\xff";
    assert_eq!(find(bytes, b"injected failure"), Some(23));
    assert_eq!(find(b"injected failure", b"injected failure"), Some(0));
    assert_eq!(find(b"injected failur", b"injected failure"), None);
    assert_eq!(find(b"", b"Faults"), None);
}
