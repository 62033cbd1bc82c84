//! Small pieces the benchmark binaries share.

use std::process::Command;

use anyhow::{Context as _, Result, ensure};

/// Runs `cmd` and returns its standard output, trimmed; an error with its standard error
/// when it fails.
pub fn run_ok(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("{cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The value of label `key` in the label part of a Prometheus text line
/// (`{verb="GET",resource="peers"}`); empty when absent.
pub fn label(labels: &str, key: &str) -> String {
    labels
        .split(&format!("{key}=\""))
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or_default()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_label_is_read_by_its_exact_name() {
        let labels =
            r#"apiserver_request_total{resource="peers",subresource="status",verb="PATCH"}"#;
        assert_eq!(label(labels, "verb"), "PATCH");
        assert_eq!(label(labels, "resource"), "peers");
        assert_eq!(label(labels, "group"), "");
    }

    #[test]
    fn run_ok_returns_the_output_or_says_what_failed() {
        assert_eq!(run_ok(Command::new("echo").arg(" hi ")).unwrap(), "hi");
        let error = run_ok(Command::new("sh").args(["-c", "echo nope >&2; exit 3"])).unwrap_err();
        assert!(error.to_string().contains("nope"), "{error}");
    }
}
