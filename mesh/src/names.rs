//! Names and labels of the objects generated for a Mesh.

use std::hash::Hasher;

/// Label on every generated Interface: the Mesh it belongs to (see [`label_value`]).
pub const LABEL_MESH: &str = "kwire.dev/mesh";
/// Label on every generated Interface: the member's role (`member`, `hub`, `spoke`,
/// `gateway`).
pub const LABEL_ROLE: &str = "kwire.dev/mesh-role";
/// Label on the generated Interfaces of a `Locations` mesh: the member's location.
pub const LABEL_LOCATION: &str = "kwire.dev/mesh-location";
/// Annotation on generated Interfaces when the Mesh sets `device.persistentKeepalive`
/// (seconds, 1 to 65535): the member's node daemon sets it on each of the member's peers.
/// An Interface has no keepalive field (keepalive is per peer), and the daemons read the
/// members' Interfaces, not the Mesh (decision 0010).
pub const ANNOTATION_KEEPALIVE: &str = "kwire.dev/mesh-persistent-keepalive";
/// Annotation on the generated Interfaces of a `HubAndSpoke` or `Locations` mesh: the
/// topology (`HubAndSpoke`, `Locations`; absent: `FullMesh`), so that a member's node daemon
/// knows which link rules apply without reading the Mesh.
pub const ANNOTATION_TOPOLOGY: &str = "kwire.dev/mesh-topology";
/// Annotation on a spoke's generated Interface: the node of its primary hub. It is also the
/// operator's record of the election, read back at the next expansion so that it is sticky.
pub const ANNOTATION_PRIMARY_HUB: &str = "kwire.dev/mesh-primary-hub";
/// Annotation on a member's generated Interface when it announces prefixes (`spec.announce`):
/// the prefixes, comma-separated. The other members' daemons route them through the mesh.
pub const ANNOTATION_ANNOUNCE: &str = "kwire.dev/mesh-announce";
/// Annotation on a gateway's generated Interface when the address the other gateways reach
/// it on (`spec.topology.locations.gatewayAddress`) is not its endpoint's: that address.
pub const ANNOTATION_GATEWAY_ENDPOINT: &str = "kwire.dev/mesh-gateway-endpoint";
/// Every annotation the operator writes on a generated Interface: it owns them, adds and
/// removes them as the expansion says.
pub const MEMBER_ANNOTATIONS: [&str; 5] = [
    ANNOTATION_KEEPALIVE,
    ANNOTATION_TOPOLOGY,
    ANNOTATION_PRIMARY_HUB,
    ANNOTATION_ANNOUNCE,
    ANNOTATION_GATEWAY_ENDPOINT,
];

const MAX_NAME: usize = 253;
const HASH_HEX: usize = 10;

/// A 64-bit FNV-1a hash: the same in every kwire binary and release, unlike std's hasher,
/// which names and elections rely on (the operator and every node daemon must agree).
pub fn stable_hash(parts: &[&str]) -> u64 {
    let mut h = fnv::FnvHasher::default();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            // A separator no name contains, so ("a-b", "c") and ("a", "b-c") differ.
            h.write(&[0]);
        }
        h.write(part.as_bytes());
    }
    h.finish()
}

/// The name of the Interface generated for `node` in the Mesh `mesh`:
/// `<mesh>-<node>-<hash>`, cut to 253 characters. The hash of both names keeps two pairs
/// that read the same (mesh `a-b`, node `c` and mesh `a`, node `b-c`) apart, and a
/// hand-written object is unlikely to end in it. The same pair always gives the same name.
pub fn member_name(mesh: &str, node: &str) -> String {
    let hash = stable_hash(&[mesh, node]);
    let suffix = format!(
        "-{:0width$x}",
        hash >> (64 - 4 * HASH_HEX),
        width = HASH_HEX
    );
    let mut base = format!("{mesh}-{node}");
    if base.len() + suffix.len() > MAX_NAME {
        base.truncate(MAX_NAME - suffix.len());
        // A name ends with a letter or digit.
        while base.ends_with(['-', '.']) {
            base.pop();
        }
    }
    format!("{base}{suffix}")
}

/// A label value for a name: names longer than 63 characters are cut and hashed.
pub fn label_value(name: &str) -> String {
    if name.len() <= 63 {
        return name.to_string();
    }
    let mut cut = name[..52].to_string();
    while cut.ends_with(['-', '.', '_']) {
        cut.pop();
    }
    format!(
        "{cut}-{:0width$x}",
        stable_hash(&[name]) >> (64 - 4 * HASH_HEX),
        width = HASH_HEX
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use kwire_crds::names::ObjectName;

    #[test]
    fn member_names_are_valid_stable_and_keep_ambiguous_pairs_apart() {
        let n = member_name("overlay", "node-1");
        assert!(n.starts_with("overlay-node-1-"), "{n}");
        assert_eq!(n, member_name("overlay", "node-1"));
        assert_ne!(member_name("a-b", "c"), member_name("a", "b-c"));
        assert_ne!(member_name("a.b", "c"), member_name("a", "b.c"));
        for (mesh, node) in [
            ("m", "n"),
            ("overlay", "ip-10-0-0-1.ec2.internal"),
            (&"x".repeat(253)[..], "node"),
            ("m", &format!("{}.{}", "a".repeat(200), "b".repeat(52))[..]),
            ("m", &format!("{}-{}", "a".repeat(235), "b".repeat(17))[..]),
        ] {
            let name = member_name(mesh, node);
            assert!(name.len() <= 253, "{name}");
            ObjectName::parse(name.clone()).unwrap_or_else(|e| panic!("{e}"));
        }
        // Two long names that share their first 242 characters still differ.
        let long = "n".repeat(250);
        assert_ne!(
            member_name("m", &format!("{long}1")),
            member_name("m", &format!("{long}2"))
        );
    }

    #[test]
    fn label_values_fit_63_characters() {
        assert_eq!(label_value("overlay"), "overlay");
        let long = format!("{}.{}", "a".repeat(60), "b".repeat(60));
        let v = label_value(&long);
        assert!(v.len() <= 63, "{v}");
        assert_ne!(
            v,
            label_value(&format!("{}.{}", "a".repeat(60), "c".repeat(60)))
        );
    }

    #[test]
    fn the_hash_is_fnv1a_64() {
        // The published FNV-1a 64 test vectors: the value must never change between releases.
        assert_eq!(stable_hash(&[""]), 0xcbf2_9ce4_8422_2325);
        assert_eq!(stable_hash(&["a"]), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(stable_hash(&["foobar"]), 0x8594_4171_f739_67e8);
    }
}
