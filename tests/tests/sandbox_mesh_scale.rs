//! A FullMesh of 8 members (issue 15): the sandbox brings up nine nodes from `Node`
//! documents alone (no hand-written Interface), eight of them labelled; one `Mesh` selects
//! the labelled ones. Every member pings every other member over IPv4 and IPv6 and each
//! member's device has the 7 others as peers. Then, while m1 keeps pinging m2 over both
//! families (neither is touched), m9 is labelled (it joins) and m8's label is removed (it
//! leaves): ping's own counters must show 0 lost. At 8, 9 and 8 members the namespace
//! holds exactly one generated Interface per member, the two Networks and the Mesh, and
//! no Peer: N + 3 kwire objects, linear in N, where the same mesh written as Peers would
//! need N + N(N−1)/2.
//!
//! Needs root and the tools `can_run_network_tests` lists; skipped otherwise (a failure
//! with `KWIRE_REQUIRE_E2E=1`).

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use kwire_tests::mesh::{
    ContinuousPing, MeshSpec, TempFile, addressed_members, assert_linear_objects, mesh_ready,
    node_documents, ping_every_pair, set_member, wait_peer_counts, wg_peers,
};
use kwire_tests::netns::can_run_network_tests;
use kwire_tests::sandbox::Sandbox;
use kwire_tests::wait::wait_for;

const NAMESPACE: &str = "mesh-scale";
const SPEC: MeshSpec<'static> = MeshSpec {
    name: "scale",
    label: "example.com/mesh-scale",
    cidr_v4: "10.61.0.0/24",
    cidr_v6: "fd00:61::/64",
    device: "wgscale",
    port: 51910,
    keepalive: 25,
};
const JOINS: &str = "m9";
const LEAVES: &str = "m8";
const LONG: Duration = Duration::from_secs(120);

fn names(range: std::ops::RangeInclusive<u32>) -> Vec<String> {
    range.map(|i| format!("m{i}")).collect()
}

/// Waits until the members are exactly `members`, addressed, every one's device has the
/// others as peers and the Mesh counts them all ready; then checks the objects.
fn converged(sandbox: &Sandbox, members: &[String]) -> Result<Vec<kwire_tests::mesh::Member>> {
    let (found, took) = wait_for(
        &format!("a generated Interface with both families' addresses on each of {members:?}"),
        LONG,
        || addressed_members(sandbox, SPEC.name, members),
    )
    .with_context(|| sandbox.status_table())?;
    println!("{} members addressed in {took:?}", members.len());
    let took = wait_peer_counts(sandbox, SPEC.device, members, members.len() - 1, LONG)
        .with_context(|| sandbox.logs_tail(20))?;
    println!("every member has the others as peers after {took:?} more");
    wait_for(
        &format!("the Mesh to count {} ready members", members.len()),
        LONG,
        || Ok(mesh_ready(sandbox, SPEC.name, members.len())?.then_some(())),
    )
    .with_context(|| sandbox.status_table())?;
    assert_linear_objects(sandbox, SPEC.name, members)?;
    Ok(found)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_members_ping_every_pair_and_a_join_and_a_leave_lose_no_ping() -> Result<()> {
    if let Err(why) = can_run_network_tests() {
        println!(
            "SKIPPED eight_members_ping_every_pair_and_a_join_and_a_leave_lose_no_ping: {why}"
        );
        return Ok(());
    }
    let all = names(1..=9);
    let eight = names(1..=8);
    let manifest = TempFile(
        std::env::temp_dir().join(format!("kwire-mesh-scale-{}.yaml", std::process::id())),
    );
    std::fs::write(&manifest.0, node_documents(&all, SPEC.label, &eight))?;
    let sandbox = Sandbox::up(std::slice::from_ref(&manifest.0), NAMESPACE, true)
        .await
        .context("sandbox up")?;
    ensure!(
        sandbox.nodes.keys().eq(all.iter()),
        "the Node documents made the nodes {:?}, expected {all:?}",
        sandbox.nodes.keys().collect::<Vec<_>>()
    );
    sandbox.apply_yaml(&SPEC.manifest())?;

    // Eight members: every pair answers over both families; the keepalive is the Mesh's.
    let members = converged(&sandbox, &eight)?;
    let failed = ping_every_pair(&sandbox, &members, None);
    ensure!(
        failed.is_empty(),
        "pings failed: {failed:?}\n{}\n{}",
        sandbox.status_table(),
        sandbox.logs_tail(20)
    );
    for node in &eight {
        let peers = wg_peers(&sandbox.nodes[node].wg_show()?, SPEC.device);
        ensure!(
            peers.iter().all(|p| p.keepalive == "25"),
            "{node}: {peers:?}"
        );
    }

    // m1 pings m2 over both families while m9 joins and m8 leaves.
    let (m1, m2) = (&members[0], &members[1]);
    let netns = sandbox.nodes[&m1.node].netns.name().to_string();
    let pings = [
        (m2.v4().context("m2 has no IPv4 address")?, "m1 → m2 (IPv4)"),
        (m2.v6().context("m2 has no IPv6 address")?, "m1 → m2 (IPv6)"),
    ]
    .into_iter()
    .map(|(to, what)| ContinuousPing::start(&netns, to, what))
    .collect::<Result<Vec<_>>>()?;
    for ping in &pings {
        ping.wait_replies(10, Duration::from_secs(10))?;
    }

    set_member(&sandbox, JOINS, SPEC.label, true).await?;
    let nine = names(1..=9);
    let members = converged(&sandbox, &nine)?;
    let failed = ping_every_pair(&sandbox, &members, Some(JOINS));
    ensure!(
        failed.is_empty(),
        "pings with {JOINS}, which joined, failed: {failed:?}\n{}",
        sandbox.logs_tail(20)
    );

    set_member(&sandbox, LEAVES, SPEC.label, false).await?;
    let rest: Vec<String> = nine.iter().filter(|n| *n != LEAVES).cloned().collect();
    converged(&sandbox, &rest)?;
    wait_peer_counts(
        &sandbox,
        SPEC.device,
        &[LEAVES.to_string()],
        0,
        Duration::from_secs(60),
    )?;

    for ping in pings {
        let what = ping.what.clone();
        let count = ping.finish()?;
        println!("{what} during the join and the leave: {count:?}");
        ensure!(
            count.received > 0 && count.lost == 0,
            "{what} lost {} of {} pings while {JOINS} joined and {LEAVES} left",
            count.lost,
            count.transmitted
        );
    }
    Ok(())
}
