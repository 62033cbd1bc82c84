//! Every kind survives YAML in, YAML out; every example parses into the Rust types;
//! every rule the types declare is in the generated schema.

use std::path::Path;

use kwire_crds::manifest::{KwireObject, parse_manifests};
use kwire_crds::names::{
    DeviceName, EndpointHost, InterfaceAddress, IpAddress, IpPrefix, ObjectName, WireguardKey,
};
use serde_json::Value;

const ALL_KINDS: &str = r#"
apiVersion: kwire.dev/v1alpha1
kind: Network
metadata: {name: link-ab, namespace: seed}
spec: {cidr: 10.1.0.0/24}
status:
  cidr: 10.1.0.0/24
  allocated: 1
  allocations: [{address: 10.1.0.1/24, interface: a-wg0-client, uid: "1234"}]
---
apiVersion: kwire.dev/v1alpha1
kind: Interface
metadata: {name: a-wg0-client}
spec:
  nodeName: a
  deviceName: wg0-client
  listenPort: 11111
  networks: [{name: link-ab, hostIndex: 1}]
  mtu: 1420
  endpoint: {host: "2001:db8::1", port: 11111}
  forwarding: false
  keyMode: Secret
  privateKeySecretRef: {name: a-key, key: privateKey}
status:
  observedGeneration: 3
  publicKey: OgbUF/E21zi9qHf5h9H6N/iM92nnNYgRtOMhReFm730=
  publicKeyPrefix: OgbUF/E2
  addresses: [10.1.0.1/24]
  endpoint: "[2001:db8::1]:11111"
  conditions:
  - {type: Ready, status: "True", reason: Configured, message: device configured, lastTransitionTime: "2026-11-25T10:00:00Z", observedGeneration: 3}
  device: {backend: userspace, listenPort: 11111, peers: 1}
---
apiVersion: kwire.dev/v1alpha1
kind: Peer
metadata: {name: a-to-b}
spec:
  interface: a-wg0-client
  remote: {publicKey: 4MIj+Te/pKnszjk9kc72E/YEhMeBdS8U1vPEg2PxSQI=, endpoint: {host: vpn.example.com, port: 22222}}
  allowedIPs: [10.1.0.2/32, 10.2.0.0/24]
  persistentKeepalive: 15
  presharedKey: {secretRef: {name: psk}}
status:
  resolved: {publicKey: 4MIj+Te/pKnszjk9kc72E/YEhMeBdS8U1vPEg2PxSQI=, endpoint: "vpn.example.com:22222", allowedIPs: [10.1.0.2/32]}
  latestHandshake: "2026-11-25T10:00:00Z"
  transfer: {rxBytes: 10, txBytes: 20}
---
apiVersion: kwire.dev/v1alpha1
kind: Route
metadata: {name: a-to-c}
spec: {interface: a-wg0-client, destination: 10.2.0.0/24, via: 10.1.0.2, metric: 10, table: 100}
"#;

#[test]
fn every_kind_round_trips_through_yaml() {
    let objects = parse_manifests(ALL_KINDS).unwrap();
    let kinds: Vec<&str> = objects.iter().map(KwireObject::kind).collect();
    assert_eq!(kinds, ["Network", "Interface", "Peer", "Route"]);
    let originals: Vec<Value> = serde_saphyr::from_multiple(ALL_KINDS).unwrap();
    for (object, original) in objects.iter().zip(originals) {
        let yaml = match object {
            KwireObject::Network(o) => serde_saphyr::to_string(o),
            KwireObject::Interface(o) => serde_saphyr::to_string(o),
            KwireObject::Peer(o) => serde_saphyr::to_string(o),
            KwireObject::Route(o) => serde_saphyr::to_string(o),
            KwireObject::Other { .. } => unreachable!(),
        }
        .unwrap();
        let again: Value = serde_saphyr::from_str(&yaml).unwrap();
        assert_eq!(
            again,
            original,
            "{} changed on the way through YAML:\n{yaml}",
            object.kind()
        );
    }
}

#[test]
fn every_example_parses_into_the_rust_types() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut count = 0;
    for entry in walk(&root) {
        // examples/mesh/*.nodes.yaml are node lists for the offline tools, not kwire objects.
        if entry.to_string_lossy().ends_with(".nodes.yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&entry).unwrap();
        let objects = parse_manifests(&text).unwrap_or_else(|e| panic!("{}: {e}", entry.display()));
        for object in &objects {
            match object {
                // Meshes are no manifest kind of the node-side tools: parsed here directly.
                KwireObject::Other { kind, value } if kind == "Mesh" => {
                    serde_json::from_value::<kwire_crds::v1alpha1::Mesh>(value.clone())
                        .unwrap_or_else(|e| panic!("{}: the Mesh: {e}", entry.display()));
                }
                KwireObject::Other { .. } => {
                    panic!("{}: unexpected {}", entry.display(), object.kind())
                }
                _ => {}
            }
        }
        count += objects.len();
    }
    assert!(count >= 20, "only {count} objects in examples/");
}

#[test]
fn the_seed_relay_says_what_the_seed_did_by_hand() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/seed/relay.yaml"),
    )
    .unwrap();
    let objects = parse_manifests(&text).unwrap();
    let interfaces: Vec<_> = objects
        .iter()
        .filter_map(|o| {
            if let KwireObject::Interface(i) = o {
                Some(i)
            } else {
                None
            }
        })
        .map(|i| {
            (
                i.spec.node_name.to_string(),
                i.device_name(),
                i.spec.listen_port,
                i.spec.addresses.clone().unwrap()[0].to_string(),
            )
        })
        .collect();
    assert_eq!(
        interfaces,
        [
            ("a".into(), "wg0-client".into(), 11111, "10.1.0.1/24".into()),
            ("b".into(), "wg0-server".into(), 22222, "10.1.0.2/24".into()),
            ("b".into(), "wg1-client".into(), 23333, "10.2.0.1/24".into()),
            ("c".into(), "wg0-server".into(), 33333, "10.2.0.2/24".into()),
        ]
    );
    let keepalives: Vec<_> = objects
        .iter()
        .filter_map(|o| {
            if let KwireObject::Peer(p) = o {
                p.spec.persistent_keepalive
            } else {
                None
            }
        })
        .collect();
    assert_eq!(keepalives, [15, 15]);
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else if path.extension().is_some_and(|e| e == "yaml") {
            out.push(path);
        }
    }
    out
}

#[test]
fn the_schema_holds_every_declared_rule() {
    let crds = kwire_crds::crd::all();
    let yaml = kwire_crds::crd::to_yaml(&crds);
    let type_rules = [
        DeviceName::RULES,
        WireguardKey::RULES,
        IpAddress::RULES,
        IpPrefix::RULES,
        InterfaceAddress::RULES,
        EndpointHost::RULES,
        ObjectName::RULES,
    ];
    let json = serde_json::to_string(&crds).unwrap();
    for rule in type_rules.iter().flat_map(|r| r.iter()) {
        assert!(
            json.contains(&serde_json::to_string(rule.rule).unwrap()),
            "missing rule {}",
            rule.rule
        );
        assert!(
            json.contains(&serde_json::to_string(rule.message).unwrap()),
            "missing message {}",
            rule.message
        );
    }
    for needle in [
        "has(self.addresses) != has(self.networks)",
        "has(self.interface) != has(self.publicKey)",
        "has(self.cidr) != has(self.prefixLength)",
        "spec.nodeName is immutable",
        "spec.interface is immutable",
        "maxItems: 64",
        "maximum: 9000",
        "minimum: 1280",
        "selectableFields",
    ] {
        assert!(yaml.contains(needle), "generated CRDs lack {needle}");
    }
}
