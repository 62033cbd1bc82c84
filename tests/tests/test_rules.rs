//! The integration tests wait one way: `kwire_tests::wait` (issue 16, item 12). Waiting
//! there means polling for something observable (an object's condition, a metric, the
//! kernel, a file) until a deadline; "nothing happened" means a counter that has stopped
//! moving ([`kwire_tests::wait::settled`]), never a pause of a guessed length.
//!
//! This test reads every `tests/tests/*.rs` and fails on what the rule rules out:
//!
//! - a sleep (`thread::sleep(`, `tokio::time::sleep(`, `sleep_until(`, or a bare `sleep(`
//!   after a `use`);
//! - a hand-made deadline (`Instant::now() +`, `Instant::now() <`, `.elapsed() <`,
//!   `.elapsed() >`), which is what a hand-written polling loop is built on;
//! - a function of its own named `wait_for` or `wait_until`.
//!
//! A pause that is what a test is about (a ping kept running for a window it measures, a
//! wall-clock moment a schedule is due) is allowed by a comment `// not a settle: <why>`
//! on the line or on the line above it. Comments are not code: what they say is not
//! checked. This file, which spells the patterns out, is not scanned.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

/// The comment that allows one line.
const ALLOW: &str = "// not a settle:";

/// What is ruled out, as text in a line of code, and why.
const RULED_OUT: [(&str, &str); 8] = [
    (
        "sleep(",
        "a sleep; wait for something observable with kwire_tests::wait",
    ),
    (
        "sleep_until(",
        "a sleep; wait for something observable with kwire_tests::wait",
    ),
    (
        "Instant::now() +",
        "a hand-made deadline; kwire_tests::wait keeps the time",
    ),
    (
        "Instant::now() <",
        "a hand-made deadline; kwire_tests::wait keeps the time",
    ),
    (
        ".elapsed() <",
        "a hand-made deadline; kwire_tests::wait keeps the time",
    ),
    (
        ".elapsed() >",
        "a hand-made deadline; kwire_tests::wait keeps the time",
    ),
    (
        "fn wait_for",
        "a wait_for of its own; use kwire_tests::wait::wait_for",
    ),
    (
        "fn wait_until",
        "a waiting helper of its own; use kwire_tests::wait::wait_for",
    ),
];

/// The code of a line: what comes before a `//` comment (doc comments included).
fn code(line: &str) -> &str {
    line.find("//").map_or(line, |at| &line[..at])
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Whether `pattern` occurs in `code` as whole words: `sleep(` in `std::thread::sleep(`
/// or `sleep(`, not in `no_sleep(`; `fn wait_for` in `fn wait_for<T>(`, not in
/// `fn wait_for_ping(`.
fn occurs(code: &str, pattern: &str) -> bool {
    code.match_indices(pattern).any(|(at, _)| {
        let before = code[..at].chars().next_back();
        let after = code[at + pattern.len()..].chars().next();
        let starts_a_word = !pattern.starts_with(is_word) || !before.is_some_and(is_word);
        let ends_a_word = !pattern.ends_with(is_word) || !after.is_some_and(is_word);
        starts_a_word && ends_a_word
    })
}

/// The rule's findings in one file's text, as `line number: line (why)`.
fn findings(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let allowed = line.contains(ALLOW) || (i > 0 && lines[i - 1].trim().starts_with(ALLOW));
        if allowed {
            continue;
        }
        for (pattern, why) in RULED_OUT {
            if occurs(code(line), pattern) {
                found.push(format!("{}: {} ({why})", i + 1, line.trim()));
                break;
            }
        }
    }
    found
}

fn test_files() -> Result<Vec<PathBuf>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let scanned = path.extension().is_some_and(|e| e == "rs")
            && path.file_name().is_some_and(|n| n != "test_rules.rs");
        if scanned {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

#[test]
fn the_tests_wait_only_with_kwire_tests_wait() -> Result<()> {
    let files = test_files()?;
    assert!(
        files.len() > 10,
        "found only {} test files: {files:?}",
        files.len()
    );
    let mut found = Vec::new();
    for path in &files {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        found.extend(findings(&text).into_iter().map(|f| format!("{name}:{f}")));
    }
    assert!(
        found.is_empty(),
        "{} waits outside kwire_tests::wait (allow one that is not a settle with \
         `{ALLOW} <why>` on its line or the line above):\n{}",
        found.len(),
        found.join("\n")
    );
    Ok(())
}

#[test]
fn the_rule_finds_sleeps_deadlines_and_own_helpers_and_allows_what_is_marked() {
    let text = "\
fn a() {
    std::thread::sleep(Duration::from_secs(2));
    tokio::time::sleep(Duration::from_millis(200)).await;
    sleep(Duration::from_secs(1));
    let deadline = Instant::now() + Duration::from_secs(60);
    ensure!(start.elapsed() < CONVERGE);
    // The shell has started its `sleep`: std::thread::sleep(x) in a comment is no code.
    no_sleep(3);
    std::thread::sleep(window); // not a settle: the pings run for the window they measure
    // not a settle: the rotation is due at a wall-clock moment
    std::thread::sleep(until_due);
    let took = began.elapsed();
}
fn wait_for<T>(timeout: Duration) {}
fn wait_until(what: &str) {}
fn wait_for_ping() {}
fn wait_current() {}
";
    let lines: Vec<usize> = findings(text)
        .iter()
        .map(|f| f.split(':').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(lines, [2, 3, 4, 5, 6, 14, 15]);
}
