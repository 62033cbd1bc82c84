//! The Secrets the operator creates (key material) and how it reads Secrets: pure builders
//! and readers, no I/O.
//!
//! A generated private key lives in a Secret of type [`PRIVATE_KEY_SECRET_TYPE`] named
//! [`private_key_secret_name`], labelled `kwire.dev/interface=<name>`, owned by its
//! Interface, with the key under `privateKey` as `wg genkey` prints it. A generated
//! pre-shared key is the same with `kwire.dev/peer`, [`PRESHARED_KEY_SECRET_TYPE`] and
//! `presharedKey`, owned by its Peer.
//!
//! [`PlannedSecret`] holds key bytes, so its `Debug` prints only the Secret's name.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

use kwire_crds::keys::{KeyError, PresharedKey, PrivateKey};

pub const PRIVATE_KEY_SECRET_TYPE: &str = "kwire.dev/wireguard-private-key";
pub const PRESHARED_KEY_SECRET_TYPE: &str = "kwire.dev/wireguard-preshared-key";
pub const LABEL_INTERFACE: &str = "kwire.dev/interface";
pub const LABEL_PEER: &str = "kwire.dev/peer";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// On a private key Secret: which key of its Interface it holds (0 for the first, one more
/// for each rotation). Absent on Secrets made before key rotation existed: those are 0.
pub const LABEL_KEY_GENERATION: &str = "kwire.dev/key-generation";
/// On a private key Secret: the value of the Interface's `kwire.dev/rotate-key` annotation
/// when the key was made, so that a request is answered once, whatever the operator forgets.
pub const ANNOTATION_ROTATION_REQUEST: &str = "kwire.dev/rotation-request";
pub const MANAGED_BY: &str = "kwire-operator";
pub const PRIVATE_KEY_DATA: &str = "privateKey";
pub const PRESHARED_KEY_DATA: &str = "presharedKey";

/// The label selector of every Secret the operator creates.
pub fn managed_selector() -> String {
    format!("{LABEL_MANAGED_BY}={MANAGED_BY}")
}

/// `<base><suffix>`, kept to the 253 characters of an object name by cutting `base` and
/// adding a hash of it, so that different long names stay different.
fn child_name(base: &str, suffix: &str) -> String {
    const MAX: usize = 253;
    if base.len() + suffix.len() <= MAX {
        return format!("{base}{suffix}");
    }
    let hash = fnv1a(base);
    let keep = MAX - suffix.len() - 9;
    let cut = base[..keep].trim_end_matches(['-', '.']);
    format!("{cut}-{hash:08x}{suffix}")
}

fn fnv1a(text: &str) -> u32 {
    text.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// A label value for an object name: names longer than 63 characters are cut and hashed.
pub fn label_value(name: &str) -> String {
    if name.len() <= 63 {
        return name.to_string();
    }
    let cut = name[..54].trim_end_matches(['-', '.']);
    format!("{cut}-{:08x}", fnv1a(name))
}

pub fn private_key_secret_name(interface_name: &str) -> String {
    child_name(interface_name, "-private-key")
}

/// The name of key number `generation` of an Interface: the first keeps the name it always
/// had, each rotation adds `-<generation>`.
pub fn private_key_secret_name_at(interface_name: &str, generation: u32) -> String {
    if generation == 0 {
        private_key_secret_name(interface_name)
    } else {
        child_name(interface_name, &format!("-private-key-{generation}"))
    }
}

/// Which key of its Interface a private key Secret holds, from its label (0 without one).
pub fn key_generation(meta: &ObjectMeta) -> Option<u32> {
    match meta
        .labels
        .as_ref()
        .and_then(|l| l.get(LABEL_KEY_GENERATION))
    {
        Some(value) => value.parse().ok(),
        None => Some(0),
    }
}

/// Whether `meta` is one of the private key Secrets the operator generates for the
/// Interface `interface_name`: labelled for it, with the name of its generation.
pub fn is_key_secret_of(meta: &ObjectMeta, interface_name: &str) -> Option<u32> {
    let labels = meta.labels.as_ref()?;
    if labels.get(LABEL_MANAGED_BY).map(String::as_str) != Some(MANAGED_BY)
        || labels.get(LABEL_INTERFACE) != Some(&label_value(interface_name))
    {
        return None;
    }
    let generation = key_generation(meta)?;
    (meta.name.as_deref() == Some(private_key_secret_name_at(interface_name, generation).as_str()))
        .then_some(generation)
}

pub fn preshared_key_secret_name(peer_name: &str) -> String {
    child_name(peer_name, "-preshared-key")
}

/// An ownerReference to `owner` as controller. `blockOwnerDeletion` is left unset, so the
/// operator needs no permission on the owner's `finalizers` subresource.
pub fn owner_reference<K: Resource<DynamicType = ()>>(owner: &K) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.meta().name.clone()?,
        uid: owner.meta().uid.clone()?,
        controller: Some(true),
        block_owner_deletion: None,
    })
}

/// A Secret to create, with key material inside: `Debug` shows the name only.
#[derive(Clone, PartialEq)]
pub struct PlannedSecret(pub Secret);

impl fmt::Debug for PlannedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({}, data: <redacted>)", self.0.name_any())
    }
}

fn build<K: Resource<DynamicType = ()>>(
    owner: &K,
    name: String,
    type_: &str,
    label: &str,
    data_key: &str,
    value: &str,
) -> PlannedSecret {
    PlannedSecret(Secret {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: owner.meta().namespace.clone(),
            labels: Some(BTreeMap::from([
                (label.to_string(), label_value(&owner.name_any())),
                (LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
            ])),
            owner_references: owner_reference(owner).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        type_: Some(type_.to_string()),
        data: Some(BTreeMap::from([(
            data_key.to_string(),
            ByteString(value.as_bytes().to_vec()),
        )])),
        immutable: Some(true),
        ..Secret::default()
    })
}

/// The Secret holding the first generated private key of `interface`.
pub fn private_key_secret<K: Resource<DynamicType = ()>>(
    interface: &K,
    key: &PrivateKey,
) -> PlannedSecret {
    private_key_secret_at(interface, key, 0, None)
}

/// The Secret holding key number `generation` of `interface`, made when the interface's
/// `kwire.dev/rotate-key` annotation had the value `request`.
pub fn private_key_secret_at<K: Resource<DynamicType = ()>>(
    interface: &K,
    key: &PrivateKey,
    generation: u32,
    request: Option<&str>,
) -> PlannedSecret {
    let mut planned = build(
        interface,
        private_key_secret_name_at(&interface.name_any(), generation),
        PRIVATE_KEY_SECRET_TYPE,
        LABEL_INTERFACE,
        PRIVATE_KEY_DATA,
        &key.to_base64(),
    );
    let meta = &mut planned.0.metadata;
    meta.labels
        .get_or_insert_with(BTreeMap::new)
        .insert(LABEL_KEY_GENERATION.into(), generation.to_string());
    if let Some(request) = request {
        meta.annotations = Some(BTreeMap::from([(
            ANNOTATION_ROTATION_REQUEST.to_string(),
            request.to_string(),
        )]));
    }
    planned
}

/// The Secret holding a generated pre-shared key of `peer`.
pub fn preshared_key_secret<K: Resource<DynamicType = ()>>(
    peer: &K,
    key: &PresharedKey,
) -> PlannedSecret {
    build(
        peer,
        preshared_key_secret_name(&peer.name_any()),
        PRESHARED_KEY_SECRET_TYPE,
        LABEL_PEER,
        PRESHARED_KEY_DATA,
        &key.to_base64(),
    )
}

/// Whether `secret` is one the operator generated for the object `owner_name` (by type and
/// label; the ownerReference may name an earlier object of the same name).
pub fn is_generated_for(secret: &Secret, type_: &str, label: &str, owner_name: &str) -> bool {
    secret.type_.as_deref() == Some(type_)
        && secret.labels().get(label) == Some(&label_value(owner_name))
}

/// Whether `secret` lists the object with `uid` among its owners.
pub fn owned_by(secret: &Secret, uid: &str) -> bool {
    secret.owner_references().iter().any(|o| o.uid == uid)
}

/// The uids of `secret`'s controller references other than `uid`: the earlier objects of
/// the same name it was generated for, which an adoption replaces.
pub fn other_controllers(secret: &Secret, uid: &str) -> Vec<String> {
    secret
        .owner_references()
        .iter()
        .filter(|o| o.controller == Some(true) && o.uid != uid)
        .map(|o| o.uid.clone())
        .collect()
}

/// A strategic-merge patch adding `owner` to a Secret's ownerReferences (merged by UID) and
/// deleting the references with the uids in `replaces`, leaving everything else, the key
/// above all, untouched.
pub fn adopt_patch(owner: &OwnerReference, replaces: &[String]) -> serde_json::Value {
    let mut references: Vec<serde_json::Value> = replaces
        .iter()
        .map(|uid| serde_json::json!({"uid": uid, "$patch": "delete"}))
        .collect();
    references.push(serde_json::json!(owner));
    serde_json::json!({"metadata": {"ownerReferences": references}})
}

/// What is wrong with a key read from a Secret. Never contains key material.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadProblem {
    /// The data key is absent.
    Missing,
    /// The value is not text, or not a WireGuard key.
    Invalid(KeyError),
}

/// The value under `data_key`, borrowed from the Secret: the key is parsed where it is and
/// never copied into an unwiped buffer.
fn read_value<'a>(secret: &'a Secret, data_key: &str) -> Result<&'a [u8], ReadProblem> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(data_key))
        .map(|b| b.0.as_slice())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(data_key))
                .map(|s| s.as_bytes())
        })
        .ok_or(ReadProblem::Missing)
}

fn read_text<'a>(secret: &'a Secret, data_key: &str) -> Result<&'a str, ReadProblem> {
    std::str::from_utf8(read_value(secret, data_key)?)
        .map_err(|_| ReadProblem::Invalid(KeyError::NotAscii))
}

/// The private key under `data_key`, written as by `wg genkey`.
pub fn read_private_key(secret: &Secret, data_key: &str) -> Result<PrivateKey, ReadProblem> {
    PrivateKey::from_base64(read_text(secret, data_key)?).map_err(ReadProblem::Invalid)
}

/// The pre-shared key under `data_key`, written as by `wg genpsk`.
pub fn read_preshared_key(secret: &Secret, data_key: &str) -> Result<PresharedKey, ReadProblem> {
    PresharedKey::from_base64(read_text(secret, data_key)?).map_err(ReadProblem::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{interface, peer};

    const PRIVATE: &str = "uL05OyKCfPLVOdvOUsn5NJx1oRCuLZt/+9All5kZPVE=";

    #[test]
    fn a_generated_key_secret_is_typed_labelled_owned_and_readable() {
        let iface = interface("a-wg0", "a", &["10.0.0.1/24"]);
        let key = PrivateKey::from_base64(PRIVATE).unwrap();
        let PlannedSecret(secret) = private_key_secret(&iface, &key);
        assert_eq!(secret.name_any(), "a-wg0-private-key");
        assert_eq!(secret.namespace().as_deref(), Some("wg"));
        assert_eq!(secret.type_.as_deref(), Some(PRIVATE_KEY_SECRET_TYPE));
        assert_eq!(secret.labels()[LABEL_INTERFACE], "a-wg0");
        assert_eq!(secret.labels()[LABEL_MANAGED_BY], MANAGED_BY);
        let owner = &secret.owner_references()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("Interface", "uid-a-wg0")
        );
        assert_eq!(owner.controller, Some(true));
        assert!(is_generated_for(
            &secret,
            PRIVATE_KEY_SECRET_TYPE,
            LABEL_INTERFACE,
            "a-wg0"
        ));
        assert!(!is_generated_for(
            &secret,
            PRIVATE_KEY_SECRET_TYPE,
            LABEL_INTERFACE,
            "b-wg0"
        ));
        assert!(owned_by(&secret, "uid-a-wg0"));
        assert_eq!(read_private_key(&secret, PRIVATE_KEY_DATA).unwrap(), key);
    }

    #[test]
    fn rotated_keys_get_numbered_names_labels_and_the_request_they_answer() {
        let iface = interface("a-wg0", "a", &["10.0.0.1/24"]);
        let key = PrivateKey::from_base64(PRIVATE).unwrap();
        let PlannedSecret(first) = private_key_secret(&iface, &key);
        assert_eq!(is_key_secret_of(&first.metadata, "a-wg0"), Some(0));
        let PlannedSecret(third) = private_key_secret_at(&iface, &key, 2, Some("monday"));
        assert_eq!(third.name_any(), "a-wg0-private-key-2");
        assert_eq!(third.labels()[LABEL_KEY_GENERATION], "2");
        assert_eq!(third.annotations()[ANNOTATION_ROTATION_REQUEST], "monday");
        assert_eq!(is_key_secret_of(&third.metadata, "a-wg0"), Some(2));
        assert_eq!(is_key_secret_of(&third.metadata, "b-wg0"), None);
        // A Secret made before rotation existed has no generation label: it is the first.
        let mut legacy = first.metadata.clone();
        legacy.labels.as_mut().unwrap().remove(LABEL_KEY_GENERATION);
        assert_eq!(is_key_secret_of(&legacy, "a-wg0"), Some(0));
        // A label that disagrees with the name is not one of ours.
        let mut odd = third.metadata.clone();
        odd.labels
            .as_mut()
            .unwrap()
            .insert(LABEL_KEY_GENERATION.into(), "1".into());
        assert_eq!(is_key_secret_of(&odd, "a-wg0"), None);
    }

    #[test]
    fn a_planned_secret_never_prints_its_key() {
        let iface = interface("a-wg0", "a", &["10.0.0.1/24"]);
        let planned = private_key_secret(&iface, &PrivateKey::from_base64(PRIVATE).unwrap());
        let shown = format!("{planned:?}");
        assert_eq!(shown, "Secret(a-wg0-private-key, data: <redacted>)");
    }

    #[test]
    fn a_preshared_key_secret_belongs_to_its_peer() {
        let p = peer("laptop", "gw", "x");
        let psk = PresharedKey::generate().unwrap();
        let PlannedSecret(secret) = preshared_key_secret(&p, &psk);
        assert_eq!(secret.name_any(), "laptop-preshared-key");
        assert_eq!(secret.labels()[LABEL_PEER], "laptop");
        assert_eq!(secret.owner_references()[0].kind, "Peer");
        assert_eq!(
            read_preshared_key(&secret, PRESHARED_KEY_DATA).unwrap(),
            psk
        );
    }

    #[test]
    fn reading_reports_missing_and_invalid_keys_without_their_value() {
        let mut secret = Secret::default();
        assert_eq!(
            read_private_key(&secret, "privateKey"),
            Err(ReadProblem::Missing)
        );
        secret.data = Some(BTreeMap::from([(
            "privateKey".to_string(),
            ByteString(b"c2hvcnQ=".to_vec()),
        )]));
        assert_eq!(
            read_private_key(&secret, "privateKey"),
            Err(ReadProblem::Invalid(KeyError::WrongLength { len: 5 }))
        );
        // Not text: the raw bytes of a key are not what `wg genkey` writes.
        secret.data = Some(BTreeMap::from([(
            "privateKey".to_string(),
            ByteString(vec![0xff; 44]),
        )]));
        assert_eq!(
            read_private_key(&secret, "privateKey"),
            Err(ReadProblem::Invalid(KeyError::NotAscii))
        );
        secret.data = None;
        secret.string_data = Some(BTreeMap::from([("k".to_string(), format!("{PRIVATE}\n"))]));
        assert!(read_private_key(&secret, "k").is_ok());
    }

    #[test]
    fn long_names_stay_within_kubernetes_limits_and_distinct() {
        let long_a = format!("{}a", "x".repeat(252));
        let long_b = format!("{}b", "x".repeat(252));
        let (a, b) = (
            private_key_secret_name(&long_a),
            private_key_secret_name(&long_b),
        );
        assert!(a.len() <= 253 && b.len() <= 253);
        assert_ne!(a, b);
        assert!(a.ends_with("-private-key"));
        let label = label_value(&long_a);
        assert!(label.len() <= 63);
        assert_ne!(label, label_value(&long_b));
        assert_eq!(label_value("short"), "short");
    }

    #[test]
    fn adopting_adds_one_owner_reference_and_nothing_else() {
        let iface = interface("a-wg0", "a", &["10.0.0.1/24"]);
        let owner = owner_reference(&iface).unwrap();
        let patch = adopt_patch(&owner, &[]);
        assert_eq!(patch["metadata"]["ownerReferences"][0]["uid"], "uid-a-wg0");
        assert_eq!(patch.as_object().unwrap().len(), 1);
        // An earlier Interface of the same name controlled it: that reference goes, since
        // an object has one controller (the API server refuses a second with 422).
        let patch = adopt_patch(&owner, &["old-uid".to_string()]);
        assert_eq!(
            patch["metadata"]["ownerReferences"],
            serde_json::json!([{"uid": "old-uid", "$patch": "delete"}, owner])
        );
    }
}
