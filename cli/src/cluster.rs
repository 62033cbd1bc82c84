//! The thin part that talks to the API server: a client from a kubeconfig, and reads.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::ListParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use kwire_crds::keys::KeyError;
use kwire_crds::v1alpha1::{Interface, Mesh, Network, Peer, Route};

/// Which kubeconfig and context to use; unset means what kubectl would use
/// (`KUBECONFIG`, `~/.kube/config`, or the in-cluster ServiceAccount).
#[derive(Clone, Debug, Default)]
pub struct Target {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
}

/// Where to read objects from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    Namespace(String),
    AllNamespaces,
}

/// A client, and the namespace the kubeconfig's context selects.
pub async fn connect(target: &Target) -> Result<(Client, String)> {
    let options = KubeConfigOptions {
        context: target.context.clone(),
        ..KubeConfigOptions::default()
    };
    let config = match (&target.kubeconfig, &target.context) {
        (Some(path), _) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            Config::from_custom_kubeconfig(kubeconfig, &options).await?
        }
        (None, Some(_)) => Config::from_kubeconfig(&options).await?,
        (None, None) => Config::infer()
            .await
            .context("no kubeconfig found (set KUBECONFIG or pass --kubeconfig)")?,
    };
    let namespace = config.default_namespace.clone();
    Ok((Client::try_from(config)?, namespace))
}

fn api<K>(client: &Client, scope: &Scope) -> Api<K>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match scope {
        Scope::Namespace(ns) => Api::namespaced(client.clone(), ns),
        Scope::AllNamespaces => Api::all(client.clone()),
    }
}

/// Every kwire object in scope.
#[derive(Clone, Debug, Default)]
pub struct Objects {
    pub networks: Vec<Network>,
    pub interfaces: Vec<Interface>,
    pub peers: Vec<Peer>,
    pub routes: Vec<Route>,
    pub meshes: Vec<Mesh>,
}

impl Objects {
    pub fn is_empty(&self) -> bool {
        self.networks.is_empty()
            && self.interfaces.is_empty()
            && self.peers.is_empty()
            && self.routes.is_empty()
            && self.meshes.is_empty()
    }
}

/// Whether an API error says the resource is not served: the Mesh kind is not installed
/// (a cluster whose chart predates it).
fn not_served(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

pub async fn list(client: &Client, scope: &Scope) -> Result<Objects> {
    let lp = ListParams::default();
    let what = |kind: &str| match scope {
        Scope::Namespace(ns) => format!("listing {kind} in namespace {ns}"),
        Scope::AllNamespaces => format!("listing {kind} in all namespaces"),
    };
    Ok(Objects {
        networks: api::<Network>(client, scope)
            .list(&lp)
            .await
            .with_context(|| what("Networks"))?
            .items,
        interfaces: api::<Interface>(client, scope)
            .list(&lp)
            .await
            .with_context(|| what("Interfaces"))?
            .items,
        peers: api::<Peer>(client, scope)
            .list(&lp)
            .await
            .with_context(|| what("Peers"))?
            .items,
        routes: api::<Route>(client, scope)
            .list(&lp)
            .await
            .with_context(|| what("Routes"))?
            .items,
        meshes: match api::<Mesh>(client, scope).list(&lp).await {
            Ok(list) => list.items,
            Err(e) if not_served(&e) => Vec::new(),
            Err(e) => return Err(e).with_context(|| what("Meshes")),
        },
    })
}

/// A key from a Secret (the base64 text `wg genkey` prints, or the raw bytes), read with
/// `parse` (`PrivateKey::from_secret_value` or `PresharedKey::from_secret_value`). The error
/// names the Secret and key, never the value.
pub async fn secret_key<K>(
    client: &Client,
    namespace: &str,
    name: &str,
    key: &str,
    parse: fn(&[u8]) -> Result<K, KeyError>,
) -> Result<K> {
    let secret = Api::<Secret>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .with_context(|| format!("reading Secret {namespace}/{name}"))?
        .with_context(|| format!("Secret {namespace}/{name} does not exist"))?;
    key_in_secret(&secret, namespace, key, parse)
}

/// The key under `key` in `secret`, parsed where it is (no copy of the value is made).
fn key_in_secret<K>(
    secret: &Secret,
    namespace: &str,
    key: &str,
    parse: fn(&[u8]) -> Result<K, KeyError>,
) -> Result<K> {
    let name = secret.metadata.name.as_deref().unwrap_or_default();
    let value: &ByteString = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .with_context(|| format!("Secret {namespace}/{name} has no key {key:?}"))?;
    parse(&value.0)
        .with_context(|| format!("key {key:?} of Secret {namespace}/{name} is not a WireGuard key"))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use kwire_crds::keys::{PresharedKey, PrivateKey};

    use super::*;

    // `wg genkey`; the test only reads it back.
    const PRIVATE: &str = "uL05OyKCfPLVOdvOUsn5NJx1oRCuLZt/+9All5kZPVE=";

    fn secret(value: &[u8]) -> Secret {
        Secret {
            metadata: kube::api::ObjectMeta {
                name: Some("laptop-key".into()),
                ..Default::default()
            },
            data: Some(BTreeMap::from([(
                "privateKey".to_string(),
                ByteString(value.to_vec()),
            )])),
            ..Default::default()
        }
    }

    #[test]
    fn a_key_is_read_from_base64_text_or_raw_bytes() {
        let expected = PrivateKey::from_base64(PRIVATE).unwrap();
        for value in [
            format!("{PRIVATE}\n").into_bytes(),
            expected.expose_secret().to_vec(),
        ] {
            let read = key_in_secret(
                &secret(&value),
                "ns",
                "privateKey",
                PrivateKey::from_secret_value,
            )
            .unwrap();
            assert_eq!(read, expected);
        }
    }

    #[test]
    fn a_bad_key_is_named_and_explained_but_never_shown() {
        let error = key_in_secret(
            &secret(b"c2hvcnQ="),
            "ns",
            "privateKey",
            PresharedKey::from_secret_value,
        )
        .unwrap_err();
        let text = format!("{error:#}");
        assert!(
            text.starts_with(
                "key \"privateKey\" of Secret ns/laptop-key is not a WireGuard key: decodes to 5 bytes instead of 32"
            ),
            "{text}"
        );
        assert!(!text.contains("c2hvcnQ"), "{text}");
        let missing =
            key_in_secret(&secret(b""), "ns", "other", PrivateKey::from_secret_value).unwrap_err();
        assert_eq!(
            missing.to_string(),
            "Secret ns/laptop-key has no key \"other\""
        );
    }
}
