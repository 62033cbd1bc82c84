//! Talking to a wireguard-go device over its UAPI socket: reading its configuration
//! and state with one `get=1` request ([`get`]), and configuring it, several steps in
//! one `set=1` request ([`set`]).
//!
//! Both used to go through wireguard-control, which loses errors and misbehaves on odd
//! input: its `apply` prints `ERROR <errno>` on the daemon's stdout and returns
//! `InvalidInput`, so "the listen port is in use" (`errno=-98`) became "invalid input
//! parameter"; its `Device::get` has no timeout (a wedged wireguard-go hung the loop),
//! panics on an `errno=` it cannot parse, and prints every key it does not know to
//! stdout. Here an errno comes back as the OS error, every request has a timeout, an
//! unknown key is skipped, and [`parse_get`] never panics whatever it is given (a
//! property test feeds it arbitrary bytes).
//!
//! Requests and answers carry keys (hex): they are built or read, used and dropped,
//! never logged or returned, and no error message quotes a value. The format is
//! WireGuard's cross-platform interface (<https://www.wireguard.com/xplatform/>): device
//! lines first, then one `public_key=` line per peer followed by that peer's lines, then
//! an empty line; the answer to a `get` is the same kind of lines, ending with
//! `errno=<n>` and an empty line; the answer to a `set` is `errno=<n>` and an empty line.

use std::fmt::Write as _;
use std::io::{self, BufRead as _, BufReader, Write as _};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use ipnet::IpNet;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::model::{
    IfaceName, ObservedPeer, ObservedWireguard, PresharedKey, PrivateKey, PublicKey,
};
use crate::plan::{Step, keepalives_to_turn_off};
use crate::userspace::socket_path;

/// How long one `set` request may take (10k peers take about a second).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// How long one `get` may take, connecting included (10k peers take well under a second).
pub const GET_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest answer to a `get` that is read (about 250 bytes a peer: 200,000 peers).
pub const MAX_GET_ANSWER: usize = 64 << 20;

/// Why a UAPI request failed. No variant carries a key or a line of the answer.
#[derive(Debug, thiserror::Error)]
pub enum UapiError {
    /// No socket for the device: its wireguard-go is not running.
    #[error("no UAPI socket for {0}: its wireguard-go is not running")]
    NoSocket(IfaceName),
    #[error("connecting to {path}: {source}")]
    Connect { path: PathBuf, source: io::Error },
    #[error(
        "wireguard-go did not answer within {0:?}: it may be wedged; it is asked again at the next reconcile"
    )]
    Timeout(Duration),
    #[error("talking to wireguard-go: {0}")]
    Io(#[from] io::Error),
    /// wireguard-go refused the request with this (positive) errno.
    #[error("wireguard-go answered errno {errno}: {}", io::Error::from_raw_os_error(*errno))]
    Errno { errno: i32 },
    /// The answer is not what the protocol allows; `line` counts from 1.
    #[error("malformed answer from wireguard-go at line {line}: {what}")]
    Malformed { line: usize, what: String },
    #[error("wireguard-go's answer ended before its final empty line")]
    Truncated,
    #[error("wireguard-go's answer is longer than {0} bytes")]
    TooLong(usize),
}

impl UapiError {
    /// Whether nothing answers for the device at all (no socket, or no process behind
    /// it), as opposed to a device that answered badly.
    pub fn is_unreachable(&self) -> bool {
        match self {
            UapiError::NoSocket(_) => true,
            UapiError::Connect { source, .. } => matches!(
                source.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ),
            _ => false,
        }
    }
}

/// The all-zero key: `preshared_key=` with it removes a peer's pre-shared key.
const NO_KEY_HEX: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The `set=1` request for `steps` (WireGuard steps of one device; others are
/// ignored). Device-wide lines come first whatever the step order, since any
/// line after a `public_key=` belongs to that peer.
pub fn set_request(steps: &[Step]) -> String {
    let mut device = String::from("set=1\n");
    let mut peers = String::new();
    for step in steps {
        match step {
            Step::SetPrivateKey { key, .. } => {
                let _ = writeln!(device, "private_key={}", key.to_hex().as_str());
            }
            Step::SetListenPort { port, .. } => {
                let _ = writeln!(device, "listen_port={port}");
            }
            Step::RemovePeer { peer, .. } => {
                let _ = writeln!(peers, "public_key={}\nremove=true", peer.to_hex());
            }
            Step::UpsertPeer { peer, change, .. } => {
                let _ = writeln!(peers, "public_key={}", peer.to_hex());
                match &change.preshared_key {
                    Some(Some(psk)) => {
                        let _ = writeln!(peers, "preshared_key={}", psk.to_hex().as_str());
                    }
                    Some(None) => {
                        let _ = writeln!(peers, "preshared_key={}", NO_KEY_HEX);
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
            Step::StartHandshake {
                peer, keepalive, ..
            } => {
                // Off, then on: wireguard-go sends a keepalive when a peer's keepalive is
                // turned on, and with no session that keepalive starts a handshake.
                let _ = writeln!(
                    peers,
                    "public_key={}\npersistent_keepalive_interval=0\npersistent_keepalive_interval={}",
                    peer.to_hex(),
                    (*keepalive).max(1)
                );
            }
            _ => {}
        }
    }
    device.push_str(&peers);
    device.push('\n');
    device
}

/// The `set=1` request that turns the keepalive off again for peers that
/// [`Step::StartHandshake`] started with a keepalive of 0 (the first request turned it on
/// for one second to send one keepalive); `None` when there are none.
pub fn restore_request(steps: &[Step]) -> Option<String> {
    let mut peers = keepalives_to_turn_off(steps).peekable();
    peers.peek()?;
    let mut request = String::from("set=1\n");
    for peer in peers {
        let _ = writeln!(
            request,
            "public_key={}\npersistent_keepalive_interval=0",
            peer.to_hex()
        );
    }
    request.push('\n');
    Some(request)
}

/// The errno of an `errno=<n>` value: `Ok(())` for 0, else the positive code
/// (wireguard-go sends it negative for a `set`, positive for a `get`).
fn parse_errno(value: &str) -> Result<Result<(), i32>, ()> {
    let code: i64 = value.parse().map_err(|_| ())?;
    match code {
        0 => Ok(Ok(())),
        n => i32::try_from(n.unsigned_abs()).map(Err).map_err(|_| ()),
    }
}

/// Parses the answer to a `set` (`errno=<n>`).
fn parse_answer(line: &str) -> io::Result<()> {
    let malformed = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "unexpected answer from wireguard-go (expected errno=<n>)",
        )
    };
    let value = line
        .trim_end()
        .strip_prefix("errno=")
        .ok_or_else(malformed)?;
    match parse_errno(value).map_err(|()| malformed())? {
        Ok(()) => Ok(()),
        Err(code) => Err(io::Error::from_raw_os_error(code)),
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
    send_set(&path, &set_request(steps))?;
    match restore_request(steps) {
        Some(restore) => send_set(&path, &restore),
        None => Ok(()),
    }
}

fn send_set(path: &Path, request: &str) -> io::Result<()> {
    let mut stream = UnixStream::connect(path)?;
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    stream.write_all(request.as_bytes())?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    parse_answer(&line)
}

/// Reads the configuration and state of `name`'s wireguard-go with one `get=1` request,
/// within [`GET_TIMEOUT`].
pub async fn get(name: &IfaceName) -> Result<ObservedWireguard, UapiError> {
    let path = socket_path(name).ok_or_else(|| UapiError::NoSocket(name.clone()))?;
    get_at(&path, GET_TIMEOUT).await
}

/// [`get`] on the socket at `path`, all of it (connecting, asking, reading the answer)
/// within `timeout`.
pub async fn get_at(path: &Path, timeout: Duration) -> Result<ObservedWireguard, UapiError> {
    let exchange = async {
        let mut stream = tokio::net::UnixStream::connect(path)
            .await
            .map_err(|source| UapiError::Connect {
                path: path.to_path_buf(),
                source,
            })?;
        stream.write_all(b"get=1\n\n").await?;
        let answer = read_answer(&mut stream, MAX_GET_ANSWER).await?;
        parse_get(&answer)
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| UapiError::Timeout(timeout))?
}

/// Reads up to and including the empty line that ends an answer. wireguard-go keeps the
/// connection open for more requests, so the end is that line, not the end of the stream.
async fn read_answer(
    stream: &mut (impl tokio::io::AsyncRead + Unpin),
    limit: usize,
) -> Result<Vec<u8>, UapiError> {
    let mut answer = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(UapiError::Truncated);
        }
        // Look for the end from just before the new bytes (a "\n\n" may straddle them).
        let from = answer.len().saturating_sub(1);
        answer.extend_from_slice(&chunk[..n]);
        if let Some(end) = answer_end(&answer, from) {
            answer.truncate(end);
            return Ok(answer);
        }
        if answer.len() > limit {
            return Err(UapiError::TooLong(limit));
        }
    }
}

/// The length of the answer up to and including its final empty line, if it is complete.
fn answer_end(bytes: &[u8], from: usize) -> Option<usize> {
    if bytes.first() == Some(&b'\n') {
        return Some(1);
    }
    bytes
        .get(from..)?
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|i| from + i + 2)
}

/// The peer being read, before it is complete.
struct PeerInProgress {
    key: PublicKey,
    peer: ObservedPeer,
    handshake_sec: u64,
    handshake_nsec: u64,
}

impl PeerInProgress {
    fn finish(self, line: usize) -> Result<(PublicKey, ObservedPeer), UapiError> {
        let mut peer = self.peer;
        if self.handshake_sec != 0 || self.handshake_nsec != 0 {
            let since_epoch = (self.handshake_nsec < 1_000_000_000)
                .then(|| Duration::new(self.handshake_sec, self.handshake_nsec as u32));
            peer.stats.last_handshake = since_epoch
                .and_then(|d| SystemTime::UNIX_EPOCH.checked_add(d))
                .ok_or_else(|| UapiError::Malformed {
                    line,
                    what: "the latest handshake is not a representable time".into(),
                })
                .map(Some)?;
        }
        Ok((self.key, peer))
    }
}

/// Parses the answer to a `get=1`: every line up to and including the empty one.
/// Unknown keys are skipped; a known key with a bad value, a peer line before any
/// `public_key`, a line without `=`, a missing `errno` or a non-zero one is an error.
/// Zero keys, a zero listen port and a zero keepalive mean "unset", as with the kernel.
/// An endpoint that does not parse as an address (wireguard-go prints IPv6 link-local
/// endpoints with a zone) is left out rather than failing the whole device.
pub fn parse_get(answer: &[u8]) -> Result<ObservedWireguard, UapiError> {
    let text = std::str::from_utf8(answer).map_err(|e| UapiError::Malformed {
        line: answer[..e.valid_up_to()]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1,
        what: "not UTF-8".into(),
    })?;
    let mut device = ObservedWireguard::default();
    let mut current: Option<PeerInProgress> = None;
    let mut errno: Option<Result<(), i32>> = None;
    // The line number of the final empty line, once it is seen.
    let mut ended = None;
    for (line, piece) in text
        .split_inclusive('\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l))
    {
        let Some(content) = piece.strip_suffix('\n') else {
            // The last line has no newline: the answer was cut short.
            break;
        };
        if content.is_empty() {
            ended = Some(line);
            break;
        }
        let malformed = |what: String| UapiError::Malformed { line, what };
        if errno.is_some() {
            return Err(malformed("a line after errno".into()));
        }
        let Some((key, value)) = content.split_once('=') else {
            return Err(malformed("a line without '='".into()));
        };
        let bad = |what: &str| malformed(format!("{key} is not {what}"));
        match key {
            "private_key" => {
                let k = PrivateKey::from_hex(value).map_err(|_| bad("a key"))?;
                device.public_key = (!k.is_zero()).then(|| k.public_key());
                device.private_key = (!k.is_zero()).then_some(k);
            }
            "listen_port" => {
                let port: u16 = value.parse().map_err(|_| bad("a port"))?;
                device.listen_port = (port != 0).then_some(port);
            }
            "public_key" => {
                let key = PublicKey::from_hex(value).map_err(|_| bad("a key"))?;
                if let Some(done) = current.take() {
                    let (k, p) = done.finish(line)?;
                    device.peers.insert(k, p);
                }
                current = Some(PeerInProgress {
                    key,
                    peer: ObservedPeer::default(),
                    handshake_sec: 0,
                    handshake_nsec: 0,
                });
            }
            "errno" => errno = Some(parse_errno(value).map_err(|()| bad("a number"))?),
            "preshared_key"
            | "endpoint"
            | "persistent_keepalive_interval"
            | "allowed_ip"
            | "rx_bytes"
            | "tx_bytes"
            | "last_handshake_time_sec"
            | "last_handshake_time_nsec" => {
                let peer = current
                    .as_mut()
                    .ok_or_else(|| malformed(format!("{key} before any public_key")))?;
                peer_line(peer, key, value).map_err(bad)?;
            }
            // fwmark, protocol_version, and whatever a later wireguard-go adds.
            _ => {}
        }
    }
    let Some(line) = ended else {
        return Err(UapiError::Truncated);
    };
    match errno {
        None => Err(UapiError::Malformed {
            line,
            what: "no errno before the final empty line".into(),
        }),
        Some(Err(errno)) => Err(UapiError::Errno { errno }),
        Some(Ok(())) => {
            if let Some(done) = current.take() {
                let (k, p) = done.finish(line)?;
                device.peers.insert(k, p);
            }
            Ok(device)
        }
    }
}

/// One line of a peer; `Err(what the value is not)`.
fn peer_line(p: &mut PeerInProgress, key: &str, value: &str) -> Result<(), &'static str> {
    let config = &mut p.peer.config;
    let stats = &mut p.peer.stats;
    match key {
        "preshared_key" => {
            let k = PresharedKey::from_hex(value).map_err(|_| "a key")?;
            config.preshared_key = (!k.is_zero()).then_some(k);
        }
        "endpoint" => config.endpoint = value.parse::<SocketAddr>().ok(),
        "persistent_keepalive_interval" => {
            let k: u16 = value.parse().map_err(|_| "a number of seconds")?;
            config.persistent_keepalive = (k != 0).then_some(k);
        }
        "allowed_ip" => {
            let net: IpNet = value.parse().map_err(|_| "a prefix")?;
            config.allowed_ips.insert(net.trunc());
        }
        "rx_bytes" => stats.rx_bytes = value.parse().map_err(|_| "a byte count")?,
        "tx_bytes" => stats.tx_bytes = value.parse().map_err(|_| "a byte count")?,
        "last_handshake_time_sec" => {
            p.handshake_sec = value.parse().map_err(|_| "a number of seconds")?;
        }
        "last_handshake_time_nsec" => {
            p.handshake_nsec = value.parse().map_err(|_| "a number of nanoseconds")?;
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::*;
    use crate::plan::PeerChange;

    #[test]
    fn a_handshake_is_started_by_turning_the_keepalive_off_and_on() {
        let dev = name("wg0");
        let steps = vec![
            Step::SetPrivateKey {
                device: dev.clone(),
                key: sk(1),
            },
            Step::StartHandshake {
                device: dev.clone(),
                peer: pk(2),
                keepalive: 15,
            },
            Step::StartHandshake {
                device: dev,
                peer: pk(3),
                keepalive: 0,
            },
        ];
        let (two, three) = ("02".repeat(32), "03".repeat(32));
        assert_eq!(
            set_request(&steps),
            format!(
                "set=1\nprivate_key={}\n\
                 public_key={two}\npersistent_keepalive_interval=0\npersistent_keepalive_interval=15\n\
                 public_key={three}\npersistent_keepalive_interval=0\npersistent_keepalive_interval=1\n\n",
                "01".repeat(32)
            )
        );
        // The peer without a keepalive gets it turned off again by a second request.
        assert_eq!(
            restore_request(&steps),
            Some(format!(
                "set=1\npublic_key={three}\npersistent_keepalive_interval=0\n\n"
            ))
        );
        assert_eq!(restore_request(&steps[..2]), None);
    }

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

    /// Hexadecimal written here, not by the key types, so that they are checked against it.
    fn h(bytes: &[u8; 32]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// What wireguard-go answers to `get=1` for a device with two peers, with lines kwire
    /// does not use (and one no wireguard-go sends today).
    fn answer() -> String {
        format!(
            "private_key={}\nlisten_port=51820\nfwmark=0\n\
             public_key={}\npreshared_key={}\nprotocol_version=1\nendpoint=192.168.1.2:51821\n\
             last_handshake_time_sec=1800000000\nlast_handshake_time_nsec=500000000\n\
             tx_bytes=5678\nrx_bytes=1234\npersistent_keepalive_interval=0\n\
             allowed_ip=10.1.0.2/32\nallowed_ip=10.2.0.7/24\nsome_future_key=what it is\n\
             public_key={}\npreshared_key={}\nendpoint=[fe80::1%eth0]:51820\n\
             last_handshake_time_sec=0\nlast_handshake_time_nsec=0\ntx_bytes=0\nrx_bytes=0\n\
             persistent_keepalive_interval=25\n\
             errno=0\n\n",
            h(&[1; 32]),
            h(&[2; 32]),
            h(&[0; 32]),
            h(&[3; 32]),
            h(&[9; 32]),
        )
    }

    #[test]
    fn a_get_answer_becomes_the_observed_device_and_unknown_keys_are_skipped() {
        let wg = parse_get(answer().as_bytes()).unwrap();
        assert_eq!(wg.private_key, Some(sk(1)));
        assert_eq!(wg.public_key, Some(sk(1).public_key()));
        assert_eq!(wg.listen_port, Some(51820));
        assert_eq!(wg.peers.len(), 2);
        let two = &wg.peers[&pk(2)];
        assert_eq!(
            two.config.endpoint,
            Some("192.168.1.2:51821".parse().unwrap())
        );
        assert_eq!(two.config.preshared_key, None, "a zero key is unset");
        assert_eq!(two.config.persistent_keepalive, None, "zero is off");
        assert_eq!(
            two.config.allowed_ips,
            nets(&["10.1.0.2/32", "10.2.0.0/24"])
        );
        assert_eq!(
            two.stats.last_handshake,
            Some(SystemTime::UNIX_EPOCH + Duration::new(1_800_000_000, 500_000_000))
        );
        assert_eq!((two.stats.rx_bytes, two.stats.tx_bytes), (1234, 5678));
        let three = &wg.peers[&pk(3)];
        assert_eq!(three.config.endpoint, None, "a zoned endpoint is left out");
        assert_eq!(
            three.config.preshared_key,
            Some(PresharedKey::from_bytes([9; 32]))
        );
        assert_eq!(three.config.persistent_keepalive, Some(25));
        assert_eq!(three.stats.last_handshake, None);
    }

    #[test]
    fn an_empty_device_is_just_errno_zero() {
        assert_eq!(
            parse_get(b"errno=0\n\n").unwrap(),
            ObservedWireguard::default()
        );
    }

    #[test]
    fn errors_are_typed_and_never_quote_a_value() {
        let secret = h(&[7; 32]);
        type Expected = fn(&UapiError) -> bool;
        let cases: Vec<(String, Expected)> = vec![
            ("errno=2\n\n".into(), |e| {
                matches!(e, UapiError::Errno { errno: 2 })
            }),
            ("errno=-98\n\n".into(), |e| {
                matches!(e, UapiError::Errno { errno: 98 })
            }),
            ("errno=-2147483648\n\n".into(), |e| {
                matches!(e, UapiError::Malformed { .. })
            }),
            ("errno=abc\n\n".into(), |e| {
                matches!(e, UapiError::Malformed { line: 1, .. })
            }),
            (format!("private_key={secret}\n"), |e| {
                matches!(e, UapiError::Truncated)
            }),
            (format!("private_key={secret}\n\n"), |e| {
                matches!(e, UapiError::Malformed { line: 2, .. })
            }),
            (format!("preshared_key={secret}\nerrno=0\n\n"), |e| {
                matches!(e, UapiError::Malformed { line: 1, .. })
            }),
            (format!("private_key={secret}x\nerrno=0\n\n"), |e| {
                matches!(e, UapiError::Malformed { line: 1, .. })
            }),
            (format!("{secret}\nerrno=0\n\n"), |e| {
                matches!(e, UapiError::Malformed { line: 1, .. })
            }),
            (format!("errno=0\nprivate_key={secret}\n\n"), |e| {
                matches!(e, UapiError::Malformed { line: 2, .. })
            }),
            (
                format!("public_key={secret}\nlast_handshake_time_nsec=1000000000\nerrno=0\n\n"),
                |e| matches!(e, UapiError::Malformed { .. }),
            ),
        ];
        for (text, expected) in cases {
            let e = parse_get(text.as_bytes()).unwrap_err();
            assert!(expected(&e), "{text:?} gave {e:?}");
            let message = e.to_string();
            assert!(!message.contains(&secret[..16]), "{message}");
        }
        assert!(matches!(
            parse_get(b"listen_port=1\xff\nerrno=0\n\n"),
            Err(UapiError::Malformed { line: 1, .. })
        ));
    }

    #[test]
    fn the_answer_ends_at_its_empty_line_wherever_the_reads_split_it() {
        let text = answer();
        let bytes = text.as_bytes();
        let end = answer_end(bytes, 0).unwrap();
        assert_eq!(end, bytes.len());
        assert_eq!(answer_end(b"\n", 0), Some(1));
        assert_eq!(answer_end(b"errno=0\n", 0), None);
        let mut with_more = text.clone().into_bytes();
        with_more.extend_from_slice(b"errno=0\n\n");
        assert_eq!(answer_end(&with_more, 0), Some(end));
    }

    /// A fake wireguard-go on a socket in a temporary folder: reads the request, then
    /// answers with `chunks` one write each (and keeps the connection open).
    async fn fake_wireguard_go(
        dir: &Path,
        chunks: Vec<Vec<u8>>,
        close: bool,
    ) -> (PathBuf, tokio::task::JoinHandle<Vec<u8>>) {
        let path = dir.join("wg-test.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 64];
            while !request.ends_with(b"\n\n") {
                let n = stream.read(&mut buf).await.unwrap();
                assert!(n > 0, "the client hung up before its request");
                request.extend_from_slice(&buf[..n]);
            }
            for chunk in chunks {
                stream.write_all(&chunk).await.unwrap();
                stream.flush().await.unwrap();
                tokio::task::yield_now().await;
            }
            if close {
                drop(stream);
            } else {
                // Holds the connection like a live (or wedged) wireguard-go.
                let _ = stream.read(&mut buf).await;
            }
            request
        });
        (path, server)
    }

    #[tokio::test]
    async fn a_get_over_a_socket_reads_an_answer_split_into_small_writes() {
        let dir = tempfile::tempdir().unwrap();
        let chunks = answer()
            .into_bytes()
            .chunks(7)
            .map(<[u8]>::to_vec)
            .collect();
        let (path, server) = fake_wireguard_go(dir.path(), chunks, false).await;
        let wg = get_at(&path, GET_TIMEOUT).await.unwrap();
        assert_eq!(wg.peers.len(), 2);
        assert_eq!(server.await.unwrap(), b"get=1\n\n");
    }

    #[tokio::test(start_paused = true)]
    async fn a_wedged_wireguard_go_times_out() {
        let dir = tempfile::tempdir().unwrap();
        // Half an answer, then nothing.
        let (path, _server) =
            fake_wireguard_go(dir.path(), vec![b"listen_port=1\n".to_vec()], false).await;
        let e = get_at(&path, Duration::from_secs(5)).await.unwrap_err();
        assert!(matches!(e, UapiError::Timeout(_)), "{e:?}");
    }

    #[tokio::test]
    async fn a_connection_closed_mid_answer_is_truncated_and_a_missing_socket_unreachable() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _server) =
            fake_wireguard_go(dir.path(), vec![b"listen_port=1\n".to_vec()], true).await;
        let e = get_at(&path, GET_TIMEOUT).await.unwrap_err();
        assert!(matches!(e, UapiError::Truncated), "{e:?}");
        assert!(!e.is_unreachable());
        let e = get_at(&dir.path().join("none.sock"), GET_TIMEOUT)
            .await
            .unwrap_err();
        assert!(e.is_unreachable(), "{e:?}");
    }

    /// What wireguard-go would print for `wg`, as a `get` answer.
    fn render(wg: &ObservedWireguard) -> String {
        let mut out = String::new();
        if let Some(k) = &wg.private_key {
            let _ = writeln!(out, "private_key={}", h(k.expose_secret()));
        }
        if let Some(p) = wg.listen_port {
            let _ = writeln!(out, "listen_port={p}");
        }
        for (key, peer) in &wg.peers {
            let _ = writeln!(out, "public_key={}", h(key.as_bytes()));
            if let Some(psk) = &peer.config.preshared_key {
                let _ = writeln!(out, "preshared_key={}", h(psk.expose_secret()));
            }
            if let Some(e) = peer.config.endpoint {
                let _ = writeln!(out, "endpoint={e}");
            }
            let since = peer
                .stats
                .last_handshake
                .map(|t| t.duration_since(SystemTime::UNIX_EPOCH).unwrap())
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "last_handshake_time_sec={}\nlast_handshake_time_nsec={}",
                since.as_secs(),
                since.subsec_nanos()
            );
            let _ = writeln!(
                out,
                "tx_bytes={}\nrx_bytes={}\npersistent_keepalive_interval={}",
                peer.stats.tx_bytes,
                peer.stats.rx_bytes,
                peer.config.persistent_keepalive.unwrap_or(0)
            );
            for ip in &peer.config.allowed_ips {
                let _ = writeln!(out, "allowed_ip={ip}");
            }
        }
        out.push_str("errno=0\n\n");
        out
    }

    mod properties {
        use proptest::collection::{btree_map, btree_set, vec};
        use proptest::option;
        use proptest::prelude::*;

        use super::*;
        use crate::model::{ObservedPeer, PeerConfig, PeerStats};

        fn key() -> impl Strategy<Value = [u8; 32]> {
            prop::array::uniform32(any::<u8>())
        }

        fn peer() -> impl Strategy<Value = ObservedPeer> {
            (
                option::of(any::<SocketAddr>()),
                btree_set(
                    (any::<std::net::IpAddr>(), any::<u8>()).prop_map(|(a, len)| {
                        let max = if a.is_ipv4() { 32 } else { 128 };
                        IpNet::new(a, len % (max + 1)).unwrap().trunc()
                    }),
                    0..4,
                ),
                option::of(1u16..),
                option::of(key().prop_filter("non-zero", |k| *k != [0; 32])),
                option::of((1u64..4_000_000_000, 0u32..1_000_000_000)),
                any::<u64>(),
                any::<u64>(),
            )
                .prop_map(
                    |(endpoint, allowed_ips, keepalive, psk, handshake, rx, tx)| {
                        ObservedPeer {
                            config: PeerConfig {
                                // wireguard-go prints neither flow labels nor numeric scopes.
                                endpoint: endpoint.map(|e| match e {
                                    SocketAddr::V6(v6) => {
                                        SocketAddr::new(std::net::IpAddr::V6(*v6.ip()), v6.port())
                                    }
                                    v4 => v4,
                                }),
                                allowed_ips,
                                persistent_keepalive: keepalive,
                                preshared_key: psk.map(PresharedKey::from_bytes),
                            },
                            stats: PeerStats {
                                last_handshake: handshake
                                    .map(|(s, n)| SystemTime::UNIX_EPOCH + Duration::new(s, n)),
                                rx_bytes: rx,
                                tx_bytes: tx,
                            },
                        }
                    },
                )
        }

        fn device() -> impl Strategy<Value = ObservedWireguard> {
            (
                option::of(key().prop_filter("non-zero", |k| *k != [0; 32])),
                option::of(1u16..),
                btree_map(key().prop_map(PublicKey::from_bytes), peer(), 0..4),
            )
                .prop_map(|(private, listen_port, peers)| {
                    let private_key = private.map(PrivateKey::from_bytes);
                    ObservedWireguard {
                        public_key: private_key.as_ref().map(PrivateKey::public_key),
                        private_key,
                        listen_port,
                        peers,
                    }
                })
        }

        /// Lines that look like the protocol, with values that mostly do not.
        fn protocol_like() -> impl Strategy<Value = Vec<u8>> {
            let key = prop::sample::select(vec![
                "private_key",
                "listen_port",
                "fwmark",
                "public_key",
                "preshared_key",
                "endpoint",
                "persistent_keepalive_interval",
                "allowed_ip",
                "rx_bytes",
                "tx_bytes",
                "last_handshake_time_sec",
                "last_handshake_time_nsec",
                "protocol_version",
                "errno",
                "",
            ]);
            let value = prop_oneof![
                "[0-9a-f]{64}",
                "-?[0-9]{1,25}",
                ".{0,20}",
                Just(String::new()),
                any::<SocketAddr>().prop_map(|a| a.to_string()),
            ];
            vec((key, value), 0..12).prop_map(|lines| {
                let mut out = String::new();
                for (k, v) in lines {
                    let _ = writeln!(out, "{k}={v}");
                }
                out.push('\n');
                out.into_bytes()
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            #[test]
            fn parse_get_never_panics_on_arbitrary_bytes(bytes in vec(any::<u8>(), 0..1024)) {
                let _ = parse_get(&bytes);
            }

            #[test]
            fn parse_get_never_panics_on_protocol_like_lines(bytes in protocol_like()) {
                let _ = parse_get(&bytes);
            }

            #[test]
            fn errors_never_quote_a_key(bytes in protocol_like()) {
                if let Err(e) = parse_get(&bytes) {
                    let message = e.to_string();
                    for line in String::from_utf8_lossy(&bytes).lines() {
                        if let Some((key, value)) = line.split_once('=')
                            && key.ends_with("_key")
                        {
                            prop_assert!(value.len() < 8 || !message.contains(value), "{message}");
                        }
                    }
                }
            }

            #[test]
            fn what_wireguard_go_prints_parses_back(wg in device()) {
                prop_assert_eq!(parse_get(render(&wg).as_bytes()).unwrap(), wg);
            }
        }
    }
}
