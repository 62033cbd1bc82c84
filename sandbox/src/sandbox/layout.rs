//! What a sandbox will make for its manifests, decided before anything is made: the nodes
//! and their LAN addresses, the far sides of external Peers. A manifest the sandbox cannot
//! play fails here, at once.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use kwire_crds::manifest::{KwireObject, parse_manifests};

use super::far_sides::public_key_of;
use super::lan;
use crate::error::{Error, IoContext as _, Result};
use crate::external::{self, FarSide};

/// The objects of a sandbox's manifests and where their nodes and far sides go.
pub(super) struct Layout {
    pub objects: Vec<KwireObject>,
    /// Every node's LAN address, in name order (node `i` at `10.211.55.<first_host + i>`).
    pub nodes: Vec<(Ipv4Addr, String)>,
    pub far_sides: Vec<FarSide>,
}

impl Layout {
    /// Reads the manifest `files` and places their nodes from `10.211.55.<first_host>` on.
    /// Also checks that each external Peer's private key is the one of its public key.
    pub fn read(files: &[PathBuf], first_host: u8) -> Result<Self> {
        let mut text = String::new();
        for f in files {
            text.push_str(&std::fs::read_to_string(f).io(|| format!("reading {}", f.display()))?);
            text.push_str("\n---\n");
        }
        let layout = Self::plan(parse_manifests(&text)?, first_host)?;
        for side in &layout.far_sides {
            check_far_side_key(side)?;
        }
        Ok(layout)
    }

    /// The nodes (the Interfaces' `nodeName`s) and far sides of `objects`.
    fn plan(objects: Vec<KwireObject>, first_host: u8) -> Result<Self> {
        let mut node_names: Vec<String> = objects
            .iter()
            .filter_map(|o| match o {
                KwireObject::Interface(i) => Some(i.spec.node_name.to_string()),
                _ => None,
            })
            .collect();
        node_names.sort();
        node_names.dedup();
        if node_names.is_empty() {
            return Err(Error::Topology(
                "the manifests name no Interface, so no node".into(),
            ));
        }
        if first_host < 1 || usize::from(first_host) + node_names.len() > 255 {
            return Err(Error::Topology(format!(
                "10.211.55.{first_host} and the {} addresses after it are not all host addresses of {}",
                node_names.len() - 1,
                lan()
            )));
        }
        let nodes: Vec<(Ipv4Addr, String)> = node_names
            .into_iter()
            .zip(first_host..)
            .map(|(name, host)| (Ipv4Addr::new(10, 211, 55, host), name))
            .collect();
        let far_sides = external::far_sides(&objects, lan(), &nodes)?;
        Ok(Self {
            objects,
            nodes,
            far_sides,
        })
    }
}

/// Fails when the private key in the Peer's annotation is not the one of its
/// `spec.remote.publicKey`, saying what to change.
fn check_far_side_key(side: &FarSide) -> Result<()> {
    let derived = public_key_of(side.private_key()).map_err(|_| {
        Error::Topology(format!(
            "Peer {}: annotation {} does not hold a WireGuard private key (make one with `wg genkey`)",
            side.peer,
            external::REMOTE_PRIVATE_KEY_ANNOTATION
        ))
    })?;
    if derived != side.public_key {
        return Err(Error::Topology(format!(
            "Peer {}: the private key in annotation {} is not the one of spec.remote.publicKey {} (its public key is {derived}); \
             set publicKey to `wg pubkey` of that private key",
            side.peer,
            external::REMOTE_PRIVATE_KEY_ANNOTATION,
            side.public_key
        )));
    }
    Ok(())
}
