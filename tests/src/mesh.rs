//! Meshes in the sandbox, for the mesh tests and `kwire-mesh-bench`: the manifests (Node
//! documents, which alone make sandbox nodes, and a FullMesh with its two Networks),
//! relabelling Nodes, the members the operator generated, what each member's device
//! holds, the kwire objects of the namespace, and a ping kept running whose losses are
//! read from ping's own counters.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

use crate::sandbox::Sandbox;
use crate::wait::wait_for;

/// One `Node` document per name (the sandbox makes a node for each); the ones in
/// `labelled` carry `label: "yes"`.
pub fn node_documents(names: &[String], label: &str, labelled: &[String]) -> String {
    names
        .iter()
        .map(|name| {
            let labels = if labelled.contains(name) {
                format!("{{{label}: 'yes'}}")
            } else {
                "{}".to_string()
            };
            format!(
                "apiVersion: v1\nkind: Node\nmetadata: {{name: {name}, labels: {labels}}}\n---\n"
            )
        })
        .collect()
}

/// What a FullMesh is made of.
#[derive(Debug, Clone)]
pub struct MeshSpec<'a> {
    pub name: &'a str,
    /// The Node label that selects the members (value `yes`).
    pub label: &'a str,
    pub cidr_v4: &'a str,
    pub cidr_v6: &'a str,
    pub device: &'a str,
    pub port: u16,
    pub keepalive: u16,
}

impl MeshSpec<'_> {
    /// Its Networks (`<name>-v4`, `<name>-v6`) and the Mesh.
    pub fn manifest(&self) -> String {
        let MeshSpec {
            name,
            label,
            cidr_v4,
            cidr_v6,
            device,
            port,
            keepalive,
        } = self;
        format!(
            "apiVersion: kwire.dev/v1alpha1\nkind: Network\nmetadata: {{name: {name}-v4}}\n\
             spec: {{cidr: {cidr_v4}}}\n---\n\
             apiVersion: kwire.dev/v1alpha1\nkind: Network\nmetadata: {{name: {name}-v6}}\n\
             spec: {{cidr: '{cidr_v6}'}}\n---\n\
             apiVersion: kwire.dev/v1alpha1\nkind: Mesh\nmetadata: {{name: {name}}}\nspec:\n  \
             nodeSelector: {{matchLabels: {{{label}: 'yes'}}}}\n  topology: {{type: FullMesh}}\n  \
             networks: [{{name: {name}-v4}}, {{name: {name}-v6}}]\n  \
             device: {{deviceName: {device}, listenPort: {port}, persistentKeepalive: {keepalive}}}\n"
        )
    }
}

/// A manifest file written for the sandbox, removed when dropped.
pub struct TempFile(pub std::path::PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Sets `label` to `yes` on Node `node` (`member`) or removes it.
pub async fn set_member(sandbox: &Sandbox, node: &str, label: &str, member: bool) -> Result<()> {
    set_label(sandbox, node, label, member.then_some("yes")).await
}

/// Sets `label` to `value` on Node `node` (`Some`), or removes it (`None`).
pub async fn set_label(
    sandbox: &Sandbox,
    node: &str,
    label: &str,
    value: Option<&str>,
) -> Result<()> {
    let nodes: Api<Node> = Api::all(sandbox.cp.client().await?);
    nodes
        .patch(
            node,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {label: value}}})),
        )
        .await
        .with_context(|| format!("labelling Node {node}"))?;
    Ok(())
}

/// A member: its node and its generated Interface's addresses.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Member {
    pub node: String,
    pub addresses: Vec<IpAddr>,
}

impl Member {
    pub fn v4(&self) -> Option<IpAddr> {
        self.addresses.iter().copied().find(IpAddr::is_ipv4)
    }

    pub fn v6(&self) -> Option<IpAddr> {
        self.addresses.iter().copied().find(IpAddr::is_ipv6)
    }
}

/// The Interfaces generated for Mesh `mesh` (label `kwire.dev/mesh`).
pub fn generated_interfaces(sandbox: &Sandbox, mesh: &str) -> Result<Vec<Value>> {
    Ok(sandbox
        .get("interfaces")?
        .into_iter()
        .filter(|i| i["metadata"]["labels"]["kwire.dev/mesh"] == mesh)
        .collect())
}

/// The members of Mesh `mesh` in node order, once its generated Interfaces are exactly
/// one on each of `expected` (in any order) and each has an IPv4 and an IPv6 address;
/// `None` before.
pub fn addressed_members(
    sandbox: &Sandbox,
    mesh: &str,
    expected: &[String],
) -> Result<Option<Vec<Member>>> {
    let mut out = Vec::new();
    for i in generated_interfaces(sandbox, mesh)? {
        let addresses: Vec<IpAddr> = i["status"]["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str()?.split('/').next()?.parse().ok())
            .collect();
        let member = Member {
            node: i["spec"]["nodeName"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            addresses,
        };
        if member.v4().is_none() || member.v6().is_none() {
            return Ok(None);
        }
        out.push(member);
    }
    out.sort();
    let nodes: BTreeSet<&str> = out.iter().map(|m| m.node.as_str()).collect();
    let wanted: BTreeSet<&str> = expected.iter().map(String::as_str).collect();
    Ok((out.len() == expected.len() && nodes == wanted).then_some(out))
}

/// Whether Mesh `mesh` counts `members` members, all ready, and says `Ready=True`.
pub fn mesh_ready(sandbox: &Sandbox, mesh: &str, members: usize) -> Result<bool> {
    let Some(found) = sandbox.get_one("meshes", mesh)? else {
        return Ok(false);
    };
    let status = &found["status"];
    let n = members as u64;
    Ok(status["members"] == n
        && status["readyMembers"] == n
        && status["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// One peer of a device in `wg show all dump`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WgPeer {
    pub public_key: String,
    /// Seconds since the epoch of the latest handshake (0: none yet).
    pub latest_handshake: u64,
    /// `off` or the interval in seconds.
    pub keepalive: String,
}

/// The peers of `device` in the output of `wg show all dump` (a peer's line has 9 fields,
/// a device's own line 5).
pub fn wg_peers(dump: &str, device: &str) -> Vec<WgPeer> {
    dump.lines()
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .filter(|f| f.len() == 9 && f[0] == device)
        .map(|f| WgPeer {
            public_key: f[1].to_string(),
            latest_handshake: f[5].parse().unwrap_or(0),
            keepalive: f[8].to_string(),
        })
        .collect()
}

/// The kwire objects of the sandbox namespace, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectCounts {
    pub interfaces: usize,
    pub peers: usize,
    pub routes: usize,
    pub networks: usize,
    pub meshes: usize,
}

impl ObjectCounts {
    pub fn read(sandbox: &Sandbox) -> Result<Self> {
        let all = sandbox.get("interfaces,peers,routes,networks,meshes")?;
        let count = |kind: &str| all.iter().filter(|o| o["kind"] == kind).count();
        Ok(Self {
            interfaces: count("Interface"),
            peers: count("Peer"),
            routes: count("Route"),
            networks: count("Network"),
            meshes: count("Mesh"),
        })
    }

    pub fn total(&self) -> usize {
        self.interfaces + self.peers + self.routes + self.networks + self.meshes
    }
}

/// Fails unless the namespace holds exactly what a FullMesh of `members` needs: one
/// generated Interface per member (controlled by Mesh `mesh`), its two Networks, the Mesh,
/// and no Peer or Route: `members + 3` objects.
pub fn assert_linear_objects(sandbox: &Sandbox, mesh: &str, members: &[String]) -> Result<()> {
    let counts = ObjectCounts::read(sandbox)?;
    let expected = ObjectCounts {
        interfaces: members.len(),
        peers: 0,
        routes: 0,
        networks: 2,
        meshes: 1,
    };
    ensure!(
        counts == expected,
        "kwire objects for {} members: {counts:?}, expected {expected:?} ({} in all)",
        members.len(),
        expected.total()
    );
    let generated = generated_interfaces(sandbox, mesh)?;
    let nodes: BTreeSet<&str> = generated
        .iter()
        .filter_map(|i| i["spec"]["nodeName"].as_str())
        .collect();
    let wanted: BTreeSet<&str> = members.iter().map(String::as_str).collect();
    ensure!(
        generated.len() == members.len() && nodes == wanted,
        "generated Interfaces on {nodes:?}, expected one on each of {wanted:?}"
    );
    for i in &generated {
        let owner = &i["metadata"]["ownerReferences"][0];
        ensure!(
            owner["kind"] == "Mesh" && owner["name"] == mesh && owner["controller"] == true,
            "not controlled by Mesh {mesh}: {}",
            i["metadata"]
        );
    }
    Ok(())
}

/// The count of `device`'s peers on every node of `nodes` (node → peers), or the first
/// error reading a node's devices.
pub fn peer_counts(
    sandbox: &Sandbox,
    device: &str,
    nodes: &[String],
) -> Result<BTreeMap<String, usize>> {
    nodes
        .iter()
        .map(|n| {
            let node = sandbox
                .nodes
                .get(n)
                .with_context(|| format!("no node {n}"))?;
            Ok((n.clone(), wg_peers(&node.wg_show()?, device).len()))
        })
        .collect()
}

/// Waits until every one of `nodes` has exactly `peers` peers on `device`.
pub fn wait_peer_counts(
    sandbox: &Sandbox,
    device: &str,
    nodes: &[String],
    peers: usize,
    timeout: Duration,
) -> Result<Duration> {
    let mut last = BTreeMap::new();
    wait_for(
        &format!("{peers} peers on {device} of each of {nodes:?}"),
        timeout,
        || {
            last = peer_counts(sandbox, device, nodes)?;
            Ok(last.values().all(|n| *n == peers).then_some(()))
        },
    )
    .map(|((), took)| took)
    .with_context(|| format!("peers on {device} last seen: {last:?}"))
}

/// Every member pings every other member's every address, each until one reply comes
/// back or 20 s pass (only the pairs with `with`, when given). Returns the pairs that
/// never answered.
pub fn ping_every_pair(sandbox: &Sandbox, members: &[Member], with: Option<&str>) -> Vec<String> {
    let mut failed = Vec::new();
    for from in members {
        for to in members.iter().filter(|to| to.node != from.node) {
            if with.is_some_and(|w| w != from.node && w != to.node) {
                continue;
            }
            for address in &to.addresses {
                let answered = sandbox
                    .nodes
                    .get(&from.node)
                    .and_then(|n| n.netns.wait_for_ping(*address, Duration::from_secs(20)));
                if answered.is_none() {
                    failed.push(format!("{} → {} ({address})", from.node, to.node));
                }
            }
        }
    }
    failed
}

/// What ping counted when it was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PingCount {
    /// ping's "packets transmitted".
    pub transmitted: u64,
    /// ping's "received".
    pub received: u64,
    /// Requests that got no answer, not counting the last one if it was still in flight
    /// when ping was stopped.
    pub lost: u64,
}

/// Reads ping's summary line (`N packets transmitted, M received, …`) and its replies'
/// sequence numbers from its output.
pub fn parse_ping_output(text: &str) -> Result<PingCount> {
    let summary = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .context("ping printed no summary")?;
    let number = |field: &str| -> Result<u64> {
        summary
            .split(", ")
            .find(|part| part.contains(field))
            .and_then(|part| part.split_whitespace().next()?.parse().ok())
            .with_context(|| format!("no {field:?} in ping's summary {summary:?}"))
    };
    let transmitted = number("transmitted")?;
    let received = number("received")?;
    let answered: BTreeSet<u64> = text
        .lines()
        .filter(|l| l.contains("bytes from"))
        .filter_map(|l| l.split("icmp_seq=").nth(1)?.split(' ').next()?.parse().ok())
        .collect();
    if answered.len() as u64 != received {
        bail!(
            "ping counted {received} replies but printed {}: {summary:?}",
            answered.len()
        );
    }
    // Sequence numbers start at 1; the last request sent may still have been on its way.
    let in_flight = u64::from(transmitted > 0 && !answered.contains(&transmitted));
    Ok(PingCount {
        transmitted,
        received,
        lost: transmitted - received - in_flight,
    })
}

/// `ping` running in a namespace until stopped, every 50 ms.
pub struct ContinuousPing {
    child: Option<Child>,
    output: PathBuf,
    pub what: String,
}

impl ContinuousPing {
    /// Starts pinging `to` from network namespace `netns`.
    pub fn start(netns: &str, to: IpAddr, what: &str) -> Result<Self> {
        let output = std::env::temp_dir().join(format!(
            "kwire-ping-{}-{netns}-{to}.txt",
            std::process::id()
        ));
        let file = std::fs::File::create(&output)?;
        // `ip netns exec` executes ping in its own process: the PID is ping's.
        let child = Command::new("ip")
            .args(["netns", "exec", netns, "ping", "-n", "-i", "0.05"])
            .arg(to.to_string())
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(Stdio::null())
            .spawn()
            .context("starting ping")?;
        Ok(Self {
            child: Some(child),
            output,
            what: what.to_string(),
        })
    }

    /// Replies so far.
    pub fn replies(&self) -> Result<usize> {
        Ok(std::fs::read_to_string(&self.output)?
            .lines()
            .filter(|l| l.contains("bytes from"))
            .count())
    }

    /// Waits for `n` more replies than now.
    pub fn wait_replies(&self, n: usize, timeout: Duration) -> Result<()> {
        let before = self.replies()?;
        wait_for(
            &format!("{n} more replies to {}", self.what),
            timeout,
            || Ok((self.replies()? >= before + n).then_some(())),
        )?;
        Ok(())
    }

    /// Waits for 20 more replies (so that the path works at the end too), stops ping with
    /// SIGINT and returns its counts.
    pub fn finish(mut self) -> Result<PingCount> {
        self.wait_replies(20, Duration::from_secs(10))?;
        let mut child = self.child.take().context("finished twice")?;
        let status = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()?;
        ensure!(status.success(), "kill -INT of ping failed");
        child.wait()?;
        parse_ping_output(&std::fs::read_to_string(&self.output)?)
            .with_context(|| format!("ping {}", self.what))
    }
}

impl Drop for ContinuousPing {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.output);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "PING 10.61.0.2 (10.61.0.2) 56(84) bytes of data.\n\
        64 bytes from 10.61.0.2: icmp_seq=1 ttl=64 time=0.3 ms\n\
        64 bytes from 10.61.0.2: icmp_seq=2 ttl=64 time=0.3 ms\n\
        64 bytes from 10.61.0.2: icmp_seq=4 ttl=64 time=0.3 ms\n\
        \n--- 10.61.0.2 ping statistics ---\n\
        5 packets transmitted, 3 received, 40% packet loss, time 200ms\n";

    #[test]
    fn a_loss_counts_but_the_last_request_in_flight_does_not() {
        assert_eq!(
            parse_ping_output(OUTPUT).unwrap(),
            PingCount {
                transmitted: 5,
                received: 3,
                lost: 1
            }
        );
        let answered_last = OUTPUT.replace("5 packets transmitted", "4 packets transmitted");
        assert_eq!(parse_ping_output(&answered_last).unwrap().lost, 1);
        assert!(parse_ping_output("64 bytes from x: icmp_seq=1\n").is_err());
    }

    #[test]
    fn a_device_s_peers_are_its_nine_field_lines() {
        let dump = "wgm\tpriv\tpub\t51900\toff\n\
            wgm\tK1\t(none)\t10.211.55.11:51900\t10.61.0.2/32\t1700000000\t1\t2\t25\n\
            wgm\tK2\t(none)\t10.211.55.12:51900\t10.61.0.3/32\t0\t0\t0\t25\n\
            other\tK3\t(none)\t(none)\t10.9.0.1/32\t0\t0\t0\toff\n";
        let peers = wg_peers(dump, "wgm");
        assert_eq!(peers.len(), 2);
        assert_eq!(peers[0].latest_handshake, 1_700_000_000);
        assert_eq!(peers[1].latest_handshake, 0);
        assert_eq!(peers[1].keepalive, "25");
        assert!(wg_peers(dump, "none").is_empty());
    }

    #[test]
    fn node_documents_label_only_the_members() {
        let names = ["m1".to_string(), "m2".to_string()];
        let docs = node_documents(&names, "example.com/m", &names[..1]);
        assert!(docs.contains("name: m1, labels: {example.com/m: 'yes'}"));
        assert!(docs.contains("name: m2, labels: {}"));
    }
}
