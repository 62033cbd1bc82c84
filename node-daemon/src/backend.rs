//! Choosing between kernel WireGuard and wireguard-go.

use std::fmt;

use futures::TryStreamExt;
use rtnetlink::LinkWireguard;

/// The `--backend` flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum BackendChoice {
    /// Kernel WireGuard when the kernel can create a `wireguard` link, else userspace.
    #[default]
    Auto,
    Kernel,
    Userspace,
}

/// How new devices are created. Existing devices are always read and
/// configured with the backend that matches their link kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireguardBackend {
    /// `ip link add … type wireguard`, configured over genetlink.
    Kernel,
    /// One supervised `wireguard-go -f <name>` per device, configured over UAPI.
    Userspace,
}

impl fmt::Display for WireguardBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WireguardBackend::Kernel => "kernel",
            WireguardBackend::Userspace => "userspace",
        })
    }
}

/// Whether the kernel can create a WireGuard link: creates a probe link and
/// deletes it again.
pub async fn kernel_supports_wireguard(handle: &rtnetlink::Handle) -> bool {
    let name = format!("kwprobe{}", std::process::id() % 100_000_000);
    let created = handle
        .link()
        .add(LinkWireguard::new(&name).build())
        .execute()
        .await;
    if let Err(e) = created {
        tracing::debug!(error = %e, "kernel WireGuard probe failed");
        return false;
    }
    let link = handle
        .link()
        .get()
        .match_name(name.clone())
        .execute()
        .try_next()
        .await;
    match link {
        Ok(Some(msg)) => {
            if let Err(e) = handle.link().del(msg.header.index).execute().await {
                tracing::warn!(probe = %name, error = %e, "could not delete the WireGuard probe link");
            }
        }
        other => {
            tracing::warn!(probe = %name, ?other, "could not find the WireGuard probe link to delete it")
        }
    }
    true
}

/// Resolves `--backend`.
pub async fn resolve(choice: BackendChoice, handle: &rtnetlink::Handle) -> WireguardBackend {
    match choice {
        BackendChoice::Kernel => WireguardBackend::Kernel,
        BackendChoice::Userspace => WireguardBackend::Userspace,
        BackendChoice::Auto => {
            if kernel_supports_wireguard(handle).await {
                WireguardBackend::Kernel
            } else {
                WireguardBackend::Userspace
            }
        }
    }
}
