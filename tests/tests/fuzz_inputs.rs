//! Fuzzing what `kwire sandbox down` reads (issue 16, item 13): the crash record parser
//! (`kwire_sandbox::record::parse_record`) and the teardown planner it feeds, plus the two
//! small parsers of what the machine reports (`/proc/<pid>/stat`, whose command name any
//! process chooses, and `ss -Hltnp`). No input may make them panic. A short pass in every
//! test run; a long one with
//! `KWIRE_FUZZ_CASES=<n> cargo test -p kwire-tests --test fuzz_inputs -- --nocapture`
//! (docs/fuzzing.md).

use std::path::PathBuf;

use kwire_sandbox::record::{
    ProcessId, Record, RecordedLink, RecordedNetns, RecordedProcess, parse_record, parse_stat,
};
use kwire_sandbox::teardown::{Action, Observed, Options, parse_ss, plan};
use proptest::prelude::*;
use serde_json::Value;

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
        4 => "[a-z0-9./-]{0,24}",
        2 => any::<String>(),
        1 => proptest::sample::select(
            &["", "/", "/tmp/kwire-sandbox-1-0", "..", "/var/run/wireguard/wg0.sock", "kwa1x0", "\u{0}", "é"][..]
        )
        .prop_map(str::to_string),
    ]
}

fn process_id() -> impl Strategy<Value = ProcessId> {
    (
        prop_oneof![any::<u32>(), 0u32..4, Just(std::process::id())],
        any::<u64>(),
    )
        .prop_map(|(pid, start_time)| ProcessId { pid, start_time })
}

fn record() -> impl Strategy<Value = Record> {
    let netns = (text(), proptest::option::of(any::<u64>()))
        .prop_map(|(name, inode)| RecordedNetns { name, inode });
    let link = (text(), proptest::option::of(text()))
        .prop_map(|(name, netns)| RecordedLink { name, netns });
    let process = (process_id(), text(), proptest::option::of(text()))
        .prop_map(|(id, what, netns)| RecordedProcess { id, what, netns });
    let paths = || proptest::collection::vec(text().prop_map(PathBuf::from), 0..3);
    (
        (
            0u32..3,
            text(),
            process_id(),
            text(),
            text(),
            any::<u64>(),
            text(),
        ),
        (
            paths(),
            proptest::option::of(text().prop_map(PathBuf::from)),
            proptest::collection::vec(netns, 0..3),
            proptest::collection::vec(link, 0..3),
            proptest::collection::vec(process, 0..4),
            paths(),
            paths(),
            proptest::collection::vec(any::<u16>(), 0..3),
            paths(),
        ),
    )
        .prop_map(
            |(
                (version, id, owner, owner_command, boot_id, created_unix, namespace),
                (files, kubeconfig, netns, links, processes, folders, sockets, ports, cgroups),
            )| Record {
                version,
                id,
                owner,
                owner_command,
                boot_id,
                created_unix,
                namespace,
                files,
                kubeconfig,
                netns,
                links,
                processes,
                folders,
                sockets,
                ports,
                cgroups,
            },
        )
}

/// A JSON value of any shape, to put where a field of the record should be.
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

const FIELDS: &[&str] = &[
    "version",
    "id",
    "owner",
    "ownerCommand",
    "bootId",
    "createdUnix",
    "namespace",
    "files",
    "kubeconfig",
    "netns",
    "links",
    "processes",
    "folders",
    "sockets",
    "ports",
    "cgroups",
    "pid",
    "startTime",
];

/// The text of a record file: arbitrary; a record as `Ledger` writes it; with one field
/// replaced by a value of any shape or removed; or cut short.
fn record_text() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => any::<String>(),
        1 => proptest::collection::vec(any::<u8>(), 0..256)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        2 => record().prop_map(|r| serde_json::to_string_pretty(&r).unwrap()),
        3 => (record(), proptest::sample::select(FIELDS), proptest::option::of(json_value()))
            .prop_map(|(r, field, value)| {
                let mut v = serde_json::to_value(&r).unwrap();
                let map = v.as_object_mut().unwrap();
                match value {
                    Some(value) => {
                        map.insert(field.to_string(), value);
                    }
                    None => {
                        map.remove(field);
                    }
                }
                v.to_string()
            }),
        2 => (record(), any::<proptest::sample::Index>()).prop_map(|(r, at)| {
            let text = serde_json::to_string_pretty(&r).unwrap();
            let mut at = at.index(text.len() + 1);
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            text[..at].to_string()
        }),
    ]
}

/// What the machine shows of a record: its owner running or not, its namespaces, links
/// and paths there or not.
fn observed_for(record: &Record, owner_running: bool, present: &[bool]) -> Observed {
    let mut flags = present.iter().copied().cycle();
    let mut next = || flags.next().unwrap_or(true);
    let mut observed = Observed {
        boot_id: if next() {
            record.boot_id.clone()
        } else {
            "another boot".into()
        },
        me: std::process::id(),
        ..Observed::default()
    };
    if owner_running {
        observed
            .processes
            .insert(record.owner.pid, record.owner.start_time);
    }
    for p in &record.processes {
        if next() {
            observed.processes.insert(p.id.pid, p.id.start_time);
        }
    }
    for n in &record.netns {
        if next() {
            let inode = if next() { n.inode } else { Some(7) };
            observed.netns.insert(n.name.clone(), inode);
            if let Some(p) = record.processes.first() {
                observed
                    .netns_processes
                    .insert(n.name.clone(), vec![(p.id, p.what.clone())]);
            }
        }
    }
    for l in &record.links {
        if next() {
            observed.host_links.insert(l.name.clone());
        }
    }
    for path in record
        .folders
        .iter()
        .chain(&record.sockets)
        .chain(&record.cgroups)
    {
        if next() {
            observed.paths.insert(path.clone());
        }
    }
    for c in &record.cgroups {
        if next() {
            observed
                .cgroup_processes
                .insert(c.clone(), vec![(record.owner, "containerd".into())]);
        }
    }
    observed
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn fuzz_parse_record(
        texts in proptest::collection::vec(record_text(), 1..4),
        owner_running in any::<bool>(),
        present in proptest::collection::vec(any::<bool>(), 1..16),
        force in any::<bool>(),
        pick in proptest::option::of(text()),
    ) {
        let records: Vec<(PathBuf, Record)> = texts
            .iter()
            .enumerate()
            .filter_map(|(i, t)| Some((PathBuf::from(format!("/run/kwire-sandbox/{i}.json")), parse_record(t).ok()?)))
            .collect();
        let Some((_, first)) = records.first() else {
            return Ok(());
        };
        let observed = observed_for(first, owner_running, &present);
        let ids = match pick {
            Some(id) => vec![id, first.id.clone()],
            None => Vec::new(),
        };
        let decided = plan(&records, &observed, &Options { ids, force });
        // The process doing the teardown, and each sandbox's owner, are never killed.
        let me = std::process::id();
        for sandbox in &decided.sandboxes {
            for action in &sandbox.actions {
                if let Action::Kill { process, .. } = action {
                    prop_assert_ne!(process.pid, me, "{:?}", action);
                    prop_assert_ne!(*process, sandbox.owner, "{:?}", action);
                }
            }
        }
    }

    #[test]
    fn fuzz_parse_stat_and_ss(comm in any::<String>(), fields in "[0-9A-Za-z ()-]{0,80}", text in any::<String>()) {
        let _ = parse_stat(&text);
        let line = format!("4242 ({comm}) {fields}");
        let _ = parse_stat(&line);
        let _ = parse_ss(&text);
        let _ = parse_ss(&format!("LISTEN 0 4096 {comm}:{fields} *:* users:((\"x\",pid={fields},fd=3))"));
    }
}

#[test]
fn fuzz_a_record_the_generator_makes_parses_back() {
    use proptest::strategy::ValueTree as _;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = record();
    for _ in 0..64 {
        let r = strategy.new_tree(&mut runner).unwrap().current();
        let back = parse_record(&serde_json::to_string(&r).unwrap());
        if r.version <= kwire_sandbox::record::RECORD_VERSION {
            assert_eq!(back.as_ref(), Ok(&r));
        } else {
            assert!(back.unwrap_err().contains("newer"));
        }
    }
}
