//! The far sides of external Peers: a namespace of its own on the LAN per Peer, at its
//! endpoint, with a wireguard-go device configured with plain `wg` and `ip` (the decisions
//! are in [`crate::external`]).

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use kwire_crds::manifest::KwireObject;

use super::checks::status_addresses;
use super::{Sandbox, check_interrupted};
use crate::error::{Error, IoContext as _, Result};
use crate::external::{self, FarSide, FarSidePeer, PresharedKeySource};
use crate::netns::{Lan, Netns, unique_name};
use crate::process::{exited, spawn_logged, wait_until};
use crate::record::Ledger;

/// How long the far side of an external Peer waits for the operator to publish what it
/// needs (the Interface's public key and addresses, the pre-shared key's Secret).
const FAR_SIDE_WAIT: Duration = Duration::from_secs(120);

/// The far side of an external Peer: a namespace on the LAN with a wireguard-go device
/// configured with `wg` and `ip` (see [`crate::external`]).
pub struct ExternalPeer {
    pub side: FarSide,
    pub netns: Netns,
    /// The wireguard-go device; its name is unique on this machine because wireguard-go
    /// keeps its UAPI socket in the host's `/var/run/wireguard`.
    pub device: String,
    pub log: PathBuf,
    wireguard_go: Option<Child>,
    socket: PathBuf,
}

impl ExternalPeer {
    /// `wg show <device> dump` on the far side.
    pub fn wg_show(&self) -> Result<String> {
        let out = self.netns.exec(&["wg", "show", &self.device, "dump"])?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for ExternalPeer {
    fn drop(&mut self) {
        if let Some(mut child) = self.wireguard_go.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Killed, wireguard-go leaves its socket behind. The namespace goes after this.
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl Sandbox {
    /// Configures the far side of every external Peer, once the operator has published what
    /// it needs.
    pub(super) fn configure_far_sides(&mut self) -> Result<()> {
        if self.externals.is_empty() {
            return Ok(());
        }
        let peers: Vec<String> = self.externals.keys().cloned().collect();
        self.begin(&format!(
            "far side of {} configured with wg",
            peers.join(", ")
        ))?;
        for peer in &peers {
            self.configure_far_side(peer)?;
        }
        self.steps.done();
        Ok(())
    }

    /// The far side of an external Peer, before its peer is known: its namespace on the
    /// LAN at the Peer's endpoint, and a wireguard-go device with its key, port and tunnel
    /// address.
    pub(super) fn start_far_side(
        ledger: &Ledger,
        run_dir: &Path,
        lan: &Lan,
        side: FarSide,
    ) -> Result<ExternalPeer> {
        let netns = Self::make_netns(ledger, "x")?;
        Self::attach(ledger, lan, &netns, IpAddr::V4(side.lan_address))?;
        let device = unique_name("kx");
        let socket = Path::new("/var/run/wireguard").join(format!("{device}.sock"));
        ledger.link(&device, Some(netns.name()))?;
        ledger.socket(&socket)?;
        let log = run_dir.join(format!("external-{}.log", side.peer));
        // In the foreground, so that the child is wireguard-go itself (a pid to record and
        // kill). LOG_LEVEL is left out: it made configuration hang on this kind of machine.
        let child = spawn_logged(
            Command::new("ip")
                .args(["netns", "exec", netns.name(), "wireguard-go", "-f", &device])
                .env_remove("LOG_LEVEL"),
            &log,
            "wireguard-go (apt-get install wireguard-go)",
        )?;
        let pid = child.id();
        let mut external = ExternalPeer {
            side,
            netns,
            device,
            log,
            wireguard_go: Some(child),
            socket,
        };
        ledger.process(
            pid,
            &format!("wireguard-go (far side of Peer {})", external.side.peer),
            Some(external.netns.name()),
        )?;
        let (socket, log) = (external.socket.clone(), external.log.clone());
        let wireguard_go = &mut external.wireguard_go;
        wait_until(
            &format!("wireguard-go to create {}", socket.display()),
            Duration::from_secs(10),
            || wireguard_go.as_mut().and_then(|c| exited(c, &log)),
            || Ok(socket.exists().then_some(())),
        )?;
        let key_file = run_dir.join(format!("external-{}.key", external.side.peer));
        write_secret_file(&key_file, external.side.private_key())?;
        for argv in external::device_commands(
            &external.device,
            external.side.listen_port,
            &key_file,
            &external.side.tunnel_addresses,
        ) {
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            external.netns.exec(&argv)?;
        }
        Ok(external)
    }

    /// Gives the far side of external Peer `peer` its peer, the kwire Interface, once the
    /// operator has published the Interface's key and addresses (and the pre-shared key).
    fn configure_far_side(&self, peer: &str) -> Result<()> {
        let ext = self
            .externals
            .get(peer)
            .ok_or_else(|| Error::State(format!("no external Peer {peer}")))?;
        let side = &ext.side;
        let deadline = Instant::now() + FAR_SIDE_WAIT;
        let (interface, psk_secret) = loop {
            check_interrupted()?;
            let interface = self.get_one("interface", &side.interface)?;
            let published = interface.as_ref().is_some_and(|i| {
                i["status"]["publicKey"].as_str().is_some() && !status_addresses(i).is_empty()
            });
            let psk_secret = match &side.preshared_key {
                None => Some(None),
                Some(PresharedKeySource::Secret { name, key }) => {
                    Some(Some((name.clone(), key.clone())))
                }
                Some(PresharedKeySource::Generated) => self
                    .get_one("peer", peer)?
                    .and_then(|p| {
                        p["status"]["resolved"]["presharedKeySecret"]
                            .as_str()
                            .map(str::to_owned)
                    })
                    .map(|name| Some((name, "presharedKey".to_string()))),
            };
            if let (Some(interface), true, Some(psk_secret)) = (interface, published, psk_secret) {
                break (interface, psk_secret);
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout(format!(
                    "the far side of Peer {peer} needs Interface {}'s status.publicKey and status.addresses{}, \
                     not published after {}s: is kwire-operator running?\n{}",
                    side.interface,
                    if side.preshared_key.is_some() {
                        " and the pre-shared key's Secret"
                    } else {
                        ""
                    },
                    FAR_SIDE_WAIT.as_secs(),
                    self.logs_tail(15)
                )));
            }
            std::thread::sleep(Duration::from_millis(250));
        };
        let node_name = interface["spec"]["nodeName"].as_str().unwrap_or_default();
        let node = self.nodes.get(node_name).ok_or_else(|| {
            Error::State(format!(
                "Interface {} is on node {node_name}, which the sandbox does not run",
                side.interface
            ))
        })?;
        let listen_port = interface["spec"]["listenPort"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| {
                Error::Unexpected(format!("Interface {} has no listenPort", side.interface))
            })?;
        let routes: Vec<IpNet> = self
            .objects
            .iter()
            .filter_map(|o| match o {
                KwireObject::Route(r) if r.spec.interface.as_str() == side.interface => {
                    r.spec.destination.net().ok()
                }
                _ => None,
            })
            .collect();
        let far_peer = FarSidePeer {
            public_key: interface["status"]["publicKey"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            endpoint: SocketAddr::new(node.address, listen_port),
            allowed_ips: external::far_side_allowed_ips(&status_addresses(&interface), &routes),
            persistent_keepalive: side.persistent_keepalive,
        };
        let psk_file = match psk_secret {
            None => None,
            Some((secret, key)) => {
                let value = self.secret_key(&secret, &key)?;
                let file = self.run_dir.join(format!("external-{peer}.psk"));
                write_secret_file(&file, &value)?;
                Some(file)
            }
        };
        for argv in external::peer_commands(&ext.device, &far_peer, psk_file.as_deref()) {
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            ext.netns.exec(&argv)?;
        }
        Ok(())
    }
}

/// `wg pubkey` of `private_key`.
pub(super) fn public_key_of(private_key: &str) -> Result<String> {
    let mut cmd = Command::new("wg");
    cmd.arg("pubkey")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| Error::Spawn {
        what: "running wg pubkey (apt-get install wireguard-tools)".into(),
        source,
    })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(format!("{private_key}\n").as_bytes())
            .io(|| "writing to wg pubkey".into())?;
    }
    let out = child
        .wait_with_output()
        .io(|| "waiting for wg pubkey".into())?;
    // wg's message would not quote the key, but say nothing of it either way.
    if !out.status.success() {
        return Err(Error::Failed {
            command: "wg pubkey".into(),
            stderr: "not a WireGuard private key".into(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Writes `text` into a new file only root can read (keys).
fn write_secret_file(path: &Path, text: &str) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .io(|| format!("creating {}", path.display()))?;
    file.write_all(format!("{text}\n").as_bytes())
        .io(|| format!("writing {}", path.display()))?;
    Ok(())
}
