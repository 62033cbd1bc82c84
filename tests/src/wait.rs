//! Waiting for the cluster or the kernel to reach a state, in tests.
//!
//! One way to wait: ask something observable (an object's condition, a metric, the kernel,
//! a file) until it answers, for at most a deadline. [`Waiting`] decides what each answer
//! means; [`wait_for`], [`wait_for_every`] and [`wait_for_async`] only call and pause.
//! "Nothing happened" is [`settled`]: a reading (a reconcile counter, say) that has stopped
//! moving, after which the test asserts what it did not do.
//!
//! `tests/tests/test_rules.rs` keeps the integration tests to this: no sleeps to settle, no
//! hand-made deadlines, no waiting helpers of their own.

use std::fmt::Debug;
use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};

/// How often [`wait_for`] checks: often enough that measured times are not dominated by it,
/// rarely enough not to load the API server.
pub const POLL: Duration = Duration::from_millis(200);

/// What to do after one check.
#[derive(Debug)]
enum Next<T> {
    /// The check answered: its value, and how long the wait took.
    Done(T, Duration),
    /// Not yet: check again after this pause.
    Pause(Duration),
    /// Time ran out: the error to return.
    TimedOut(anyhow::Error),
}

/// The rule every wait here follows: a check's value ends the wait; "not yet" and errors
/// (the API may be restarting) go on until `timeout` has passed since the start, and then
/// the last error is quoted. Pure but for the clock, read by [`Waiting::next`].
struct Waiting<'a> {
    what: &'a str,
    timeout: Duration,
    poll: Duration,
    start: Instant,
    last_error: Option<anyhow::Error>,
}

impl<'a> Waiting<'a> {
    fn new(what: &'a str, timeout: Duration, poll: Duration) -> Self {
        Self {
            what,
            timeout,
            poll,
            start: Instant::now(),
            last_error: None,
        }
    }

    fn next<T>(&mut self, outcome: Result<Option<T>>) -> Next<T> {
        self.after(outcome, self.start.elapsed())
    }

    /// What `outcome`, seen `elapsed` after the start, means.
    fn after<T>(&mut self, outcome: Result<Option<T>>, elapsed: Duration) -> Next<T> {
        match outcome {
            Ok(Some(v)) => return Next::Done(v, elapsed),
            Ok(None) => {}
            Err(e) => self.last_error = Some(e),
        }
        if elapsed <= self.timeout {
            return Next::Pause(self.poll);
        }
        Next::TimedOut(anyhow!(
            "timed out after {}s waiting for {}{}",
            self.timeout.as_secs(),
            self.what,
            self.last_error
                .take()
                .map(|e| format!(" (last error: {e:#})"))
                .unwrap_or_default()
        ))
    }
}

/// Calls `check` until it returns `Some`, for at most `timeout`; returns the value and how
/// long it took. Errors from `check` count as "not yet" (the API may be restarting); the last
/// one is quoted if time runs out. A panic in `check` (an `assert!` on something that must
/// never be) ends the wait at once.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    check: impl FnMut() -> Result<Option<T>>,
) -> Result<(T, Duration)> {
    wait_for_every(POLL, what, timeout, check)
}

/// [`wait_for`] with another pause between checks: [`Duration::ZERO`] for a check that
/// takes its own time (a ping with a 200 ms deadline), so that the time measured is not
/// the pause's.
pub fn wait_for_every<T>(
    poll: Duration,
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<Option<T>>,
) -> Result<(T, Duration)> {
    let mut waiting = Waiting::new(what, timeout, poll);
    loop {
        match waiting.next(check()) {
            Next::Done(v, took) => return Ok((v, took)),
            Next::Pause(pause) => std::thread::sleep(pause),
            Next::TimedOut(e) => return Err(e),
        }
    }
}

/// [`wait_for`] for a check that is a future (a kube client call), pausing without
/// blocking the runtime.
pub async fn wait_for_async<T, F>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> F,
) -> Result<(T, Duration)>
where
    F: Future<Output = Result<Option<T>>>,
{
    let mut waiting = Waiting::new(what, timeout, POLL);
    loop {
        match waiting.next(check().await) {
            Next::Done(v, took) => return Ok((v, took)),
            Next::Pause(pause) => tokio::time::sleep(pause).await,
            Next::TimedOut(e) => return Err(e),
        }
    }
}

/// Waits (with [`wait_for`]) until `read` has returned the same value `reads` times in a
/// row, that is for at least `reads - 1` polls of [`POLL`]: a counter that has stopped
/// moving, such as the reconciles of an operator whose triggers have all fired. Returns
/// the value and how long it took. An error from `read` starts the count again.
pub fn settled<T: PartialEq + Debug>(
    what: &str,
    timeout: Duration,
    reads: usize,
    mut read: impl FnMut() -> Result<T>,
) -> Result<(T, Duration)> {
    let mut run: Option<(T, usize)> = None;
    let waited = wait_for(&format!("{what} to stop moving"), timeout, || {
        let now = read().inspect_err(|_| run = None)?;
        match &mut run {
            Some((last, same)) if *last == now => {
                *same += 1;
                Ok((*same >= reads).then_some(now))
            }
            _ if reads <= 1 => Ok(Some(now)),
            _ => {
                run = Some((now, 1));
                Ok(None)
            }
        }
    });
    waited.map_err(|e| match run {
        Some((last, same)) => anyhow!("{e:#}; last read {last:?}, {same} times in a row"),
        None => e,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::bail;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn a_value_ends_the_wait_even_on_the_last_check() {
        let mut w = Waiting::new("x", secs(10), POLL);
        assert!(matches!(w.after(Ok(Some(7)), secs(11)), Next::Done(7, t) if t == secs(11)));
    }

    #[test]
    fn not_yet_and_errors_pause_until_the_timeout_then_the_last_error_is_quoted() {
        let mut w = Waiting::new("the route", secs(10), POLL);
        assert!(matches!(w.after::<()>(Ok(None), secs(1)), Next::Pause(p) if p == POLL));
        assert!(matches!(
            w.after::<()>(Err(anyhow!("API down")), secs(5)),
            Next::Pause(p) if p == POLL
        ));
        assert!(matches!(w.after::<()>(Ok(None), secs(10)), Next::Pause(_)));
        let Next::TimedOut(e) = w.after::<()>(Ok(None), secs(11)) else {
            panic!("not timed out after the timeout");
        };
        assert_eq!(
            e.to_string(),
            "timed out after 10s waiting for the route (last error: API down)"
        );
        let mut w = Waiting::new("the route", secs(10), Duration::ZERO);
        assert!(matches!(
            w.after::<()>(Ok(None), secs(1)),
            Next::Pause(Duration::ZERO)
        ));
        let Next::TimedOut(e) = w.after::<()>(Ok(None), secs(11)) else {
            panic!("not timed out after the timeout");
        };
        assert_eq!(e.to_string(), "timed out after 10s waiting for the route");
    }

    #[test]
    fn returns_the_first_value_and_quotes_the_last_error_on_timeout() {
        let mut calls = 0;
        let (v, _) = wait_for("three calls", secs(5), || {
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

    #[test]
    fn every_checks_again_without_a_pause_when_asked() {
        // With a pause of POLL, the hundredth call would come 20 s in, after the timeout.
        let mut calls = 0;
        let (v, _) = wait_for_every(Duration::ZERO, "a hundred calls", secs(5), || {
            calls += 1;
            Ok((calls == 100).then_some(calls))
        })
        .unwrap();
        assert_eq!(v, 100);
    }

    #[tokio::test]
    async fn the_async_flavour_follows_the_same_rule() {
        let mut calls = 0;
        let (v, _) = wait_for_async("three calls", secs(5), || {
            calls += 1;
            let now = calls;
            async move { Ok((now == 3).then_some(now)) }
        })
        .await
        .unwrap();
        assert_eq!(v, 3);
        let err = wait_for_async::<(), _>("never", Duration::ZERO, || async { bail!("API down") })
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "timed out after 0s waiting for never (last error: API down)"
        );
    }

    #[test]
    fn settled_waits_for_the_same_reading_several_times_in_a_row() {
        // A counter that moves for five reads, fails once, then stays.
        let readings = [1, 2, 2, 3, 5, -1, 5, 5, 5, 5, 5];
        let mut at = 0;
        let (v, _) = settled("the counter", secs(10), 3, || {
            let r = readings[at];
            at += 1;
            if r < 0 {
                bail!("scrape failed");
            }
            Ok(r)
        })
        .unwrap();
        assert_eq!(v, 5);
        // 5 twice, the error restarts the count, then 5 three times.
        assert_eq!(at, 9);
    }

    #[test]
    fn settled_says_what_kept_moving() {
        let mut n = 0;
        let err = settled("the counter", Duration::ZERO, 2, || {
            n += 1;
            Ok(n)
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "timed out after 0s waiting for the counter to stop moving; last read 1, 1 times in a row"
        );
    }
}
