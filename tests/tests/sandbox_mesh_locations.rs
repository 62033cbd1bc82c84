//! `Locations` and `HubAndSpoke` Meshes end to end (issue 15): the sandbox brings up six
//! nodes with the real control plane, the chart, the operator and the node daemons, three
//! in zone `east` and three in zone `west` (`Node` documents give the labels).
//!
//! One `Locations` Mesh (IPv4 and IPv6) links all six: the operator generates exactly six
//! Interfaces and no Peer, and records one gateway per location in the Mesh's status (the
//! first node by name: east-1 and west-1). Every member pings every other member's every
//! address, and traffic between the locations goes only through the gateways: the replies'
//! TTL says how many routers forwarded them (64 inside a location, 62 from a non-gateway to
//! a non-gateway of the other location: its gateway and ours), a non-gateway's device has
//! only its location's members as peers, and the gateways' link to each other carries the
//! traffic (its `wg show` transfer counters grow while two non-gateways ping).
//!
//! Then east-1 leaves the Mesh (a label takes it out): east-2 becomes east's gateway, and
//! stays it when east-1 comes back (the gateway recorded in the status is sticky); every
//! pair answers with the TTLs of the new gateways.
//!
//! Last, a `HubAndSpoke` Mesh over three of the nodes (hub east-3, spokes east-2 and west-2,
//! on a device of its own): each spoke has only the hub as peer, and spoke → spoke goes
//! through the hub (TTL 63).
//!
//! Needs root and the tools `can_run_network_tests` lists; skipped otherwise (a failure
//! with `KWIRE_REQUIRE_E2E=1`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use kwire_tests::mesh::{TempFile, set_label};
use kwire_tests::netns::can_run_network_tests;
use kwire_tests::sandbox::Sandbox;
use kwire_tests::wait::wait_for;
use serde_json::Value;

const NAMESPACE: &str = "mesh-sites";
const EAST: [&str; 3] = ["east-1", "east-2", "east-3"];
const WEST: [&str; 3] = ["west-1", "west-2", "west-3"];
const GATEWAYS: [&str; 2] = ["east-1", "west-1"];
/// The label that takes a Node out of the Locations Mesh.
const OUT: &str = "example.com/out";

/// The nodes and their labels: the zone, and who is in the hub-and-spoke Mesh.
fn nodes() -> String {
    EAST.iter()
        .map(|n| (n, "east"))
        .chain(WEST.iter().map(|n| (n, "west")))
        .map(|(node, zone)| {
            let star = match *node {
                "east-3" => ", example.com/star: 'yes', example.com/hub: 'yes'",
                "east-2" | "west-2" => ", example.com/star: 'yes'",
                _ => "",
            };
            format!(
                "apiVersion: v1\nkind: Node\nmetadata:\n  name: {node}\n  \
                 labels: {{topology.kubernetes.io/zone: {zone}{star}}}\n---\n"
            )
        })
        .collect()
}

const SITES: &str = "\
apiVersion: kwire.dev/v1alpha1
kind: Network
metadata: {name: sites-v4}
spec: {cidr: 10.62.0.0/24}
---
apiVersion: kwire.dev/v1alpha1
kind: Network
metadata: {name: sites-v6}
spec: {cidr: 'fd00:62::/64'}
---
apiVersion: kwire.dev/v1alpha1
kind: Mesh
metadata: {name: sites}
spec:
  nodeSelector: {matchExpressions: [{key: example.com/out, operator: DoesNotExist}]}
  topology: {type: Locations}
  networks: [{name: sites-v4}, {name: sites-v6}]
  device: {deviceName: wgsites, listenPort: 51940, persistentKeepalive: 25}
  announce:
    prefixes: [{nodeName: west-3, cidrs: [192.168.77.0/24]}]
";

/// The network behind west-3 that it announces, and its address there.
const LAN: &str = "192.168.77.0/24";
const LAN_HOST: &str = "192.168.77.1";

const STAR: &str = "\
apiVersion: kwire.dev/v1alpha1
kind: Network
metadata: {name: star-v4}
spec: {cidr: 10.71.0.0/24}
---
apiVersion: kwire.dev/v1alpha1
kind: Mesh
metadata: {name: star}
spec:
  nodeSelector: {matchLabels: {example.com/star: 'yes'}}
  topology:
    type: HubAndSpoke
    hubAndSpoke: {hubSelector: {matchLabels: {example.com/hub: 'yes'}}}
  networks: [{name: star-v4}]
  device: {deviceName: wgstar, listenPort: 51941}
";

/// The gateway `status.locations` records for `location`.
fn gateway_of(status: &Value, location: &str) -> Option<String> {
    status["locations"]
        .as_array()?
        .iter()
        .find(|l| l["name"] == location)?["gateway"]
        .as_str()
        .map(String::from)
}

/// Whether every member's device has the peers a Locations Mesh with `gateways` gives it:
/// its location's other members, and the other gateway for a gateway.
fn devices_converged(sandbox: &Sandbox, nodes: &[&str], gateways: &[&str]) -> Result<bool> {
    for node in nodes {
        let shown = sandbox.nodes[*node].wg_show()?;
        let expected = if gateways.contains(node) { 3 } else { 2 };
        if peers_of(&shown, "wgsites").len() != expected {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The generated Interfaces of Mesh `mesh`.
fn generated(sandbox: &Sandbox, mesh: &str) -> Result<Vec<Value>> {
    Ok(sandbox
        .get("interfaces")?
        .into_iter()
        .filter(|i| i["metadata"]["labels"]["kwire.dev/mesh"] == mesh)
        .collect())
}

/// Node → addresses of the Mesh's members, once each of `expected` has a generated
/// Interface with `families` addresses; `None` before.
fn members(
    sandbox: &Sandbox,
    mesh: &str,
    expected: &[&str],
    families: usize,
) -> Result<Option<BTreeMap<String, Vec<IpAddr>>>> {
    let mut out = BTreeMap::new();
    for i in generated(sandbox, mesh)? {
        let node = i["spec"]["nodeName"].as_str().unwrap_or_default();
        let addresses: Vec<IpAddr> = i["status"]["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str()?.split('/').next()?.parse().ok())
            .collect();
        if addresses.len() < families {
            return Ok(None);
        }
        out.insert(node.to_string(), addresses);
    }
    let nodes: Vec<&str> = out.keys().map(String::as_str).collect();
    Ok((nodes == expected).then_some(out))
}

/// The Mesh's status once it counts `count` ready members.
fn mesh_ready(sandbox: &Sandbox, mesh: &str, count: u64) -> Result<Option<Value>> {
    let Some(object) = sandbox.get_one("meshes", mesh)? else {
        return Ok(None);
    };
    let status = &object["status"];
    let ready = status["members"] == count
        && status["readyMembers"] == count
        && status["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
    Ok(ready.then(|| status.clone()))
}

/// The TTL (IPv6: hop limit) of the reply to one ping from `from` to `to`, once a reply
/// comes back within `deadline`.
fn reply_ttl(sandbox: &Sandbox, from: &str, to: IpAddr, deadline: Duration) -> Option<u8> {
    let netns = &sandbox.nodes[from].netns;
    netns.wait_for_ping(to, deadline)?;
    let out = netns.try_exec(&["ping", "-n", "-c", "1", "-W", "2", &to.to_string()]);
    let text = String::from_utf8_lossy(&out.stdout);
    text.split("ttl=").nth(1)?.split(' ').next()?.parse().ok()
}

/// Every member pings every other member's every address: `(from, to, address, ttl)`,
/// `None` for no reply.
fn ttl_of_every_pair(
    sandbox: &Sandbox,
    members: &BTreeMap<String, Vec<IpAddr>>,
) -> Vec<(String, String, IpAddr, Option<u8>)> {
    let mut out = Vec::new();
    for from in members.keys() {
        for (to, addresses) in members.iter().filter(|(to, _)| *to != from) {
            for address in addresses {
                let ttl = reply_ttl(sandbox, from, *address, Duration::from_secs(20));
                out.push((from.clone(), to.clone(), *address, ttl));
            }
        }
    }
    out
}

fn zone(node: &str) -> &'static str {
    if EAST.contains(&node) { "east" } else { "west" }
}

/// The routers between two members of the Locations Mesh: none inside a location; across,
/// each end's gateway unless the end is one.
fn hops(from: &str, to: &str, gateways: &[&str]) -> u8 {
    if zone(from) == zone(to) {
        return 0;
    }
    u8::from(!gateways.contains(&from)) + u8::from(!gateways.contains(&to))
}

/// Every pair's pings whose reply TTL is not what `hops` says with `gateways`, and the
/// (routers, TTL) pairs seen.
fn wrong_ttls(
    seen: &[(String, String, IpAddr, Option<u8>)],
    gateways: &[&str],
) -> (Vec<String>, BTreeSet<(u8, Option<u8>)>) {
    let mut wrong = Vec::new();
    let mut ttls = BTreeSet::new();
    for (from, to, address, ttl) in seen {
        let expected = 64 - hops(from, to, gateways);
        ttls.insert((hops(from, to, gateways), *ttl));
        if *ttl != Some(expected) {
            wrong.push(format!(
                "{from} → {to} ({address}): ttl {ttl:?}, expected {expected}"
            ));
        }
    }
    (wrong, ttls)
}

/// `device`'s peers in `wg show all dump`: public key → (rx bytes, tx bytes).
fn peers_of(shown: &str, device: &str) -> BTreeMap<String, (u64, u64)> {
    shown
        .lines()
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .filter(|f| f.len() == 9 && f[0] == device)
        .map(|f| {
            let n = |s: &str| s.parse().unwrap_or(0);
            (f[1].to_string(), (n(f[6]), n(f[7])))
        })
        .collect()
}

/// The public key of `node`'s generated Interface of Mesh `mesh`.
fn public_key(sandbox: &Sandbox, mesh: &str, node: &str) -> Result<String> {
    generated(sandbox, mesh)?
        .iter()
        .find(|i| i["spec"]["nodeName"] == node)
        .and_then(|i| i["status"]["publicKey"].as_str().map(String::from))
        .with_context(|| format!("no public key for {node} in Mesh {mesh}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locations_link_through_gateways_and_spokes_through_their_hub() -> Result<()> {
    if let Err(why) = can_run_network_tests() {
        println!("SKIPPED locations_link_through_gateways_and_spokes_through_their_hub: {why}");
        return Ok(());
    }
    let manifest = TempFile(
        std::env::temp_dir().join(format!("kwire-mesh-sites-{}.yaml", std::process::id())),
    );
    std::fs::write(&manifest.0, nodes())?;
    let sandbox = Sandbox::up(std::slice::from_ref(&manifest.0), NAMESPACE, true)
        .await
        .context("sandbox up")?;
    if let Err(e) = sandbox.wait_ready(Duration::from_secs(120)) {
        anyhow::bail!("{e}\n{}", sandbox.status_table());
    }

    // The network behind west-3: one of its addresses, on its loopback device (the
    // sandbox's kernel may have no dummy devices), gone with its namespace.
    let west3 = &sandbox.nodes["west-3"].netns;
    west3.exec(&[
        "ip",
        "address",
        "add",
        &format!("{LAN_HOST}/32"),
        "dev",
        "lo",
    ])?;

    // --- Locations: six members, two locations.
    sandbox.apply_yaml(SITES)?;
    let all: Vec<&str> = EAST.iter().chain(&WEST).copied().collect();
    let (sites, took) = wait_for(
        "a generated Interface with an IPv4 and an IPv6 address on each of the six nodes",
        Duration::from_secs(120),
        || members(&sandbox, "sites", &all, 2),
    )
    .with_context(|| sandbox.status_table())?;
    println!("6 members addressed in {took:?}");
    let (status, _) = wait_for(
        "the Locations Mesh to count 6 ready members",
        Duration::from_secs(120),
        || mesh_ready(&sandbox, "sites", 6),
    )
    .with_context(|| format!("{}\n{}", sandbox.status_table(), sandbox.logs_tail(30)))?;

    // One gateway per location, recorded in the status; the generated Interfaces say the
    // same roles.
    let locations: Vec<(String, u64, String)> = status["locations"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| {
            (
                l["name"].as_str().unwrap_or_default().to_string(),
                l["members"].as_u64().unwrap_or_default(),
                l["gateway"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    ensure!(
        locations
            == [
                ("east".to_string(), 3, "east-1".to_string()),
                ("west".to_string(), 3, "west-1".to_string())
            ],
        "status.locations: {}",
        status["locations"]
    );
    let interfaces = generated(&sandbox, "sites")?;
    for i in &interfaces {
        let node = i["spec"]["nodeName"].as_str().unwrap_or_default();
        let role = if GATEWAYS.contains(&node) {
            "gateway"
        } else {
            "member"
        };
        let labels = &i["metadata"]["labels"];
        ensure!(
            labels["kwire.dev/mesh-role"] == role
                && labels["kwire.dev/mesh-location"] == zone(node)
                && i["metadata"]["ownerReferences"][0]["kind"] == "Mesh",
            "{node}: {}",
            i["metadata"]
        );
    }
    // O(N) objects: exactly the six generated Interfaces, and no Peer.
    let every_interface = sandbox.get("interfaces")?;
    ensure!(
        interfaces.len() == 6 && every_interface.len() == 6,
        "{} generated Interfaces, {} in all: expected 6 and 6",
        interfaces.len(),
        every_interface.len()
    );
    let peers = sandbox.get("peers")?;
    ensure!(peers.is_empty(), "Peers in the API: {peers:?}");

    // Every member reaches every other member's every address, through as many routers as
    // the topology says: only the gateways forward between the locations.
    let seen = ttl_of_every_pair(&sandbox, &sites);
    let (wrong, ttls) = wrong_ttls(&seen, &GATEWAYS);
    println!("{} pings, (routers, reply TTL) seen: {ttls:?}", seen.len());
    ensure!(
        wrong.is_empty(),
        "{} of {} pings wrong:\n  {}\n{}",
        wrong.len(),
        seen.len(),
        wrong.join("\n  "),
        sandbox.logs_tail(30)
    );

    // The prefix west-3 announces: routed through the mesh device on every other member,
    // and reached through the same routers as west-3 itself.
    let lan_host: IpAddr = LAN_HOST.parse()?;
    let mut lan_ttls = Vec::new();
    for from in all.iter().filter(|n| **n != "west-3") {
        let routes = sandbox.nodes[*from]
            .netns
            .exec(&["ip", "route", "show", LAN])?;
        let routes = String::from_utf8_lossy(&routes.stdout).into_owned();
        ensure!(
            routes.contains("dev wgsites"),
            "{from}: no route to {LAN} through wgsites: {routes:?}"
        );
        let ttl = reply_ttl(&sandbox, from, lan_host, Duration::from_secs(20));
        let expected = 64 - hops(from, "west-3", &GATEWAYS);
        ensure!(
            ttl == Some(expected),
            "{from} → {LAN_HOST} (announced by west-3): ttl {ttl:?}, expected {expected}"
        );
        lan_ttls.push(format!("{from} {}", expected));
    }
    println!(
        "{LAN} announced by west-3, reply TTLs: {}",
        lan_ttls.join(", ")
    );

    // The devices: a non-gateway peers with its location's two other members only; a
    // gateway with those and the other gateway.
    ensure!(
        devices_converged(&sandbox, &all, &GATEWAYS)?,
        "peers other than the topology's: {:?}",
        all.iter()
            .map(|n| sandbox.nodes[*n].wg_show())
            .collect::<Vec<_>>()
    );

    // The gateways' link carries what two non-gateways of different locations exchange.
    let west_gateway = public_key(&sandbox, "sites", "west-1")?;
    let counters = |sandbox: &Sandbox| -> Result<(u64, u64)> {
        let shown = sandbox.nodes["east-1"].wg_show()?;
        peers_of(&shown, "wgsites")
            .get(&west_gateway)
            .copied()
            .context("east-1 has no peer west-1")
    };
    let before = counters(&sandbox)?;
    let to = sites["west-2"][0];
    ensure!(
        sandbox.nodes["east-2"]
            .netns
            .ping(to, 20, Duration::from_secs(2)),
        "east-2 → west-2 ({to}) lost pings"
    );
    let after = counters(&sandbox)?;
    // 20 pings of 84 bytes each way, with WireGuard's overhead: well over 20 × 84 bytes.
    ensure!(
        after.0 >= before.0 + 20 * 84 && after.1 >= before.1 + 20 * 84,
        "east-1's link to west-1 did not carry east-2 ↔ west-2: rx {} → {}, tx {} → {}",
        before.0,
        after.0,
        before.1,
        after.1
    );
    println!(
        "east-1 ↔ west-1 while east-2 pinged west-2 20 times: rx +{} B, tx +{} B",
        after.0 - before.0,
        after.1 - before.1
    );

    // --- east's gateway leaves and comes back: east-2 (next by name) takes over, and stays
    // the gateway when east-1 rejoins: the record in status.locations keeps it (without a
    // record, east-1 would win again, first by name).
    set_label(&sandbox, "east-1", OUT, Some("yes")).await?;
    let (_, took) = wait_for(
        "east-2 to be east's gateway once east-1 left",
        Duration::from_secs(120),
        || {
            let Some(status) = mesh_ready(&sandbox, "sites", 5)? else {
                return Ok(None);
            };
            Ok((gateway_of(&status, "east").as_deref() == Some("east-2")).then_some(()))
        },
    )
    .with_context(|| sandbox.status_table())?;
    println!("east-2 gateway {took:?} after east-1 left");
    set_label(&sandbox, "east-1", OUT, None).await?;
    // east-1's Interface comes back under the same name while the key Secret of the deleted
    // one may still wait for the garbage collector: the key controller adopts it, replacing
    // the earlier controller reference (it used to add a second one, refused with 422 until
    // the Secret was gone: about 35 s here; 0.6 s since).
    let (status, took) = wait_for("east-1 back in the Mesh", Duration::from_secs(120), || {
        mesh_ready(&sandbox, "sites", 6)
    })
    .with_context(|| sandbox.status_table())?;
    ensure!(
        gateway_of(&status, "east").as_deref() == Some("east-2")
            && gateway_of(&status, "west").as_deref() == Some("west-1"),
        "the gateways moved when east-1 rejoined: {}",
        status["locations"]
    );
    println!("east-1 back and ready in {took:?}");
    let moved = ["east-2", "west-1"];
    let (sites, took) = wait_for(
        "the six members addressed and every device with the new gateway's peers",
        Duration::from_secs(120),
        || {
            let Some(sites) = members(&sandbox, "sites", &all, 2)? else {
                return Ok(None);
            };
            Ok(devices_converged(&sandbox, &all, &moved)?.then_some(sites))
        },
    )
    .with_context(|| sandbox.status_table())?;
    println!("devices converged {took:?} later");
    let start = std::time::Instant::now();
    let seen = ttl_of_every_pair(&sandbox, &sites);
    println!("pings took {:?}", start.elapsed());
    let (wrong, ttls) = wrong_ttls(&seen, &moved);
    println!(
        "gateways east-2 and west-1 after east-1 left and rejoined: {} pings, (routers, reply TTL) seen: {ttls:?}",
        seen.len()
    );
    ensure!(
        wrong.is_empty(),
        "pings with the new gateway wrong:\n  {}",
        wrong.join("\n  ")
    );

    // --- HubAndSpoke: hub east-3, spokes east-2 and west-2.
    sandbox.apply_yaml(STAR)?;
    let star_nodes = ["east-2", "east-3", "west-2"];
    let (star, _) = wait_for(
        "a generated Interface with an address on each member of the star",
        Duration::from_secs(120),
        || members(&sandbox, "star", &star_nodes, 1),
    )
    .with_context(|| sandbox.status_table())?;
    wait_for(
        "the HubAndSpoke Mesh to count 3 ready members",
        Duration::from_secs(120),
        || mesh_ready(&sandbox, "star", 3),
    )
    .with_context(|| format!("{}\n{}", sandbox.status_table(), sandbox.logs_tail(30)))?;
    for i in generated(&sandbox, "star")? {
        let node = i["spec"]["nodeName"].as_str().unwrap_or_default();
        let (role, hub) = if node == "east-3" {
            ("hub", Value::Null)
        } else {
            ("spoke", Value::from("east-3"))
        };
        ensure!(
            i["metadata"]["labels"]["kwire.dev/mesh-role"] == role
                && i["metadata"]["annotations"]["kwire.dev/mesh-primary-hub"] == hub,
            "{node}: {}",
            i["metadata"]
        );
    }
    let seen = ttl_of_every_pair(&sandbox, &star);
    let mut wrong = Vec::new();
    for (from, to, address, ttl) in &seen {
        let expected = if from != "east-3" && to != "east-3" {
            63
        } else {
            64
        };
        if *ttl != Some(expected) {
            wrong.push(format!(
                "{from} → {to} ({address}): ttl {ttl:?}, expected {expected}"
            ));
        }
    }
    println!(
        "star: {} pings, reply TTLs {:?}",
        seen.len(),
        seen.iter().map(|s| s.3).collect::<Vec<_>>()
    );
    ensure!(
        wrong.is_empty(),
        "star pings wrong:\n  {}",
        wrong.join("\n  ")
    );
    for node in star_nodes {
        let count = peers_of(&sandbox.nodes[node].wg_show()?, "wgstar").len();
        let expected = if node == "east-3" { 2 } else { 1 };
        ensure!(
            count == expected,
            "{node} has {count} star peers, expected {expected}"
        );
    }
    ensure!(
        sandbox.get("peers")?.is_empty() && sandbox.get("interfaces")?.len() == 9,
        "expected 9 generated Interfaces (6 + 3) and no Peer"
    );
    Ok(())
}
