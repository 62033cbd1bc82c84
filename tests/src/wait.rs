//! Waiting for the cluster or the kernel to reach a state, in tests.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};

/// How often [`wait_for`] checks: often enough that measured times are not dominated by it,
/// rarely enough not to load the API server.
const POLL: Duration = Duration::from_millis(200);

/// Calls `check` until it returns `Some`, for at most `timeout`; returns the value and how
/// long it took. Errors from `check` count as "not yet" (the API may be restarting); the last
/// one is quoted if time runs out.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<Option<T>>,
) -> Result<(T, Duration)> {
    let start = Instant::now();
    let mut last_error = None;
    loop {
        match check() {
            Ok(Some(v)) => return Ok((v, start.elapsed())),
            Ok(None) => {}
            Err(e) => last_error = Some(e),
        }
        if start.elapsed() > timeout {
            bail!(
                "timed out after {}s waiting for {what}{}",
                timeout.as_secs(),
                last_error
                    .map(|e| format!(" (last error: {e:#})"))
                    .unwrap_or_default()
            );
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_first_value_and_quotes_the_last_error_on_timeout() {
        let mut calls = 0;
        let (v, _) = wait_for("three calls", Duration::from_secs(5), || {
            calls += 1;
            Ok((calls == 3).then_some(calls))
        })
        .unwrap();
        assert_eq!(v, 3);
        let err = wait_for::<()>("never", Duration::ZERO, || bail!("API down")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "timed out after 0s waiting for never (last error: API down)"
        );
    }
}
