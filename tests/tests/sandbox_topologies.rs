//! The main job, end to end: each example topology comes up in the sandbox (real API
//! server, chart installed by helm, operator and node daemons under the chart's
//! ServiceAccounts, one network namespace per node), every Interface, Peer and Route
//! becomes Ready and every Peer Connected, every ping through every link and route
//! answers, and tearing down leaves no namespace, process or folder behind.
//!
//! The seed's relay (A → B → C) is the first scenario every build must pass.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use kwire_tests::netns::can_run_network_tests;
use kwire_tests::sandbox::Sandbox;

/// One sandbox at a time: two cores, and the leftover check counts machine-wide.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn netns_names() -> BTreeSet<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// Processes whose command line names a folder of this test process's sandboxes.
fn our_processes() -> Vec<String> {
    let marker = format!("kwire-sandbox-{}-", std::process::id());
    let out = Command::new("pgrep")
        .args(["-af", &marker])
        .output()
        .expect("pgrep");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.contains("pgrep"))
        .map(str::to_owned)
        .collect()
}

fn our_folders() -> Vec<PathBuf> {
    let marker = format!("kwire-sandbox-{}-", std::process::id());
    std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&marker))
        })
        .collect()
}

async fn runs_end_to_end(example: &str, namespace: &str) {
    if let Err(why) = can_run_network_tests() {
        println!("SKIPPED {example}: {why}");
        return;
    }
    let _turn = ONE_AT_A_TIME.lock().await;
    let before = netns_names();
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(example);
    {
        let sandbox = Sandbox::up(&[file], namespace, true)
            .await
            .expect("sandbox up");
        let waited = sandbox.wait_ready(Duration::from_secs(120));
        if let Err(e) = &waited {
            panic!("{example}: {e}\n{}", sandbox.status_table());
        }
        let pings = sandbox.expected_pings().expect("pings");
        assert!(!pings.is_empty(), "{example}: nothing to ping");
        let results = sandbox.ping_all(&pings);
        println!(
            "{example}: Ready and Connected in {:.1}s",
            waited.unwrap().as_secs_f64()
        );
        for (ping, ok) in &results {
            println!("  {}: {}", ping.label, if *ok { "ok" } else { "FAILED" });
        }
        let failed: Vec<_> = results
            .iter()
            .filter(|(_, ok)| !ok)
            .map(|(p, _)| p.label.clone())
            .collect();
        assert!(
            failed.is_empty(),
            "{example}: pings failed: {failed:?}\n{}",
            sandbox.logs_tail(20)
        );
        // After traffic every Peer reports a handshake, keepalive or not.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let idle = sandbox.not_true("peers", "Connected").expect("peers");
            if idle.is_empty() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{example}: not Connected after pings: {idle:?}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    assert_eq!(
        netns_names(),
        before,
        "{example}: network namespaces left behind"
    );
    assert_eq!(
        our_processes(),
        Vec::<String>::new(),
        "{example}: processes left behind"
    );
    assert_eq!(
        our_folders(),
        Vec::<PathBuf>::new(),
        "{example}: folders left behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_relay_a_to_c_through_b() {
    runs_end_to_end("examples/seed/relay.yaml", "seed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_two_hosts() {
    runs_end_to_end("examples/seed/two-hosts.yaml", "two-hosts").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_relay_with_allocated_addresses() {
    runs_end_to_end("examples/seed/relay-networks.yaml", "seed-networks").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_stack() {
    runs_end_to_end("examples/dual-stack.yaml", "dual-stack").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_and_spoke() {
    runs_end_to_end("examples/hub-and-spoke.yaml", "hub").await;
}
