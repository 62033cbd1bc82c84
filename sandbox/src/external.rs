//! External Peers in the sandbox.
//!
//! A Peer whose remote is a public key and an endpoint links a kwire Interface to a machine
//! kwire does not manage (a laptop, a VM elsewhere). The sandbox plays that machine: a
//! network namespace of its own on the LAN, at the Peer's `spec.remote.endpoint`, configured
//! the way its owner would configure it by hand, with `wireguard-go`, `wg set` and `ip` and
//! no kwire code, so that what is tested is kwire's side against a plain WireGuard peer.
//!
//! Its private key cannot be derived from the public key in the Peer, so the manifest gives
//! it to the sandbox in the annotation [`REMOTE_PRIVATE_KEY_ANNOTATION`] (a throwaway key made
//! for the sandbox; a real external peer's key never goes into a manifest).
//!
//! This module holds the decisions, as pure functions: which Peers are external and where
//! their far side goes ([`far_sides`]), and the commands that configure it
//! ([`device_commands`], [`peer_commands`]). [`crate::sandbox`] runs them.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

use ipnet::{IpNet, Ipv4Net};
use kwire_crds::manifest::KwireObject;

use crate::error::{Error, Result};

/// The annotation of an external Peer that holds its far side's private key (base64, as
/// `wg genkey` prints it) for the sandbox.
pub const REMOTE_PRIVATE_KEY_ANNOTATION: &str = "sandbox.kwire.dev/remote-private-key";

/// Where an external Peer's pre-shared key is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PresharedKeySource {
    /// `spec.presharedKey.secretRef`: this Secret and key.
    Secret { name: String, key: String },
    /// `spec.presharedKey.generate`: the Secret the operator names in
    /// `status.resolved.presharedKeySecret`, key `presharedKey`.
    Generated,
}

/// The far side of one external Peer, from the manifests.
#[derive(Clone, PartialEq, Eq)]
pub struct FarSide {
    /// The Peer.
    pub peer: String,
    /// Its local (kwire) Interface.
    pub interface: String,
    /// Its address on the sandbox LAN: `spec.remote.endpoint.host`.
    pub lan_address: Ipv4Addr,
    /// `spec.remote.endpoint.port`.
    pub listen_port: u16,
    /// Its addresses inside the tunnel: the first host address of each network of
    /// `spec.allowedIPs`, in order, without repeats (one of each family on a dual-stack
    /// peer).
    pub tunnel_addresses: Vec<IpAddr>,
    /// `spec.remote.publicKey`.
    pub public_key: String,
    private_key: String,
    /// `spec.persistentKeepalive`, used on both ends as the seed does.
    pub persistent_keepalive: Option<u16>,
    pub preshared_key: Option<PresharedKeySource>,
}

impl FarSide {
    /// The far side's private key, from the annotation.
    pub fn private_key(&self) -> &str {
        &self.private_key
    }
}

// By hand: the private key never appears in logs or messages.
impl fmt::Debug for FarSide {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FarSide")
            .field("peer", &self.peer)
            .field("interface", &self.interface)
            .field("lan_address", &self.lan_address)
            .field("listen_port", &self.listen_port)
            .field("tunnel_addresses", &self.tunnel_addresses)
            .field("public_key", &self.public_key)
            .field("private_key", &"<redacted>")
            .field("persistent_keepalive", &self.persistent_keepalive)
            .field("preshared_key", &self.preshared_key)
            .finish()
    }
}

/// The external Peers of `objects` and where their far sides go on `lan`, whose addresses
/// in `taken` belong to nodes (as `(address, node)`). Errors say what to change in the
/// manifest.
pub fn far_sides(
    objects: &[KwireObject],
    lan: Ipv4Net,
    taken: &[(Ipv4Addr, String)],
) -> Result<Vec<FarSide>> {
    let mut sides: Vec<FarSide> = Vec::new();
    for object in objects {
        let KwireObject::Peer(peer) = object else {
            continue;
        };
        let Some(public_key) = &peer.spec.remote.public_key else {
            continue;
        };
        let name = peer.metadata.name.clone().unwrap_or_default();
        let problem = |what: String| Error::Topology(format!("Peer {name} is external: {what}"));
        let interface = peer.spec.interface.as_str().to_string();
        let has_interface = objects.iter().any(|o| {
            matches!(o, KwireObject::Interface(i) if i.metadata.name.as_deref() == Some(&interface))
        });
        if !has_interface {
            return Err(problem(format!(
                "its Interface {interface} is not in the manifests"
            )));
        }
        let private_key = peer
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REMOTE_PRIVATE_KEY_ANNOTATION))
            .map(|k| k.trim().to_string())
            .filter(|k| !k.is_empty())
            .ok_or_else(|| {
                problem(format!(
                    "the sandbox needs its far side's private key in annotation {REMOTE_PRIVATE_KEY_ANNOTATION} \
                     (a throwaway key: `wg genkey`; spec.remote.publicKey is then its `wg pubkey`)"
                ))
            })?;
        let endpoint = peer.spec.remote.endpoint.as_ref().ok_or_else(|| {
            problem(format!(
                "the sandbox places its far side at spec.remote.endpoint, which is not set \
                 (give host: an address of the sandbox LAN {lan}, and port)"
            ))
        })?;
        let host = endpoint.host.as_str();
        let lan_address: Ipv4Addr = host.parse().map_err(|_| {
            problem(format!(
                "spec.remote.endpoint.host {host} must be an IPv4 address of the sandbox LAN {lan}, \
                 where the sandbox places its far side"
            ))
        })?;
        if !lan.contains(&lan_address)
            || lan_address == lan.network()
            || lan_address == lan.broadcast()
        {
            return Err(problem(format!(
                "spec.remote.endpoint.host {host} is not a host address of the sandbox LAN {lan}, \
                 where the sandbox places its far side"
            )));
        }
        if let Some((_, node)) = taken.iter().find(|(a, _)| *a == lan_address) {
            return Err(problem(format!(
                "spec.remote.endpoint.host {host} is node {node}'s address in the sandbox; \
                 pick another address of {lan}"
            )));
        }
        if let Some(other) = sides.iter().find(|s| s.lan_address == lan_address) {
            return Err(problem(format!(
                "spec.remote.endpoint.host {host} is also the far side of Peer {}; \
                 the sandbox gives each external Peer a machine of its own",
                other.peer
            )));
        }
        let listen_port = endpoint.port.ok_or_else(|| {
            problem("spec.remote.endpoint.port is not set: the far side listens there".into())
        })?;
        let mut tunnel_addresses: Vec<IpAddr> = Vec::new();
        for allowed in peer.spec.allowed_ips.iter().flatten() {
            let net = allowed
                .net()
                .map_err(|e| problem(format!("spec.allowedIPs: {e}")))?;
            let address = first_host(net);
            if !tunnel_addresses.contains(&address) {
                tunnel_addresses.push(address);
            }
        }
        if tunnel_addresses.is_empty() {
            return Err(problem(
                "spec.allowedIPs is empty: the far side's tunnel addresses are the first address of each network in it"
                    .into(),
            ));
        }
        let preshared_key = peer.spec.preshared_key.as_ref().and_then(|psk| {
            match (&psk.secret_ref, psk.generate) {
                (Some(r), _) => Some(PresharedKeySource::Secret {
                    name: r.name.as_str().to_string(),
                    key: r.key.clone().unwrap_or_else(|| "presharedKey".into()),
                }),
                (None, Some(true)) => Some(PresharedKeySource::Generated),
                (None, _) => None,
            }
        });
        sides.push(FarSide {
            peer: name,
            interface,
            lan_address,
            listen_port,
            tunnel_addresses,
            public_key: public_key.as_str().to_string(),
            private_key,
            persistent_keepalive: peer.spec.persistent_keepalive.filter(|k| *k > 0),
            preshared_key,
        });
    }
    Ok(sides)
}

/// The first host address of `net`: the address after the network address, or the address
/// itself for a single address or a point-to-point /31 (/127).
pub fn first_host(net: IpNet) -> IpAddr {
    let net = net.trunc();
    if net.max_prefix_len() - net.prefix_len() <= 1 {
        return net.addr();
    }
    match net.addr() {
        IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) + 1)),
        IpAddr::V6(a) => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(a) + 1)),
    }
}

/// What the far side sends into the tunnel: the networks of the kwire Interface's
/// addresses, then the destinations of the Routes through that Interface (what is behind
/// it), without repeats.
pub fn far_side_allowed_ips(interface_addresses: &[IpNet], routes: &[IpNet]) -> Vec<IpNet> {
    let mut out: Vec<IpNet> = Vec::new();
    for net in interface_addresses
        .iter()
        .map(IpNet::trunc)
        .chain(routes.iter().map(IpNet::trunc))
    {
        if !out.contains(&net) {
            out.push(net);
        }
    }
    out
}

/// The far side's device before its peer is known: its key and port, its tunnel addresses
/// (single addresses: what it reaches goes through routes), up. Run in its namespace after
/// `wireguard-go <device>` has made the device.
pub fn device_commands(
    device: &str,
    listen_port: u16,
    private_key_file: &Path,
    tunnel_addresses: &[IpAddr],
) -> Vec<Vec<String>> {
    let argv = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mut commands = vec![argv(&[
        "wg",
        "set",
        device,
        "listen-port",
        &listen_port.to_string(),
        "private-key",
        &private_key_file.display().to_string(),
    ])];
    for address in tunnel_addresses {
        let single = if address.is_ipv4() { 32 } else { 128 };
        commands.push(argv(&[
            "ip",
            "address",
            "add",
            &format!("{address}/{single}"),
            "dev",
            device,
        ]));
    }
    commands.push(argv(&["ip", "link", "set", device, "up"]));
    commands
}

/// The kwire Interface as the far side's peer, as its owner would type it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FarSidePeer {
    /// The Interface's `status.publicKey`.
    pub public_key: String,
    /// The node's LAN address and the Interface's `listenPort`.
    pub endpoint: SocketAddr,
    /// [`far_side_allowed_ips`].
    pub allowed_ips: Vec<IpNet>,
    pub persistent_keepalive: Option<u16>,
}

/// `wg set` of the peer, then a route per allowed network. Run in the far side's namespace.
pub fn peer_commands(
    device: &str,
    peer: &FarSidePeer,
    preshared_key_file: Option<&Path>,
) -> Vec<Vec<String>> {
    let mut wg = vec![
        "wg".to_string(),
        "set".into(),
        device.into(),
        "peer".into(),
        peer.public_key.clone(),
    ];
    if let Some(file) = preshared_key_file {
        wg.extend(["preshared-key".into(), file.display().to_string()]);
    }
    wg.extend(["endpoint".into(), peer.endpoint.to_string()]);
    wg.extend([
        "allowed-ips".into(),
        peer.allowed_ips
            .iter()
            .map(IpNet::to_string)
            .collect::<Vec<_>>()
            .join(","),
    ]);
    if let Some(k) = peer.persistent_keepalive {
        wg.extend(["persistent-keepalive".into(), k.to_string()]);
    }
    let mut commands = vec![wg];
    for net in &peer.allowed_ips {
        commands.push(
            ["ip", "route", "replace", &net.to_string(), "dev", device]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        );
    }
    commands
}

#[cfg(test)]
mod tests {
    use super::*;
    use kwire_crds::manifest::parse_manifests;

    const PUBLIC: &str = "OgbUF/E21zi9qHf5h9H6N/iM92nnNYgRtOMhReFm730=";
    const PRIVATE: &str = "cNdJ2mHzi1M1w0vS2q2Xx2CKF8b7n9k0y7rjzYLTXXo=";

    fn lan() -> Ipv4Net {
        "10.211.55.0/24".parse().unwrap()
    }

    fn manifests(peer_extra: &str, annotations: &str) -> Vec<KwireObject> {
        let text = format!(
            "apiVersion: kwire.dev/v1alpha1
kind: Interface
metadata: {{name: hub-wg0}}
spec: {{nodeName: hub, deviceName: wg0, listenPort: 51820, addresses: [10.5.0.1/24]}}
---
apiVersion: kwire.dev/v1alpha1
kind: Peer
metadata:
  name: laptop
{annotations}
spec:
  interface: hub-wg0
  remote:
    publicKey: {PUBLIC}
{peer_extra}
"
        );
        parse_manifests(&text).unwrap()
    }

    const KEY: &str = "  annotations:\n    sandbox.kwire.dev/remote-private-key: cNdJ2mHzi1M1w0vS2q2Xx2CKF8b7n9k0y7rjzYLTXXo=";
    const ENDPOINT: &str = "    endpoint: {host: 10.211.55.100, port: 51821}\n  allowedIPs: [10.5.0.20/32]\n  persistentKeepalive: 25\n  presharedKey: {generate: true}";

    fn error(objects: &[KwireObject]) -> String {
        far_sides(
            objects,
            lan(),
            &[("10.211.55.10".parse().unwrap(), "hub".into())],
        )
        .unwrap_err()
        .to_string()
    }

    #[test]
    fn an_external_peer_gets_a_far_side_at_its_endpoint() {
        let sides = far_sides(&manifests(ENDPOINT, KEY), lan(), &[]).unwrap();
        assert_eq!(sides.len(), 1);
        let s = &sides[0];
        assert_eq!(s.peer, "laptop");
        assert_eq!(s.interface, "hub-wg0");
        assert_eq!(s.lan_address, Ipv4Addr::new(10, 211, 55, 100));
        assert_eq!(s.listen_port, 51821);
        assert_eq!(s.tunnel_addresses, ["10.5.0.20".parse::<IpAddr>().unwrap()]);
        assert_eq!(s.public_key, PUBLIC);
        assert_eq!(s.private_key(), PRIVATE);
        assert_eq!(s.persistent_keepalive, Some(25));
        assert_eq!(s.preshared_key, Some(PresharedKeySource::Generated));
        assert!(!format!("{s:?}").contains(PRIVATE));
    }

    #[test]
    fn a_dual_stack_far_side_gets_an_address_of_each_family() {
        let endpoint = "    endpoint: {host: 10.211.55.100, port: 51821}\n  allowedIPs: [10.5.0.20/32, fd05::20/128, 10.5.0.20/32, 10.9.0.0/24]";
        let sides = far_sides(&manifests(endpoint, KEY), lan(), &[]).unwrap();
        let want: Vec<IpAddr> = ["10.5.0.20", "fd05::20", "10.9.0.1"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        assert_eq!(sides[0].tunnel_addresses, want);
    }

    #[test]
    fn without_the_annotation_the_error_names_it() {
        let e = error(&manifests(ENDPOINT, ""));
        assert!(
            e.starts_with("Peer laptop is external: the sandbox needs its far side's private key in annotation sandbox.kwire.dev/remote-private-key"),
            "{e}"
        );
    }

    #[test]
    fn the_endpoint_must_be_a_free_host_address_of_the_lan() {
        let with = |endpoint: &str| {
            error(&manifests(
                &format!("    endpoint: {endpoint}\n  allowedIPs: [10.5.0.20/32]"),
                KEY,
            ))
        };
        assert!(
            with("{host: vpn.example.com, port: 1}")
                .contains("must be an IPv4 address of the sandbox LAN 10.211.55.0/24")
        );
        assert!(
            with("{host: 192.0.2.1, port: 1}").contains("not a host address of the sandbox LAN")
        );
        assert!(with("{host: 10.211.55.255, port: 1}").contains("not a host address"));
        assert!(with("{host: 10.211.55.10, port: 1}").contains("is node hub's address"));
        assert!(with("{host: 10.211.55.100}").contains("spec.remote.endpoint.port is not set"));
        let none = error(&manifests("  allowedIPs: [10.5.0.20/32]", KEY));
        assert!(
            none.contains("spec.remote.endpoint, which is not set"),
            "{none}"
        );
        assert!(
            error(&manifests(
                "    endpoint: {host: 10.211.55.100, port: 1}",
                KEY
            ))
            .contains("spec.allowedIPs is empty")
        );
    }

    #[test]
    fn peers_to_interfaces_are_not_external() {
        let objects = parse_manifests(
            "apiVersion: kwire.dev/v1alpha1
kind: Peer
metadata: {name: a-to-b}
spec: {interface: a, remote: {interface: b}}
",
        )
        .unwrap();
        assert!(far_sides(&objects, lan(), &[]).unwrap().is_empty());
    }

    #[test]
    fn first_hosts() {
        let f = |n: &str| first_host(n.parse().unwrap()).to_string();
        assert_eq!(f("10.5.0.20/32"), "10.5.0.20");
        assert_eq!(f("10.5.0.0/24"), "10.5.0.1");
        assert_eq!(f("10.5.0.7/24"), "10.5.0.1");
        assert_eq!(f("10.5.0.6/31"), "10.5.0.6");
        assert_eq!(f("fd00::/64"), "fd00::1");
        assert_eq!(f("fd00::5/128"), "fd00::5");
    }

    #[test]
    fn the_far_side_sends_the_interfaces_networks_and_routes() {
        let nets = |s: &[&str]| s.iter().map(|n| n.parse().unwrap()).collect::<Vec<IpNet>>();
        assert_eq!(
            far_side_allowed_ips(
                &nets(&["10.5.0.1/24", "fd05::1/64"]),
                &nets(&["10.6.0.0/24", "10.5.0.0/24"])
            ),
            nets(&["10.5.0.0/24", "fd05::/64", "10.6.0.0/24"])
        );
    }

    #[test]
    fn the_far_side_is_configured_with_plain_wg_and_ip() {
        let device = device_commands(
            "kx1x2",
            51821,
            Path::new("/tmp/k"),
            &["10.5.0.20".parse().unwrap(), "fd05::20".parse().unwrap()],
        );
        let text: Vec<String> = device.iter().map(|c| c.join(" ")).collect();
        assert_eq!(
            text,
            [
                "wg set kx1x2 listen-port 51821 private-key /tmp/k",
                "ip address add 10.5.0.20/32 dev kx1x2",
                "ip address add fd05::20/128 dev kx1x2",
                "ip link set kx1x2 up",
            ]
        );
        let peer = FarSidePeer {
            public_key: PUBLIC.into(),
            endpoint: "10.211.55.10:51820".parse().unwrap(),
            allowed_ips: vec![
                "10.5.0.0/24".parse().unwrap(),
                "10.6.0.0/24".parse().unwrap(),
            ],
            persistent_keepalive: Some(25),
        };
        let text: Vec<String> = peer_commands("kx1x2", &peer, Some(Path::new("/tmp/psk")))
            .iter()
            .map(|c| c.join(" "))
            .collect();
        assert_eq!(
            text,
            [
                format!(
                    "wg set kx1x2 peer {PUBLIC} preshared-key /tmp/psk endpoint 10.211.55.10:51820 allowed-ips 10.5.0.0/24,10.6.0.0/24 persistent-keepalive 25"
                ),
                "ip route replace 10.5.0.0/24 dev kx1x2".to_string(),
                "ip route replace 10.6.0.0/24 dev kx1x2".to_string(),
            ]
        );
    }
}
