//! Real-kernel tests: `kwire-node` against network namespaces with veth
//! links and wireguard-go. They need root, `ip`, `wg`, `ping` and
//! `wireguard-go`, and print `SKIPPED …` and pass otherwise.
//!
//! Addresses are 192.168.x on veths and 10.x on WireGuard devices, all inside
//! namespaces the tests create and delete; nothing leaves them.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

/// One node's desired state as YAML.
struct NodeSpec<'a> {
    device: &'a str,
    private_key: &'a str,
    port: u16,
    address: &'a str,
    peers: Vec<(&'a str, Option<String>, Vec<&'a str>)>,
    routes: Vec<(&'a str, Option<&'a str>)>,
}

fn write_desired(dir: &Path, file: &str, spec: &NodeSpec) -> PathBuf {
    let key_file = dir.join(format!("{file}.key"));
    std::fs::write(&key_file, spec.private_key).unwrap();
    let mut y = format!(
        "devices:\n  {}:\n    owner: default/{}\n    privateKeyFile: {}\n    listenPort: {}\n    addresses: [{}]\n    peers:\n",
        spec.device,
        spec.device,
        key_file.display(),
        spec.port,
        spec.address
    );
    if spec.peers.is_empty() {
        y = y.replace("    peers:\n", "");
    }
    for (key, endpoint, allowed) in &spec.peers {
        y += &format!(
            "      - publicKey: {key}\n        allowedIPs: [{}]\n        persistentKeepalive: 1\n",
            allowed.join(", ")
        );
        if let Some(e) = endpoint {
            y += &format!("        endpoint: {e}\n");
        }
    }
    if !spec.routes.is_empty() {
        y += "routes:\n";
        for (dst, via) in &spec.routes {
            y += &format!("  - destination: {dst}\n    device: {}\n", spec.device);
            if let Some(v) = via {
                y += &format!("    via: {v}\n");
            }
        }
    }
    let path = dir.join(file);
    std::fs::write(&path, y).unwrap();
    path
}

fn kwire_routes(ns: &Netns) -> String {
    ns.ip(&["route", "show", "table", "all", "proto", "75"])
}

#[test]
fn two_nodes_handshake_and_ping_across_the_tunnel() {
    require_prerequisites!();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (Netns::new("ta"), Netns::new("tb"));
    veth(&a, "192.168.71.1/24", &b, "192.168.71.2/24");
    let (dev_a, dev_b) = (unique("ta"), unique("tb"));
    let (sk_a, pk_a) = keypair();
    let (sk_b, pk_b) = keypair();
    let file_a = write_desired(
        dir.path(),
        "a.yaml",
        &NodeSpec {
            device: &dev_a,
            private_key: &sk_a,
            port: 51820,
            address: "10.71.0.1/24",
            peers: vec![(
                &pk_b,
                Some("192.168.71.2:51821".into()),
                vec!["10.71.0.2/32"],
            )],
            routes: vec![],
        },
    );
    let file_b = write_desired(
        dir.path(),
        "b.yaml",
        &NodeSpec {
            device: &dev_b,
            private_key: &sk_b,
            port: 51821,
            address: "10.71.0.2/24",
            peers: vec![(
                &pk_a,
                Some("192.168.71.1:51820".into()),
                vec!["10.71.0.1/32"],
            )],
            routes: vec![],
        },
    );
    let mut daemon_a = Daemon::start(&a, dir.path(), &file_a, &["--resync-period", "2s"]);
    let mut daemon_b = Daemon::start(&b, dir.path(), &file_b, &["--resync-period", "2s"]);

    wait_until(Duration::from_secs(30), "a ping across the tunnel", || {
        a.try_exec(&["ping", "-c", "1", "-W", "1", "10.71.0.2"])
    });
    let handshakes = a.exec(&["wg", "show", &dev_a, "latest-handshakes"]);
    let when: u64 = handshakes
        .split_whitespace()
        .nth(1)
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    assert!(when > 0, "no handshake in `wg show`: {handshakes}");
    assert!(a.exec(&["wg", "show", &dev_a]).contains("latest handshake"));

    // SIGTERM leaves the data plane as it is: the tunnel keeps working.
    daemon_a.stop();
    daemon_b.stop();
    assert!(a.try_exec(&["ping", "-c", "1", "-W", "2", "10.71.0.2"]));
}

/// Everything in the namespace that kwire does not own, as `ip -j` sees it.
fn foreign_snapshot(ns: &Netns, kwire_device: &str) -> String {
    let links = ns.ip(&["-j", "link", "show", "fdum0"]) + &ns.ip(&["-j", "link", "show", "fdum1"]);
    let addrs = ns.ip(&["-j", "addr", "show", "dev", "fdum0"]);
    let rules = ns.ip(&["-j", "rule", "show"]);
    let mut routes = Vec::new();
    for family in ["-4", "-6"] {
        let json: serde_json::Value =
            serde_json::from_str(&ns.ip(&[family, "-j", "route", "show", "table", "all"])).unwrap();
        for r in json.as_array().unwrap() {
            let ours =
                r["protocol"].as_str() == Some("75") || r["dev"].as_str() == Some(kwire_device);
            if !ours {
                routes.push(r.to_string());
            }
        }
    }
    format!("{links}\n{addrs}\n{rules}\n{}", routes.join("\n"))
}

#[test]
fn foreign_links_addresses_routes_and_rules_survive_every_reconcile_deletion_and_stop() {
    require_prerequisites!();
    let dir = tempfile::tempdir().unwrap();
    let ns = Netns::new("fs");
    // Foreign state: a link with an address, a static route to the
    // destination kwire will also route, a rule and a route in another table.
    // (A veth pair: this kernel has no dummy module.)
    ns.ip(&[
        "link", "add", "fdum0", "type", "veth", "peer", "name", "fdum1",
    ]);
    ns.ip(&["link", "set", "fdum1", "up"]);
    ns.ip(&["addr", "add", "192.168.72.1/24", "dev", "fdum0"]);
    ns.ip(&["link", "set", "fdum0", "up"]);
    ns.ip(&[
        "route",
        "add",
        "10.72.5.0/24",
        "dev",
        "fdum0",
        "proto",
        "static",
        "metric",
        "50",
    ]);
    ns.ip(&[
        "rule",
        "add",
        "from",
        "192.168.72.0/24",
        "table",
        "100",
        "priority",
        "1000",
    ]);
    ns.ip(&[
        "route",
        "add",
        "10.72.6.0/24",
        "dev",
        "fdum0",
        "table",
        "100",
    ]);

    let dev = unique("fs");
    let (sk, _) = keypair();
    let (_, peer) = keypair();
    let spec = NodeSpec {
        device: &dev,
        private_key: &sk,
        port: 51830,
        address: "10.72.0.1/24",
        peers: vec![(&peer, None, vec!["10.72.5.0/24"])],
        routes: vec![("10.72.5.0/24", None)],
    };
    let file = write_desired(dir.path(), "node.yaml", &spec);
    // A second desired device named like the foreign link: a conflict, not a takeover.
    let mut yaml = std::fs::read_to_string(&file).unwrap();
    yaml = yaml.replacen(
        "devices:\n",
        &format!(
            "devices:\n  fdum0:\n    owner: default/clash\n    privateKeyFile: {}\n    addresses: [10.72.9.1/24]\n",
            dir.path().join("node.yaml.key").display()
        ),
        1,
    );
    std::fs::write(&file, &yaml).unwrap();

    // Let IPv6 duplicate address detection finish, or the snapshot changes by itself.
    wait_until(
        Duration::from_secs(10),
        "IPv6 DAD on the foreign links",
        || {
            ns.ip(&["-6", "addr", "show", "tentative"])
                .trim()
                .is_empty()
        },
    );
    let before = foreign_snapshot(&ns, &dev);
    let mut daemon = Daemon::start(&ns, dir.path(), &file, &["--resync-period", "1s"]);
    wait_until(Duration::from_secs(20), "the kwire route", || {
        kwire_routes(&ns).contains("10.72.5.0/24")
    });
    assert_eq!(
        foreign_snapshot(&ns, &dev),
        before,
        "after the first reconcile"
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(foreign_snapshot(&ns, &dev), before, "after several resyncs");
    assert!(
        daemon.log().contains("InterfaceNameConflict"),
        "{}",
        daemon.log()
    );

    // Remove the kwire device from the desired state: it goes, foreign state stays.
    let emptied =
        "devices:\n  fdum0:\n    owner: default/clash\n    privateKeyFile: node.yaml.key\n";
    std::fs::write(&file, emptied).unwrap();
    wait_until(
        Duration::from_secs(20),
        "the kwire device to be deleted",
        || {
            !ns.ip(&["-j", "link", "show"])
                .contains(&format!("\"{dev}\""))
        },
    );
    assert_eq!(kwire_routes(&ns).trim(), "");
    assert_eq!(foreign_snapshot(&ns, &dev), before, "after the deletion");

    daemon.stop();
    assert_eq!(
        foreign_snapshot(&ns, &dev),
        before,
        "after the daemon stopped"
    );
}

#[test]
fn a_no_op_reconcile_on_the_real_kernel_makes_zero_writes_and_recreates_nothing() {
    require_prerequisites!();
    let dir = tempfile::tempdir().unwrap();
    let ns = Netns::new("nw");
    let dev = unique("nw");
    let (sk, _) = keypair();
    let (_, p1) = keypair();
    let (_, p2) = keypair();
    let file = write_desired(
        dir.path(),
        "node.yaml",
        &NodeSpec {
            device: &dev,
            private_key: &sk,
            port: 51840,
            address: "10.73.0.1/24",
            peers: vec![
                (
                    &p1,
                    Some("192.168.73.2:51820".into()),
                    vec!["10.73.0.2/32", "10.73.1.0/24"],
                ),
                (&p2, None, vec!["10.73.0.3/32"]),
            ],
            routes: vec![("10.73.1.0/24", Some("10.73.0.2")), ("10.73.2.0/24", None)],
        },
    );
    // Also an MTU, per-device forwarding and node-wide IPv4 forwarding, so the
    // second run proves those read back exactly as they were written.
    let yaml = std::fs::read_to_string(&file).unwrap().replacen(
        "    listenPort: 51840\n",
        "    listenPort: 51840\n    mtu: 1380\n    forwarding: true\n",
        1,
    ) + "forwarding:\n  ipv4: true\n";
    std::fs::write(&file, yaml).unwrap();
    let first = reconcile_once(&ns, dir.path(), &file);
    assert!(first["writes"].as_u64().unwrap() > 0, "{first}");
    assert_eq!(first["errors"], serde_json::json!([]), "{first}");
    let pids = ns.wireguard_go_pids();
    assert_eq!(pids.len(), 1);
    assert!(ns.ip(&["link", "show", &dev]).contains("mtu 1380"));
    let forwarding = |path: &str| ns.exec(&["cat", path]).trim().to_owned();
    assert_eq!(
        forwarding(&format!("/proc/sys/net/ipv4/conf/{dev}/forwarding")),
        "1"
    );
    assert_eq!(forwarding("/proc/sys/net/ipv4/conf/all/forwarding"), "1");

    // A new process adopts what is there: nothing planned, nothing written.
    let second = reconcile_once(&ns, dir.path(), &file);
    assert_eq!(second["steps"], serde_json::json!([]), "{second}");
    assert_eq!(second["writes"], 0, "{second}");
    assert_eq!(ns.wireguard_go_pids(), pids, "wireguard-go was restarted");
}

#[test]
fn without_an_mtu_a_device_takes_the_underlays_mtu_minus_80_and_follows_it() {
    require_prerequisites!();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (Netns::new("mu"), Netns::new("mv"));
    veth(&a, "192.168.76.1/24", &b, "192.168.76.2/24");
    a.ip(&["link", "set", "eth0", "mtu", "9000"]);
    let dev = unique("mu");
    let (sk, _) = keypair();
    let (_, peer) = keypair();
    let file = write_desired(
        dir.path(),
        "node.yaml",
        &NodeSpec {
            device: &dev,
            private_key: &sk,
            port: 51850,
            address: "10.76.0.1/24",
            peers: vec![(
                &peer,
                Some("192.168.76.2:51850".into()),
                vec!["10.76.0.2/32"],
            )],
            routes: vec![],
        },
    );
    let mtu = || {
        let link = a.ip(&["-o", "link", "show", &dev]);
        link.split_whitespace()
            .skip_while(|w| *w != "mtu")
            .nth(1)
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no MTU in {link}"))
    };
    // The endpoint is reached through eth0 (its connected route), MTU 9000.
    let first = reconcile_once(&a, dir.path(), &file);
    assert_eq!(first["errors"], serde_json::json!([]), "{first}");
    assert_eq!(mtu(), "8920");
    let again = reconcile_once(&a, dir.path(), &file);
    assert_eq!(again["steps"], serde_json::json!([]), "{again}");

    // The underlay shrinks: the device follows, and nothing else changes.
    a.ip(&["link", "set", "eth0", "mtu", "1400"]);
    let shrunk = reconcile_once(&a, dir.path(), &file);
    assert_eq!(shrunk["errors"], serde_json::json!([]), "{shrunk}");
    assert_eq!(mtu(), "1320");
    assert_eq!(
        shrunk["steps"].as_array().map(Vec::len),
        Some(1),
        "{shrunk}"
    );
}

#[test]
fn drift_is_corrected_within_one_resync() {
    require_prerequisites!();
    let dir = tempfile::tempdir().unwrap();
    let ns = Netns::new("dr");
    let dev = unique("dr");
    let (sk, _) = keypair();
    let (_, p1) = keypair();
    let (_, intruder) = keypair();
    let file = write_desired(
        dir.path(),
        "node.yaml",
        &NodeSpec {
            device: &dev,
            private_key: &sk,
            port: 51850,
            address: "10.74.0.1/24",
            peers: vec![(&p1, None, vec!["10.74.0.2/32", "10.74.1.0/24"])],
            routes: vec![("10.74.1.0/24", Some("10.74.0.2"))],
        },
    );
    let _daemon = Daemon::start(&ns, dir.path(), &file, &["--resync-period", "1s"]);
    wait_until(Duration::from_secs(20), "the kwire route", || {
        kwire_routes(&ns).contains("10.74.1.0/24")
    });

    ns.ip(&["route", "del", "10.74.1.0/24", "proto", "75"]);
    wait_until(
        Duration::from_secs(5),
        "the deleted route to come back",
        || kwire_routes(&ns).contains("10.74.1.0/24"),
    );

    ns.exec(&[
        "wg",
        "set",
        &dev,
        "peer",
        &intruder,
        "allowed-ips",
        "10.74.9.9/32",
    ]);
    wait_until(Duration::from_secs(5), "the hand-added peer to go", || {
        !ns.exec(&["wg", "show", &dev, "peers"]).contains(&intruder)
    });

    ns.ip(&["link", "set", &dev, "down"]);
    wait_until(
        Duration::from_secs(5),
        "the device to come up with its route",
        || {
            ns.ip(&["link", "show", &dev]).contains(",UP")
                && kwire_routes(&ns).contains("10.74.1.0/24")
        },
    );
}

#[test]
fn a_killed_wireguard_go_is_restarted_and_its_device_restored() {
    require_prerequisites!();
    let dir = tempfile::tempdir().unwrap();
    let ns = Netns::new("wk");
    let dev = unique("wk");
    let (sk, pk) = keypair();
    let (_, p1) = keypair();
    let file = write_desired(
        dir.path(),
        "node.yaml",
        &NodeSpec {
            device: &dev,
            private_key: &sk,
            port: 51860,
            address: "10.75.0.1/24",
            peers: vec![(&p1, None, vec!["10.75.0.2/32", "10.75.1.0/24"])],
            routes: vec![("10.75.1.0/24", Some("10.75.0.2"))],
        },
    );
    // A long resync: recovery must come from noticing the exit, not the timer.
    let _daemon = Daemon::start(&ns, dir.path(), &file, &["--resync-period", "10m"]);
    wait_until(Duration::from_secs(20), "the kwire route", || {
        kwire_routes(&ns).contains("10.75.1.0/24")
    });
    let old = ns.wireguard_go_pids();
    assert_eq!(old.len(), 1);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old[0]),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();

    wait_until(
        Duration::from_secs(20),
        "the device, address and route to be restored",
        || {
            let pids = ns.wireguard_go_pids();
            pids.len() == 1
                && pids != old
                && ns
                    .ip(&["addr", "show", "dev", &dev])
                    .contains("10.75.0.1/24")
                && kwire_routes(&ns).contains("10.75.1.0/24")
        },
    );
    let show = ns.exec(&["wg", "show", &dev]);
    assert!(show.contains(&pk) && show.contains(&p1), "{show}");
}

#[test]
fn a_log_written_to_a_file_carries_no_colour_codes() {
    require_prerequisites!();
    let dir = tempfile::tempdir().unwrap();
    let ns = Netns::new("lc");
    let file = dir.path().join("node.yaml");
    std::fs::write(&file, "devices: {}\n").unwrap();
    let mut daemon = Daemon::start(&ns, dir.path(), &file, &[]);
    wait_until(
        Duration::from_secs(20),
        "the first reconcile in the log",
        || daemon.log().contains("reconciled"),
    );
    daemon.stop();
    let log = daemon.log();
    assert!(
        !log.contains('\u{1b}'),
        "ANSI escape codes in a log file:\n{log:?}"
    );
}

#[test]
fn a_truncated_state_file_is_rebuilt_from_the_kernel_and_the_daemon_goes_on() {
    require_prerequisites!();
    let dir = tempfile::tempdir().unwrap();
    let ns = Netns::new("sf");
    let dev = unique("sf");
    let (sk, _) = keypair();
    let (_, p1) = keypair();
    let file = write_desired(
        dir.path(),
        "node.yaml",
        &NodeSpec {
            device: &dev,
            private_key: &sk,
            port: 51870,
            address: "10.76.0.1/24",
            peers: vec![(&p1, None, vec!["10.76.0.2/32", "10.76.1.0/24"])],
            routes: vec![("10.76.1.0/24", Some("10.76.0.2"))],
        },
    );
    let first = reconcile_once(&ns, dir.path(), &file);
    assert!(first["writes"].as_u64().unwrap() > 0, "{first}");
    let state = dir.path().join(format!("state-{}.json", ns.name));
    let whole = std::fs::read(&state).unwrap();
    assert!(String::from_utf8_lossy(&whole).contains(&dev));
    // What a power loss can leave behind: the file's first bytes.
    std::fs::write(&state, &whole[..whole.len() / 2]).unwrap();
    let pids = ns.wireguard_go_pids();

    // The daemon starts anyway, finds its device by its alias, and changes nothing.
    let second = reconcile_once(&ns, dir.path(), &file);
    assert_eq!(second["steps"], serde_json::json!([]), "{second}");
    assert_eq!(second["writes"], 0, "{second}");
    assert_eq!(ns.wireguard_go_pids(), pids, "wireguard-go was restarted");
    let rebuilt: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state).unwrap()).expect("a rebuilt state file");
    assert!(
        rebuilt["devices"][dev.as_str()].is_object(),
        "the device is recorded again: {rebuilt}"
    );
}

/// A fake wireguard-go socket in the host-wide UAPI folder, removed on drop.
struct FakeUapiSocket(PathBuf);

impl Drop for FakeUapiSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn an_odd_answer_from_wireguard_go_is_an_error_not_a_panic() {
    require_prerequisites!();
    use kwire_node_daemon::model::{IfaceName, LinkKind};
    use kwire_node_daemon::observe::{WireguardReadError, read_wireguard};
    use std::io::{Read as _, Write as _};

    let dev = unique("ua");
    std::fs::create_dir_all("/var/run/wireguard").unwrap();
    let socket = FakeUapiSocket(PathBuf::from(format!("/var/run/wireguard/{dev}.sock")));
    let _ = std::fs::remove_file(&socket.0);
    let listener = std::os::unix::net::UnixListener::bind(&socket.0).unwrap();
    // Answers every connection with an errno that is not a number, after a key that no
    // wireguard-go sends today.
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut request = Vec::new();
            let mut buf = [0u8; 64];
            while !request.ends_with(b"\n\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let _ = stream.write_all(b"listen_port=51820\nnew_key=1\nerrno=oops\n\n");
        }
    });
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let name: IfaceName = dev.parse().unwrap();
    let result = runtime.block_on(read_wireguard(&name, &LinkKind::Tun));
    match result {
        Err(WireguardReadError::Failed(e)) => {
            let message = e.to_string();
            assert!(
                !message.contains("panicked"),
                "the reader panicked: {message}"
            );
            assert!(message.contains("errno"), "{message}");
        }
        other => panic!("expected a read failure, got {other:?}"),
    }
}

/// `curl` inside `ns`: the status code of `method url`.
fn http_status(ns: &Netns, method: &str, url: &str) -> Option<u16> {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &ns.name, "curl", "-s", "-o", "/dev/null"])
        .args(["--max-time", "5", "-w", "%{http_code}", "-X", method, url])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

#[test]
fn the_metrics_server_answers_get_and_head_and_refuses_other_methods() {
    require_prerequisites!();
    let dir = tempfile::tempdir().unwrap();
    let ns = Netns::new("mt");
    let file = dir.path().join("node.yaml");
    std::fs::write(&file, "devices: {}\n").unwrap();
    let _daemon = Daemon::start(
        &ns,
        dir.path(),
        &file,
        &["--metrics-addr", "127.0.0.1:9464"],
    );
    let url = |path: &str| format!("http://127.0.0.1:9464{path}");
    wait_until(Duration::from_secs(20), "the daemon to be ready", || {
        http_status(&ns, "GET", &url("/readyz")) == Some(200)
    });
    assert_eq!(http_status(&ns, "GET", &url("/metrics")), Some(200));
    assert_eq!(http_status(&ns, "GET", &url("/healthz")), Some(200));
    assert_eq!(http_status(&ns, "GET", &url("/nothing")), Some(404));
    for method in ["POST", "PUT", "DELETE"] {
        assert_eq!(
            http_status(&ns, method, &url("/metrics")),
            Some(405),
            "{method}"
        );
    }
    let head = ns.exec(&["curl", "-s", "-I", "--max-time", "5", &url("/metrics")]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

#[test]
fn a_daemon_whose_metrics_server_cannot_run_exits_non_zero() {
    require_prerequisites!();
    let (dir, other_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ns = Netns::new("ms");
    let file = dir.path().join("node.yaml");
    std::fs::write(&file, "devices: {}\n").unwrap();
    let args = ["--metrics-addr", "127.0.0.1:9464"];
    let _first = Daemon::start(&ns, dir.path(), &file, &args);
    wait_until(
        Duration::from_secs(20),
        "the first daemon's /healthz",
        || http_status(&ns, "GET", "http://127.0.0.1:9464/healthz") == Some(200),
    );
    // The port is taken: the second daemon's metrics server ends at once. Without it the
    // kubelet's probes would fail for a reason nobody logs; the daemon says why and exits.
    let mut second = Daemon::start(&ns, other_dir.path(), &file, &args);
    let status = second.wait_exit(Duration::from_secs(20));
    assert!(!status.success(), "{status}");
    let log = second.log();
    assert!(log.contains("the metrics server failed"), "{log}");
}
