//! Errors of the controllers. Invalid input is never an error here: it becomes a condition
//! with a reason. What remains are failed API calls and failed key generation, and each
//! variant names the action that failed and the object it was for.

use std::time::Duration;

use kwire_crds::keys::KeyError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {kind} {namespace}/{name}: {source}")]
    Read {
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("creating Secret {namespace}/{name}: {source}")]
    CreateSecret {
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("deleting Secret {namespace}/{name}: {source}")]
    DeleteSecret {
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    /// The object is in the cache but a read found it gone (deleted since the cache saw it).
    #[error(
        "{kind} {namespace}/{name} is in the operator's cache but no longer in the API; retrying once the cache catches up"
    )]
    StaleStore {
        kind: &'static str,
        namespace: String,
        name: String,
    },
    /// The cached copy predates the operator's own last write to the object: planning from
    /// it would undo part of that write. The watch brings the newer copy in milliseconds.
    #[error(
        "the operator's cached copy of {kind} {namespace}/{name} (resourceVersion {cached}) predates its own last status write (resourceVersion {written}); waiting for the watch to bring the newer copy"
    )]
    CacheBehindOwnWrite {
        kind: &'static str,
        namespace: String,
        name: String,
        cached: u64,
        written: u64,
    },
    #[error("adding an ownerReference to Secret {namespace}/{name}: {source}")]
    AdoptSecret {
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("writing the status of {kind} {namespace}/{name}: {source}")]
    PatchStatus {
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("generating a key for {kind} {namespace}/{name}: {source}")]
    GenerateKey {
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: Box<KeyError>,
    },
    /// Applying an object the operator generates (a Mesh member's Interface).
    #[error("applying generated {kind} {namespace}/{name}: {source}")]
    ApplyGenerated {
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    /// Removing the finalizer of a leaving Mesh member's Interface.
    #[error(
        "letting the leaving Mesh member's Interface {namespace}/{name} go (removing its finalizer): {source}"
    )]
    ReleaseMember {
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("deleting generated {kind} {namespace}/{name}: {source}")]
    DeleteGenerated {
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("{kind} {name} has no {field}; the API server always sets it")]
    MissingMetadata {
        kind: &'static str,
        name: String,
        field: &'static str,
    },
}

/// What to do after an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Retry with exponential backoff: the API server or the network may recover.
    Backoff,
    /// Retry soon: someone else changed the object (conflict) or created it first.
    Soon,
    /// Retry slowly: retrying quickly cannot help (forbidden, malformed object).
    Slowly,
}

impl Error {
    /// A short label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Read { .. } => "read",
            Error::CreateSecret { .. } => "create_secret",
            Error::AdoptSecret { .. } => "adopt_secret",
            Error::DeleteSecret { .. } => "delete_secret",
            Error::StaleStore { .. } => "stale_store",
            Error::CacheBehindOwnWrite { .. } => "cache_behind_own_write",
            Error::PatchStatus { .. } => "patch_status",
            Error::GenerateKey { .. } => "generate_key",
            Error::MissingMetadata { .. } => "missing_metadata",
            Error::ApplyGenerated { .. } => "apply_generated",
            Error::DeleteGenerated { .. } => "delete_generated",
            Error::ReleaseMember { .. } => "release_member",
        }
    }

    /// How to retry after this error.
    pub fn retry(&self) -> Retry {
        match self {
            Error::Read { source, .. }
            | Error::CreateSecret { source, .. }
            | Error::AdoptSecret { source, .. }
            | Error::DeleteSecret { source, .. }
            | Error::PatchStatus { source, .. }
            | Error::ApplyGenerated { source, .. }
            | Error::DeleteGenerated { source, .. }
            | Error::ReleaseMember { source, .. } => classify_api(source),
            Error::StaleStore { .. } | Error::CacheBehindOwnWrite { .. } => Retry::Soon,
            Error::GenerateKey { .. } => Retry::Backoff,
            Error::MissingMetadata { .. } => Retry::Slowly,
        }
    }
}

/// How long the cache may lag behind the API before it is worth a warning. A watch
/// delivers a change in milliseconds, so a lag of a moment (typically right after the
/// operator's own writes, at start) is routine; one of seconds means a watch is stuck or
/// the API server is overloaded.
pub const CACHE_LAG_WARNING_AFTER: Duration = Duration::from_secs(10);

impl Error {
    /// Whether the error is the cache lagging behind the API, which resolves by itself
    /// when the watch catches up.
    pub fn is_cache_lag(&self) -> bool {
        matches!(
            self,
            Error::StaleStore { .. } | Error::CacheBehindOwnWrite { .. }
        )
    }

    /// Whether a reconcile that has failed for `failing_for` (since the first failure in a
    /// row) with this error deserves a warning: always, except for a cache lag that has
    /// not yet lasted [`CACHE_LAG_WARNING_AFTER`].
    pub fn worth_a_warning(&self, failing_for: Duration) -> bool {
        !self.is_cache_lag() || failing_for >= CACHE_LAG_WARNING_AFTER
    }
}

fn classify_api(error: &kube::Error) -> Retry {
    match error {
        kube::Error::Api(status) if status.code == 409 => Retry::Soon,
        kube::Error::Api(status) if matches!(status.code, 400 | 401 | 403 | 422) => Retry::Slowly,
        _ => Retry::Backoff,
    }
}

/// The delay before retry number `attempt` (1-based): 1 s doubling up to 5 minutes for
/// [`Retry::Backoff`], 1 s for [`Retry::Soon`], 5 minutes for [`Retry::Slowly`].
pub fn retry_delay(retry: Retry, attempt: u32) -> Duration {
    const MAX: Duration = Duration::from_secs(300);
    match retry {
        Retry::Soon => Duration::from_secs(1),
        Retry::Slowly => MAX,
        Retry::Backoff => {
            let exponent = attempt.saturating_sub(1).min(9);
            Duration::from_secs(1u64 << exponent).min(MAX)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_one_second_and_stops_at_five_minutes() {
        let delays: Vec<u64> = (1..=11)
            .map(|n| retry_delay(Retry::Backoff, n).as_secs())
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(retry_delay(Retry::Soon, 7).as_secs(), 1);
        assert_eq!(retry_delay(Retry::Slowly, 1).as_secs(), 300);
    }

    #[test]
    fn conflicts_retry_soon_and_forbidden_calls_retry_slowly() {
        let api = |code: u16| {
            kube::Error::Api(Box::new(kube::core::Status {
                code,
                ..Default::default()
            }))
        };
        let patch = |code| Error::PatchStatus {
            kind: "Interface",
            namespace: "ns".into(),
            name: "n".into(),
            source: Box::new(api(code)),
        };
        assert_eq!(patch(409).retry(), Retry::Soon);
        assert_eq!(patch(403).retry(), Retry::Slowly);
        assert_eq!(patch(500).retry(), Retry::Backoff);
        assert_eq!(patch(500).metric_label(), "patch_status");
    }

    #[test]
    fn only_a_lasting_cache_lag_is_worth_a_warning() {
        let behind = Error::CacheBehindOwnWrite {
            kind: "Interface",
            namespace: "ns".into(),
            name: "n".into(),
            cached: 10,
            written: 12,
        };
        let gone = Error::StaleStore {
            kind: "Secret",
            namespace: "ns".into(),
            name: "n-private-key".into(),
        };
        for lag in [&behind, &gone] {
            assert_eq!(lag.retry(), Retry::Soon);
            assert!(!lag.worth_a_warning(Duration::ZERO));
            assert!(!lag.worth_a_warning(Duration::from_secs(9)));
            assert!(lag.worth_a_warning(CACHE_LAG_WARNING_AFTER));
        }
        assert!(
            !behind.to_string().contains("no longer in the API"),
            "the object is in the API: {behind}"
        );
        let forbidden = Error::PatchStatus {
            kind: "Interface",
            namespace: "ns".into(),
            name: "n".into(),
            source: Box::new(kube::Error::Api(Box::new(kube::core::Status {
                code: 403,
                ..Default::default()
            }))),
        };
        assert!(forbidden.worth_a_warning(Duration::ZERO));
    }
}
