//! The thin part that talks to the API server: a client from a kubeconfig, and reads.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::api::core::v1::Secret;
use kube::api::ListParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use kwire_crds::v1alpha1::{Interface, Network, Peer, Route};

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
}

impl Objects {
    pub fn is_empty(&self) -> bool {
        self.networks.is_empty()
            && self.interfaces.is_empty()
            && self.peers.is_empty()
            && self.routes.is_empty()
    }
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
    })
}

/// A 32-byte key from a Secret, as base64 (the Secret may hold the base64 text `wg genkey`
/// prints, or the raw bytes). The error names the Secret and key, never the value.
pub async fn secret_key(client: &Client, namespace: &str, name: &str, key: &str) -> Result<String> {
    let secret = Api::<Secret>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .with_context(|| format!("reading Secret {namespace}/{name}"))?
        .with_context(|| format!("Secret {namespace}/{name} does not exist"))?;
    let value = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .with_context(|| format!("Secret {namespace}/{name} has no key {key:?}"))?;
    let bytes = kwire_node_daemon::api::source::decode_key(&value.0).with_context(|| {
        format!(
            "key {key:?} of Secret {namespace}/{name} is not a WireGuard key (32 bytes, base64)"
        )
    })?;
    Ok(STANDARD.encode(bytes))
}
