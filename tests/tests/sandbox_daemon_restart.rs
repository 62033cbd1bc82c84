//! A process node's daemon killed while the sandbox is up (issue 16 item 16): the sandbox
//! reports it and starts it again as a DaemonSet's kubelet would, in the mount namespace of
//! the node's wireguard-go, whose device the new daemon adopts.
//!
//! Needs root and the tools `can_run_network_tests` lists; skipped otherwise (a failure
//! with `KWIRE_REQUIRE_E2E=1`).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use kwire_sandbox::sandbox::DaemonEvent;
use kwire_tests::netns::can_run_network_tests;
use kwire_tests::sandbox::Sandbox;
use kwire_tests::wait::wait_for;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_daemon_is_reported_and_restarted() {
    if let Err(why) = can_run_network_tests() {
        println!("SKIPPED a_killed_node_daemon_is_reported_and_restarted: {why}");
        return;
    }
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/seed/two-hosts.yaml");
    let mut sb = Sandbox::up(&[example], "daemon-restart", true)
        .await
        .expect("sandbox up");
    if let Err(e) = sb.wait_ready(Duration::from_secs(120)) {
        panic!("{e}\n{}", sb.status_table());
    }
    let all_answer = |sb: &Sandbox| {
        let pings = sb.expected_pings().expect("pings");
        assert!(!pings.is_empty());
        let failed: Vec<String> = sb
            .ping_all(&pings)
            .into_iter()
            .filter(|(_, ok)| !ok)
            .map(|(p, _)| p.label)
            .collect();
        assert!(
            failed.is_empty(),
            "pings failed: {failed:?}\n{}",
            sb.logs_tail(20)
        );
    };
    all_answer(&sb);
    assert_eq!(
        sb.supervise_daemons(),
        [],
        "nothing to report while all run"
    );

    // Killed from outside, as by the OOM killer or a user.
    let node = "vm01";
    let old = sb.nodes[node].daemon.as_ref().expect("a daemon").id();
    let wireguard_go = sb.nodes[node].netns.pids_named("wireguard-go");
    assert_eq!(wireguard_go.len(), 1, "wireguard-go on {node}");
    let killed = Command::new("kill")
        .args(["-KILL", &old.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());

    let mut events = Vec::new();
    wait_for(
        "the dead daemon to be reported and restarted",
        Duration::from_secs(30),
        || {
            events.extend(sb.supervise_daemons());
            Ok(events
                .iter()
                .any(|e| matches!(e, DaemonEvent::Restarted { .. }))
                .then_some(()))
        },
    )
    .unwrap_or_else(|e| panic!("{e}: {events:#?}"));
    let [exited, restarted] = events.as_slice() else {
        panic!("one exit then one restart: {events:#?}");
    };
    match exited {
        DaemonEvent::Exited {
            node: n, status, ..
        } => {
            assert_eq!(n, node);
            assert!(status.contains("SIGKILL"), "{status}");
        }
        other => panic!("not an exit: {other:?}"),
    }
    assert!(exited.to_string().contains("restarting it now"), "{exited}");
    let new = match restarted {
        DaemonEvent::Restarted {
            node: n,
            restarts,
            pid,
        } => {
            assert_eq!((n.as_str(), *restarts), (node, 1));
            *pid
        }
        other => panic!("not a restart: {other:?}"),
    };
    assert_ne!(new, old);
    assert_eq!(sb.nodes[node].daemon.as_ref().map(|c| c.id()), Some(new));

    // The new daemon adopted the device: the same wireguard-go, the link still up, and it
    // keeps running.
    if let Err(e) = sb.wait_ready(Duration::from_secs(60)) {
        panic!("{e}\n{}", sb.status_table());
    }
    all_answer(&sb);
    assert_eq!(
        sb.nodes[node].netns.pids_named("wireguard-go"),
        wireguard_go
    );
    assert_eq!(sb.supervise_daemons(), [], "the restarted daemon runs");
    let log = std::fs::read_to_string(&sb.nodes[node].log).unwrap();
    assert!(
        std::path::Path::new(&format!("/proc/{new}")).exists(),
        "the restarted daemon is gone:\n{log}"
    );
}
