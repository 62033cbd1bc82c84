//! `kwire plan --observe` against a real kernel: a private network namespace standing for
//! node b of the seed, read with the node daemon's `observe_kernel`. Needs root; skipped
//! (with the reason printed) otherwise.

use std::path::{Path, PathBuf};

use kwire_tests::netns::{Netns, can_run_network_tests};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn plan_observe_reads_the_kernel_and_leaves_a_foreign_device_alone() {
    if let Err(why) = can_run_network_tests() {
        eprintln!("skipped: {why}");
        return;
    }
    let node = Netns::new("cliob").expect("network namespace");
    // A link kwire did not create holds the name of one of b's devices, and a foreign route
    // sits in the main table.
    node.exec(&[
        "ip",
        "link",
        "add",
        "wg0-server",
        "type",
        "veth",
        "peer",
        "name",
        "foreign0",
    ])
    .unwrap();
    node.exec(&["ip", "link", "set", "wg0-server", "up"])
        .unwrap();
    node.exec(&["ip", "route", "add", "192.0.2.0/24", "dev", "wg0-server"])
        .unwrap();
    let state = std::env::temp_dir().join(format!("kwire-cli-observe-{}.json", std::process::id()));
    let relay = repo().join("examples/seed/relay.yaml");
    let out = node.try_exec(&[
        env!("CARGO_BIN_EXE_kwire"),
        "plan",
        "-f",
        relay.to_str().unwrap(),
        "--node",
        "b",
        "--observe",
        "--state-file",
        state.to_str().unwrap(),
        "--node-ip",
        "a=10.211.55.10",
        "--node-ip",
        "c=10.211.55.12",
    ]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The foreign link is a conflict, never a target; b's other device is planned in full.
    assert!(
        text.contains("! conflict (")
            && text.contains(
                "device wg0-server wanted by default/b-wg0-server: a veth link not created by kwire"
            ),
        "{text}"
    );
    assert!(!text.contains("create device wg0-server"), "{text}");
    assert!(!text.contains("192.0.2.0/24"), "{text}");
    assert!(
        text.contains("+ create device wg1-client for default/b-wg1-client"),
        "{text}"
    );
    // A new namespace starts with forwarding off, read from its own /proc/sys.
    assert!(text.contains("~ enable ipv4 forwarding (all)"), "{text}");
}
