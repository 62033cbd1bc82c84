//! How kwire recognises what it created, so it never touches anything else.
//!
//! Three marks, all defined here and nowhere else:
//! - routes carry the `rtm_protocol` [`ROUTE_PROTOCOL`];
//! - devices carry the link alias `kwire:<namespace>/<name>` ([`device_alias`]);
//! - a small state file ([`StateFile`]) records every device kwire created.
//!   It closes the gap between creating a link and marking it (a crash there
//!   would otherwise leave an unmarked link that looks foreign), and lets an
//!   operator see what kwire believes it owns. It is written atomically and
//!   durably (temp file in the same folder, fsync, rename, fsync of the folder).
//!   A file that cannot be read or parsed (a disk error, a power loss on a file
//!   system that lost the rename) is not fatal: the daemon logs why and rebuilds
//!   the record from the kernel ([`StateFile::load_or_rebuild`],
//!   [`OwnedDevices::marked`]): devices by their alias, while routes never needed
//!   the file (their protocol marks them). Only a device created and not yet
//!   marked when both the crash and the file's loss happened looks foreign then
//!   (an `InterfaceNameConflict`, nothing is touched).
//!
//! A link with kwire's alias is owned. A link without it is owned only if the
//! state file lists its name *and* it is a WireGuard-capable link (kernel
//! `wireguard` or a wireguard-go `tun`); every other link is foreign, even
//! when its name is one kwire wants.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::model::{IfaceName, LinkKind, ObservedNode, OwnerRef, Ownership};

/// The `rtm_protocol` value on every route kwire installs: 75 (`0x4b`).
///
/// Why 75: a route's protocol is the only ownership mark the kernel keeps on
/// the route itself and checks on delete, so it has to be unique to kwire. 75
/// is free in the kernel's `include/uapi/linux/rtnetlink.h` (0–4 are the
/// kernel's own, 8–18 routing daemons, 42 babel, 84 ovn, 99 openr, 186–189 and
/// 192 the FRR protocols), in iproute2's `/etc/iproute2/rt_protos`, and among
/// the values other node agents are known to use (80 Calico Felix, 129
/// monogon; kilo, innernet and netavark use the shared `static`/`boot`, which
/// is exactly what kwire must not do). `ip route show proto 75` lists kwire's
/// routes; an administrator may add `75 kwire` to `/etc/iproute2/rt_protos.d/`.
pub const ROUTE_PROTOCOL: u8 = 75;

static CONFIGURED_ROUTE_PROTOCOL: std::sync::OnceLock<u8> = std::sync::OnceLock::new();

/// Chooses another route protocol for this process (`--route-protocol`), for a node where
/// 75 is taken. Call once, before any route is observed or written; a later call is ignored
/// and returns false, so one process never mixes two marks.
pub fn configure_route_protocol(protocol: u8) -> bool {
    CONFIGURED_ROUTE_PROTOCOL.set(protocol).is_ok()
}

/// The `rtm_protocol` that marks kwire's routes in this process.
pub fn route_protocol() -> u8 {
    *CONFIGURED_ROUTE_PROTOCOL.get_or_init(|| ROUTE_PROTOCOL)
}

/// Prefix of the link alias (`IFLA_IFALIAS`) that marks a kwire device.
pub const ALIAS_PREFIX: &str = "kwire:";

/// Default location of the state file.
pub const DEFAULT_STATE_FILE: &str = "/var/lib/kwire/node-state.json";

/// The alias kwire writes on a device it owns: `kwire:<namespace>/<name>`.
pub fn device_alias(owner: &OwnerRef) -> String {
    format!("{ALIAS_PREFIX}{owner}")
}

/// The owner named by a kwire alias, or `None` when the alias is not kwire's.
pub fn parse_alias(alias: &str) -> Option<OwnerRef> {
    alias.strip_prefix(ALIAS_PREFIX)?.parse().ok()
}

/// Decides whether a link is kwire's, and which owner its mark names.
pub fn classify_link(
    name: &IfaceName,
    kind: &LinkKind,
    alias: Option<&str>,
    recorded: &OwnedDevices,
) -> (Ownership, Option<OwnerRef>) {
    if let Some(owner) = alias.and_then(parse_alias) {
        return (Ownership::Owned, Some(owner));
    }
    if recorded.contains(name) && kind.is_wireguard_capable() {
        return (Ownership::Owned, None);
    }
    (Ownership::Foreign, None)
}

/// The devices kwire recorded as created, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnedDevices {
    #[serde(default)]
    devices: BTreeMap<String, OwnedDeviceRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnedDeviceRecord {
    pub owner: String,
}

impl OwnedDevices {
    pub fn contains(&self, name: &IfaceName) -> bool {
        self.devices.contains_key(name.as_str())
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.devices.keys().map(String::as_str)
    }

    /// Returns whether anything changed.
    pub fn insert(&mut self, name: &IfaceName, owner: &OwnerRef) -> bool {
        let record = OwnedDeviceRecord {
            owner: owner.to_string(),
        };
        self.devices.insert(name.to_string(), record.clone()) != Some(record)
    }

    /// Returns whether anything changed.
    pub fn remove(&mut self, name: &IfaceName) -> bool {
        self.devices.remove(name.as_str()).is_some()
    }

    /// The devices the kernel shows with kwire's alias: what the state file holds, as far
    /// as the kernel can tell, when the file is lost.
    pub fn marked(node: &ObservedNode) -> Self {
        let mut out = Self::default();
        for (name, device) in &node.devices {
            if let Some(owner) = &device.mark {
                out.insert(name, owner);
            }
        }
        out
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    #[error("reading state file {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("parsing state file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("writing state file {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// The persisted [`OwnedDevices`] (JSON), written atomically and durably.
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    devices: OwnedDevices,
    /// The file could not be used: the record is to be rebuilt from the kernel.
    rebuild: bool,
    /// The record changed (by a rebuild) since the file was last written.
    unsaved: bool,
}

#[derive(Serialize, Deserialize)]
struct StateFileContents {
    version: u32,
    #[serde(flatten)]
    devices: OwnedDevices,
}

impl StateFile {
    /// Loads the file; a missing file is an empty record.
    pub fn load(path: impl Into<PathBuf>) -> Result<Self, StateFileError> {
        let path = path.into();
        let devices = match std::fs::read(&path) {
            Ok(bytes) => {
                let contents: StateFileContents =
                    serde_json::from_slice(&bytes).map_err(|source| StateFileError::Parse {
                        path: path.clone(),
                        source,
                    })?;
                contents.devices
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => OwnedDevices::default(),
            Err(source) => return Err(StateFileError::Read { path, source }),
        };
        Ok(Self {
            path,
            devices,
            rebuild: false,
            unsaved: false,
        })
    }

    /// Like [`StateFile::load`], but a file that cannot be read or parsed is logged and
    /// replaced by an empty record that [`StateFile::needs_rebuild`] from the kernel
    /// ([`StateFile::rebuild`]).
    pub fn load_or_rebuild(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        match Self::load(path.clone()) {
            Ok(file) => file,
            Err(error) => {
                tracing::warn!(%error,
                    "the state file cannot be used; rebuilding it from the kernel (devices by their kwire alias; routes are known by their protocol)");
                Self {
                    path,
                    devices: OwnedDevices::default(),
                    rebuild: true,
                    unsaved: false,
                }
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn devices(&self) -> &OwnedDevices {
        &self.devices
    }

    /// Whether the file could not be loaded and the record has not been rebuilt yet.
    pub fn needs_rebuild(&self) -> bool {
        self.rebuild
    }

    /// Adds `found` (see [`OwnedDevices::marked`]) to the record, in memory; the next
    /// change or [`StateFile::save_if_unsaved`] writes the file.
    pub fn rebuild(&mut self, found: &OwnedDevices) {
        for (name, record) in &found.devices {
            let fresh = self.devices.devices.insert(name.clone(), record.clone());
            self.unsaved |= fresh.as_ref() != Some(record);
        }
        self.rebuild = false;
    }

    /// Writes the record if a rebuild changed it. Returns whether it wrote.
    pub fn save_if_unsaved(&mut self) -> Result<bool, StateFileError> {
        if !self.unsaved {
            return Ok(false);
        }
        self.save()?;
        Ok(true)
    }

    /// Records a device before it is created. Writes only when something changed.
    pub fn record(&mut self, name: &IfaceName, owner: &OwnerRef) -> Result<(), StateFileError> {
        if self.devices.insert(name, owner) || self.unsaved {
            self.save()?;
        }
        Ok(())
    }

    /// Forgets a device after it was deleted. Writes only when something changed.
    pub fn forget(&mut self, name: &IfaceName) -> Result<(), StateFileError> {
        if self.devices.remove(name) || self.unsaved {
            self.save()?;
        }
        Ok(())
    }

    /// Writes the whole record: a temp file in the same folder, fsync, rename over the
    /// file, fsync of the folder. A crash at any point leaves the old file or the new one,
    /// never a mix, and once this returns the new one survives a power loss.
    fn save(&mut self) -> Result<(), StateFileError> {
        use std::io::Write as _;
        let err = |source| StateFileError::Write {
            path: self.path.clone(),
            source,
        };
        let dir = self
            .path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(err)?;
        let contents = StateFileContents {
            version: 1,
            devices: self.devices.clone(),
        };
        let mut bytes = serde_json::to_vec_pretty(&contents).map_err(|e| err(e.into()))?;
        bytes.push(b'\n');
        let file_name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "node-state.json".into());
        let tmp = dir.join(format!(".{file_name}.tmp"));
        let written = (|| {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            drop(file);
            std::fs::rename(&tmp, &self.path)?;
            std::fs::File::open(dir)?.sync_all()
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written.map_err(err)?;
        self.unsaved = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> IfaceName {
        s.parse().unwrap()
    }

    #[test]
    fn the_route_protocol_avoids_every_reserved_and_known_value() {
        let reserved: Vec<u8> = (0..=4)
            .chain(8..=18)
            .chain([42, 84, 99, 80, 129, 192])
            .chain(186..=189)
            .collect();
        assert!(!reserved.contains(&ROUTE_PROTOCOL));
    }

    #[test]
    fn an_alias_round_trips_to_its_owner() {
        let owner: OwnerRef = "default/wg0".parse().unwrap();
        assert_eq!(device_alias(&owner), "kwire:default/wg0");
        assert_eq!(parse_alias("kwire:default/wg0"), Some(owner));
        assert_eq!(parse_alias("default/wg0"), None);
        assert_eq!(parse_alias("kwire:garbage"), None);
    }

    #[test]
    fn a_link_with_the_kwire_alias_is_owned_whatever_the_state_file_says() {
        let (o, mark) = classify_link(
            &name("wg0"),
            &LinkKind::Tun,
            Some("kwire:a/b"),
            &OwnedDevices::default(),
        );
        assert_eq!(o, Ownership::Owned);
        assert_eq!(mark, Some("a/b".parse().unwrap()));
    }

    #[test]
    fn an_unmarked_wireguard_link_in_the_state_file_is_adopted() {
        let mut rec = OwnedDevices::default();
        rec.insert(&name("wg0"), &"a/b".parse().unwrap());
        let (o, mark) = classify_link(&name("wg0"), &LinkKind::Wireguard, None, &rec);
        assert_eq!((o, mark), (Ownership::Owned, None));
    }

    #[test]
    fn an_unmarked_dummy_link_with_a_recorded_name_stays_foreign() {
        let mut rec = OwnedDevices::default();
        rec.insert(&name("wg0"), &"a/b".parse().unwrap());
        let kind = LinkKind::Other("dummy".into());
        let (o, _) = classify_link(&name("wg0"), &kind, None, &rec);
        assert_eq!(o, Ownership::Foreign);
    }

    #[test]
    fn a_same_named_link_with_a_foreign_alias_is_foreign() {
        let (o, _) = classify_link(
            &name("wg0"),
            &LinkKind::Wireguard,
            Some("uplink to HQ"),
            &OwnedDevices::default(),
        );
        assert_eq!(o, Ownership::Foreign);
    }

    #[test]
    fn the_state_file_survives_a_reload_and_is_written_only_on_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/node-state.json");
        let mut sf = StateFile::load(&path).unwrap();
        assert!(!path.exists());
        sf.record(&name("wg0"), &"a/b".parse().unwrap()).unwrap();
        let first = std::fs::metadata(&path).unwrap().modified().unwrap();
        sf.record(&name("wg0"), &"a/b".parse().unwrap()).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), first);
        let again = StateFile::load(&path).unwrap();
        assert!(again.devices().contains(&name("wg0")));
        let mut again = again;
        again.forget(&name("wg0")).unwrap();
        assert!(
            !StateFile::load(&path)
                .unwrap()
                .devices()
                .contains(&name("wg0"))
        );
    }

    fn owned_link(mark: Option<&str>, ownership: Ownership) -> crate::model::ObservedDevice {
        crate::model::ObservedDevice {
            ownership,
            mark: mark.map(|m| m.parse().unwrap()),
            kind: LinkKind::Tun,
            up: true,
            mtu: 1420,
            addresses: Default::default(),
            wireguard: None,
            forwarding: Default::default(),
        }
    }

    #[test]
    fn a_truncated_state_file_is_rebuilt_from_the_kernel_instead_of_failing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node-state.json");
        let mut sf = StateFile::load(&path).unwrap();
        sf.record(&name("wg0"), &"a/b".parse().unwrap()).unwrap();
        let whole = std::fs::read(&path).unwrap();
        // What a power loss can leave: the first bytes of the file.
        std::fs::write(&path, &whole[..whole.len() / 2]).unwrap();
        assert!(matches!(
            StateFile::load(&path),
            Err(StateFileError::Parse { .. })
        ));

        let mut sf = StateFile::load_or_rebuild(&path);
        assert!(sf.needs_rebuild());
        assert!(!sf.devices().contains(&name("wg0")));
        let mut node = ObservedNode::default();
        node.devices
            .insert(name("wg0"), owned_link(Some("a/b"), Ownership::Owned));
        node.devices
            .insert(name("wg1"), owned_link(None, Ownership::Foreign));
        sf.rebuild(&OwnedDevices::marked(&node));
        assert!(!sf.needs_rebuild());
        assert!(sf.save_if_unsaved().unwrap());
        assert!(!sf.save_if_unsaved().unwrap(), "written once");
        let again = StateFile::load(&path).unwrap();
        assert!(again.devices().contains(&name("wg0")));
        assert!(!again.devices().contains(&name("wg1")));
    }

    #[test]
    fn an_unreadable_state_file_is_rebuilt_too() {
        let dir = tempfile::tempdir().unwrap();
        // A folder where the file should be: reading fails with EISDIR.
        let path = dir.path().join("node-state.json");
        std::fs::create_dir(&path).unwrap();
        assert!(matches!(
            StateFile::load(&path),
            Err(StateFileError::Read { .. })
        ));
        let sf = StateFile::load_or_rebuild(&path);
        assert!(sf.needs_rebuild());
    }

    #[test]
    fn a_save_leaves_no_temp_file_and_replaces_a_stale_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node-state.json");
        std::fs::write(dir.path().join(".node-state.json.tmp"), "{ half").unwrap();
        let mut sf = StateFile::load(&path).unwrap();
        sf.record(&name("wg0"), &"a/b".parse().unwrap()).unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["node-state.json"]);
        assert!(
            StateFile::load(&path)
                .unwrap()
                .devices()
                .contains(&name("wg0"))
        );
    }

    /// Fuzzing the state file loader (issue 16, item 13): whatever the file holds (any
    /// bytes, a record cut short by a power loss, JSON of any shape where names and owners
    /// belong), loading it never panics, and a record it can use still works. A short pass
    /// in every test run; a long one with
    /// `KWIRE_FUZZ_CASES=<n> cargo test -p kwire-node-daemon --lib ownership::tests::fuzz -- --nocapture`
    /// (docs/fuzzing.md).
    mod fuzz {
        use super::*;
        use proptest::prelude::*;
        use serde_json::{Value, json};

        fn config() -> ProptestConfig {
            ProptestConfig {
                cases: std::env::var("KWIRE_FUZZ_CASES")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(256),
                failure_persistence: None,
                ..ProptestConfig::default()
            }
        }

        fn text() -> impl Strategy<Value = String> {
            prop_oneof![
                4 => "[a-z0-9./:-]{0,20}",
                2 => any::<String>(),
                1 => proptest::sample::select(
                    &["", "wg0", "a/b", "kwire:a/b", "sixteen-bytes-xx", "é", "/", "a/", "/b", "..", "\u{0}"][..]
                )
                .prop_map(str::to_string),
            ]
        }

        fn json_value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(Value::from),
                any::<u64>().prop_map(Value::from),
                any::<f64>().prop_map(Value::from),
                text().prop_map(Value::String),
            ];
            leaf.prop_recursive(3, 16, 4, |inner| {
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                    proptest::collection::btree_map(text(), inner, 0..4)
                        .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        /// A record of the file's shape: a version, devices by name with an owner, each
        /// part sometimes of another type.
        fn record() -> impl Strategy<Value = Value> {
            let owner = prop_oneof![
                4 => text().prop_map(|o| json!({ "owner": o })),
                1 => json_value(),
            ];
            (
                prop_oneof![
                    3 => Just(json!(1)),
                    1 => json_value(),
                ],
                proptest::collection::btree_map(text(), owner, 0..6),
                proptest::option::of((text(), json_value())),
            )
                .prop_map(|(version, devices, extra)| {
                    let mut record = json!({ "version": version, "devices": devices });
                    if let Some((key, value)) = extra {
                        record[key] = value;
                    }
                    record
                })
        }

        /// The bytes of a file: arbitrary, a record (pretty or not), or a record cut short
        /// or with bytes changed, as a power loss or a bad disk leaves it.
        fn file_bytes() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                1 => proptest::collection::vec(any::<u8>(), 0..256),
                3 => (record(), any::<bool>()).prop_map(|(r, pretty)| if pretty {
                    serde_json::to_vec_pretty(&r).unwrap()
                } else {
                    serde_json::to_vec(&r).unwrap()
                }),
                2 => (record(), any::<proptest::sample::Index>(), proptest::collection::vec(any::<u8>(), 0..4))
                    .prop_map(|(r, at, junk)| {
                        let mut bytes = serde_json::to_vec_pretty(&r).unwrap();
                        let at = at.index(bytes.len() + 1);
                        bytes.truncate(at);
                        bytes.extend(junk);
                        bytes
                    }),
            ]
        }

        fn exercise(dir: &Path, bytes: &[u8], device: &str, owner: &str) {
            let path = dir.join("node-state.json");
            std::fs::write(&path, bytes).unwrap();
            let loaded = StateFile::load(&path);
            let mut file = StateFile::load_or_rebuild(&path);
            assert_eq!(loaded.is_err(), file.needs_rebuild());
            if let Ok(loaded) = &loaded {
                assert_eq!(loaded.devices(), file.devices());
            }
            for name in file
                .devices()
                .names()
                .map(str::to_string)
                .collect::<Vec<_>>()
            {
                if let Ok(name) = IfaceName::new(name) {
                    assert!(file.devices().contains(&name));
                }
            }
            let _ = parse_alias(owner);
            let _ = parse_alias(&format!("{ALIAS_PREFIX}{owner}"));
            file.rebuild(&OwnedDevices::default());
            file.save_if_unsaved().unwrap();
            // A record the daemon writes after loading whatever was there reads back.
            if let (Ok(device), Ok(owner)) = (IfaceName::new(device), owner.parse::<OwnerRef>()) {
                file.record(&device, &owner).unwrap();
                let again = StateFile::load(&path).unwrap();
                assert!(again.devices().contains(&device));
                assert_eq!(again.devices(), file.devices());
            }
        }

        proptest! {
            #![proptest_config(config())]

            #[test]
            fn fuzz_state_file(bytes in file_bytes(), device in text(), owner in text()) {
                let dir = tempfile::tempdir().unwrap();
                exercise(dir.path(), &bytes, &device, &owner);
            }
        }
    }
}
