//! Running each command: read files or the API, call the pure parts, print.

use std::collections::BTreeMap;
use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::{Context as _, Result, bail};
use kube::ResourceExt as _;
use kwire_crds::keys::{PresharedKey, PrivateKey, PublicKey};
use kwire_crds::manifest::KwireObject;
use kwire_crds::v1alpha1::{Interface, Peer, condition};
use kwire_mesh::topology::{ObjectKind, check};
use kwire_mesh::world::{NodeInfo, World, ns_of};
use kwire_node_daemon::model::ObservedNode;

use crate::cluster::{self, Objects, Scope, Target};
use crate::graph::{self, GraphInput, State};
use kwire_mesh::MeshNode;

use crate::manifests::{
    Loaded, default_namespace, load_objects, load_with_meshes, nodes_of, read_documents,
};
use crate::offline::{Offline, resolve_offline};
use crate::showconf::{self, Showconf};
use crate::status;
use crate::table::Tone;
use crate::{
    Cli, ColourChoice, Command, SandboxCommand, ScopeArgs, ShowconfOutput, StatusOutput, lint,
    mesh, plan, sandbox,
};

pub(crate) fn run(cli: Cli, cmd: &mut clap::Command) -> Result<ExitCode> {
    let target = Target {
        kubeconfig: cli.kubeconfig.clone(),
        context: cli.context.clone(),
    };
    match cli.command {
        Command::Lint {
            files,
            nodes,
            namespace,
        } => run_lint(&files, nodes.as_deref(), &namespace),
        Command::Plan {
            files,
            node,
            nodes: node_list,
            node_ips,
            observe,
            state_file,
            sysctl_root,
            no_dns,
            namespace,
        } => run_plan(PlanArgs {
            files: &files,
            node: node.as_deref(),
            node_list: node_list.as_deref(),
            node_ips: &node_ips,
            observe: observe.then_some((state_file.as_path(), sysctl_root.as_path())),
            dns: !no_dns,
            namespace: &namespace,
        }),
        Command::Status {
            scope,
            output,
            color,
        } => runtime()?.block_on(run_status(&target, &scope, output, color)),
        Command::Showconf {
            peer,
            namespace,
            output,
            include_private_key,
            private_key_secret,
            remote_interface,
            allowed_ips,
            files,
            node_ips,
        } => {
            let args = ShowconfArgs {
                peer,
                output,
                include_private_key,
                private_key_secret,
                remote_interface,
                allowed_ips,
            };
            if files.is_empty() {
                runtime()?.block_on(run_showconf_cluster(&target, namespace, &args))
            } else {
                run_showconf_files(&files, &node_ips, namespace, &args)
            }
        }
        Command::Graph {
            files,
            nodes,
            scope,
            format,
        } => {
            let text = if files.is_empty() {
                if nodes.is_some() {
                    bail!("--node-list expands the Meshes of files: use it with -f");
                }
                runtime()?.block_on(graph_from_cluster(&target, &scope, format))?
            } else {
                graph_from_files(&files, nodes.as_deref(), &scope, format)?
            };
            print!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Sandbox { command } => match command {
            SandboxCommand::Up {
                files,
                namespace,
                check,
                timeout,
                without_controller_manager,
                nodes,
            } => {
                if without_controller_manager && nodes == crate::NodesArg::Kubelet {
                    bail!(
                        "--nodes kubelet needs kube-controller-manager (it turns the chart's \
                         Deployment and DaemonSet into pods): drop --without-controller-manager"
                    );
                }
                sandbox::up(sandbox::UpArgs {
                    files,
                    namespace,
                    check,
                    timeout,
                    controller_manager: !without_controller_manager,
                    kubelet_nodes: nodes == crate::NodesArg::Kubelet,
                })
            }
            SandboxCommand::Down {
                ids,
                force,
                dry_run,
            } => sandbox::down(sandbox::DownArgs {
                ids,
                force,
                dry_run,
            }),
        },
        Command::Completions { shell } => {
            let name = cmd.get_bin_name().unwrap_or("kwire").replace(' ', "-");
            clap_complete::generate(shell, cmd, name, &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn run_lint(files: &[PathBuf], node_list: Option<&Path>, namespace: &str) -> Result<ExitCode> {
    let mut documents = read_documents(files)?;
    default_namespace(&mut documents, namespace);
    let nodes = node_list.map(read_node_list).transpose()?;
    let report = lint::lint_with_nodes(&documents, nodes.as_deref());
    print!("{}", lint::render(&report));
    Ok(if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub(crate) fn node_infos(objects: &[KwireObject], node_ips: &[(String, String)]) -> Vec<NodeInfo> {
    let mut nodes: BTreeMap<String, NodeInfo> = nodes_of(objects)
        .into_iter()
        .map(|n| (n.name.clone(), n))
        .collect();
    for (node, ip) in node_ips {
        let info = nodes.entry(node.clone()).or_insert_with(|| NodeInfo {
            name: node.clone(),
            ..NodeInfo::default()
        });
        info.internal.insert(0, ip.clone());
    }
    nodes.into_values().collect()
}

/// The Nodes of a `--node-list` file.
fn read_node_list(path: &Path) -> Result<Vec<MeshNode>> {
    mesh::read_nodes(&[path.to_path_buf()])
        .with_context(|| format!("reading the node list {}", path.display()))
}

/// The Meshes of the files expanded over the node list (`--node-list`, else the Node
/// documents of the files); a Mesh that cannot be expanded fails (`kwire lint` says why).
fn expand_loaded(loaded: &Loaded, node_list: Option<&Path>) -> Result<Vec<mesh::Expanded>> {
    if loaded.meshes.is_empty() {
        return Ok(Vec::new());
    }
    let nodes = match node_list {
        Some(path) => read_node_list(path)?,
        None => loaded.nodes.clone(),
    };
    if nodes.is_empty() {
        bail!(
            "the files have a Mesh but no node list to expand it over: pass --node-list FILE (a list of v1 Nodes, e.g. from kubectl get nodes -o yaml)"
        );
    }
    let (expanded, problems) = mesh::expand_all(&loaded.meshes, &nodes);
    if let Some(p) = problems.first() {
        bail!("Mesh {}: {}: {}", p.mesh, p.reason, p.message);
    }
    Ok(expanded)
}

struct PlanArgs<'a> {
    files: &'a [PathBuf],
    node: Option<&'a str>,
    node_list: Option<&'a Path>,
    node_ips: &'a [(String, String)],
    observe: Option<(&'a Path, &'a Path)>,
    dns: bool,
    namespace: &'a str,
}

fn run_plan(args: PlanArgs<'_>) -> Result<ExitCode> {
    let loaded = load_with_meshes(args.files, args.namespace)?;
    let objects = &loaded.objects;
    let expanded = expand_loaded(&loaded, args.node_list)?;
    let off = resolve_offline(objects, &node_infos(objects, args.node_ips));
    let all = off.nodes();
    let members: Vec<String> = expanded
        .iter()
        .flat_map(|e| e.expansion.members.iter().map(|m| m.node.clone()))
        .collect();
    let nodes: Vec<String> = match args.node {
        Some(n) if all.iter().any(|a| a == n) => vec![n.to_string()],
        Some(n) if members.iter().any(|m| m == n) => Vec::new(),
        Some(n) => bail!(
            "no Interface of the files is on node {n} (nodes: {})",
            all.iter()
                .chain(&members)
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => all,
    };
    if nodes.is_empty() && expanded.is_empty() {
        bail!("the files have no Interface, so no node has anything to plan");
    }
    let observed = match args.observe {
        None => plan::fresh_node(),
        Some(_) if nodes.len() > 1 => {
            bail!("--observe reads this machine's kernel: choose its node with --node")
        }
        Some(_) if nodes.is_empty() => {
            bail!(
                "--observe plans hand-written Interfaces only; Meshes are not planned against the kernel"
            )
        }
        Some((state_file, sysctl_root)) => runtime()?.block_on(observe(state_file, sysctl_root))?,
    };
    let hosts = if args.dns {
        plan::lookup_hosts(&plan::host_endpoints(&off))
    } else {
        BTreeMap::new()
    };
    let plans: Vec<plan::NodePlan> = nodes
        .iter()
        .map(|n| plan::plan_node(&off, n, &observed, &hosts))
        .collect();
    let mut text = if plans.is_empty() {
        String::new()
    } else {
        plan::render(&plans, &off.notes_for(&nodes))
    };
    if !expanded.is_empty() {
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(&mesh::render_plan(
            &mesh::plan_meshes(&expanded, objects),
            args.node,
        ));
        text.push_str(
            "\nnote: the operator generates these Interfaces and the node daemons these peers and routes; in a cluster, gateways and primary hubs already elected are kept while they qualify, so they may differ from this fresh expansion\n",
        );
    }
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

async fn observe(state_file: &Path, sysctl_root: &Path) -> Result<ObservedNode> {
    let state = kwire_node_daemon::ownership::StateFile::load(state_file)?;
    let handle = kwire_node_daemon::apply::connect().context("opening rtnetlink")?;
    kwire_node_daemon::observe::observe_kernel(&handle, state.devices(), sysctl_root)
        .await
        .context("reading the kernel (root needed)")
}

fn colour(choice: ColourChoice) -> bool {
    match choice {
        ColourChoice::Always => true,
        ColourChoice::Never => false,
        ColourChoice::Auto => {
            std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
        }
    }
}

async fn scoped(target: &Target, scope: &ScopeArgs) -> Result<(kube::Client, Scope)> {
    let (client, default_ns) = cluster::connect(target).await?;
    let scope = if scope.all_namespaces {
        Scope::AllNamespaces
    } else {
        Scope::Namespace(scope.namespace.clone().unwrap_or(default_ns))
    };
    Ok((client, scope))
}

fn nothing_found(scope: &Scope) {
    match scope {
        Scope::Namespace(ns) => eprintln!("No kwire objects found in namespace {ns}."),
        Scope::AllNamespaces => eprintln!("No kwire objects found."),
    }
}

async fn run_status(
    target: &Target,
    scope: &ScopeArgs,
    output: StatusOutput,
    choice: ColourChoice,
) -> Result<ExitCode> {
    let (client, scope) = scoped(target, scope).await?;
    let objects = cluster::list(&client, &scope).await?;
    let view = status::view(
        &objects.interfaces,
        &objects.peers,
        &objects.routes,
        &objects.meshes,
        SystemTime::now(),
    );
    match output {
        StatusOutput::Table => {
            if view.namespaces.is_empty() {
                nothing_found(&scope);
            } else {
                print!("{}", status::render(&view, colour(choice)));
            }
        }
        StatusOutput::Json => println!("{}", serde_json::to_string_pretty(&view)?),
        StatusOutput::Yaml => print!("{}", serde_saphyr::to_string(&view)?),
    }
    std::io::stdout().flush()?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) struct ShowconfArgs {
    pub(crate) peer: String,
    pub(crate) output: ShowconfOutput,
    pub(crate) include_private_key: bool,
    pub(crate) private_key_secret: Option<String>,
    pub(crate) remote_interface: Option<String>,
    pub(crate) allowed_ips: Vec<ipnet::IpNet>,
}

fn render_showconf(
    args: &ShowconfArgs,
    peer: &Peer,
    interfaces: &[Interface],
    private_key: Option<&str>,
    preshared_key: Option<&str>,
) -> Result<String> {
    let ns = ns_of(peer);
    let interface = interfaces
        .iter()
        .find(|i| ns_of(*i) == ns && i.name_any() == peer.spec.interface.as_str())
        .with_context(|| {
            format!(
                "Peer {ns}/{} belongs to Interface {}, which does not exist",
                peer.name_any(),
                peer.spec.interface
            )
        })?;
    let input = Showconf {
        peer,
        interface,
        interfaces,
        private_key,
        preshared_key,
        extra_allowed_ips: &args.allowed_ips,
    };
    Ok(match args.output {
        ShowconfOutput::WgQuick => showconf::wg_quick(&input)?,
        ShowconfOutput::PeerYaml => showconf::peer_yaml(&input, args.remote_interface.as_deref())?,
    })
}

fn run_showconf_files(
    files: &[PathBuf],
    node_ips: &[(String, String)],
    namespace: Option<String>,
    args: &ShowconfArgs,
) -> Result<ExitCode> {
    if args.include_private_key {
        bail!("--include-private-key reads Secrets from the cluster: it cannot be used with -f");
    }
    let ns = namespace.unwrap_or_else(|| "default".into());
    let objects = load_objects(files, &ns)?;
    print!("{}", showconf_offline(&objects, node_ips, &ns, args)?);
    Ok(ExitCode::SUCCESS)
}

/// `kwire showconf -f` once the files are read.
pub(crate) fn showconf_offline(
    objects: &[KwireObject],
    node_ips: &[(String, String)],
    ns: &str,
    args: &ShowconfArgs,
) -> Result<String> {
    let off = resolve_offline(objects, &node_infos(objects, node_ips));
    let peer = off
        .peers
        .iter()
        .find(|p| p.name_any() == args.peer && ns_of(*p) == ns)
        .with_context(|| format!("no Peer {} in namespace {ns} in the files", args.peer))?;
    let text = render_showconf(args, peer, &off.interfaces, None, None)?;
    Ok(off.keys.redact(&text))
}

async fn run_showconf_cluster(
    target: &Target,
    namespace: Option<String>,
    args: &ShowconfArgs,
) -> Result<ExitCode> {
    let (client, default_ns) = cluster::connect(target).await?;
    let ns = namespace.unwrap_or(default_ns);
    let peer = kube::Api::<Peer>::namespaced(client.clone(), &ns)
        .get_opt(&args.peer)
        .await
        .with_context(|| format!("reading Peer {ns}/{}", args.peer))?
        .with_context(|| format!("Peer {} not found in namespace {ns}", args.peer))?;
    let interfaces = kube::Api::<Interface>::namespaced(client.clone(), &ns)
        .list(&Default::default())
        .await
        .with_context(|| format!("listing Interfaces in namespace {ns}"))?
        .items;
    let (mut private_key, mut preshared_key) = (None, None);
    if args.include_private_key {
        if let Some(spec) = &args.private_key_secret {
            let (name, key) = spec
                .split_once(':')
                .unwrap_or((spec.as_str(), "privateKey"));
            let value =
                cluster::secret_key(&client, &ns, name, key, PrivateKey::from_secret_value).await?;
            check_private_key(&value, &peer, name)?;
            private_key = Some(value);
        }
        if let Some(psk) = &peer.spec.preshared_key {
            let resolved = peer
                .status
                .as_ref()
                .and_then(|s| s.resolved.as_ref())
                .and_then(|r| r.preshared_key_secret.clone());
            let (name, key) = match (&psk.secret_ref, resolved) {
                (Some(r), _) => (
                    r.name.to_string(),
                    r.key.clone().unwrap_or_else(|| "presharedKey".into()),
                ),
                (None, Some(secret)) => (secret, "presharedKey".into()),
                (None, None) => bail!(
                    "Peer {ns}/{} has no pre-shared key Secret yet (status.resolved.presharedKeySecret): is kwire-operator running?",
                    args.peer
                ),
            };
            preshared_key = Some(
                cluster::secret_key(&client, &ns, &name, &key, PresharedKey::from_secret_value)
                    .await?,
            );
        }
    }
    // The base64 text lives only as long as the rendering, in buffers wiped on drop.
    let private_text = private_key.as_ref().map(PrivateKey::to_base64);
    let preshared_text = preshared_key.as_ref().map(PresharedKey::to_base64);
    let text = render_showconf(
        args,
        &peer,
        &interfaces,
        private_text.as_deref().map(String::as_str),
        preshared_text.as_deref().map(String::as_str),
    )?;
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

/// The private key must belong to the public key the Peer expects; the error never says
/// anything about the key itself.
fn check_private_key(key: &PrivateKey, peer: &Peer, secret: &str) -> Result<()> {
    let expected = peer.spec.remote.public_key.as_ref();
    if expected.and_then(|k| k.as_str().parse::<PublicKey>().ok()) != Some(key.public_key()) {
        bail!(
            "the private key in Secret {secret} does not belong to spec.remote.publicKey of Peer {} ({}…): refusing to print it",
            peer.name_any(),
            expected.map(|k| k.prefix()).unwrap_or_default()
        );
    }
    Ok(())
}

fn graph_from_files(
    files: &[PathBuf],
    node_list: Option<&Path>,
    scope: &ScopeArgs,
    format: graph::Format,
) -> Result<String> {
    let ns = scope.namespace.clone().unwrap_or_else(|| "default".into());
    let loaded = load_with_meshes(files, &ns)?;
    let expanded = expand_loaded(&loaded, node_list)?;
    Ok(graph_offline_with_meshes(
        &loaded.objects,
        &expanded,
        format,
    ))
}

/// `kwire graph -f` once the files are read, without Meshes (the fuzz targets').
#[cfg(test)]
pub(crate) fn graph_offline(objects: &[KwireObject], format: graph::Format) -> String {
    graph_offline_with_meshes(objects, &[], format)
}

/// `kwire graph -f` with Meshes expanded: each member's generated Interface in its node,
/// and one edge per pair of members that peer (`standby` when nothing goes through it).
pub(crate) fn graph_offline_with_meshes(
    objects: &[KwireObject],
    expanded: &[mesh::Expanded],
    format: graph::Format,
) -> String {
    let off = resolve_offline(objects, &nodes_of(objects));
    // From files, the state of a link is what the operator's topology checks say of it.
    let findings = check(&World::from_manifests(objects));
    let mut links = BTreeMap::new();
    let mut devices = BTreeMap::new();
    for f in &findings {
        let state = State {
            label: f.reason.to_string(),
            tone: Tone::Bad,
        };
        let key = (f.namespace.clone(), f.name.clone());
        match f.kind {
            ObjectKind::Peer => {
                links.entry(key).or_insert(state);
            }
            ObjectKind::Interface => {
                devices.entry(key).or_insert(state);
            }
            ObjectKind::Route => {}
        }
    }
    let mut drawn = off_objects(&off);
    let mut mesh_links = Vec::new();
    for planned in mesh::plan_meshes(expanded, objects) {
        for m in &planned.members {
            let mut i = m.interface.clone();
            i.status = Some(kwire_crds::v1alpha1::InterfaceStatus {
                addresses: m.addresses.iter().map(ToString::to_string).collect(),
                ..Default::default()
            });
            let from = i.name_any();
            for p in m.peers.iter().filter(|p| from < p.member) {
                let mut label = format!("mesh {}", planned.name);
                if p.standby {
                    label.push_str(", standby");
                }
                mesh_links.push(graph::MeshLink {
                    namespace: planned.namespace.clone(),
                    from: from.clone(),
                    to: p.member.clone(),
                    label,
                });
            }
            drawn.interfaces.push(i);
        }
    }
    draw(&drawn, links, devices, mesh_links, format)
}

fn off_objects(off: &Offline) -> Objects {
    Objects {
        networks: off.networks.clone(),
        interfaces: off.interfaces.clone(),
        peers: off.peers.clone(),
        routes: off.routes.clone(),
        meshes: Vec::new(),
    }
}

async fn graph_from_cluster(
    target: &Target,
    scope: &ScopeArgs,
    format: graph::Format,
) -> Result<String> {
    let (client, scope) = scoped(target, scope).await?;
    let objects = cluster::list(&client, &scope).await?;
    if objects.is_empty() {
        nothing_found(&scope);
    }
    let mut links = BTreeMap::new();
    for p in &objects.peers {
        let conditions = p.status.clone().unwrap_or_default().conditions;
        let others: Vec<&str> = conditions
            .iter()
            .filter(|c| c.type_ != condition::CONNECTED && c.status != "True")
            .map(|c| c.reason.as_str())
            .collect();
        let state = match conditions.iter().find(|c| c.type_ == condition::CONNECTED) {
            // Connected, but something else is wrong (a relay that drops, say).
            Some(c) if c.status == "True" && !others.is_empty() => State {
                label: format!("{}, {}", c.reason, others.join(", ")),
                tone: Tone::Pending,
            },
            Some(c) => State {
                label: c.reason.clone(),
                tone: Tone::of_status(Some(&c.status)),
            },
            None => State {
                label: "not reported yet".into(),
                tone: Tone::Pending,
            },
        };
        links.insert((ns_of(p), p.name_any()), state);
    }
    // An Interface shows its first condition that is not True.
    let mut devices = BTreeMap::new();
    for i in &objects.interfaces {
        let conditions = i.status.clone().unwrap_or_default().conditions;
        if let Some(c) = conditions.iter().find(|c| c.status != "True") {
            devices.insert(
                (ns_of(i), i.name_any()),
                State {
                    label: format!("{} {}", c.type_, c.reason),
                    tone: Tone::of_status(Some(&c.status)),
                },
            );
        }
    }
    Ok(draw(&objects, links, devices, Vec::new(), format))
}

fn draw(
    objects: &Objects,
    links: BTreeMap<(String, String), State>,
    devices: BTreeMap<(String, String), State>,
    mesh_links: Vec<graph::MeshLink>,
    format: graph::Format,
) -> String {
    let input = GraphInput {
        interfaces: &objects.interfaces,
        peers: &objects.peers,
        routes: &objects.routes,
        links,
        devices,
        mesh_links,
    };
    match format {
        graph::Format::Mermaid => graph::mermaid(&input),
        graph::Format::Dot => graph::dot(&input),
    }
}

#[cfg(test)]
mod tests {
    use kwire_crds::manifest::parse_manifests;

    use super::*;

    // `wg genkey | tee private | wg pubkey`.
    const PRIVATE: &str = "uL05OyKCfPLVOdvOUsn5NJx1oRCuLZt/+9All5kZPVE=";
    const PUBLIC: &str = "d7n3aHWXo8ES1G6Z4qZ6/fhPmKWjCGIl6piHhsMntQ0=";
    const OTHER_PRIVATE: &str = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";

    fn laptop(public_key: &str) -> Peer {
        let yaml = format!(
            "apiVersion: kwire.dev/v1alpha1\nkind: Peer\nmetadata: {{name: laptop}}\n\
             spec: {{interface: gateway-wg0, remote: {{publicKey: \"{public_key}\"}}, allowedIPs: [10.4.0.2/32]}}\n"
        );
        match parse_manifests(&yaml).unwrap().remove(0) {
            KwireObject::Peer(peer) => *peer,
            other => panic!("not a Peer: {other:?}"),
        }
    }

    #[test]
    fn only_the_private_key_of_the_peers_public_key_is_printed() {
        let peer = laptop(PUBLIC);
        let right = PrivateKey::from_base64(PRIVATE).unwrap();
        assert!(check_private_key(&right, &peer, "laptop-key").is_ok());
        let wrong = PrivateKey::from_base64(OTHER_PRIVATE).unwrap();
        let error = check_private_key(&wrong, &peer, "wrong-key")
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "the private key in Secret wrong-key does not belong to spec.remote.publicKey of Peer laptop (d7n3aHWX…): refusing to print it"
        );
        assert!(!error.contains(&OTHER_PRIVATE[..8]), "{error}");
    }
}
