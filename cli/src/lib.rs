//! `kwire`, the command line of kwire (also installed as `kubectl-kwire`, so that
//! `kubectl kwire …` works).
//!
//! Offline, on manifest files: `lint` (the API server's schema and the operator's topology
//! checks), `plan` (the node daemon's own planner), `graph`, `showconf -f`. Against a
//! cluster (any kubeconfig): `status`, `showconf`, `graph`. On this machine, no cluster
//! needed: `sandbox up` runs a topology end to end, `sandbox down` removes what a crashed
//! one left.
//!
//! Every command's rendering is a pure function in its module, tested with fixtures;
//! [`run`] only reads files or the API and prints.

pub mod cluster;
pub mod graph;
pub mod lint;
pub mod manifests;
pub mod mesh;
pub mod offline;
pub mod plan;
pub mod sandbox;
pub mod showconf;
pub mod status;
pub mod table;

mod commands;
#[cfg(test)]
mod fuzz;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory as _, FromArgMatches as _, Parser, Subcommand, ValueEnum};

const AFTER_HELP: &str = "\
Examples:
  kwire lint -f examples/seed/relay.yaml
  kwire plan -f examples/seed/relay.yaml --node b --node-ip a=10.211.55.10 --node-ip c=10.211.55.12
  kwire status -n seed
  kwire showconf laptop -n edge > laptop.conf
  kwire graph -n seed --format mermaid
  kubectl kwire status -A
  sudo kwire sandbox up -f examples/seed/relay.yaml --check

Offline commands (lint, plan, graph -f, showconf -f) need no cluster; `sandbox` brings its
own. The others use the kubeconfig kubectl would use (KUBECONFIG, ~/.kube/config, or
--kubeconfig/--context).";

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "kwire",
    version,
    about = "Check, plan and inspect kwire's WireGuard objects",
    after_help = AFTER_HELP
)]
pub struct Cli {
    /// Path to the kubeconfig file (default: as kubectl finds it).
    #[arg(long, global = true, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check manifests offline, as the API server and the operator would
    ///
    /// Schema and CEL rules as the API server runs them, then the operator's topology
    /// checks. Exit code 1 when anything is found.
    #[command(after_help = "\
Examples:
  kwire lint -f examples/seed/relay.yaml
  kwire lint -f manifests/            # every .yaml/.yml/.json file of a folder
  kwire lint -f interfaces.yaml peers.yaml
  kubectl get kwire -A -o yaml | kwire lint -f -

Each problem is printed as `Kind/name: reason: message`. `Invalid` problems are what the API
server would reject at apply; the other reasons are the TopologyValid conditions the operator
would set, with the same messages. A document that repeats an earlier object (same kind,
namespace and name) is checked as an update of it (immutable fields).

A Mesh is checked against its schema's rules, then expanded over the node list (--node-list FILE,
else the Node documents of the manifests) and checked as the operator will: no member, a
HubAndSpoke with no hub, a location with no possible gateway, members without an address,
overlapping announced prefixes, device name or port clashes with other Meshes and Interfaces
on one node, and generated Interface names taken by objects of the manifests.")]
    Lint {
        /// Manifest files or folders; `-` reads standard input.
        #[arg(short = 'f', long = "filename", required = true, value_name = "FILE", num_args = 1..)]
        files: Vec<PathBuf>,
        /// Node list to expand Meshes over: a file of v1 Nodes (a List as `kubectl get nodes -o
        /// yaml` prints it, or multi-document YAML/JSON). Default: the Node documents of -f.
        #[arg(long = "node-list", value_name = "FILE")]
        nodes: Option<PathBuf>,
        /// Namespace of objects that name none.
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
    },

    /// Show the kernel changes the node daemon would make, without making them
    ///
    /// The daemon's own translation and planner, from manifest files, against an empty node
    /// (or this machine's kernel with --observe).
    #[command(after_help = "\
Examples:
  kwire plan -f examples/seed/relay.yaml
  kwire plan -f examples/seed/relay.yaml --node b --node-ip a=10.211.55.10 --node-ip c=10.211.55.12
  sudo kwire plan -f relay.yaml --node b --observe     # against this machine's kernel
  kwire plan -f examples/mesh/full-mesh.yaml --node-list examples/mesh/full-mesh.nodes.yaml

From files there is no operator: addresses are predicted with its allocator, Peers resolved
with its code. Public keys that only the cluster knows print as <public key of NAME>;
private and pre-shared keys are never known and print as <redacted>. Endpoints need the
node's address: give --node-ip, a Node manifest, or spec.endpoint.

A Mesh is expanded over the node list (--node-list FILE, else the Node documents of the
files): each generated Interface with its predicted addresses, its peers and routes, before
it is applied (a fresh expansion: in a cluster, gateways and primary hubs already elected are
kept while they qualify).")]
    Plan {
        /// Manifest files or folders; `-` reads standard input.
        #[arg(short = 'f', long = "filename", required = true, value_name = "FILE", num_args = 1..)]
        files: Vec<PathBuf>,
        /// Plan this node only (default: every node that has an Interface).
        #[arg(long, value_name = "NODE")]
        node: Option<String>,
        /// Node list to expand Meshes over: a file of v1 Nodes (a List as `kubectl get nodes -o
        /// yaml` prints it, or multi-document YAML/JSON). Default: the Node documents of -f.
        #[arg(long = "node-list", value_name = "FILE")]
        nodes: Option<PathBuf>,
        /// The address peers reach a node at, as NODE=IP (repeatable).
        #[arg(long = "node-ip", value_name = "NODE=IP", value_parser = parse_node_ip)]
        node_ips: Vec<(String, String)>,
        /// Plan against this machine's kernel instead of an empty node (needs root and --node
        /// when the files name several nodes).
        #[arg(long)]
        observe: bool,
        /// With --observe: the node daemon's record of the devices it created.
        #[arg(long, default_value = kwire_node_daemon::ownership::DEFAULT_STATE_FILE, value_name = "FILE")]
        state_file: PathBuf,
        /// With --observe: root of the sysctl tree.
        #[arg(long, default_value = "/proc/sys", value_name = "DIR")]
        sysctl_root: PathBuf,
        /// Do not look up endpoint host names (peers with one are then reported unresolvable).
        #[arg(long)]
        no_dns: bool,
        /// Namespace of objects that name none.
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
    },

    /// Interfaces, Peers and Routes with handshakes, traffic and conditions
    #[command(after_help = "\
Examples:
  kwire status                 # the kubeconfig context's namespace
  kwire status -n seed
  kwire status -A -o json | jq '.namespaces[].peers[] | select(.connected.status != \"True\")'
  kubectl kwire status -A")]
    Status {
        #[command(flatten)]
        scope: ScopeArgs,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = StatusOutput::Table)]
        output: StatusOutput,
        /// Colour the table: auto (on a terminal, unless NO_COLOR is set), always, never.
        #[arg(long, value_enum, default_value_t = ColourChoice::Auto)]
        color: ColourChoice,
    },

    /// Configuration for the external side of a Peer
    ///
    /// A wg-quick file for the machine kwire does not manage, or a Peer object to apply in
    /// another cluster.
    #[command(after_help = "\
Examples:
  kwire showconf laptop -n edge > laptop.conf                     # then on the laptop: wg-quick up ./laptop.conf
  kwire showconf laptop -n edge --include-private-key --private-key-secret laptop-key
  kwire showconf laptop -n edge -o peer-yaml --remote-interface laptop-wg0 | kubectl --context other apply -f -
  kwire showconf laptop -f examples/external-peer.yaml            # offline, keys as placeholders

Keys are never printed unless --include-private-key is given: then the pre-shared key is
read from its Secret, and the external side's private key from --private-key-secret (a
Secret you created; kwire never had that key) after checking it matches spec.remote.publicKey.")]
    Showconf {
        /// The Peer (its remote must be an external publicKey).
        peer: String,
        /// The namespace of the Peer (default: the kubeconfig context's, or `default` with -f).
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// Output: a wg-quick file, or a Peer object for another cluster.
        #[arg(short = 'o', long, value_enum, default_value_t = ShowconfOutput::WgQuick)]
        output: ShowconfOutput,
        /// Print keys: the pre-shared key, and the private key of --private-key-secret.
        #[arg(long)]
        include_private_key: bool,
        /// A Secret holding the external side's private key, as NAME or NAME:KEY (key
        /// default: privateKey).
        #[arg(long, value_name = "SECRET", requires = "include_private_key")]
        private_key_secret: Option<String>,
        /// With -o peer-yaml: the Interface in the other cluster the Peer belongs to.
        #[arg(long, value_name = "NAME")]
        remote_interface: Option<String>,
        /// More networks the external side sends into the link (comma separated, repeatable).
        #[arg(long = "allowed-ips", value_delimiter = ',', value_name = "CIDR")]
        allowed_ips: Vec<ipnet::IpNet>,
        /// Read the objects from files instead of the cluster (keys become placeholders).
        #[arg(short = 'f', long = "filename", value_name = "FILE")]
        files: Vec<PathBuf>,
        /// With -f: the address peers reach a node at, as NODE=IP (repeatable).
        #[arg(long = "node-ip", value_name = "NODE=IP", value_parser = parse_node_ip)]
        node_ips: Vec<(String, String)>,
    },

    /// Draw the topology as a Mermaid or Graphviz graph
    ///
    /// Nodes as subgraphs, Interfaces in them, and Peers as links with their state.
    #[command(after_help = "\
Examples:
  kwire graph -f examples/seed/relay.yaml                 # Mermaid, for Markdown
  kwire graph -n seed --format dot | dot -Tsvg > seed.svg  # from the cluster, with Connected reasons

From files, a link or Interface with a topology finding is marked with its reason; from the
cluster, links show their Connected reason and Interfaces that are not Ready their reason.
With -f, Meshes are expanded over the node list (--node-list FILE, else the Node documents
of the files): their members' Interfaces, and one link per pair of members that peer.")]
    Graph {
        /// Read the objects from files instead of the cluster.
        #[arg(short = 'f', long = "filename", value_name = "FILE", num_args = 1..)]
        files: Vec<PathBuf>,
        /// Node list to expand Meshes over: a file of v1 Nodes (a List as `kubectl get nodes -o
        /// yaml` prints it, or multi-document YAML/JSON). Default: the Node documents of -f.
        /// With -f only.
        #[arg(long = "node-list", value_name = "FILE")]
        nodes: Option<PathBuf>,
        #[command(flatten)]
        scope: ScopeArgs,
        /// Output format.
        #[arg(long, value_enum, default_value_t = graph::Format::Mermaid)]
        format: graph::Format,
    },

    /// Run a topology end to end on this machine, no cluster needed
    ///
    /// A local control plane, the chart installed with helm, a network namespace and a node
    /// daemon per node, the manifests applied, pings through every link and route. Needs root.
    #[command(after_help = "\
Examples:
  sudo kwire sandbox up -f examples/seed/relay.yaml --namespace seed          # stays up until Ctrl-C
  sudo kwire sandbox up -f examples/seed/relay.yaml --namespace seed --check  # verify, tear down, exit code
  sudo kwire sandbox up -f examples/sandbox/hub-and-spoke-external.yaml
  sudo kwire sandbox down                # what crashed sandboxes left behind
  sudo kwire sandbox down --id 4242-0 --dry-run

Each sandbox keeps a record of everything it makes in /run/kwire-sandbox/<id>.json
(KWIRE_SANDBOX_RECORDS moves it). An external Peer (remote: publicKey and endpoint) is played
by a namespace of its own at spec.remote.endpoint, configured with wireguard-go and wg; its
private key comes from the Peer's annotation sandbox.kwire.dev/remote-private-key.")]
    Sandbox {
        #[command(subcommand)]
        command: SandboxCommand,
    },

    /// Print a shell completion script
    #[command(after_help = "\
Examples:
  kwire completions bash > /etc/bash_completion.d/kwire
  kwire completions zsh > \"${fpath[1]}/_kwire\"")]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// `kwire sandbox up --nodes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NodesArg {
    /// Processes in network namespaces.
    Process,
    /// Kubelet nodes running the chart's pods.
    Kubelet,
}

/// `kwire sandbox …`.
#[derive(Debug, Subcommand)]
pub enum SandboxCommand {
    /// Bring a topology up and verify it; stay up until Ctrl-C, or tear down with --check
    #[command(after_help = "\
Examples:
  sudo kwire sandbox up -f examples/seed/relay.yaml --namespace seed
  sudo kwire sandbox up -f examples/seed/relay.yaml --namespace seed --check
  sudo kwire sandbox up -f interfaces.yaml -f peers.yaml --timeout 5m
  sudo kwire sandbox up -f examples/seed/relay.yaml --check --without-controller-manager
  sudo kwire sandbox up -f examples/seed/relay.yaml --check --nodes kubelet

Prints each step with its time, the status table, and one line per ping (`A → C (…): ok`).
With --check the exit code is 0 only if everything became Ready and every ping answered.
Ctrl-C (or SIGTERM) tears everything down; if this process is killed instead, `kwire sandbox
down` removes what it left.")]
    Up {
        /// Manifest files (Interfaces, Peers, Routes, Networks, Secrets).
        #[arg(short = 'f', long = "filename", required = true, value_name = "FILE", num_args = 1..)]
        files: Vec<PathBuf>,
        /// The namespace the objects are applied into.
        #[arg(short = 'n', long, default_value = "kwire-sandbox")]
        namespace: String,
        /// Verify, tear down, and exit (0: everything Ready and every ping answered).
        #[arg(long)]
        check: bool,
        /// How long to wait for every object to be Ready.
        #[arg(long, default_value = "120s", value_parser = humantime::parse_duration, value_name = "DURATION")]
        timeout: Duration,
        /// Run etcd and kube-apiserver only, without kube-controller-manager (and do not
        /// build it): nothing garbage-collects what a deleted object owned and deleted
        /// namespaces stay Terminating. Enough for --check; a cold first run is minutes
        /// shorter.
        #[arg(long)]
        without_controller_manager: bool,
        /// How nodes run kwire: `process` (the operator and one node daemon per node as
        /// processes; fast) or `kubelet` (every node a real kubelet with containerd; the
        /// chart's Deployment and DaemonSet run from the images of
        /// `bash scripts/build-images.sh`).
        #[arg(long, value_enum, default_value = "process")]
        nodes: NodesArg,
    },

    /// Remove what sandboxes whose process has ended left behind
    #[command(after_help = "\
Examples:
  sudo kwire sandbox down                      # every record whose `kwire sandbox up` has ended
  sudo kwire sandbox down --id 4242-0          # that one only
  sudo kwire sandbox down --dry-run
  sudo kwire sandbox down --id 4242-0 --force  # even though its process still runs

Kills the recorded processes (checked by pid and start time, so a reused pid is never hit)
and what runs in the recorded network namespaces, deletes those namespaces and links,
removes the run folders and wireguard-go sockets, then the record. Running it again finds
nothing to do. Sandboxes whose process still runs are left alone unless --force is given.")]
    Down {
        /// Only this record (repeatable); the id is in the record's file name.
        #[arg(long = "id", value_name = "ID")]
        ids: Vec<String>,
        /// Also sandboxes whose process still runs.
        #[arg(long, visible_alias = "all")]
        force: bool,
        /// Say what would be removed, remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// `-n NS` or `-A`.
#[derive(Debug, Clone, Args)]
pub struct ScopeArgs {
    /// The namespace (default: the kubeconfig context's).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Every namespace.
    #[arg(short = 'A', long, conflicts_with = "namespace")]
    pub all_namespaces: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusOutput {
    Table,
    Json,
    Yaml,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ShowconfOutput {
    WgQuick,
    PeerYaml,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColourChoice {
    Auto,
    Always,
    Never,
}

fn parse_node_ip(text: &str) -> Result<(String, String), String> {
    let (node, ip) = text
        .split_once('=')
        .ok_or_else(|| format!("expected NODE=IP, got {text:?}"))?;
    ip.parse::<std::net::IpAddr>()
        .map_err(|_| format!("{ip:?} is not an IP address"))?;
    Ok((node.to_string(), ip.to_string()))
}

/// The clap command, named `kubectl kwire` when run as the kubectl plugin.
pub fn command(invoked_as: Option<&OsString>) -> clap::Command {
    let plugin = invoked_as
        .map(PathBuf::from)
        .and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()))
        .is_some_and(|f| f.starts_with("kubectl-"));
    let cmd = Cli::command();
    if plugin {
        cmd.bin_name("kubectl kwire").display_name("kubectl kwire")
    } else {
        cmd
    }
}

/// Parses the command line and runs the command. Exit codes: 0 success, 1 problems found
/// (lint) or a failure, 2 a usage error.
pub fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    let mut cmd = command(args.first());
    let matches = cmd.clone().get_matches_from(&args);
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.format(&mut cmd).exit(),
    };
    match commands::run(cli, &mut cmd) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, `a: b: c`, skipping a cause that an outer message already
/// quotes (kube's and std's errors often include their source in their own text).
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}
