//! Issue 16, item 3: a `publicKey` that is not a WireGuard key is refused when the
//! manifest is read, with a message, by every offline command; `kwire graph -f` used to
//! panic on a non-ASCII one (it cut the key at a byte that was inside a character).

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

/// 44 characters, as long as a real key, but with multi-byte characters: the first 8
/// bytes end inside the 'é'.
const NON_ASCII_KEY: &str = "OgbUF/Eé1zi9qHf5h9H6N/iM92nnNYgRtOMhReFm730=";

fn manifest(key: &str) -> String {
    format!(
        "apiVersion: kwire.dev/v1alpha1
kind: Interface
metadata: {{name: gateway-wg0}}
spec: {{nodeName: gw, listenPort: 51820, addresses: [10.9.0.1/24]}}
---
apiVersion: kwire.dev/v1alpha1
kind: Peer
metadata: {{name: laptop}}
spec:
  interface: gateway-wg0
  remote: {{publicKey: \"{key}\", endpoint: {{host: 192.0.2.7, port: 51820}}}}
  allowedIPs: [10.9.0.2/32]
"
    )
}

fn kwire(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kwire"))
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kwire runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn graph_refuses_a_non_ascii_public_key_instead_of_panicking() {
    for format in ["mermaid", "dot"] {
        let out = kwire(
            &["graph", "-f", "-", "--format", format],
            &manifest(NON_ASCII_KEY),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{format}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(stderr.contains("must be a WireGuard key"), "{stderr}");
        assert!(stderr.contains("Peer/laptop"), "{stderr}");
    }
}

#[test]
fn plan_and_showconf_refuse_it_too_and_lint_reports_it_once() {
    let text = manifest(NON_ASCII_KEY);
    for args in [
        &["plan", "-f", "-", "--no-dns"][..],
        &["showconf", "laptop", "-f", "-"][..],
    ] {
        let out = kwire(args, &text);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("must be a WireGuard key"),
            "{args:?}: {stderr}"
        );
    }
    let out = kwire(&["lint", "-f", "-"], &text);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert_eq!(
        stdout.matches("spec.remote.publicKey").count(),
        1,
        "{stdout}"
    );
}

#[test]
fn the_same_manifest_with_a_real_key_draws() {
    let out = kwire(
        &["graph", "-f", "-"],
        &manifest("OgbUF/E21zi9qHf5h9H6N/iM92nnNYgRtOMhReFm730="),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("key OgbUF/E2…"));
}
