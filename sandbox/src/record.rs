//! The crash record: everything a sandbox made outside its own process, written down as it
//! makes it.
//!
//! A sandbox leaves things behind that outlive its process: network namespaces and the links
//! in them, processes (the control plane, the operator, node daemons and the wireguard-go
//! processes they start, socat relays, the far sides of external Peers), folders, and
//! wireguard-go's UAPI sockets. Dropping a [`crate::sandbox::Sandbox`] removes them all; a
//! process that never runs its destructors (SIGKILL, an abort, a closed terminal) cannot. So
//! every sandbox keeps a [`Record`] in `/run/kwire-sandbox/<id>.json`, rewritten each time it
//! makes something, before making it whenever the name is chosen beforehand (so that a crash
//! in between leaves a name too many, never a thing unrecorded). `kwire sandbox down` reads
//! the records of sandboxes whose process has ended and removes what they list
//! ([`crate::teardown`]).
//!
//! `/run` is a tmpfs: records vanish at reboot, together with everything they describe.
//! A process is recorded with its start time (field 22 of `/proc/<pid>/stat`) and a record
//! with the boot it was written in, so that a pid reused by a later process is never taken
//! for the recorded one.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext as _, Result};

/// Where records are kept unless [`RECORD_DIR_ENV`] says otherwise.
pub const DEFAULT_RECORD_DIR: &str = "/run/kwire-sandbox";

/// Overrides [`DEFAULT_RECORD_DIR`] (for a machine whose `/run` is not writable, or to keep
/// experiments apart).
pub const RECORD_DIR_ENV: &str = "KWIRE_SANDBOX_RECORDS";

/// The format of [`Record`]; a newer format is not read by an older `kwire`.
pub const RECORD_VERSION: u32 = 1;

/// The folder holding the records.
pub fn record_dir() -> PathBuf {
    std::env::var_os(RECORD_DIR_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_RECORD_DIR))
}

/// A process as it was when recorded: a later process that gets the same pid has another
/// start time.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "camelCase")]
pub struct ProcessId {
    pub pid: u32,
    /// Clock ticks after boot (`/proc/<pid>/stat`, field 22).
    pub start_time: u64,
}

impl ProcessId {
    /// The process running as `pid` now; `None` when there is none or it is a zombie (it has
    /// ended, only its exit status is left).
    pub fn of(pid: u32) -> Option<Self> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (state, start_time) = parse_stat(&text)?;
        (state != 'Z' && state != 'X').then_some(Self { pid, start_time })
    }

    /// This process.
    pub fn current() -> Result<Self> {
        let pid = std::process::id();
        Self::of(pid).ok_or_else(|| Error::Unexpected(format!("cannot read /proc/{pid}/stat")))
    }

    /// Whether this very process still runs.
    pub fn is_running(&self) -> bool {
        Self::of(self.pid) == Some(*self)
    }
}

/// The state and the start time in a `/proc/<pid>/stat` line. The command name (field 2)
/// is in parentheses and may hold spaces and parentheses itself, so fields are counted
/// from the last `)`.
pub fn parse_stat(text: &str) -> Option<(char, u64)> {
    let rest = text.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // After the state (field 3) comes field 4; the start time is field 22.
    let start_time = fields.nth(18)?.parse().ok()?;
    Some((state, start_time))
}

/// This boot's identity; a record from another boot names no running process.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The inode of network namespace `name` (its `/run/netns` bind mount), which tells it from
/// a later namespace given the same name.
pub fn netns_inode(name: &str) -> Option<u64> {
    std::fs::metadata(Path::new("/run/netns").join(name))
        .ok()
        .map(|m| m.ino())
}

/// A network namespace the sandbox made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordedNetns {
    pub name: String,
    /// Known once it exists; `None` when the sandbox ended between naming and making it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inode: Option<u64>,
}

/// A link (veth end, bridge) the sandbox made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordedLink {
    pub name: String,
    /// The namespace it was made in; `None` for the host's own. A link inside a namespace
    /// goes with the namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
}

/// A process the sandbox started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordedProcess {
    #[serde(flatten)]
    pub id: ProcessId,
    /// What it is, for reports (`kwire-operator`, `etcd`, `kwire-node on a`).
    pub what: String,
    /// The network namespace it runs in, if not the host's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
}

/// Everything one sandbox made.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub version: u32,
    /// `<pid>-<n>`, also in the run folder's name (`kwire-sandbox-<id>`).
    pub id: String,
    /// The process that made the sandbox; its end is what makes the record stale.
    pub owner: ProcessId,
    /// Its command line, for reports.
    pub owner_command: String,
    /// The boot the record was written in.
    pub boot_id: String,
    pub created_unix: u64,
    /// The Kubernetes namespace the manifests were applied into.
    pub namespace: String,
    /// The manifest files.
    pub files: Vec<PathBuf>,
    /// The admin kubeconfig, while the control plane runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<PathBuf>,
    #[serde(default)]
    pub netns: Vec<RecordedNetns>,
    #[serde(default)]
    pub links: Vec<RecordedLink>,
    #[serde(default)]
    pub processes: Vec<RecordedProcess>,
    #[serde(default)]
    pub folders: Vec<PathBuf>,
    /// wireguard-go UAPI sockets made on the host (`/var/run/wireguard/<device>.sock`).
    #[serde(default)]
    pub sockets: Vec<PathBuf>,
    /// TCP ports the sandbox's processes listen on in the host's namespace.
    #[serde(default)]
    pub ports: Vec<u16>,
    /// Cgroup roots of kubelet nodes (`/sys/fs/cgroup/<hierarchy>/kwire-…`): the containers
    /// run in them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cgroups: Vec<PathBuf>,
}

/// The record file of a running sandbox: every change is written at once (to a temporary
/// file renamed over the record, so a reader never sees half a record).
///
/// Dropping it removes whatever the record still lists (the sandbox's own teardown has
/// normally removed everything by then; this is the safety net for what it missed), then
/// the record file itself.
#[derive(Debug)]
pub struct Ledger {
    path: PathBuf,
    record: Mutex<Record>,
}

impl Ledger {
    /// Starts the record `<id>.json` of a sandbox owned by this process, in [`record_dir`].
    pub fn create(id: &str, namespace: &str, files: &[PathBuf]) -> Result<Self> {
        Self::create_in(&record_dir(), id, namespace, files)
    }

    /// [`Ledger::create`] in `dir`.
    pub fn create_in(dir: &Path, id: &str, namespace: &str, files: &[PathBuf]) -> Result<Self> {
        std::fs::create_dir_all(dir).io(|| format!("creating {}", dir.display()))?;
        let record = Record {
            version: RECORD_VERSION,
            id: id.to_string(),
            owner: ProcessId::current()?,
            owner_command: std::env::args().collect::<Vec<_>>().join(" "),
            boot_id: boot_id(),
            created_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            namespace: namespace.to_string(),
            files: files
                .iter()
                .map(|f| std::path::absolute(f).unwrap_or_else(|_| f.clone()))
                .collect(),
            ..Record::default()
        };
        let ledger = Self {
            path: dir.join(format!("{id}.json")),
            record: Mutex::new(record),
        };
        ledger.update(|_| {})?;
        Ok(ledger)
    }

    pub fn id(&self) -> String {
        self.lock().id.clone()
    }

    /// The record file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The record as written now.
    pub fn snapshot(&self) -> Record {
        self.lock().clone()
    }

    fn lock(&self) -> MutexGuard<'_, Record> {
        // A panic while holding the lock left a record that is still worth writing.
        self.record
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn update(&self, change: impl FnOnce(&mut Record)) -> Result<()> {
        let mut record = self.lock();
        change(&mut record);
        let text = serde_json::to_string_pretty(&*record).map_err(|source| Error::Json {
            what: "encoding the sandbox record".into(),
            source,
        })?;
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // A dot name without `.json`: readers skip it.
        let temporary = self.path.with_file_name(format!(".{name}.tmp"));
        std::fs::write(&temporary, text).io(|| format!("writing {}", temporary.display()))?;
        std::fs::rename(&temporary, &self.path).io(|| format!("writing {}", self.path.display()))
    }

    /// A network namespace about to be made.
    pub fn netns(&self, name: &str) -> Result<()> {
        self.update(|r| {
            r.netns.push(RecordedNetns {
                name: name.to_string(),
                inode: None,
            })
        })
    }

    /// Network namespace `name` (recorded with [`Ledger::netns`]) now exists.
    pub fn netns_made(&self, name: &str) -> Result<()> {
        let inode = netns_inode(name);
        self.update(|r| {
            if let Some(ns) = r.netns.iter_mut().find(|n| n.name == name) {
                ns.inode = inode;
            }
        })
    }

    /// A link about to be made in `netns` (`None`: the host's namespace).
    pub fn link(&self, name: &str, netns: Option<&str>) -> Result<()> {
        self.update(|r| {
            r.links.push(RecordedLink {
                name: name.to_string(),
                netns: netns.map(str::to_owned),
            })
        })
    }

    /// A process just started. One that has already ended is not recorded.
    pub fn process(&self, pid: u32, what: &str, netns: Option<&str>) -> Result<()> {
        let Some(id) = ProcessId::of(pid) else {
            return Ok(());
        };
        self.update(|r| {
            r.processes.push(RecordedProcess {
                id,
                what: what.to_string(),
                netns: netns.map(str::to_owned),
            })
        })
    }

    /// A folder about to be made.
    pub fn folder(&self, path: &Path) -> Result<()> {
        self.update(|r| r.folders.push(path.to_path_buf()))
    }

    /// A folder the sandbox keeps on purpose (`KWIRE_KEEP_RUN_DIR`): teardown leaves it.
    pub fn forget_folder(&self, path: &Path) -> Result<()> {
        self.update(|r| r.folders.retain(|f| f != path))
    }

    /// Cgroup folders about to be made (a kubelet node's cgroup root).
    pub fn cgroups(&self, paths: &[PathBuf]) -> Result<()> {
        self.update(|r| r.cgroups.extend(paths.iter().cloned()))
    }

    /// A UAPI socket about to be made on the host.
    pub fn socket(&self, path: &Path) -> Result<()> {
        self.update(|r| r.sockets.push(path.to_path_buf()))
    }

    /// TCP ports the sandbox's processes listen on (added to those known).
    pub fn ports(&self, ports: &[u16]) -> Result<()> {
        self.update(|r| {
            r.ports.extend(ports);
            r.ports.sort_unstable();
            r.ports.dedup();
        })
    }

    /// The admin kubeconfig of the sandbox's control plane.
    pub fn kubeconfig(&self, path: &Path) -> Result<()> {
        self.update(|r| r.kubeconfig = Some(path.to_path_buf()))
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        let record = self.snapshot();
        let outcome = crate::teardown::remove_own(&record, &self.path);
        for failure in outcome.failed {
            eprintln!("kwire sandbox {}: {failure}", record.id);
        }
    }
}

/// One file of the record folder: its record, or why it could not be read.
#[derive(Debug)]
pub struct RecordFile {
    pub path: PathBuf,
    pub record: std::result::Result<Record, String>,
}

/// Every record in `dir` (none when the folder does not exist), in name order.
pub fn read_records(dir: &Path) -> Result<Vec<RecordFile>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(Error::Io {
                what: format!("reading {}", dir.display()),
                source,
            });
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "json")
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    paths.sort();
    Ok(paths
        .into_iter()
        .map(|path| {
            let record = std::fs::read_to_string(&path)
                .map_err(|e| e.to_string())
                .and_then(|text| parse_record(&text));
            RecordFile { path, record }
        })
        .collect())
}

/// A record file's text.
pub fn parse_record(text: &str) -> std::result::Result<Record, String> {
    let record: Record = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if record.version > RECORD_VERSION {
        return Err(format!(
            "record format {} is newer than this kwire's ({RECORD_VERSION})",
            record.version
        ));
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let line = "4242 (kwire (sandbox) up) S 1 4242 4242 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 987654 1000 100 18446744073709551615";
        assert_eq!(parse_stat(line), Some(('S', 987654)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn this_process_is_running_and_a_changed_start_time_is_not() {
        let me = ProcessId::current().unwrap();
        assert!(me.is_running());
        let other = ProcessId {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(!other.is_running());
    }

    #[test]
    fn a_ledger_writes_every_change_and_reads_back() {
        let dir = std::env::temp_dir().join(format!("kwire-record-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let ledger = Ledger::create_in(&dir, "1-0", "seed", &[PathBuf::from("x.yaml")]).unwrap();
        ledger.netns("kwa1x0").unwrap();
        ledger.link("p1x1", Some("kwsw1x0")).unwrap();
        ledger
            .process(std::process::id(), "this test", None)
            .unwrap();
        ledger.ports(&[8443, 2379, 8443]).unwrap();
        let files = read_records(&dir).unwrap();
        assert_eq!(files.len(), 1);
        let record = files[0].record.clone().unwrap();
        assert_eq!(record, ledger.snapshot());
        assert_eq!(record.ports, vec![2379, 8443]);
        assert_eq!(record.netns[0].inode, None);
        assert!(record.files[0].is_absolute());
        // Not dropped: its sweep would treat this test process as the sandbox's own process.
        std::mem::forget(ledger);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_newer_record_format_is_refused() {
        let text = serde_json::to_string(&Record {
            version: RECORD_VERSION + 1,
            ..Record::default()
        })
        .unwrap();
        assert!(parse_record(&text).unwrap_err().contains("newer"));
    }
}
