//! A FullMesh Mesh end to end (issue 15, first slice): the sandbox brings up four nodes
//! with the real control plane, the chart, the operator and the node daemons; three Nodes
//! are labelled and one `Mesh` selects them. The operator generates exactly one Interface
//! per member (owned by the Mesh) and no Peer; the node daemons derive each member's peers
//! from the other members' Interfaces; every member pings every other member over IPv4 and
//! IPv6. Then the fourth Node is labelled: it joins (one more generated Interface, every
//! pair with it answers) while pings between two members that were there before go on,
//! and none of them is lost; every member's `status.mesh` counts its three peers as
//! connected. Last, one Node's label is removed while another member's node daemon is
//! down: the leaver's Interface is deleted but stays (finalizer `kwire.dev/mesh-member`),
//! and its addresses stay allocated in their Networks, while the two live members report it
//! dropped (`status.mesh.departed`) and the stopped one cannot; once that daemon runs again
//! and drops it too, the Interface goes and its addresses go back to the Networks. When the
//! Mesh is deleted, its Interfaces go with it (the finalizer does not hold them).
//!
//! The manifest holds only `Node` documents, which make the sandbox's nodes; the Mesh, its
//! Networks and the labels come once the sandbox is up.
//!
//! Needs root and the tools `can_run_network_tests` lists; skipped otherwise (a failure
//! with `KWIRE_REQUIRE_E2E=1`).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use kube::Api;
use kube::api::DeleteParams;
use kwire_crds::v1alpha1::Mesh;
use kwire_tests::mesh::{
    ContinuousPing, Member, TempFile, addressed_members, mesh_ready, node_documents,
    ping_every_pair, set_label, wg_peers,
};
use kwire_tests::netns::can_run_network_tests;
use kwire_tests::sandbox::Sandbox;
use kwire_tests::wait::wait_for;
use serde_json::Value;

const NAMESPACE: &str = "mesh-full";
const LABEL: &str = "example.com/overlay";
const NODES: [&str; 4] = ["a", "b", "c", "d"];

/// The four nodes, none labelled yet.
fn nodes() -> String {
    let names: Vec<String> = NODES.iter().map(|n| n.to_string()).collect();
    node_documents(&names, LABEL, &[])
}

const MESH: &str = "\
apiVersion: kwire.dev/v1alpha1
kind: Network
metadata: {name: overlay-v4}
spec: {cidr: 10.60.0.0/24}
---
apiVersion: kwire.dev/v1alpha1
kind: Network
metadata: {name: overlay-v6}
spec: {cidr: 'fd00:60::/64'}
---
apiVersion: kwire.dev/v1alpha1
kind: Mesh
metadata: {name: overlay}
spec:
  nodeSelector: {matchLabels: {example.com/overlay: 'yes'}}
  topology: {type: FullMesh}
  networks: [{name: overlay-v4}, {name: overlay-v6}]
  device: {deviceName: wgmesh, listenPort: 51900, persistentKeepalive: 25}
";

/// The members of the Mesh once there is exactly one on each of `expected`, each with an
/// IPv4 and an IPv6 address.
fn members(sandbox: &Sandbox, expected: &[&str]) -> Result<Option<Vec<Member>>> {
    let expected: Vec<String> = expected.iter().map(|n| n.to_string()).collect();
    addressed_members(sandbox, "overlay", &expected)
}

/// The peers of the mesh's device in a node's `wg show all dump`.
fn peers_of(shown: &str) -> usize {
    wg_peers(shown, "wgmesh").len()
}

/// The API's view: exactly one generated Interface per member (owned by the Mesh), no
/// Peer, and the Mesh's status counting the members.
fn assert_objects(sandbox: &Sandbox, expected: &[&str]) -> Result<()> {
    let interfaces = sandbox.get("interfaces")?;
    let generated: Vec<&Value> = interfaces
        .iter()
        .filter(|i| i["metadata"]["labels"]["kwire.dev/mesh"] == "overlay")
        .collect();
    let nodes: BTreeSet<&str> = generated
        .iter()
        .filter_map(|i| i["spec"]["nodeName"].as_str())
        .collect();
    ensure!(
        generated.len() == expected.len() && nodes == expected.iter().copied().collect(),
        "generated Interfaces on {nodes:?} ({}), expected one on each of {expected:?}",
        generated.len()
    );
    for i in &generated {
        let owner = &i["metadata"]["ownerReferences"][0];
        ensure!(
            owner["kind"] == "Mesh" && owner["name"] == "overlay" && owner["controller"] == true,
            "not owned by the Mesh: {}",
            i["metadata"]
        );
    }
    ensure!(
        interfaces.len() == generated.len(),
        "{} Interfaces: more than the generated ones",
        interfaces.len()
    );
    let peers = sandbox.get("peers")?;
    ensure!(peers.is_empty(), "Peers in the API: {peers:?}");
    Ok(())
}

/// The generated Interface of the Mesh on `node`, if any.
fn generated_on(sandbox: &Sandbox, node: &str) -> Result<Option<Value>> {
    Ok(sandbox.get("interfaces")?.into_iter().find(|i| {
        i["metadata"]["labels"]["kwire.dev/mesh"] == "overlay" && i["spec"]["nodeName"] == node
    }))
}

/// `status.mesh` of the member on each of `nodes`, once each has `peers` peers, all
/// connected, and no departed member; `None` before.
fn mesh_status_connected(
    sandbox: &Sandbox,
    nodes: &[&str],
    peers: u64,
) -> Result<Option<Vec<Value>>> {
    let mut out = Vec::new();
    for node in nodes {
        let Some(i) = generated_on(sandbox, node)? else {
            return Ok(None);
        };
        let mesh = &i["status"]["mesh"];
        if mesh["peers"] != peers
            || mesh["connected"] != peers
            || mesh["stale"] != 0
            || mesh.get("departed").is_some()
        {
            return Ok(None);
        }
        out.push(mesh.clone());
    }
    Ok(Some(out))
}

/// Whether the member on `node` lists `leaver` in `status.mesh.departed`.
fn reports_departed(sandbox: &Sandbox, node: &str, leaver: &str) -> Result<bool> {
    Ok(generated_on(sandbox, node)?.is_some_and(|i| {
        i["status"]["mesh"]["departed"]
            .as_array()
            .is_some_and(|d| d.iter().any(|n| n == leaver))
    }))
}

/// The addresses allocated in the Mesh's Networks to the Interface `name`.
fn allocated_to(sandbox: &Sandbox, name: &str) -> Result<BTreeSet<IpAddr>> {
    Ok(sandbox
        .get("networks")?
        .iter()
        .flat_map(|n| {
            n["status"]["allocations"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter(|a| a["interface"] == name)
        .filter_map(|a| a["address"].as_str()?.split('/').next()?.parse().ok())
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_mesh_of_labelled_nodes_pings_every_pair_and_a_new_member_joins() -> Result<()> {
    if let Err(why) = can_run_network_tests() {
        println!(
            "SKIPPED a_full_mesh_of_labelled_nodes_pings_every_pair_and_a_new_member_joins: {why}"
        );
        return Ok(());
    }
    let manifest = TempFile(
        std::env::temp_dir().join(format!("kwire-mesh-nodes-{}.yaml", std::process::id())),
    );
    std::fs::write(&manifest.0, nodes())?;
    let mut sandbox = Sandbox::up(std::slice::from_ref(&manifest.0), NAMESPACE, true)
        .await
        .context("sandbox up")?;
    if let Err(e) = sandbox.wait_ready(Duration::from_secs(120)) {
        anyhow::bail!("{e}\n{}", sandbox.status_table());
    }

    // Three members.
    for node in ["a", "b", "c"] {
        set_label(&sandbox, node, LABEL, Some("yes")).await?;
    }
    sandbox.apply_yaml(MESH)?;
    let three = ["a", "b", "c"];
    let (members3, took) = wait_for(
        "a generated Interface with an IPv4 and an IPv6 address on a, b and c",
        Duration::from_secs(60),
        || members(&sandbox, &three),
    )
    .with_context(|| sandbox.status_table())?;
    println!("3 members addressed in {took:?}");
    let failed = ping_every_pair(&sandbox, &members3, None);
    ensure!(
        failed.is_empty(),
        "pings failed: {failed:?}\n{}\n{}",
        sandbox.status_table(),
        sandbox.logs_tail(30)
    );
    wait_for(
        "the Mesh to count 3 ready members",
        Duration::from_secs(60),
        || Ok(mesh_ready(&sandbox, "overlay", 3)?.then_some(())),
    )
    .with_context(|| sandbox.status_table())?;
    assert_objects(&sandbox, &three)?;

    // d joins while a keeps pinging b.
    let b_v4 = members3[1].v4().context("b has no IPv4 address")?;
    let pinging = ContinuousPing::start(sandbox.nodes["a"].netns.name(), b_v4, "a → b")?;
    pinging.wait_replies(10, Duration::from_secs(10))?;
    set_label(&sandbox, "d", LABEL, Some("yes")).await?;
    let four = ["a", "b", "c", "d"];
    let (members4, took) = wait_for(
        "a generated Interface with an IPv4 and an IPv6 address on d",
        Duration::from_secs(60),
        || members(&sandbox, &four),
    )
    .with_context(|| sandbox.status_table())?;
    println!("d addressed {took:?} after its label");
    let failed = ping_every_pair(&sandbox, &members4, Some("d"));
    ensure!(
        failed.is_empty(),
        "pings with the new member failed: {failed:?}\n{}",
        sandbox.logs_tail(30)
    );
    wait_for(
        "the Mesh to count 4 ready members",
        Duration::from_secs(60),
        || Ok(mesh_ready(&sandbox, "overlay", 4)?.then_some(())),
    )
    .with_context(|| sandbox.status_table())?;
    let count = pinging.finish()?;
    println!(
        "a → b during the join: {} of {} answered",
        count.received, count.transmitted
    );
    ensure!(
        count.received > 0 && count.lost == 0,
        "a → b lost {} of {} pings while d joined",
        count.lost,
        count.transmitted
    );
    assert_objects(&sandbox, &four)?;
    // Each member's device has the three others as peers, with the Mesh's keepalive
    // (the dump's last field).
    for node in NODES {
        let shown = sandbox.nodes[node].wg_show()?;
        let keepalives: Vec<&str> = shown
            .lines()
            .filter(|l| l.starts_with("wgmesh\t"))
            .filter_map(|l| l.split('\t').nth(8))
            .collect();
        ensure!(
            peers_of(&shown) == 3 && keepalives == ["25"; 3],
            "{node}: {shown}"
        );
    }

    // Each member's status counts its three peers, all connected (the pings above went
    // through every pair).
    let (statuses, _) = wait_for(
        "every member's status.mesh to count 3 connected peers",
        Duration::from_secs(60),
        || mesh_status_connected(&sandbox, &four, 3),
    )
    .with_context(|| sandbox.status_table())?;
    for mesh in &statuses {
        ensure!(
            mesh.get("unhealthy").is_none() && mesh["connecting"] == 0,
            "{mesh}"
        );
    }

    // d's node daemon stops; then c leaves (its label goes). Its generated Interface is
    // deleted, its device goes, and a and b drop it as a peer and say so; d cannot.
    let c_interface = generated_on(&sandbox, "c")?.context("no generated Interface on c")?;
    let c_name = c_interface["metadata"]["name"]
        .as_str()
        .context("a name")?
        .to_string();
    let c_addresses: BTreeSet<IpAddr> = members4[2].addresses.iter().copied().collect();
    ensure!(
        allocated_to(&sandbox, &c_name)? == c_addresses,
        "c's addresses are not allocated to {c_name} in the Networks"
    );
    let d_daemon = sandbox.daemon_command("d")?;
    sandbox.kill_daemon("d")?;
    set_label(&sandbox, "c", LABEL, None).await?;
    wait_for(
        "a and b to drop c and report it departed",
        Duration::from_secs(60),
        || {
            for node in ["a", "b"] {
                if peers_of(&sandbox.nodes[node].wg_show()?) != 2
                    || !reports_departed(&sandbox, node, &c_name)?
                {
                    return Ok(None);
                }
            }
            Ok((peers_of(&sandbox.nodes["c"].wg_show()?) == 0).then_some(()))
        },
    )
    .with_context(|| sandbox.status_table())?;
    // Held: d has not confirmed, so c's Interface is still there (deleted, with the
    // finalizer) and its addresses are still allocated to it.
    let held = generated_on(&sandbox, "c")?.context("c's Interface went before d confirmed")?;
    ensure!(
        held["metadata"]["deletionTimestamp"].is_string()
            && held["metadata"]["finalizers"]
                .as_array()
                .is_some_and(|f| f.iter().any(|f| f == "kwire.dev/mesh-member")),
        "c's Interface is not held by the finalizer: {}",
        held["metadata"]
    );
    ensure!(
        allocated_to(&sandbox, &c_name)? == c_addresses,
        "c's addresses went back to the Networks before d dropped c"
    );
    ensure!(!reports_departed(&sandbox, "d", &c_name)?);
    // (Without its daemon, `wg show` runs in the mount namespace of the node's
    // wireguard-go, which holds the device and its socket.)
    let holder = sandbox.nodes["d"]
        .netns
        .pids_named("wireguard-go")
        .into_iter()
        .next()
        .context("no wireguard-go on d")?;
    let shown = Command::new("nsenter")
        .args([
            "-t",
            &holder.to_string(),
            "-m",
            "-n",
            "wg",
            "show",
            "all",
            "dump",
        ])
        .output()
        .context("wg show on d")?;
    ensure!(
        peers_of(&String::from_utf8_lossy(&shown.stdout)) == 3,
        "d's device, without its daemon, does not have c any more"
    );

    // d's daemon runs again: it drops c and says so; c's Interface goes, and its addresses
    // with it.
    sandbox.respawn_daemon("d", &d_daemon)?;
    let rest = ["a", "b", "d"];
    let (_, took) = wait_for(
        "d to drop c, c's Interface to go and its addresses to go back to the Networks",
        Duration::from_secs(90),
        || {
            if peers_of(&sandbox.nodes["d"].wg_show()?) != 2
                || generated_on(&sandbox, "c")?.is_some()
                || members(&sandbox, &rest)?.is_none()
            {
                return Ok(None);
            }
            Ok(allocated_to(&sandbox, &c_name)?.is_empty().then_some(()))
        },
    )
    .with_context(|| sandbox.status_table())?;
    println!("c let go {took:?} after d's daemon came back");
    wait_for(
        "every remaining member's status.mesh to count 2 connected peers",
        Duration::from_secs(60),
        || mesh_status_connected(&sandbox, &rest, 2),
    )
    .with_context(|| sandbox.status_table())?;
    assert_objects(&sandbox, &rest)?;
    let left = members(&sandbox, &rest)?.context("the remaining members changed")?;
    let failed = ping_every_pair(&sandbox, &left, None);
    ensure!(failed.is_empty(), "pings failed after c left: {failed:?}");

    // The Mesh is deleted: the garbage collector deletes its Interfaces and their
    // finalizer does not hold them (their Mesh is gone); every address goes back.
    let meshes: Api<Mesh> = Api::namespaced(sandbox.cp.client().await?, &sandbox.namespace);
    meshes
        .delete("overlay", &DeleteParams::default())
        .await
        .context("deleting the Mesh")?;
    wait_for(
        "the generated Interfaces to go with the Mesh, and their addresses",
        Duration::from_secs(60),
        || {
            for node in NODES {
                if generated_on(&sandbox, node)?.is_some() {
                    return Ok(None);
                }
            }
            let allocated = sandbox
                .get("networks")?
                .iter()
                .map(|n| n["status"]["allocations"].as_array().map_or(0, Vec::len))
                .sum::<usize>();
            Ok((allocated == 0).then_some(()))
        },
    )
    .with_context(|| sandbox.status_table())?;
    Ok(())
}
