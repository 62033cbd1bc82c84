//! External Peers of a dual-stack hub (issue 16 item 14): the sandbox gives a far side
//! every address of its `allowedIPs` and pings each family only between sides that have an
//! address in it. Before, a far side got only its first address and was still made to ping
//! the hub's IPv6 address ("1 of 9 pings failed" with a working link).
//!
//! Needs root and the tools `can_run_network_tests` lists; skipped otherwise (a failure
//! with `KWIRE_REQUIRE_E2E=1`).

use std::path::Path;
use std::time::Duration;

use kwire_tests::netns::can_run_network_tests;
use kwire_tests::sandbox::Sandbox;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dual_stack_hub_with_a_dual_stack_and_an_ipv4_only_external_peer() {
    if let Err(why) = can_run_network_tests() {
        println!(
            "SKIPPED a_dual_stack_hub_with_a_dual_stack_and_an_ipv4_only_external_peer: {why}"
        );
        return;
    }
    let example =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/sandbox/dual-stack-external.yaml");
    let sandbox = Sandbox::up(&[example], "dual-stack-external", true)
        .await
        .expect("sandbox up");
    if let Err(e) = sandbox.wait_ready(Duration::from_secs(120)) {
        panic!("{e}\n{}", sandbox.status_table());
    }
    let pings = sandbox.expected_pings().expect("pings");
    let labels: Vec<&str> = pings.iter().map(|p| p.label.as_str()).collect();
    for want in [
        // Both families, both ways, with the dual-stack laptop.
        "laptop → hub-wg0 (10.7.0.1)",
        "laptop → hub-wg0 (fd00:7::1)",
        "hub-wg0 → laptop (10.7.0.20)",
        "hub-wg0 → laptop (fd00:7::20)",
        // IPv4 only with the IPv4-only laptop.
        "old-laptop → hub-wg0 (10.7.0.1)",
        "hub-wg0 → old-laptop (10.7.0.21)",
    ] {
        assert!(labels.contains(&want), "no ping {want:?} in {labels:#?}");
    }
    let v6_with_old: Vec<&&str> = labels
        .iter()
        .filter(|l| l.contains("old-laptop") && l.contains("fd00:"))
        .collect();
    assert!(
        v6_with_old.is_empty(),
        "IPv6 pings with a far side that has no IPv6 address: {v6_with_old:?}"
    );
    let results = sandbox.ping_all(&pings);
    let failed: Vec<&str> = results
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(p, _)| p.label.as_str())
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} pings failed: {failed:?}\n{}",
        failed.len(),
        results.len(),
        sandbox.logs_tail(20)
    );
}
