//! The built `kwire` binary on the repository's manifests: lint, plan, graph, showconf -f,
//! completions and help. No cluster needed.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn relay_text() -> String {
    std::fs::read_to_string(repo().join("examples/seed/relay.yaml")).unwrap()
}

/// Runs `kwire args…` in the repository root, with `stdin` on standard input.
fn kwire(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kwire"))
        .args(args)
        .current_dir(repo())
        .env("NO_COLOR", "1")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kwire runs");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn all(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn header(path: &Path, key: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("# {key}: ")).map(str::to_string))
        .unwrap_or_else(|| panic!("{} has no '# {key}:' line", path.display()))
}

#[test]
fn lint_finds_the_seed_relay_and_the_other_examples_clean() {
    for file in [
        "examples/seed/relay.yaml",
        "examples/seed/relay-networks.yaml",
        "examples/seed/two-hosts.yaml",
        "examples/external-peer.yaml",
        "examples/sandbox/hub-and-spoke-external.yaml",
    ] {
        let out = kwire(&["lint", "-f", file], None);
        assert_eq!(out.status.code(), Some(0), "{file}: {}", all(&out));
        assert!(
            stdout(&out).ends_with("objects, no problems\n"),
            "{file}: {}",
            all(&out)
        );
    }
}

#[test]
fn lint_explains_why_a_cannot_reach_c_when_b_does_not_forward() {
    let text = relay_text().replace("  forwarding: true\n", "");
    let out = kwire(&["lint", "-f", "-"], Some(&text));
    assert_eq!(out.status.code(), Some(1), "{}", all(&out));
    let report = stdout(&out);
    assert!(
        report.lines().any(|l| l
            == "Peer/a-to-b: RelayNotForwarding: Peer a-to-b sends 10.2.0.0/24 from Interface a-wg0-client (node a) through Interface b-wg0-server on node b, but b-wg0-server has forwarding off, so node b drops the relayed packets and a-wg0-client cannot reach 10.2.0.0/24 (Interface b-wg1-client on node b, Interface c-wg0-server on node c): set spec.forwarding: true on Interface b-wg0-server"),
        "{report}"
    );
    assert!(
        report.lines().any(|l| l.starts_with("Interface/b-wg1-client: RelayNotForwarding: Interface b-wg1-client on node b has forwarding off, but Peer a-to-b relays 10.2.0.0/24 from Interface a-wg0-client (node a) through it")),
        "{report}"
    );
    assert!(
        report.ends_with("8 problems in 4 of 8 objects\n"),
        "{report}"
    );
}

#[test]
fn lint_explains_why_a_cannot_reach_c_when_a_does_not_allow_c_network() {
    let text = relay_text().replace(
        "allowedIPs: [10.1.0.2/32, 10.2.0.0/24]",
        "allowedIPs: [10.1.0.2/32]",
    );
    let out = kwire(&["lint", "-f", "-"], Some(&text));
    assert_eq!(out.status.code(), Some(1), "{}", all(&out));
    assert_eq!(
        stdout(&out),
        "Route/a-to-c-network: RouteNotCoveredByAllowedIPs: Route a-to-c-network sends 10.2.0.0/24 into Interface a-wg0-client on node a, but no Peer of a-wg0-client allows all of 10.2.0.0/24 (Peer a-to-b allows 10.1.0.2/32), so WireGuard drops these packets and node a cannot reach 10.2.0.0/24 (Interface b-wg1-client on node b, Interface c-wg0-server on node c): add 10.2.0.0/24 to spec.allowedIPs of Peer a-to-b\n\n1 problem in 1 of 8 objects\n"
    );
}

#[test]
fn lint_rejects_every_bad_manifest_naming_its_field() {
    let dir = repo().join("tests/bad-manifests");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 40, "the matrix has {} files", files.len());
    let mut failures = Vec::new();
    for path in &files {
        let (field, message) = (header(path, "field"), header(path, "message"));
        let out = kwire(&["lint", "-f", path.to_str().unwrap()], None);
        let report = stdout(&out);
        let named = report
            .lines()
            .any(|l| l.contains(": Invalid: ") && l.contains(&field) && l.contains(&message));
        if out.status.code() != Some(1) || !named {
            failures.push(format!(
                "{}: exit {:?}, expected a line naming '{field}' and '{message}', got:\n{}",
                path.display(),
                out.status.code(),
                all(&out)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn lint_of_a_folder_reads_its_manifests_and_nothing_else() {
    let dir = std::env::temp_dir().join(format!("kwire-lint-folder-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let relay = relay_text();
    let (interfaces, rest) = relay.split_at(relay.find("# A <-> B.").unwrap());
    std::fs::write(dir.join("1-interfaces.yaml"), interfaces).unwrap();
    std::fs::write(dir.join("2-links.yml"), rest).unwrap();
    std::fs::write(dir.join("README.txt"), "not a manifest: {").unwrap();
    let out = kwire(&["lint", "-f", dir.to_str().unwrap()], None);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
    assert_eq!(stdout(&out), "8 objects, no problems\n");
}

#[test]
fn lint_of_a_missing_file_fails_with_its_name() {
    let out = kwire(&["lint", "-f", "no/such.yaml"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(all(&out).contains("no/such.yaml"), "{}", all(&out));
}

const PLAN_B: &str = "\
node b: 19 steps
  + create device wg0-server for default/b-wg0-server
  ~ mark device wg0-server as kwire:default/b-wg0-server
  ~ wg0-server: set private key <redacted>
  ~ wg0-server: set listen port 22222
  + wg0-server: add peer <public key of a-wg0-client> endpoint 10.211.55.10:11111 allowed-ips 10.1.0.1/32 keepalive 15
  + wg0-server: add address 10.1.0.2/24
  ~ wg0-server: set up
  ~ wg0-server: enable ipv4 forwarding
  ~ wg0-server: enable ipv6 forwarding
  + create device wg1-client for default/b-wg1-client
  ~ mark device wg1-client as kwire:default/b-wg1-client
  ~ wg1-client: set private key <redacted>
  ~ wg1-client: set listen port 23333
  + wg1-client: add peer <public key of c-wg0-server> endpoint 10.211.55.12:33333 allowed-ips 10.2.0.2/32 keepalive 15
  + wg1-client: add address 10.2.0.1/24
  ~ wg1-client: set up
  ~ wg1-client: enable ipv4 forwarding
  ~ wg1-client: enable ipv6 forwarding
  ~ enable ipv4 forwarding (all)
";

#[test]
fn plan_of_node_b_creates_two_forwarding_devices_with_their_peers() {
    let out = kwire(
        &[
            "plan",
            "-f",
            "examples/seed/relay.yaml",
            "--node",
            "b",
            "--node-ip",
            "a=10.211.55.10",
            "--node-ip",
            "c=10.211.55.12",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
    assert_eq!(stdout(&out), PLAN_B);
}

#[test]
fn plan_takes_node_addresses_from_node_manifests_too() {
    let nodes = "
apiVersion: v1
kind: Node
metadata: {name: a}
status: {addresses: [{type: InternalIP, address: 10.211.55.10}]}
---
apiVersion: v1
kind: Node
metadata: {name: c}
status: {addresses: [{type: ExternalIP, address: 10.211.55.12}]}
";
    let text = format!("{}---\n{nodes}", relay_text());
    let out = kwire(&["plan", "-f", "-", "--node", "b"], Some(&text));
    assert_eq!(stdout(&out), PLAN_B, "{}", all(&out));
}

#[test]
fn plan_of_every_node_prints_no_key_and_says_which_addresses_are_missing() {
    let out = kwire(&["plan", "-f", "examples/seed/relay.yaml"], None);
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
    let text = stdout(&out);
    for node in ["node a: 8 steps", "node b: 19 steps", "node c: 8 steps"] {
        assert!(text.contains(node), "{text}");
    }
    assert!(text.contains("+ route 10.2.0.0/24 table main metric 0 via 10.1.0.2 dev wg0-client"));
    assert!(text.contains("note: the address of node b is not known offline"));
    // No 44-character base64 key anywhere: public keys are labels, secrets redacted.
    let base64ish = text.split_whitespace().any(|w| {
        w.len() >= 43
            && w.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/' || c == '=')
    });
    assert!(!base64ish, "{text}");
}

#[test]
fn plan_of_an_unknown_node_says_which_nodes_there_are() {
    let out = kwire(
        &["plan", "-f", "examples/seed/relay.yaml", "--node", "z"],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(all(&out).contains("nodes: a, b, c"), "{}", all(&out));
}

#[test]
fn graph_of_the_relay_has_a_subgraph_per_node() {
    let out = kwire(&["graph", "-f", "examples/seed/relay.yaml"], None);
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
    let text = stdout(&out);
    assert!(text.starts_with("flowchart LR\n"));
    for node in ["a", "b", "c"] {
        assert!(
            text.contains(&format!("  subgraph node_{node}[\"node {node}\"]")),
            "{text}"
        );
    }
    assert!(text.contains("<-->|\"a-to-b\"|"), "{text}");

    let broken = relay_text().replace("  forwarding: true\n", "");
    let out = kwire(&["graph", "-f", "-", "--format", "dot"], Some(&broken));
    let text = stdout(&out);
    assert!(text.starts_with("graph kwire {"), "{text}");
    assert!(
        text.contains("[label=\"a-to-b: RelayNotForwarding\", color=red3"),
        "{text}"
    );
}

#[test]
fn showconf_renders_the_laptop_side_of_the_external_peer_example() {
    let out = kwire(
        &["showconf", "laptop", "-f", "examples/external-peer.yaml"],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
    let text = stdout(&out);
    assert!(text.contains("[Interface]\nPrivateKey = <the private key of this machine, whose public key is OgbUF/E21zi9qHf5h9H6N/iM92nnNYgRtOMhReFm730=>\nAddress = 10.4.0.2/24\n"), "{text}");
    assert!(
        text.contains("PublicKey = <public key of gateway-wg0>\n"),
        "{text}"
    );
    assert!(
        text.contains("Endpoint = vpn.example.com:51820\n"),
        "{text}"
    );
    assert!(text.contains("AllowedIPs = 10.4.0.1/32\n"), "{text}");

    let out = kwire(
        &[
            "showconf",
            "laptop",
            "-f",
            "examples/external-peer.yaml",
            "-o",
            "peer-yaml",
            "--remote-interface",
            "laptop-wg0",
        ],
        None,
    );
    let text = stdout(&out);
    assert!(text.contains("kind: Peer\n"), "{}", all(&out));
    assert!(text.contains("  interface: \"laptop-wg0\"\n"), "{text}");
}

#[test]
fn showconf_refuses_an_in_cluster_peer_and_keys_offline() {
    let out = kwire(
        &["showconf", "a-to-b", "-f", "examples/seed/relay.yaml"],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        all(&out).contains("links two Interfaces of this cluster"),
        "{}",
        all(&out)
    );
    let out = kwire(
        &[
            "showconf",
            "laptop",
            "-f",
            "examples/external-peer.yaml",
            "--include-private-key",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        all(&out).contains("cannot be used with -f"),
        "{}",
        all(&out)
    );
}

#[test]
fn completions_and_help_are_there() {
    let out = kwire(&["completions", "bash"], None);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("kwire"));
    let out = kwire(&["--help"], None);
    assert!(stdout(&out).contains("Examples:\n  kwire lint -f examples/seed/relay.yaml"));
    let out = kwire(&["plan", "--help"], None);
    assert!(
        stdout(&out).contains("--node-ip <NODE=IP>"),
        "{}",
        all(&out)
    );
}

#[test]
fn as_a_kubectl_plugin_the_usage_says_kubectl_kwire() {
    let out = Command::new(env!("CARGO_BIN_EXE_kubectl-kwire"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Usage: kubectl kwire"),
        "{}",
        all(&out)
    );
}

#[test]
fn sandbox_help_shows_up_and_down() {
    let out = kwire(&["sandbox", "--help"], None);
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
    for needle in ["up ", "down ", "sandbox.kwire.dev/remote-private-key"] {
        assert!(stdout(&out).contains(needle), "{needle}: {}", all(&out));
    }
    let out = kwire(&["sandbox", "down", "--help"], None);
    assert!(stdout(&out).contains("--id <ID>"), "{}", all(&out));
}

#[test]
fn sandbox_down_with_no_record_has_nothing_to_do() {
    let dir = std::env::temp_dir().join(format!("kwire-cli-records-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_kwire"))
        .args(["sandbox", "down"])
        .env("KWIRE_SANDBOX_RECORDS", &dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
    assert_eq!(
        stdout(&out),
        format!(
            "nothing to do: no record of an ended sandbox in {}\n",
            dir.display()
        )
    );
    let out = Command::new(env!("CARGO_BIN_EXE_kwire"))
        .args(["sandbox", "down", "--id", "1-0"])
        .env("KWIRE_SANDBOX_RECORDS", &dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
    assert!(stdout(&out).contains("no record 1-0"), "{}", all(&out));
}

#[test]
fn sandbox_up_says_what_an_external_peer_needs_before_making_anything() {
    // examples/external-peer.yaml has no private key for its far side.
    let out = kwire(
        &[
            "sandbox",
            "up",
            "-f",
            "examples/external-peer.yaml",
            "--check",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1), "{}", all(&out));
    let text = all(&out);
    assert!(
        text.contains("Peer laptop is external: the sandbox needs its far side's private key in annotation sandbox.kwire.dev/remote-private-key")
            || text.contains("the sandbox cannot run here"),
        "{text}"
    );
}

/// The Meshes of examples/mesh with the node list each uses, and how many members each
/// expands to.
const MESH_EXAMPLES: [(&str, usize); 4] = [
    ("full-mesh", 3),
    ("hub-and-spoke", 5),
    ("two-locations", 6),
    ("zones", 6),
];

fn mesh_files(example: &str) -> (String, String) {
    (
        format!("examples/mesh/{example}.yaml"),
        format!("examples/mesh/{example}.nodes.yaml"),
    )
}

#[test]
fn the_mesh_examples_lint_clean_and_plan_one_interface_per_member() {
    for (example, members) in MESH_EXAMPLES {
        let (mesh, nodes) = mesh_files(example);
        let out = kwire(&["lint", "-f", &mesh, "--node-list", &nodes], None);
        assert_eq!(out.status.code(), Some(0), "{example}: {}", all(&out));
        assert!(
            stdout(&out).ends_with("objects, no problems\n"),
            "{example}: {}",
            all(&out)
        );
        let out = kwire(&["plan", "-f", &mesh, "--node-list", &nodes], None);
        assert_eq!(out.status.code(), Some(0), "{example}: {}", all(&out));
        let text = stdout(&out);
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("  + Interface "))
                .count(),
            members,
            "{example}: {text}"
        );
        assert!(
            text.ends_with("note: the operator generates these Interfaces and the node daemons these peers and routes; in a cluster, gateways and primary hubs already elected are kept while they qualify, so they may differ from this fresh expansion\n"),
            "{example}: {text}"
        );
    }
}

#[test]
fn plan_of_the_full_mesh_example_shows_each_member_and_its_peers() {
    let (mesh, nodes) = mesh_files("full-mesh");
    let out = kwire(&["plan", "-f", &mesh, "--node-list", &nodes], None);
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
    let expected = "\
mesh default/overlay (FullMesh, 3 members, device wgmesh port 51820): would generate
  + Interface overlay-a-5026ebd4a2 on node a: role member, address 10.60.0.1/24, fd00:60::1/64
      peer overlay-b-5026eed4a2 (node b) endpoint 10.211.55.11:51820 allowed-ips 10.60.0.2/32,fd00:60::2/128 keepalive 25
      peer overlay-c-5026edd4a2 (node c) endpoint 10.211.55.12:51820 allowed-ips 10.60.0.3/32,fd00:60::3/128 keepalive 25
  + Interface overlay-b-5026eed4a2 on node b: role member, address 10.60.0.2/24, fd00:60::2/64
      peer overlay-a-5026ebd4a2 (node a) endpoint 10.211.55.10:51820 allowed-ips 10.60.0.1/32,fd00:60::1/128 keepalive 25
      peer overlay-c-5026edd4a2 (node c) endpoint 10.211.55.12:51820 allowed-ips 10.60.0.3/32,fd00:60::3/128 keepalive 25
  + Interface overlay-c-5026edd4a2 on node c: role member, address 10.60.0.3/24, fd00:60::3/64
      peer overlay-a-5026ebd4a2 (node a) endpoint 10.211.55.10:51820 allowed-ips 10.60.0.1/32,fd00:60::1/128 keepalive 25
      peer overlay-b-5026eed4a2 (node b) endpoint 10.211.55.11:51820 allowed-ips 10.60.0.2/32,fd00:60::2/128 keepalive 25

note: the operator generates these Interfaces and the node daemons these peers and routes; in a cluster, gateways and primary hubs already elected are kept while they qualify, so they may differ from this fresh expansion
";
    assert_eq!(stdout(&out), expected);

    // --node shows that node's member only; a node that is neither a member nor has an
    // Interface is refused.
    let out = kwire(
        &["plan", "-f", &mesh, "--node-list", &nodes, "--node", "c"],
        None,
    );
    let text = stdout(&out);
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("  + Interface "))
            .collect::<Vec<_>>(),
        [
            "  + Interface overlay-c-5026edd4a2 on node c: role member, address 10.60.0.3/24, fd00:60::3/64"
        ],
        "{text}"
    );
    let out = kwire(
        &["plan", "-f", &mesh, "--node-list", &nodes, "--node", "d"],
        None,
    );
    assert_eq!(out.status.code(), Some(1), "{}", all(&out));
    assert!(all(&out).contains("no Interface of the files is on node d (nodes: a, b, c)"));
}

#[test]
fn lint_of_a_hub_and_spoke_whose_hub_selector_matches_nothing_says_to_label_a_hub() {
    let (mesh, nodes) = mesh_files("hub-and-spoke");
    let text = std::fs::read_to_string(repo().join(&mesh))
        .unwrap()
        .replace("kwire.dev/mesh-hub: \"true\"", "role: hub");
    let out = kwire(&["lint", "-f", "-", "--node-list", &nodes], Some(&text));
    assert_eq!(out.status.code(), Some(1), "{}", all(&out));
    assert_eq!(
        stdout(&out),
        "Mesh/branches: NoHub: Mesh branches: no member matches spec.topology.hubAndSpoke.hubSelector, so the 5 spokes reach nothing: label at least one selected node as a hub\n\n1 problem in 1 of 2 objects\n"
    );
}

#[test]
fn lint_of_two_locations_whose_nodes_cannot_be_gateways_names_each_location() {
    let (mesh, nodes) = mesh_files("two-locations");
    let node_list: String = std::fs::read_to_string(repo().join(&nodes))
        .unwrap()
        .lines()
        .filter(|l| !l.contains("ExternalIP"))
        .map(|l| format!("{l}\n"))
        .collect();
    let dir = std::env::temp_dir().join(format!("kwire-mesh-lint-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("nodes.yaml");
    std::fs::write(&file, node_list).unwrap();
    let out = kwire(
        &["lint", "-f", &mesh, "--node-list", file.to_str().unwrap()],
        None,
    );
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", all(&out));
    let report = stdout(&out);
    for zone in ["east", "west"] {
        assert!(
            report.lines().any(|l| l.starts_with(&format!(
                "Mesh/sites: NoGateway: Mesh sites: location {zone} (3 members) has no member that can be its gateway"
            ))),
            "{report}"
        );
    }
    assert!(
        report.ends_with("2 problems in 1 of 2 objects\n"),
        "{report}"
    );
}

#[test]
fn a_mesh_without_a_node_list_is_a_lint_problem_and_a_plan_error() {
    let (mesh, _) = mesh_files("full-mesh");
    let out = kwire(&["lint", "-f", &mesh], None);
    assert_eq!(out.status.code(), Some(1), "{}", all(&out));
    assert!(
        stdout(&out).starts_with("Mesh/overlay: NoNodeList: no node list to expand the Mesh over, so it cannot be checked: pass --node-list FILE"),
        "{}",
        all(&out)
    );
    let out = kwire(&["plan", "-f", &mesh], None);
    assert_eq!(out.status.code(), Some(1), "{}", all(&out));
    assert!(all(&out).contains("the files have a Mesh but no node list to expand it over"));
    // A node list holds Nodes only.
    let out = kwire(&["lint", "-f", &mesh, "--node-list", &mesh], None);
    assert_eq!(out.status.code(), Some(1), "{}", all(&out));
    assert!(
        all(&out).contains("examples/mesh/full-mesh.yaml#1: Network/overlay-v4 is not a v1 Node"),
        "{}",
        all(&out)
    );
}

#[test]
fn graph_of_two_locations_links_the_zones_only_through_their_gateways() {
    let (mesh, nodes) = mesh_files("two-locations");
    let out = kwire(&["graph", "-f", &mesh, "--node-list", &nodes], None);
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
    let text = stdout(&out);
    let edges: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("<-->|\"mesh sites\"|"))
        .collect();
    // Three pairs inside each zone, and one between the gateways east-1 and west-2.
    assert_eq!(edges.len(), 7, "{text}");
    let across: Vec<&&str> = edges
        .iter()
        .filter(|e| e.contains("east") && e.contains("west"))
        .collect();
    assert_eq!(
        across,
        [
            &"  if_default_sites_east_1_8a8d10e1c1 <-->|\"mesh sites\"| if_default_sites_west_2_6a6b89e566"
        ],
        "{text}"
    );
    assert!(text.contains(
        "  subgraph node_west_2[\"node west-2\"]\n    if_default_sites_west_2_6a6b89e566[\"sites-west-2-6a6b89e566<br/>wgsites 10.62.0.5/24 :51840 forwarding\"]\n  end\n"
    ), "{text}");
}
