//! What the operator itself last wrote, so that it never plans from a cache that has not
//! seen its own write yet.
//!
//! A reconcile reads its object from the watch cache. After a status apply, another change
//! (a Secret event, a requeue) can start the next reconcile before the watch delivers the
//! object the apply produced. Planning from the older copy and applying again would drop
//! fields the first apply set (server-side apply removes what a manager stops sending): a
//! key rotation's `startedAt` and `trigger` were lost that way. So the resourceVersion of
//! each object the operator wrote is remembered, and an older copy is sent back to wait.

use std::collections::HashMap;
use std::sync::Mutex;

/// The resourceVersion each object had after the operator's last write to it, by UID.
#[derive(Default)]
pub struct WrittenVersions {
    by_uid: Mutex<HashMap<String, u64>>,
}

/// resourceVersions are etcd revisions: decimal and growing. One that is not (another
/// storage) is never compared, so the check is skipped rather than wrong.
fn revision(resource_version: Option<&str>) -> Option<u64> {
    resource_version?.parse().ok()
}

impl WrittenVersions {
    /// Records the version an object has after our write.
    pub fn wrote(&self, uid: Option<&str>, resource_version: Option<&str>) {
        if let (Some(uid), Some(rv)) = (uid, revision(resource_version)) {
            let mut map = self.by_uid.lock().expect("written versions lock");
            let entry = map.entry(uid.to_string()).or_insert(rv);
            *entry = (*entry).max(rv);
        }
    }

    /// How far this copy of the object is behind our last write to it, if it predates it.
    /// A copy that has caught up ends the watch on it.
    pub fn behind(&self, uid: Option<&str>, resource_version: Option<&str>) -> Option<Behind> {
        let (uid, cached) = (uid?, revision(resource_version)?);
        let mut map = self.by_uid.lock().expect("written versions lock");
        let written = *map.get(uid)?;
        if cached < written {
            return Some(Behind { cached, written });
        }
        map.remove(uid);
        None
    }
}

/// A cached copy older than the operator's own last write to the object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Behind {
    /// The resourceVersion of the cached copy.
    pub cached: u64,
    /// The resourceVersion the operator's write produced.
    pub written: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_older_than_our_write_is_stale_until_the_cache_catches_up() {
        let w = WrittenVersions::default();
        assert!(
            w.behind(Some("u1"), Some("10")).is_none(),
            "nothing written yet"
        );
        w.wrote(Some("u1"), Some("12"));
        assert_eq!(
            w.behind(Some("u1"), Some("10")),
            Some(Behind {
                cached: 10,
                written: 12
            })
        );
        assert!(w.behind(Some("u1"), Some("11")).is_some());
        assert!(w.behind(Some("u2"), Some("1")).is_none(), "another object");
        assert!(w.behind(Some("u1"), Some("12")).is_none(), "caught up");
        assert!(
            w.behind(Some("u1"), Some("10")).is_none(),
            "forgotten once caught up"
        );
    }

    #[test]
    fn an_earlier_write_never_lowers_the_mark_and_odd_versions_are_not_compared() {
        let w = WrittenVersions::default();
        w.wrote(Some("u1"), Some("20"));
        w.wrote(Some("u1"), Some("15"));
        assert!(w.behind(Some("u1"), Some("19")).is_some());
        w.wrote(Some("u2"), Some("not-a-number"));
        assert!(w.behind(Some("u2"), Some("1")).is_none());
        assert!(w.behind(Some("u1"), None).is_none());
        assert!(w.behind(None, Some("1")).is_none());
    }
}
