//! `kwire showconf`: the far side of an external Peer, as a wg-quick file for a machine
//! kwire does not manage, or as a Peer object for another cluster (`-o peer-yaml`).
//!
//! Pure: [`wg_quick`] and [`peer_yaml`] render from objects (with their status) and the
//! keys the caller chose to read; fetching them is in `main`. Key material appears only
//! when the caller passes it (`--include-private-key`); otherwise a placeholder says where
//! the key is.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use ipnet::IpNet;
use kube::ResourceExt as _;
use kwire_crds::v1alpha1::{Interface, Peer};
use kwire_mesh::world::ns_of;

/// Why a Peer has no far side to show.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShowconfError {
    #[error(
        "Peer {peer} links two Interfaces of this cluster ({local} and {remote}), and kwire configures both ends: showconf is for a Peer whose remote is an external publicKey"
    )]
    InCluster {
        peer: String,
        local: String,
        remote: String,
    },
    #[error("Peer {peer} has no spec.remote.publicKey")]
    NoRemoteKey { peer: String },
}

/// What [`wg_quick`] and [`peer_yaml`] render from.
#[derive(Clone, Debug)]
pub struct Showconf<'a> {
    pub peer: &'a Peer,
    /// The Peer's local Interface: the cluster side of the link.
    pub interface: &'a Interface,
    /// Every Interface of the namespace (the ones on the same node are relayed to when the
    /// cluster side forwards).
    pub interfaces: &'a [Interface],
    /// The external side's private key (base64), read only on request.
    pub private_key: Option<&'a str>,
    /// The pre-shared key (base64), read only on request.
    pub preshared_key: Option<&'a str>,
    /// More networks the external side should send into the link.
    pub extra_allowed_ips: &'a [IpNet],
}

/// The pieces both renderings share.
struct Far {
    peer: String,
    remote_key: String,
    /// The external side's own addresses, with the prefix length of the cluster side's
    /// network when they fall inside it.
    addresses: Vec<String>,
    /// Networks the cluster sends to the external side besides its addresses.
    behind: Vec<IpNet>,
    /// The cluster side's public key, if known.
    public_key: Option<String>,
    endpoint: Option<String>,
    allowed_ips: Vec<IpNet>,
    keepalive: Option<u16>,
    listen_port: Option<u16>,
    psk_secret: Option<(String, String)>,
    interface: String,
    device: String,
    node: String,
    namespace: String,
    forwarding: bool,
}

fn addresses_of(i: &Interface) -> Vec<IpNet> {
    let status = i
        .status
        .as_ref()
        .map(|s| s.addresses.clone())
        .unwrap_or_default();
    let written: Vec<String> = i
        .spec
        .addresses
        .iter()
        .flatten()
        .map(ToString::to_string)
        .collect();
    let list = if status.is_empty() { written } else { status };
    list.iter().filter_map(|a| a.parse().ok()).collect()
}

fn far(input: &Showconf<'_>) -> Result<Far, ShowconfError> {
    let peer = input.peer;
    let name = peer.name_any();
    let remote_key = match (&peer.spec.remote.public_key, &peer.spec.remote.interface) {
        (Some(k), _) => k.to_string(),
        (None, Some(remote)) => {
            return Err(ShowconfError::InCluster {
                peer: name,
                local: peer.spec.interface.to_string(),
                remote: remote.to_string(),
            });
        }
        (None, None) => return Err(ShowconfError::NoRemoteKey { peer: name }),
    };
    let i = input.interface;
    let own = addresses_of(i);
    let resolved = peer.status.as_ref().and_then(|s| s.resolved.as_ref());
    let allowed: Vec<IpNet> = match resolved {
        Some(r) if !r.allowed_ips.is_empty() => r
            .allowed_ips
            .iter()
            .filter_map(|a| a.parse().ok())
            .collect(),
        _ => peer
            .spec
            .allowed_ips
            .iter()
            .flatten()
            .filter_map(|p| p.net().ok())
            .collect(),
    };
    let mut addresses = Vec::new();
    let mut behind = Vec::new();
    for a in allowed {
        if a.prefix_len() != a.max_prefix_len() {
            behind.push(a);
            continue;
        }
        match own.iter().find(|o| o.trunc().contains(&a.addr())) {
            Some(o) => addresses.push(format!("{}/{}", a.addr(), o.prefix_len())),
            None => addresses.push(a.to_string()),
        }
    }

    let forwarding = i.spec.forwarding == Some(true);
    let mut allowed_ips: BTreeSet<IpNet> = BTreeSet::new();
    if forwarding {
        allowed_ips.extend(own.iter().map(IpNet::trunc));
        for other in input.interfaces.iter().filter(|o| {
            o.spec.node_name == i.spec.node_name
                && ns_of(*o) == ns_of(i)
                && o.name_any() != i.name_any()
                && o.spec.forwarding == Some(true)
        }) {
            allowed_ips.extend(addresses_of(other).iter().map(IpNet::trunc));
        }
    } else {
        allowed_ips.extend(own.iter().map(|a| IpNet::from(a.addr())));
    }
    allowed_ips.extend(input.extra_allowed_ips.iter().map(IpNet::trunc));

    let status = i.status.clone().unwrap_or_default();
    let psk_secret = peer
        .spec
        .preshared_key
        .as_ref()
        .map(|psk| match &psk.secret_ref {
            Some(r) => (
                r.name.to_string(),
                r.key.clone().unwrap_or_else(|| "presharedKey".into()),
            ),
            None => (
                resolved
                    .and_then(|r| r.preshared_key_secret.clone())
                    .unwrap_or_else(|| format!("{name}-preshared-key")),
                "presharedKey".into(),
            ),
        });
    Ok(Far {
        peer: name,
        remote_key,
        addresses,
        behind,
        public_key: status.public_key.clone(),
        endpoint: status.endpoint.clone().or_else(|| {
            i.spec
                .endpoint
                .as_ref()
                .map(|e| e.to_socket_string(i.spec.listen_port))
        }),
        allowed_ips: allowed_ips.into_iter().collect(),
        keepalive: peer.spec.persistent_keepalive.filter(|k| *k > 0),
        listen_port: peer.spec.remote.endpoint.as_ref().and_then(|e| e.port),
        psk_secret,
        interface: i.name_any(),
        device: i.device_name(),
        node: i.spec.node_name.to_string(),
        namespace: ns_of(i),
        forwarding,
    })
}

fn join(nets: &[IpNet]) -> String {
    nets.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A wg-quick configuration for the external side of the Peer.
pub fn wg_quick(input: &Showconf<'_>) -> Result<String, ShowconfError> {
    let f = far(input)?;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "# wg-quick configuration for the external side of Peer {}/{}, linked to",
        f.namespace, f.peer
    );
    let _ = writeln!(
        o,
        "# Interface {} (device {} on node {}). On that machine: save it as",
        f.interface, f.device, f.node
    );
    let _ = writeln!(o, "# /etc/wireguard/wg0.conf, then run wg-quick up wg0.");
    let _ = writeln!(o, "[Interface]");
    match input.private_key {
        Some(k) => {
            let _ = writeln!(o, "PrivateKey = {k}");
        }
        None => {
            let _ = writeln!(
                o,
                "PrivateKey = <the private key of this machine, whose public key is {}>",
                f.remote_key
            );
        }
    }
    if f.addresses.is_empty() {
        let _ = writeln!(
            o,
            "# Address: Peer {} allows no single address (add one /32 or /128 to its spec.allowedIPs)",
            f.peer
        );
    } else {
        let _ = writeln!(o, "Address = {}", f.addresses.join(", "));
    }
    if let Some(port) = f.listen_port {
        let _ = writeln!(o, "ListenPort = {port}");
    }
    if !f.behind.is_empty() {
        let _ = writeln!(
            o,
            "# The cluster also sends {} here (spec.allowedIPs): route it on from this machine.",
            join(&f.behind)
        );
    }
    let _ = writeln!(o);
    let _ = writeln!(o, "[Peer]");
    let _ = writeln!(o, "# Interface {} on node {}", f.interface, f.node);
    match &f.public_key {
        Some(k) => {
            let _ = writeln!(o, "PublicKey = {k}");
        }
        None => {
            let _ = writeln!(
                o,
                "PublicKey = <pending: Interface {} has no public key yet>",
                f.interface
            );
        }
    }
    match (&f.psk_secret, input.preshared_key) {
        (Some(_), Some(k)) => {
            let _ = writeln!(o, "PresharedKey = {k}");
        }
        (Some((secret, key)), None) => {
            let _ = writeln!(
                o,
                "PresharedKey = <key {key} of Secret {secret}; add --include-private-key to print it>"
            );
        }
        (None, _) => {}
    }
    match &f.endpoint {
        Some(e) => {
            let _ = writeln!(o, "Endpoint = {e}");
        }
        None => {
            let _ = writeln!(
                o,
                "# Endpoint: not known yet (Interface {} has no status.endpoint; set its spec.endpoint)",
                f.interface
            );
        }
    }
    let what = if f.forwarding {
        "its networks and the ones it forwards to"
    } else {
        "its addresses; it does not forward"
    };
    let _ = writeln!(o, "# {what}");
    let _ = writeln!(o, "AllowedIPs = {}", join(&f.allowed_ips));
    if let Some(k) = f.keepalive {
        let _ = writeln!(o, "PersistentKeepalive = {k}");
    }
    Ok(o)
}

/// A YAML double-quoted string.
fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// Splits `host:port` or `[v6]:port`.
fn split_endpoint(endpoint: &str) -> Option<(String, u16)> {
    let (host, port) = endpoint.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some((host.to_string(), port.parse().ok()?))
}

/// A Peer object for another cluster: its Interface `remote_interface` linked to this
/// cluster's Interface as an external peer (public key and endpoint). With the pre-shared
/// key given, a Secret holding it comes first.
pub fn peer_yaml(
    input: &Showconf<'_>,
    remote_interface: Option<&str>,
) -> Result<String, ShowconfError> {
    let f = far(input)?;
    let mut o = String::new();
    if let (Some((secret, key)), Some(psk)) = (&f.psk_secret, input.preshared_key) {
        let _ = writeln!(
            o,
            "# The pre-shared key of Peer {}/{}, for the other cluster.",
            f.namespace, f.peer
        );
        let _ = writeln!(o, "apiVersion: v1");
        let _ = writeln!(o, "kind: Secret");
        let _ = writeln!(o, "metadata:");
        let _ = writeln!(o, "  name: {}", quoted(secret));
        let _ = writeln!(o, "type: Opaque");
        let _ = writeln!(o, "stringData:");
        let _ = writeln!(o, "  {}: {}", quoted(key), quoted(psk));
        let _ = writeln!(o, "---");
    }
    let _ = writeln!(
        o,
        "# Apply in the other cluster. There, Interface {} must have the public key",
        remote_interface.unwrap_or("(spec.interface)")
    );
    let _ = writeln!(
        o,
        "# {} (spec.remote.publicKey of Peer {}/{}",
        f.remote_key, f.namespace, f.peer
    );
    let _ = writeln!(
        o,
        "# here); this Peer links it to Interface {}/{} (device {} on node {}).",
        f.namespace, f.interface, f.device, f.node
    );
    let _ = writeln!(o, "apiVersion: kwire.dev/v1alpha1");
    let _ = writeln!(o, "kind: Peer");
    let _ = writeln!(o, "metadata:");
    let _ = writeln!(o, "  name: {}", quoted(&f.peer));
    let _ = writeln!(o, "spec:");
    let interface =
        remote_interface.map_or_else(|| quoted("<the Interface in the other cluster>"), quoted);
    let _ = writeln!(o, "  interface: {interface}");
    let _ = writeln!(o, "  remote:");
    match &f.public_key {
        Some(k) => {
            let _ = writeln!(o, "    publicKey: {}", quoted(k));
        }
        None => {
            let _ = writeln!(
                o,
                "    publicKey: {}",
                quoted(&format!(
                    "<pending: Interface {} has no public key yet>",
                    f.interface
                ))
            );
        }
    }
    match f.endpoint.as_deref().and_then(split_endpoint) {
        Some((host, port)) => {
            let _ = writeln!(o, "    endpoint:");
            let _ = writeln!(o, "      host: {}", quoted(&host));
            let _ = writeln!(o, "      port: {port}");
        }
        None => {
            let _ = writeln!(
                o,
                "    # endpoint: not known yet (Interface {} has no status.endpoint)",
                f.interface
            );
        }
    }
    let list: Vec<String> = f
        .allowed_ips
        .iter()
        .map(|a| quoted(&a.to_string()))
        .collect();
    let _ = writeln!(o, "  allowedIPs: [{}]", list.join(", "));
    if let Some(k) = f.keepalive {
        let _ = writeln!(o, "  persistentKeepalive: {k}");
    }
    if let Some((secret, key)) = &f.psk_secret {
        if input.preshared_key.is_none() {
            let _ = writeln!(
                o,
                "  # copy Secret {secret} (key {key}) to the other cluster, or add --include-private-key"
            );
        }
        let _ = writeln!(o, "  presharedKey:");
        let _ = writeln!(o, "    secretRef:");
        let _ = writeln!(o, "      name: {}", quoted(secret));
        if key != "presharedKey" {
            let _ = writeln!(o, "      key: {}", quoted(key));
        }
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kwire_crds::manifest::{KwireObject, parse_manifests, validate_like_api_server};
    use kwire_crds::v1alpha1::{InterfaceStatus, PeerStatus, ResolvedPeer};

    const EXTERNAL: &str = include_str!("../../examples/external-peer.yaml");
    const GATEWAY_KEY: &str = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=";

    /// external-peer.yaml as the API shows it once the operator resolved it.
    fn fixture() -> (Peer, Vec<Interface>) {
        let (mut peer, mut interfaces) = (None, Vec::new());
        for o in parse_manifests(EXTERNAL).unwrap() {
            match o {
                KwireObject::Interface(mut i) => {
                    i.metadata.namespace = Some("edge".into());
                    i.status = Some(InterfaceStatus {
                        public_key: Some(GATEWAY_KEY.into()),
                        addresses: vec!["10.4.0.1/24".into()],
                        endpoint: Some("vpn.example.com:51820".into()),
                        ..InterfaceStatus::default()
                    });
                    interfaces.push(*i);
                }
                KwireObject::Peer(mut p) => {
                    p.metadata.namespace = Some("edge".into());
                    p.status = Some(PeerStatus {
                        resolved: Some(ResolvedPeer {
                            allowed_ips: vec!["10.4.0.2/32".into()],
                            preshared_key_secret: Some("laptop-preshared-key".into()),
                            ..ResolvedPeer::default()
                        }),
                        ..PeerStatus::default()
                    });
                    peer = Some(*p);
                }
                _ => {}
            }
        }
        (peer.unwrap(), interfaces)
    }

    fn input<'a>(peer: &'a Peer, interfaces: &'a [Interface]) -> Showconf<'a> {
        Showconf {
            peer,
            interface: &interfaces[0],
            interfaces,
            private_key: None,
            preshared_key: None,
            extra_allowed_ips: &[],
        }
    }

    #[test]
    fn the_laptop_gets_the_config_its_owner_would_write_by_hand() {
        let (peer, interfaces) = fixture();
        let text = wg_quick(&input(&peer, &interfaces)).unwrap();
        let expected = "\
# wg-quick configuration for the external side of Peer edge/laptop, linked to
# Interface gateway-wg0 (device wg0 on node gateway). On that machine: save it as
# /etc/wireguard/wg0.conf, then run wg-quick up wg0.
[Interface]
PrivateKey = <the private key of this machine, whose public key is OgbUF/E21zi9qHf5h9H6N/iM92nnNYgRtOMhReFm730=>
Address = 10.4.0.2/24

[Peer]
# Interface gateway-wg0 on node gateway
PublicKey = HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=
PresharedKey = <key presharedKey of Secret laptop-preshared-key; add --include-private-key to print it>
Endpoint = vpn.example.com:51820
# its addresses; it does not forward
AllowedIPs = 10.4.0.1/32
";
        assert_eq!(text, expected);
    }

    #[test]
    fn keys_appear_only_when_passed_and_forwarding_widens_allowed_ips() {
        let (mut peer, mut interfaces) = fixture();
        interfaces[0].spec.forwarding = Some(true);
        let mut other = interfaces[0].clone();
        other.metadata.name = Some("gateway-wg1".into());
        other.status.as_mut().unwrap().addresses = vec!["10.5.0.1/24".into()];
        interfaces.push(other);
        peer.spec.persistent_keepalive = Some(25);
        let mut i = input(&peer, &interfaces);
        i.private_key = Some("cHJpdmF0ZS1rZXktb2YtdGhlLWxhcHRvcC0zMmJ5dGU=");
        i.preshared_key = Some("cHNrLXBzay1wc2stcHNrLXBzay1wc2stcHNrLXBzay0=");
        let extra: Vec<IpNet> = vec!["192.168.7.0/24".parse().unwrap()];
        i.extra_allowed_ips = &extra;
        let text = wg_quick(&i).unwrap();
        assert!(text.contains("PrivateKey = cHJpdmF0ZS1rZXktb2YtdGhlLWxhcHRvcC0zMmJ5dGU=\n"));
        assert!(text.contains("PresharedKey = cHNrLXBzay1wc2stcHNrLXBzay1wc2stcHNrLXBzay0=\n"));
        assert!(
            text.contains("AllowedIPs = 10.4.0.0/24, 10.5.0.0/24, 192.168.7.0/24\n"),
            "{text}"
        );
        assert!(text.ends_with("PersistentKeepalive = 25\n"));
    }

    #[test]
    fn an_in_cluster_peer_has_no_external_side() {
        let objects = parse_manifests(include_str!("../../examples/seed/relay.yaml")).unwrap();
        let interfaces: Vec<Interface> = objects
            .iter()
            .filter_map(|o| match o {
                KwireObject::Interface(i) => Some(*i.clone()),
                _ => None,
            })
            .collect();
        let peer = objects
            .iter()
            .find_map(|o| match o {
                KwireObject::Peer(p) => Some(*p.clone()),
                _ => None,
            })
            .unwrap();
        let error = wg_quick(&input(&peer, &interfaces)).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("links two Interfaces of this cluster")
        );
    }

    #[test]
    fn the_exported_peer_is_a_valid_object_for_the_other_cluster() {
        let (peer, interfaces) = fixture();
        let text = peer_yaml(&input(&peer, &interfaces), Some("laptop-wg0")).unwrap();
        let objects = parse_manifests(&text).unwrap();
        let KwireObject::Peer(exported) = &objects[0] else {
            panic!("{text}")
        };
        assert_eq!(exported.spec.interface.as_str(), "laptop-wg0");
        assert_eq!(
            exported.spec.remote.public_key.as_ref().unwrap().as_str(),
            GATEWAY_KEY
        );
        let endpoint = exported.spec.remote.endpoint.as_ref().unwrap();
        assert_eq!(endpoint.to_socket_string(0), "vpn.example.com:51820");
        let value = serde_json::to_value(exported.as_ref()).unwrap();
        assert_eq!(validate_like_api_server(&value, None), Vec::<String>::new());
        assert!(text.contains("copy Secret laptop-preshared-key"));
    }

    #[test]
    fn with_the_pre_shared_key_a_secret_comes_first() {
        let (peer, interfaces) = fixture();
        let mut i = input(&peer, &interfaces);
        i.preshared_key = Some("cHNrLXBzay1wc2stcHNrLXBzay1wc2stcHNrLXBzay0=");
        let text = peer_yaml(&i, Some("laptop-wg0")).unwrap();
        let objects = parse_manifests(&text).unwrap();
        assert_eq!(objects[0].kind(), "Secret");
        assert_eq!(objects[1].kind(), "Peer");
    }

    #[test]
    fn ipv6_endpoints_are_split_without_brackets() {
        assert_eq!(
            split_endpoint("[2001:db8::1]:51820"),
            Some(("2001:db8::1".to_string(), 51820))
        );
        assert_eq!(split_endpoint("nope"), None);
    }
}
