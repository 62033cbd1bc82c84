//! Bounded summaries for status: a member's peers, the Mesh's members. Whatever the
//! number of members, a status holds counts and at most [`STATUS_NAMES_CAP`] names.

use crate::api::{LocationStatus, MemberPeersStatus, STATUS_NAMES_CAP};
use crate::expand::Expansion;

/// How a member's device sees one peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PeerState {
    /// A handshake recently enough.
    Connected,
    /// No handshake yet, within the grace period of a new link.
    Connecting,
    /// A handshake once, too long ago; or none past the grace period.
    Stale,
}

/// Counts per state and the names of the unhealthy peers, stale ones first, each group in
/// name order, capped at [`STATUS_NAMES_CAP`]. The same peers in any order give the same
/// summary, so an unchanged device writes an unchanged status.
pub fn member_peers_status<'a>(
    peers: impl IntoIterator<Item = (&'a str, PeerState)>,
) -> MemberPeersStatus {
    let mut out = MemberPeersStatus::default();
    let mut unhealthy: Vec<(u8, &str)> = Vec::new();
    for (name, state) in peers {
        out.peers += 1;
        match state {
            PeerState::Connected => out.connected += 1,
            PeerState::Connecting => {
                out.connecting += 1;
                unhealthy.push((1, name));
            }
            PeerState::Stale => {
                out.stale += 1;
                unhealthy.push((0, name));
            }
        }
    }
    unhealthy.sort_unstable();
    out.unhealthy = unhealthy
        .into_iter()
        .take(STATUS_NAMES_CAP)
        .map(|(_, n)| n.to_string())
        .collect();
    out
}

/// The Mesh's member counts: members, ready members, and up to [`STATUS_NAMES_CAP`]
/// nodes (in name order) whose member is not ready.
pub fn member_counts<'a>(
    ready: impl IntoIterator<Item = (&'a str, bool)>,
) -> (u32, u32, Vec<String>) {
    let (mut members, mut ready_members) = (0, 0);
    let mut unready = Vec::new();
    for (node, is_ready) in ready {
        members += 1;
        if is_ready {
            ready_members += 1;
        } else {
            unready.push(node);
        }
    }
    unready.sort_unstable();
    let unready = unready
        .into_iter()
        .take(STATUS_NAMES_CAP)
        .map(str::to_string)
        .collect();
    (members, ready_members, unready)
}

/// `status.locations` of a `Locations` mesh: each location's size and gateway node.
pub fn location_status(expansion: &Expansion) -> Vec<LocationStatus> {
    expansion
        .locations
        .iter()
        .map(|l| LocationStatus {
            name: l.name.clone(),
            members: l.members.len() as u32,
            gateway: l
                .gateway
                .as_deref()
                .and_then(|g| expansion.member(g))
                .map(|m| m.node.clone()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_summary_counts_every_state_and_caps_names_stale_first() {
        let mut peers: Vec<(String, PeerState)> = (0..40)
            .map(|i| {
                let state = match i % 4 {
                    0 | 1 => PeerState::Connected,
                    2 => PeerState::Connecting,
                    _ => PeerState::Stale,
                };
                (format!("m-{i:02}"), state)
            })
            .collect();
        let s = member_peers_status(peers.iter().map(|(n, s)| (n.as_str(), *s)));
        assert_eq!(
            (s.peers, s.connected, s.connecting, s.stale),
            (40, 20, 10, 10)
        );
        assert_eq!(s.unhealthy.len(), STATUS_NAMES_CAP);
        // The 10 stale ones (i % 4 == 3) come first, then connecting ones.
        assert_eq!(s.unhealthy[0], "m-03");
        assert_eq!(s.unhealthy[9], "m-39");
        assert_eq!(s.unhealthy[10], "m-02");
        peers.reverse();
        let again = member_peers_status(peers.iter().map(|(n, s)| (n.as_str(), *s)));
        assert_eq!(again, s, "order of observation does not matter");
    }

    #[test]
    fn all_connected_has_no_names() {
        let s = member_peers_status([("a", PeerState::Connected), ("b", PeerState::Connected)]);
        assert_eq!((s.peers, s.connected), (2, 2));
        assert!(s.unhealthy.is_empty());
    }

    #[test]
    fn member_counts_cap_the_unready_names() {
        let nodes: Vec<String> = (0..30).map(|i| format!("n{i:02}")).collect();
        let (members, ready, unready) = member_counts(
            nodes
                .iter()
                .rev()
                .enumerate()
                .map(|(i, n)| (n.as_str(), i % 3 == 0)),
        );
        assert_eq!((members, ready), (30, 10));
        assert_eq!(unready.len(), STATUS_NAMES_CAP);
        assert!(unready.windows(2).all(|w| w[0] < w[1]));
    }
}
