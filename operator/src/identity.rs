//! Who this replica is: the holder identity in the leader election Lease and the reporting
//! instance of Events.
//!
//! Two replicas with one identity would both believe they hold the Lease and both run the
//! controllers. The process id is no identity: in containers every replica is pid 1. So the
//! identity is, in this order:
//! 1. the pod name, which the chart passes as `POD_NAME` (or `--identity`);
//! 2. the hostname, which Kubernetes sets to the pod name (processes that share a hostname,
//!    such as two operators on one machine or pods with `hostNetwork`, must set
//!    `--identity`);
//! 3. a random name, unique but new at every start (a restarted replica then waits for
//!    its old Lease to expire instead of resuming it).

use std::fmt;

/// Where an identity came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// `--identity` / `POD_NAME`.
    PodName,
    Hostname,
    Random,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::PodName => "the pod name (POD_NAME or --identity)",
            Source::Hostname => "the hostname",
            Source::Random => "a random name (neither POD_NAME nor a usable hostname)",
        })
    }
}

/// This replica's identity and where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub source: Source,
}

/// Hostnames that name no particular machine: the kernel's placeholder before one is set,
/// and loopback names.
fn is_placeholder(hostname: &str) -> bool {
    matches!(
        hostname,
        "(none)" | "localhost" | "localhost.localdomain" | "localhost6"
    )
}

/// The identity from the pod name, else the hostname, else `random()` (see the module docs).
/// Blank values and placeholder hostnames are skipped.
pub fn choose(
    pod_name: Option<&str>,
    hostname: Option<&str>,
    random: impl FnOnce() -> String,
) -> Identity {
    fn usable(s: Option<&str>) -> Option<&str> {
        s.map(str::trim).filter(|s| !s.is_empty())
    }
    if let Some(name) = usable(pod_name) {
        return Identity {
            name: name.to_string(),
            source: Source::PodName,
        };
    }
    if let Some(name) = usable(hostname).filter(|h| !is_placeholder(h)) {
        return Identity {
            name: name.to_string(),
            source: Source::Hostname,
        };
    }
    Identity {
        name: random(),
        source: Source::Random,
    }
}

/// The hostname of this machine (of its UTS namespace: a pod's own), if it is valid text.
pub fn hostname() -> Option<String> {
    hostname::get().ok()?.into_string().ok()
}

/// No identity could be found or made.
#[derive(Debug, thiserror::Error)]
#[error(
    "no POD_NAME, no usable hostname, and no random name (the operating system's random generator failed: {0}); set --identity or POD_NAME"
)]
pub struct NoIdentity(String);

/// `kwire-operator-` and 16 random hex digits from the operating system's generator.
pub fn random_name() -> Result<String, NoIdentity> {
    use rand_core::RngCore as _;
    let mut bytes = [0u8; 8];
    rand_core::OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| NoIdentity(e.to_string()))?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("kwire-operator-{hex}"))
}

/// This replica's identity (see [`choose`]), reading the hostname and, only when needed,
/// the random generator.
pub fn of_this_replica(pod_name: Option<&str>) -> Result<Identity, NoIdentity> {
    let hostname = hostname();
    let mut failed = None;
    let identity = choose(pod_name, hostname.as_deref(), || {
        random_name().unwrap_or_else(|e| {
            failed = Some(e);
            String::new()
        })
    });
    match failed {
        Some(error) => Err(error),
        None => Ok(identity),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn never() -> String {
        panic!("no random name needed")
    }

    #[test]
    fn the_pod_name_wins_then_the_hostname_then_a_random_name() {
        assert_eq!(
            choose(Some("op-7d9-abc"), Some("node-1"), never),
            Identity {
                name: "op-7d9-abc".into(),
                source: Source::PodName
            }
        );
        assert_eq!(
            choose(None, Some("op-7d9-xyz\n"), never),
            Identity {
                name: "op-7d9-xyz".into(),
                source: Source::Hostname
            }
        );
        assert_eq!(
            choose(Some("  "), Some("op-7d9-xyz"), never).source,
            Source::Hostname,
            "a blank POD_NAME is no name"
        );
        for useless in [None, Some(""), Some("(none)"), Some("localhost")] {
            assert_eq!(
                choose(None, useless, || "kwire-operator-r".into()),
                Identity {
                    name: "kwire-operator-r".into(),
                    source: Source::Random
                },
                "{useless:?}"
            );
        }
    }

    #[test]
    fn random_names_differ_and_are_never_a_pid() {
        let (a, b) = (random_name().unwrap(), random_name().unwrap());
        assert_ne!(a, b);
        let suffix = a.strip_prefix("kwire-operator-").unwrap();
        assert_eq!(suffix.len(), 16);
        assert!(suffix.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, format!("kwire-operator-{}", std::process::id()));
    }

    #[test]
    fn this_replica_is_named_by_its_hostname_without_a_pod_name() {
        let id = of_this_replica(None).unwrap();
        match hostname().filter(|h| !h.trim().is_empty() && !is_placeholder(h.trim())) {
            Some(h) => assert_eq!(
                id,
                Identity {
                    name: h.trim().to_string(),
                    source: Source::Hostname
                }
            ),
            None => assert_eq!(id.source, Source::Random),
        }
        assert_eq!(of_this_replica(Some("pod-a")).unwrap().name, "pod-a");
    }
}
