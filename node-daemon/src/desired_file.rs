//! The `--desired-file` debugging mode: a [`DesiredNode`] read from a YAML
//! or JSON file, so the daemon runs without a cluster.
//!
//! ```yaml
//! devices:
//!   wg0:
//!     owner: default/wg0            # "<namespace>/<name>" of the Interface
//!     privateKeyFile: wg0.key       # or privateKey: <base64>; relative to this file
//!     listenPort: 51820
//!     addresses: [10.1.0.1/24]
//!     mtu: 1420                     # optional; default: the underlay's MTU minus 80
//!     forwarding: false
//!     peers:
//!       - publicKey: <base64>
//!         endpoint: 192.168.1.2:51820
//!         allowedIPs: [10.1.0.2/32]
//!         persistentKeepalive: 15
//!         presharedKeyFile: psk     # or presharedKey: <base64>
//! routes:
//!   - destination: 10.2.0.0/24
//!     device: wg0
//!     via: 10.1.0.2                 # optional
//!     metric: 100                   # optional
//!     table: 254                    # optional, default main
//! forwarding: { ipv4: true, ipv6: false }
//! ```
//!
//! Error messages name fields and files, never key material.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use kwire_crds::keys::Zeroizing;
use serde::Deserialize;

use crate::model::{
    DesiredDevice, DesiredNode, DesiredRoute, IfaceName, NodeForwarding, OwnerRef, ParseError,
    PeerConfig, PresharedKey, PrivateKey, PublicKey, RouteKey, TABLE_MAIN,
};
use crate::validate::{ValidationError, validate};

#[derive(Debug, thiserror::Error)]
pub enum DesiredFileError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The parser's message without source snippets (which could show a key).
    #[error("parsing {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{what}: {source}")]
    Field { what: String, source: ParseError },
    #[error("{0}")]
    Missing(String),
    #[error("invalid desired state: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<ValidationError>),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileNode {
    #[serde(default)]
    devices: BTreeMap<String, FileDevice>,
    #[serde(default)]
    routes: Vec<FileRoute>,
    #[serde(default)]
    forwarding: FileForwarding,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileDevice {
    owner: String,
    private_key: Option<String>,
    private_key_file: Option<PathBuf>,
    listen_port: Option<u16>,
    #[serde(default)]
    addresses: Vec<IpNet>,
    mtu: Option<u32>,
    #[serde(default)]
    peers: Vec<FilePeer>,
    #[serde(default)]
    forwarding: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FilePeer {
    public_key: String,
    endpoint: Option<SocketAddr>,
    #[serde(default, rename = "allowedIPs", alias = "allowedIps")]
    allowed_ips: Vec<IpNet>,
    persistent_keepalive: Option<u16>,
    preshared_key: Option<String>,
    preshared_key_file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileRoute {
    destination: IpNet,
    device: String,
    via: Option<IpAddr>,
    metric: Option<u32>,
    table: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileForwarding {
    #[serde(default)]
    ipv4: bool,
    #[serde(default)]
    ipv6: bool,
}

/// Reads, parses and validates a desired-state file.
pub fn load(path: &Path) -> Result<DesiredNode, DesiredFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| DesiredFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    parse(&text, base).map_err(|e| match e {
        DesiredFileError::Parse { message, .. } => DesiredFileError::Parse {
            path: path.to_owned(),
            message,
        },
        other => other,
    })
}

/// Parses YAML or JSON; relative key files are resolved against `base`.
pub fn parse(text: &str, base: &Path) -> Result<DesiredNode, DesiredFileError> {
    let file: FileNode = serde_saphyr::from_str(text).map_err(|e| DesiredFileError::Parse {
        path: PathBuf::new(),
        message: e.render_with_options(serde_saphyr::render_options! {
            snippets: serde_saphyr::SnippetMode::Off,
        }),
    })?;
    let mut node = DesiredNode {
        forwarding: NodeForwarding {
            ipv4: file.forwarding.ipv4,
            ipv6: file.forwarding.ipv6,
        },
        ..Default::default()
    };
    for (name, dev) in file.devices {
        let iface = IfaceName::new(name.clone()).map_err(field(format!("device {name:?}")))?;
        let owner: OwnerRef = dev
            .owner
            .parse()
            .map_err(field(format!("device {name}: owner")))?;
        let key_text = secret(
            dev.private_key,
            dev.private_key_file,
            base,
            &format!("device {name}: privateKey"),
        )?
        .ok_or_else(|| {
            DesiredFileError::Missing(format!(
                "device {name}: privateKey or privateKeyFile is required"
            ))
        })?;
        let private_key: PrivateKey = key_text
            .parse()
            .map_err(field(format!("device {name}: privateKey")))?;
        let mut peers = BTreeMap::new();
        for (i, p) in dev.peers.into_iter().enumerate() {
            let what = format!("device {name}: peer {i}");
            let key: PublicKey = p
                .public_key
                .parse()
                .map_err(field(format!("{what}: publicKey")))?;
            let preshared_key = secret(
                p.preshared_key,
                p.preshared_key_file,
                base,
                &format!("{what}: presharedKey"),
            )?
            .map(|t| t.parse::<PresharedKey>())
            .transpose()
            .map_err(field(format!("{what}: presharedKey")))?;
            let config = PeerConfig {
                endpoint: p.endpoint,
                allowed_ips: p.allowed_ips.into_iter().collect(),
                persistent_keepalive: p.persistent_keepalive,
                preshared_key,
            };
            if peers.insert(key, config).is_some() {
                return Err(DesiredFileError::Missing(format!(
                    "{what}: public key {key} is listed twice"
                )));
            }
        }
        node.devices.insert(
            iface,
            DesiredDevice {
                owner,
                private_key,
                listen_port: dev.listen_port,
                addresses: dev.addresses.into_iter().collect(),
                mtu: dev.mtu,
                peers,
                forwarding: dev.forwarding,
            },
        );
    }
    for r in file.routes {
        let device = IfaceName::new(r.device.clone())
            .map_err(field(format!("route {}: device", r.destination)))?;
        node.routes.insert(
            RouteKey::new(r.table.unwrap_or(TABLE_MAIN), r.destination),
            DesiredRoute {
                device,
                via: r.via,
                metric: r.metric,
            },
        );
    }
    let problems = validate(&node);
    if !problems.is_empty() {
        return Err(DesiredFileError::Invalid(problems));
    }
    Ok(node)
}

/// The error of a field that does not parse (a name, an owner or a key).
fn field<E: Into<ParseError>>(what: String) -> impl FnOnce(E) -> DesiredFileError {
    move |source| DesiredFileError::Field {
        what,
        source: source.into(),
    }
}

/// An inline value or the contents of a file (the key parsers ignore surrounding
/// whitespace); not both. Wiped when dropped.
fn secret(
    inline: Option<String>,
    file: Option<PathBuf>,
    base: &Path,
    what: &str,
) -> Result<Option<Zeroizing<String>>, DesiredFileError> {
    match (inline, file) {
        (Some(v), Some(_)) => {
            drop(Zeroizing::new(v));
            Err(DesiredFileError::Missing(format!(
                "{what}: give the value or a file, not both"
            )))
        }
        (Some(v), None) => Ok(Some(Zeroizing::new(v))),
        (None, Some(f)) => {
            let path = if f.is_absolute() { f } else { base.join(f) };
            let text = std::fs::read_to_string(&path)
                .map_err(|source| DesiredFileError::Read { path, source })?;
            Ok(Some(Zeroizing::new(text)))
        }
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
    const PUB_B: &str = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=";

    #[test]
    fn a_yaml_file_with_a_key_file_becomes_a_desired_node() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("wg0.key"), format!("{KEY_A}\n")).unwrap();
        let text = format!(
            "devices:\n  wg0:\n    owner: default/a\n    privateKeyFile: wg0.key\n    listenPort: 11111\n    \
             addresses: [10.1.0.1/24]\n    peers:\n      - publicKey: {PUB_B}\n        \
             endpoint: 192.168.1.2:22222\n        allowedIPs: [10.1.0.2/32, 10.2.0.0/24]\n        \
             persistentKeepalive: 15\nroutes:\n  - destination: 10.2.0.0/24\n    device: wg0\n    via: 10.1.0.2\n"
        );
        let node = parse(&text, dir.path()).unwrap();
        let dev = &node.devices[&"wg0".parse().unwrap()];
        assert_eq!(dev.private_key, KEY_A.parse().unwrap());
        assert_eq!(dev.listen_port, Some(11111));
        assert_eq!(dev.peers.len(), 1);
        assert_eq!(node.routes.len(), 1);
    }

    #[test]
    fn json_works_too() {
        let text = format!(
            r#"{{"devices": {{"wg1": {{"owner": "a/b", "privateKey": "{KEY_A}"}}}}, "forwarding": {{"ipv4": true}}}}"#
        );
        let node = parse(&text, Path::new(".")).unwrap();
        assert!(node.forwarding.ipv4);
        assert_eq!(node.devices.len(), 1);
    }

    #[test]
    fn a_bad_private_key_is_reported_without_echoing_it() {
        let text =
            "devices:\n  wg0:\n    owner: a/b\n    privateKey: c2VjcmV0LWJ1dC10b28tc2hvcnQ=\n";
        let err = parse(text, Path::new(".")).unwrap_err().to_string();
        assert!(err.contains("privateKey"), "{err}");
        assert!(
            err.contains("the key decodes to 20 bytes instead of 32"),
            "{err}"
        );
        assert!(!err.contains("c2VjcmV0"), "{err}");
    }

    #[test]
    fn a_route_to_an_unknown_device_is_rejected() {
        let text = "routes:\n  - destination: 10.2.0.0/24\n    device: wg9\n";
        assert!(matches!(
            parse(text, Path::new(".")),
            Err(DesiredFileError::Invalid(_))
        ));
    }
}
