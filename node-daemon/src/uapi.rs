//! Configuring a wireguard-go device over its UAPI socket, several steps in
//! one `set=1` request.
//!
//! Reading still goes through wireguard-control. Writing is done here because
//! wireguard-control's userspace `apply` loses the error: it prints
//! `ERROR <errno>` on the daemon's stdout and returns `InvalidInput`, so "the
//! listen port is in use" (`errno=-98`) became "invalid input parameter".
//! Here the errno comes back as an [`io::Error`] with its OS code, and the
//! request has a timeout (a wedged wireguard-go must not hang the loop).
//!
//! The request text carries keys (hex): it is built, written to the socket
//! and dropped, never logged or returned. The format is WireGuard's
//! cross-platform interface (<https://www.wireguard.com/xplatform/>): device
//! lines first, then one `public_key=` line per peer followed by that peer's
//! lines, then an empty line; the answer is `errno=<n>` and an empty line.

use std::fmt::Write as _;
use std::io::{self, BufRead as _, BufReader, Write as _};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use crate::model::IfaceName;
use crate::plan::Step;
use crate::userspace::socket_path;

/// How long one request may take (10k peers take about a second).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

fn hex(bytes: &[u8; 32]) -> String {
    let mut out = String::with_capacity(64);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// The `set=1` request for `steps` (WireGuard steps of one device; others are
/// ignored). Device-wide lines come first whatever the step order, since any
/// line after a `public_key=` belongs to that peer.
pub fn set_request(steps: &[Step]) -> String {
    let mut device = String::from("set=1\n");
    let mut peers = String::new();
    for step in steps {
        match step {
            Step::SetPrivateKey { key, .. } => {
                let _ = writeln!(device, "private_key={}", hex(key.expose_secret()));
            }
            Step::SetListenPort { port, .. } => {
                let _ = writeln!(device, "listen_port={port}");
            }
            Step::RemovePeer { peer, .. } => {
                let _ = writeln!(peers, "public_key={}\nremove=true", hex(peer.as_bytes()));
            }
            Step::UpsertPeer { peer, change, .. } => {
                let _ = writeln!(peers, "public_key={}", hex(peer.as_bytes()));
                match &change.preshared_key {
                    Some(Some(psk)) => {
                        let _ = writeln!(peers, "preshared_key={}", hex(psk.expose_secret()));
                    }
                    Some(None) => {
                        let _ = writeln!(peers, "preshared_key={}", hex(&[0; 32]));
                    }
                    None => {}
                }
                if let Some(endpoint) = change.endpoint {
                    let _ = writeln!(peers, "endpoint={endpoint}");
                }
                if let Some(k) = change.persistent_keepalive {
                    let _ = writeln!(peers, "persistent_keepalive_interval={k}");
                }
                if let Some(ips) = &change.allowed_ips {
                    peers.push_str("replace_allowed_ips=true\n");
                    for ip in ips {
                        let _ = writeln!(peers, "allowed_ip={ip}");
                    }
                }
            }
            _ => {}
        }
    }
    device.push_str(&peers);
    device.push('\n');
    device
}

/// Parses the answer to a `set` (`errno=<n>`; wireguard-go sends it negative).
fn parse_answer(line: &str) -> io::Result<()> {
    match line.trim_end().strip_prefix("errno=") {
        Some("0") => Ok(()),
        Some(n) => match n.parse::<i32>() {
            Ok(code) => Err(io::Error::from_raw_os_error(code.abs())),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unexpected UAPI answer {line:?}"),
            )),
        },
        None => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected UAPI answer {line:?}"),
        )),
    }
}

/// Sends one `set` request built by [`set_request`] to the device's socket.
/// Blocking; run it on a blocking thread.
pub fn set(name: &IfaceName, steps: &[Step]) -> io::Result<()> {
    let path = socket_path(name).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("no UAPI socket for {name}"),
        )
    })?;
    let mut stream = UnixStream::connect(path)?;
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    stream.write_all(set_request(steps).as_bytes())?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    parse_answer(&line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::*;
    use crate::plan::PeerChange;

    #[test]
    fn device_lines_come_before_peer_lines_and_keys_are_hex() {
        let dev = name("wg0");
        let steps = vec![
            Step::RemovePeer {
                device: dev.clone(),
                peer: pk(3),
            },
            Step::SetListenPort {
                device: dev.clone(),
                port: 51820,
            },
            Step::UpsertPeer {
                device: dev.clone(),
                peer: pk(2),
                change: PeerChange {
                    create: true,
                    endpoint: Some("[fd00::2]:51820".parse().unwrap()),
                    allowed_ips: Some(nets(&["10.1.0.2/32", "10.2.0.0/24"])),
                    persistent_keepalive: Some(0),
                    preshared_key: Some(None),
                },
            },
            Step::SetPrivateKey {
                device: dev,
                key: sk(1),
            },
        ];
        let text = set_request(&steps);
        let ones = "01".repeat(32);
        let expected = format!(
            "set=1\nlisten_port=51820\nprivate_key={ones}\n\
             public_key={}\nremove=true\n\
             public_key={}\npreshared_key={}\nendpoint=[fd00::2]:51820\n\
             persistent_keepalive_interval=0\nreplace_allowed_ips=true\n\
             allowed_ip=10.1.0.2/32\nallowed_ip=10.2.0.0/24\n\n",
            "03".repeat(32),
            "02".repeat(32),
            "00".repeat(32),
        );
        assert_eq!(text, expected);
    }

    #[test]
    fn a_negative_errno_becomes_the_os_error() {
        assert!(parse_answer("errno=0\n").is_ok());
        let e = parse_answer("errno=-98\n").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(nix::libc::EADDRINUSE));
        assert!(parse_answer("garbage").is_err());
    }
}
