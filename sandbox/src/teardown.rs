//! Removing what crash records list: `kwire sandbox down`, and the safety net of a sandbox's
//! own teardown.
//!
//! In two steps, so that the deciding part is a pure function with tests: [`observe`] looks
//! at the machine (which recorded processes still run, which namespaces, links, folders and
//! sockets exist), [`plan`] turns records and observations into a list of [`Action`]s, and
//! [`apply`] carries them out. The rules [`plan`] keeps:
//!
//! - A record whose owner (the process that made the sandbox, by pid and start time) still
//!   runs is skipped unless forced: that sandbox is alive and tears itself down.
//! - Nothing a running sandbox's record lists is touched for another record, whatever that
//!   one says.
//! - A process is killed only if it is the recorded one (same start time, same boot), a
//!   namespace deleted only if it is the recorded one (same inode), a folder removed only if
//!   it is a sandbox folder (`kwire-…`), a socket only if it is a socket.
//! - The owner itself, and the process running the teardown, are never killed.
//! - Order: processes (the last started first, then whatever still runs inside the
//!   namespaces, such as the wireguard-go processes node daemons start), host links,
//!   namespaces, sockets, folders, and the record file last, so that an interrupted teardown
//!   can be run again.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::FileTypeExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::record::{ProcessId, Record, boot_id, netns_inode};

/// What [`observe`] saw of the things records name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// This boot's identity.
    pub boot_id: String,
    /// The pid of the process doing the teardown.
    pub me: u32,
    /// The start time of each running process that a record names (owners included).
    pub processes: BTreeMap<u32, u64>,
    /// Each recorded network namespace that exists, with its inode when readable.
    pub netns: BTreeMap<String, Option<u64>>,
    /// The processes inside each of those namespaces, with their command names.
    pub netns_processes: BTreeMap<String, Vec<(ProcessId, String)>>,
    /// The processes in each recorded cgroup that exists (its whole tree): the containers
    /// of kubelet nodes.
    pub cgroup_processes: BTreeMap<PathBuf, Vec<(ProcessId, String)>>,
    /// The links of the host's network namespace.
    pub host_links: BTreeSet<String>,
    /// The recorded folders and sockets that exist.
    pub paths: BTreeSet<PathBuf>,
}

/// Looks at everything `records` name.
pub fn observe<'a>(records: impl IntoIterator<Item = &'a Record>) -> Observed {
    let mut observed = Observed {
        boot_id: boot_id(),
        me: std::process::id(),
        host_links: host_links(),
        ..Observed::default()
    };
    for record in records {
        let pids =
            std::iter::once(record.owner.pid).chain(record.processes.iter().map(|p| p.id.pid));
        for pid in pids {
            if let Some(id) = ProcessId::of(pid) {
                observed.processes.insert(pid, id.start_time);
            }
        }
        for ns in &record.netns {
            if !Path::new("/run/netns").join(&ns.name).exists() {
                continue;
            }
            observed
                .netns
                .insert(ns.name.clone(), netns_inode(&ns.name));
            let inside = crate::netns::pids_in(&ns.name)
                .into_iter()
                .filter_map(ProcessId::of)
                .map(|id| (id, comm(id.pid)))
                .collect();
            observed.netns_processes.insert(ns.name.clone(), inside);
        }
        for path in record.folders.iter().chain(&record.sockets) {
            if std::fs::symlink_metadata(path).is_ok() {
                observed.paths.insert(path.clone());
            }
        }
        for cgroup in record.cgroups.iter().filter(|c| c.is_dir()) {
            observed.paths.insert(cgroup.clone());
            let inside = crate::kubelet::cgroup_pids(std::slice::from_ref(cgroup))
                .into_iter()
                .filter_map(ProcessId::of)
                .map(|id| (id, comm(id.pid)))
                .collect();
            observed.cgroup_processes.insert(cgroup.clone(), inside);
        }
    }
    observed
}

/// Which records to act on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// Only these records (by id); every record when empty.
    pub ids: Vec<String>,
    /// Also records whose owner still runs.
    pub force: bool,
}

/// One removal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Kill {
        process: ProcessId,
        what: String,
        netns: Option<String>,
    },
    DeleteLink {
        name: String,
    },
    DeleteNetns {
        name: String,
        inode: Option<u64>,
    },
    RemoveSocket {
        path: PathBuf,
    },
    RemoveFolder {
        path: PathBuf,
    },
    /// A kubelet node's cgroup root, with the cgroups below it.
    RemoveCgroup {
        path: PathBuf,
    },
    RemoveRecord {
        path: PathBuf,
    },
}

impl Action {
    /// What the action does, for `--dry-run`.
    pub fn describe(&self) -> String {
        match self {
            Self::Kill {
                process,
                what,
                netns,
            } => format!(
                "kill {what} (pid {}){}",
                process.pid,
                netns
                    .as_ref()
                    .map(|n| format!(" in network namespace {n}"))
                    .unwrap_or_default()
            ),
            Self::DeleteLink { name } => format!("delete link {name}"),
            Self::DeleteNetns { name, .. } => format!("delete network namespace {name}"),
            Self::RemoveSocket { path } => format!("remove socket {}", path.display()),
            Self::RemoveFolder { path } => format!("remove folder {}", path.display()),
            Self::RemoveCgroup { path } => format!("remove cgroup {}", path.display()),
            Self::RemoveRecord { path } => format!("remove record {}", path.display()),
        }
    }

    /// The same, once done.
    pub fn done(&self) -> String {
        let text = self.describe();
        let (verb, rest) = text.split_once(' ').unwrap_or((&text, ""));
        let past = match verb {
            "kill" => "killed",
            "delete" => "deleted",
            "remove" => "removed",
            other => other,
        };
        format!("{past} {rest}")
    }
}

/// The removals for one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxPlan {
    pub id: String,
    pub record: PathBuf,
    pub owner: ProcessId,
    pub owner_command: String,
    /// Whether the owner still runs (only with [`Options::force`]).
    pub owner_running: bool,
    pub actions: Vec<Action>,
    /// What the record lists but the plan leaves alone, and why.
    pub left: Vec<String>,
}

/// A record that is not acted on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub id: String,
    pub record: PathBuf,
    pub reason: String,
}

/// What [`plan`] decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub sandboxes: Vec<SandboxPlan>,
    pub skipped: Vec<Skipped>,
    /// Requested ids with no record.
    pub not_found: Vec<String>,
}

impl Plan {
    /// Whether there is nothing to do at all.
    pub fn is_empty(&self) -> bool {
        self.sandboxes.is_empty()
    }
}

/// Whether the process that made `record` still runs.
pub fn owner_running(record: &Record, observed: &Observed) -> bool {
    record.boot_id == observed.boot_id
        && observed.processes.get(&record.owner.pid) == Some(&record.owner.start_time)
}

/// Decides what to remove (see the module documentation for the rules).
pub fn plan(records: &[(PathBuf, Record)], observed: &Observed, options: &Options) -> Plan {
    let mut out = Plan::default();
    let selected = |r: &Record| options.ids.is_empty() || options.ids.contains(&r.id);
    out.not_found = options
        .ids
        .iter()
        .filter(|id| !records.iter().any(|(_, r)| &r.id == *id))
        .cloned()
        .collect();

    // What running sandboxes that are not being removed hold.
    let mut protected = Protected::default();
    let mut chosen = Vec::new();
    for (path, record) in records {
        let running = owner_running(record, observed);
        if selected(record) && (!running || options.force) {
            chosen.push((path, record, running));
            continue;
        }
        if running {
            protected.add(record);
        }
        if selected(record) {
            out.skipped.push(Skipped {
                id: record.id.clone(),
                record: path.clone(),
                reason: format!(
                    "its process {} ({}) is running; stop it (Ctrl-C), or use --force",
                    record.owner.pid, record.owner_command
                ),
            });
        }
    }

    for (path, record, running) in chosen {
        out.sandboxes
            .push(plan_one(path, record, running, observed, &protected));
    }
    out
}

/// Names and pids held by running sandboxes.
#[derive(Default)]
struct Protected {
    pids: BTreeSet<u32>,
    netns: BTreeSet<String>,
    links: BTreeSet<String>,
    paths: BTreeSet<PathBuf>,
}

impl Protected {
    fn add(&mut self, r: &Record) {
        self.pids.insert(r.owner.pid);
        self.pids.extend(r.processes.iter().map(|p| p.id.pid));
        self.netns.extend(r.netns.iter().map(|n| n.name.clone()));
        self.links.extend(r.links.iter().map(|l| l.name.clone()));
        self.paths.extend(
            r.folders
                .iter()
                .chain(&r.sockets)
                .chain(&r.cgroups)
                .cloned(),
        );
    }
}

fn plan_one(
    path: &Path,
    record: &Record,
    owner_running: bool,
    observed: &Observed,
    protected: &Protected,
) -> SandboxPlan {
    let mut actions = Vec::new();
    let mut left = Vec::new();
    let mut killed = BTreeSet::new();
    let never_kill = [record.owner.pid, observed.me];
    let same_boot = record.boot_id == observed.boot_id;

    // Recorded processes, the last started first: clients go before what they talk to (node
    // daemons and the operator before the API server, the API server before etcd).
    for p in record.processes.iter().rev() {
        let runs = same_boot && observed.processes.get(&p.id.pid) == Some(&p.id.start_time);
        if !runs
            || never_kill.contains(&p.id.pid)
            || protected.pids.contains(&p.id.pid)
            || !killed.insert(p.id.pid)
        {
            continue;
        }
        actions.push(Action::Kill {
            process: p.id,
            what: p.what.clone(),
            netns: p.netns.clone(),
        });
    }

    // The namespaces that are the recorded ones.
    let mut namespaces = Vec::new();
    for ns in &record.netns {
        let Some(inode) = observed.netns.get(&ns.name) else {
            continue;
        };
        if protected.netns.contains(&ns.name) {
            left.push(format!(
                "network namespace {}: a running sandbox lists it",
                ns.name
            ));
            continue;
        }
        if ns.inode.is_some() && *inode != ns.inode {
            left.push(format!(
                "network namespace {}: another namespace has that name now",
                ns.name
            ));
            continue;
        }
        namespaces.push((ns.name.clone(), *inode));
    }
    // Whatever still runs inside them (wireguard-go started by node daemons, relays).
    for (name, _) in &namespaces {
        for (id, comm) in observed.netns_processes.get(name).into_iter().flatten() {
            if never_kill.contains(&id.pid) || !killed.insert(id.pid) {
                continue;
            }
            actions.push(Action::Kill {
                process: *id,
                what: comm.clone(),
                netns: Some(name.clone()),
            });
        }
    }

    // The containers of kubelet nodes, in whatever namespaces they run.
    for cgroup in &record.cgroups {
        if protected.paths.contains(cgroup) {
            continue;
        }
        for (id, comm) in observed.cgroup_processes.get(cgroup).into_iter().flatten() {
            if never_kill.contains(&id.pid) || !killed.insert(id.pid) {
                continue;
            }
            actions.push(Action::Kill {
                process: *id,
                what: comm.clone(),
                netns: None,
            });
        }
    }

    for link in &record.links {
        if link.netns.is_none()
            && observed.host_links.contains(&link.name)
            && !protected.links.contains(&link.name)
        {
            actions.push(Action::DeleteLink {
                name: link.name.clone(),
            });
        }
    }
    for (name, inode) in namespaces {
        actions.push(Action::DeleteNetns { name, inode });
    }
    for cgroup in &record.cgroups {
        if !observed.paths.contains(cgroup) || protected.paths.contains(cgroup) {
            continue;
        }
        if is_sandbox_cgroup(cgroup) {
            actions.push(Action::RemoveCgroup {
                path: cgroup.clone(),
            });
        } else {
            left.push(format!(
                "cgroup {}: not a sandbox cgroup (/sys/fs/cgroup/<hierarchy>/kwire-…)",
                cgroup.display()
            ));
        }
    }
    for socket in &record.sockets {
        if observed.paths.contains(socket) && !protected.paths.contains(socket) {
            actions.push(Action::RemoveSocket {
                path: socket.clone(),
            });
        }
    }
    for folder in &record.folders {
        if !observed.paths.contains(folder) || protected.paths.contains(folder) {
            continue;
        }
        if is_sandbox_folder(folder) {
            actions.push(Action::RemoveFolder {
                path: folder.clone(),
            });
        } else {
            left.push(format!(
                "folder {}: not a sandbox folder (kwire-…)",
                folder.display()
            ));
        }
    }
    actions.push(Action::RemoveRecord {
        path: path.to_path_buf(),
    });
    SandboxPlan {
        id: record.id.clone(),
        record: path.to_path_buf(),
        owner: record.owner,
        owner_command: record.owner_command.clone(),
        owner_running,
        actions,
        left,
    }
}

/// Folders a sandbox makes are absolute and named `kwire-…`: a damaged or hand-edited
/// record cannot make the teardown remove anything else.
fn is_sandbox_folder(path: &Path) -> bool {
    path.is_absolute()
        && path.components().count() > 2
        && path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("kwire-"))
}

/// A kubelet node's cgroup root is `/sys/fs/cgroup/<hierarchy>/kwire-…`.
fn is_sandbox_cgroup(path: &Path) -> bool {
    path.parent()
        .and_then(Path::parent)
        .is_some_and(|p| p == Path::new("/sys/fs/cgroup"))
        && path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("kwire-"))
}

/// What [`apply`] did for one record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    pub id: String,
    pub done: Vec<String>,
    pub failed: Vec<String>,
}

/// Carries out `plan`, going on past failures (each is reported).
pub fn apply(plan: &Plan) -> Vec<Outcome> {
    plan.sandboxes
        .iter()
        .map(|sandbox| {
            let mut outcome = Outcome {
                id: sandbox.id.clone(),
                ..Outcome::default()
            };
            for action in &sandbox.actions {
                match execute(action) {
                    Ok(true) => outcome.done.push(action.done()),
                    // Gone in the meantime (the control plane's watchdog got there first).
                    Ok(false) => {}
                    Err(why) => outcome
                        .failed
                        .push(format!("could not {}: {why}", action.describe())),
                }
            }
            outcome
        })
        .collect()
}

/// Removes what `record` (at `path`) still lists, whoever owns it: a sandbox's own last step.
pub fn remove_own(record: &Record, path: &Path) -> Outcome {
    let observed = observe([record]);
    let plan = plan(
        &[(path.to_path_buf(), record.clone())],
        &observed,
        &Options {
            ids: vec![record.id.clone()],
            force: true,
        },
    );
    apply(&plan).pop().unwrap_or_default()
}

/// Does one action; `Ok(false)` when there was nothing left to do.
fn execute(action: &Action) -> Result<bool, String> {
    match action {
        Action::Kill { process, .. } => kill(*process),
        Action::DeleteLink { name } => {
            if !host_links().contains(name) {
                return Ok(false);
            }
            command(Command::new("ip").args(["link", "del", name]))
        }
        Action::DeleteNetns { name, inode } => {
            if !Path::new("/run/netns").join(name).exists() || netns_inode(name) != *inode {
                return Ok(false);
            }
            command(Command::new("ip").args(["netns", "del", name]))
        }
        Action::RemoveSocket { path } => match std::fs::symlink_metadata(path) {
            Err(_) => Ok(false),
            Ok(m) if !m.file_type().is_socket() => Err("not a socket".into()),
            Ok(_) => std::fs::remove_file(path)
                .map(|()| true)
                .map_err(|e| e.to_string()),
        },
        Action::RemoveFolder { path } => match std::fs::remove_dir_all(path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e.to_string()),
        },
        Action::RemoveCgroup { path } => {
            if !path.is_dir() {
                return Ok(false);
            }
            crate::kubelet::remove_cgroups(std::slice::from_ref(path));
            if path.is_dir() {
                Err("processes are still in it".into())
            } else {
                Ok(true)
            }
        }
        Action::RemoveRecord { path } => match std::fs::remove_file(path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e.to_string()),
        },
    }
}

fn command(cmd: &mut Command) -> Result<bool, String> {
    let out = cmd.output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(true)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// SIGKILL to exactly `process`, then waits until it has ended.
fn kill(process: ProcessId) -> Result<bool, String> {
    use rustix::process::{Pid, PidfdFlags, Signal, pidfd_open, pidfd_send_signal};
    let Some(pid) = i32::try_from(process.pid).ok().and_then(Pid::from_raw) else {
        return Ok(false);
    };
    let fd = match pidfd_open(pid, PidfdFlags::empty()) {
        Ok(fd) => Some(fd),
        Err(rustix::io::Errno::SRCH) => return Ok(false),
        // A kernel before 5.3: no pidfds; the check below then narrows the race to the
        // moment between it and kill(2).
        Err(rustix::io::Errno::NOSYS) => None,
        Err(e) => return Err(format!("pidfd_open: {e}")),
    };
    // The descriptor holds the process that had the pid when it was opened. If the pid's
    // process now still has the recorded start time, that process is the recorded one and
    // the signal cannot reach a newcomer that reused the pid.
    if !process.is_running() {
        return Ok(false);
    }
    let sent = match &fd {
        Some(fd) => pidfd_send_signal(fd, Signal::KILL),
        None => rustix::process::kill_process(pid, Signal::KILL),
    };
    match sent {
        Ok(()) => {}
        Err(rustix::io::Errno::SRCH) => return Ok(false),
        Err(e) => return Err(format!("kill: {e}")),
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while process.is_running() {
        if Instant::now() > deadline {
            return Err("still running 10 s after SIGKILL".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(true)
}

/// The links of the host's network namespace.
pub fn host_links() -> BTreeSet<String> {
    std::fs::read_dir("/sys/class/net")
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim_end().to_string())
        .unwrap_or_else(|_| "process".into())
}

/// TCP ports listened on in the host's network namespace, with the pids listening (`ss`).
pub fn listening_tcp_ports() -> BTreeMap<u16, BTreeSet<u32>> {
    let Ok(out) = Command::new("ss").args(["-Hltnp"]).output() else {
        return BTreeMap::new();
    };
    parse_ss(&String::from_utf8_lossy(&out.stdout))
}

/// `ss -Hltnp` output: the local port of each line and the pids in `users:((…,pid=N,…))`.
pub fn parse_ss(text: &str) -> BTreeMap<u16, BTreeSet<u32>> {
    let mut ports: BTreeMap<u16, BTreeSet<u32>> = BTreeMap::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        // State, Recv-Q, Send-Q, then the local address.
        let Some(local) = fields.nth(3) else {
            continue;
        };
        let Some(port) = local.rsplit_once(':').and_then(|(_, p)| p.parse().ok()) else {
            continue;
        };
        let pids = ports.entry(port).or_default();
        for part in line.split("pid=").skip(1) {
            if let Ok(pid) = part
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .unwrap_or_default()
                .parse()
            {
                pids.insert(pid);
            }
        }
    }
    ports
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{RecordedLink, RecordedNetns, RecordedProcess};

    const BOOT: &str = "boot-1";

    fn pid(pid: u32, start_time: u64) -> ProcessId {
        ProcessId { pid, start_time }
    }

    /// A sandbox `id` owned by pid `owner` (start time 1) that made one namespace, a link,
    /// a folder, a socket and two processes.
    fn record(id: &str, owner: u32) -> (PathBuf, Record) {
        let n = owner;
        (
            PathBuf::from(format!("/run/kwire-sandbox/{id}.json")),
            Record {
                version: 1,
                id: id.into(),
                owner: pid(owner, 1),
                owner_command: "kwire sandbox up -f relay.yaml".into(),
                boot_id: BOOT.into(),
                netns: vec![RecordedNetns {
                    name: format!("kwa{n}x0"),
                    inode: Some(u64::from(n) * 10),
                }],
                links: vec![
                    RecordedLink {
                        name: format!("p{n}x1"),
                        netns: Some(format!("kwsw{n}x0")),
                    },
                    RecordedLink {
                        name: format!("h{n}x2"),
                        netns: None,
                    },
                ],
                processes: vec![
                    RecordedProcess {
                        id: pid(n + 1, 5),
                        what: "etcd".into(),
                        netns: None,
                    },
                    RecordedProcess {
                        id: pid(n + 2, 6),
                        what: "kwire-operator".into(),
                        netns: None,
                    },
                ],
                folders: vec![PathBuf::from(format!("/tmp/kwire-sandbox-{id}"))],
                sockets: vec![PathBuf::from(format!("/var/run/wireguard/kx{n}x3.sock"))],
                ..Record::default()
            },
        )
    }

    /// Everything `records` list exists and runs; their owners run when `running`.
    fn everything_there(records: &[(PathBuf, Record)], running: bool) -> Observed {
        let mut o = Observed {
            boot_id: BOOT.into(),
            me: 99_999,
            ..Observed::default()
        };
        for (_, r) in records {
            if running {
                o.processes.insert(r.owner.pid, r.owner.start_time);
            }
            for p in &r.processes {
                o.processes.insert(p.id.pid, p.id.start_time);
            }
            for ns in &r.netns {
                o.netns.insert(ns.name.clone(), ns.inode);
                o.netns_processes.insert(
                    ns.name.clone(),
                    vec![(pid(r.owner.pid + 50, 7), "wireguard-go".into())],
                );
            }
            o.host_links.extend(r.links.iter().map(|l| l.name.clone()));
            o.paths.extend(r.folders.iter().chain(&r.sockets).cloned());
        }
        o
    }

    fn descriptions(p: &SandboxPlan) -> Vec<String> {
        p.actions.iter().map(Action::describe).collect()
    }

    #[test]
    fn a_kubelet_node_loses_its_containers_then_its_cgroups_and_nothing_else() {
        let (path, mut r) = record("7-0", 700);
        let ours = PathBuf::from("/sys/fs/cgroup/pids/kwire-7-0-a");
        let foreign = PathBuf::from("/sys/fs/cgroup/pids/kubepods");
        r.cgroups = vec![ours.clone(), foreign.clone()];
        let records = vec![(path, r)];
        let mut o = everything_there(&records, false);
        o.paths.extend([ours.clone(), foreign.clone()]);
        o.cgroup_processes
            .insert(ours.clone(), vec![(pid(4242, 9), "kwire-operator".into())]);
        let p = plan(&records, &o, &Options::default());
        let d = descriptions(&p.sandboxes[0]);
        let kill = d
            .iter()
            .position(|a| a == "kill kwire-operator (pid 4242)")
            .expect("the container is killed");
        let remove = d
            .iter()
            .position(|a| a == "remove cgroup /sys/fs/cgroup/pids/kwire-7-0-a")
            .expect("the cgroup is removed");
        assert!(kill < remove, "{d:#?}");
        assert!(!d.iter().any(|a| a.contains("kubepods")), "{d:#?}");
        assert!(
            p.sandboxes[0].left.iter().any(|l| l.contains("kubepods")),
            "{:#?}",
            p.sandboxes[0].left
        );
    }

    #[test]
    fn a_dead_sandbox_is_removed_in_order_processes_first_record_last() {
        let records = vec![record("100-0", 100)];
        let plan = plan(
            &records,
            &everything_there(&records, false),
            &Options::default(),
        );
        assert_eq!(plan.sandboxes.len(), 1);
        assert_eq!(
            descriptions(&plan.sandboxes[0]),
            [
                "kill kwire-operator (pid 102)",
                "kill etcd (pid 101)",
                "kill wireguard-go (pid 150) in network namespace kwa100x0",
                "delete link h100x2",
                "delete network namespace kwa100x0",
                "remove socket /var/run/wireguard/kx100x3.sock",
                "remove folder /tmp/kwire-sandbox-100-0",
                "remove record /run/kwire-sandbox/100-0.json",
            ]
        );
        assert!(plan.skipped.is_empty());
    }

    #[test]
    fn a_running_sandbox_is_skipped_unless_forced() {
        let records = vec![record("100-0", 100)];
        let observed = everything_there(&records, true);
        let p = plan(&records, &observed, &Options::default());
        assert!(p.is_empty());
        assert_eq!(p.skipped.len(), 1);
        assert!(p.skipped[0].reason.contains("--force"), "{p:?}");

        let forced = plan(
            &records,
            &observed,
            &Options {
                force: true,
                ..Options::default()
            },
        );
        assert!(forced.sandboxes[0].owner_running);
        // The owner itself is never killed.
        assert!(
            !descriptions(&forced.sandboxes[0])
                .iter()
                .any(|d| d.contains("pid 100)"))
        );
    }

    #[test]
    fn only_the_requested_record_is_touched() {
        let records = vec![record("100-0", 100), record("200-0", 200)];
        let observed = everything_there(&records, false);
        let p = plan(
            &records,
            &observed,
            &Options {
                ids: vec!["200-0".into(), "300-0".into()],
                force: false,
            },
        );
        assert_eq!(p.sandboxes.len(), 1);
        assert_eq!(p.sandboxes[0].id, "200-0");
        assert_eq!(p.not_found, ["300-0"]);
    }

    #[test]
    fn what_a_running_sandbox_lists_is_never_removed_for_another_record() {
        let live = record("100-0", 100);
        // A damaged stale record that claims the live sandbox's things.
        let mut stale = record("200-0", 200);
        stale.1.netns = live.1.netns.clone();
        stale.1.processes.push(live.1.processes[0].clone());
        stale.1.folders = live.1.folders.clone();
        stale.1.links = live.1.links.clone();
        let records = vec![live.clone(), stale];
        let mut observed = everything_there(&records, false);
        observed.processes.insert(100, 1);
        let p = plan(&records, &observed, &Options::default());
        assert_eq!(p.sandboxes.len(), 1);
        let d = descriptions(&p.sandboxes[0]);
        assert!(!d.iter().any(|a| a.contains("100")), "{d:#?}");
        assert!(
            p.sandboxes[0].left[0].contains("a running sandbox lists it"),
            "{:?}",
            p.sandboxes[0].left
        );
    }

    #[test]
    fn a_reused_pid_or_namespace_name_is_left_alone() {
        let records = vec![record("100-0", 100)];
        let mut observed = everything_there(&records, false);
        // pid 102 is another process now; the namespace is another one with the same name.
        observed.processes.insert(102, 999);
        observed.netns.insert("kwa100x0".into(), Some(12345));
        let p = plan(&records, &observed, &Options::default());
        let d = descriptions(&p.sandboxes[0]);
        assert!(!d.iter().any(|a| a.contains("kwire-operator")), "{d:#?}");
        assert!(!d.iter().any(|a| a.contains("kwa100x0")), "{d:#?}");
        assert!(p.sandboxes[0].left[0].contains("another namespace"));
    }

    #[test]
    fn a_record_of_another_boot_kills_nothing() {
        let records = vec![record("100-0", 100)];
        let mut observed = everything_there(&records, false);
        observed.boot_id = "boot-2".into();
        let p = plan(&records, &observed, &Options::default());
        assert!(
            !descriptions(&p.sandboxes[0])
                .iter()
                .any(|a| a.starts_with("kill etcd") || a.starts_with("kill kwire-operator"))
        );
    }

    #[test]
    fn when_everything_is_gone_only_the_record_is_removed() {
        let records = vec![record("100-0", 100)];
        let observed = Observed {
            boot_id: BOOT.into(),
            ..Observed::default()
        };
        let p = plan(&records, &observed, &Options::default());
        assert_eq!(
            descriptions(&p.sandboxes[0]),
            ["remove record /run/kwire-sandbox/100-0.json"]
        );
        // And with no records, nothing at all.
        assert!(plan(&[], &observed, &Options::default()).is_empty());
    }

    #[test]
    fn only_sandbox_folders_are_removed() {
        let (path, mut r) = record("100-0", 100);
        r.folders = vec![
            PathBuf::from("/home"),
            PathBuf::from("relative/kwire-x"),
            PathBuf::from("/tmp/kwire-sandbox-100-0.control-plane"),
        ];
        let records = vec![(path, r)];
        let observed = everything_there(&records, false);
        let p = plan(&records, &observed, &Options::default());
        let d = descriptions(&p.sandboxes[0]);
        assert!(d.contains(&"remove folder /tmp/kwire-sandbox-100-0.control-plane".to_string()));
        assert!(
            !d.iter()
                .any(|a| a.contains("/home") || a.contains("relative"))
        );
        assert_eq!(p.sandboxes[0].left.len(), 2);
    }

    #[test]
    fn a_process_listed_twice_or_inside_a_namespace_is_killed_once() {
        let (path, mut r) = record("100-0", 100);
        r.processes.push(RecordedProcess {
            id: pid(150, 7),
            what: "wireguard-go (far side of laptop)".into(),
            netns: Some("kwa100x0".into()),
        });
        let records = vec![(path, r)];
        let observed = everything_there(&records, false);
        let p = plan(&records, &observed, &Options::default());
        let kills: Vec<_> = descriptions(&p.sandboxes[0])
            .into_iter()
            .filter(|d| d.contains("pid 150"))
            .collect();
        assert_eq!(
            kills,
            ["kill wireguard-go (far side of laptop) (pid 150) in network namespace kwa100x0"]
        );
    }

    #[test]
    fn done_says_it_in_the_past() {
        let a = Action::DeleteNetns {
            name: "kwa1x0".into(),
            inode: None,
        };
        assert_eq!(a.done(), "deleted network namespace kwa1x0");
    }

    #[test]
    fn ss_output_gives_ports_and_pids() {
        let text = "LISTEN 0 4096 127.0.0.1:2379 0.0.0.0:* users:((\"etcd\",pid=123,fd=7))\nLISTEN 0 128 [::1]:8443 [::]:* users:((\"kube-apiserver\",pid=124,fd=3),(\"x\",pid=125,fd=4))\nLISTEN 0 5 *:22 *:*\n";
        let ports = parse_ss(text);
        assert_eq!(ports[&2379], BTreeSet::from([123]));
        assert_eq!(ports[&8443], BTreeSet::from([124, 125]));
        assert!(ports[&22].is_empty());
    }
}
