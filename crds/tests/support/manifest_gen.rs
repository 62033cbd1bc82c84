//! Inputs for the fuzz tests of everything that reads manifests (`kwire_crds::manifest`
//! here, and `kwire lint`, `plan`, `graph -f`, `showconf -f` in `cli/src/fuzz.rs`, which
//! includes this file): arbitrary text, and structure-aware inputs grown from the real
//! corpora, `examples/**/*.yaml` and `tests/bad-manifests/*.yaml`.
//!
//! How many cases a run tries comes from `KWIRE_FUZZ_CASES` (default [`DEFAULT_CASES`],
//! a short pass for the normal test run); a long run sets it high (docs/fuzzing.md).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::{Map, Value};

/// Cases per target in the normal test run.
pub const DEFAULT_CASES: u32 = 256;

/// The proptest configuration of every fuzz target: `KWIRE_FUZZ_CASES` cases, no
/// regression files (a failing input is kept as a named test next to the target instead).
pub fn config() -> Config {
    let cases = std::env::var("KWIRE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 2048,
        ..Config::default()
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    for path in paths {
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

/// The texts of `examples/**/*.yaml` and `tests/bad-manifests/*.yaml`.
pub fn corpus() -> &'static [String] {
    static CORPUS: OnceLock<Vec<String>> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let mut files = Vec::new();
        yaml_files(&repo().join("examples"), &mut files);
        yaml_files(&repo().join("tests/bad-manifests"), &mut files);
        let texts: Vec<String> = files
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap())
            .collect();
        assert!(texts.len() > 40, "the corpus is missing: {files:?}");
        texts
    })
}

/// Every document of the corpus, as values.
pub fn corpus_documents() -> &'static [Value] {
    static DOCS: OnceLock<Vec<Value>> = OnceLock::new();
    DOCS.get_or_init(|| {
        corpus()
            .iter()
            .flat_map(|t| serde_saphyr::from_multiple::<Value>(t).unwrap_or_default())
            .filter(|v| v.is_object())
            .collect()
    })
}

/// Strings that have broken parsers before, or sit on a rule's edge.
const EDGES: &[&str] = &[
    "",
    " ",
    "é",
    "💥",
    "\u{0}",
    "\u{202e}",
    "OgbUF/E21zi9qHf5h9H6N/iM92nnNYgRtOMhReFm730=",
    "OgbUF/Eé1zi9qHf5h9H6N/iM92nnNYgRtOMhReFm730=",
    "OgbUF/E21zi9qHf5h9H6N/iM92nnNYgRtOMhReFm731=",
    "0.0.0.0/0",
    "::/0",
    "10.1.0.1/24",
    "10.1.0.0/24",
    "10.1.0.1/33",
    "255.255.255.255/32",
    "fd00:1::1/128",
    "fd00::/7",
    "fe80::1%eth0",
    "::ffff:10.1.0.1",
    "[::1]:51820",
    "10.1.0.1:0",
    "host:99999",
    "a.b.c.example.com",
    "wg0",
    "wg0-client-xxxxx",
    "kwire:ns/name",
    "NodeLocal",
    "Secret",
    "IPv4",
    "IPv6",
    "1h",
    "0s",
    "-1",
    "65535",
    "65536",
    "18446744073709551616",
    "1e400",
    ".nan",
    "~",
    "null",
    "true",
    "a-to-b",
    "b-wg0-server",
];

/// A string: an edge value, an arbitrary one, or an edge value with a character added.
pub fn scalar_string() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(EDGES).prop_map(str::to_string),
        2 => any::<String>(),
        1 => (proptest::sample::select(EDGES), any::<char>(), any::<u8>()).prop_map(|(s, c, at)| {
            let mut s = s.to_string();
            let at = floor_char(&s, at as usize % (s.len() + 1));
            s.insert(at, c);
            s
        }),
        1 => "[a-z0-9.-]{0,300}",
    ]
}

/// A JSON value of any shape, scalars biased to [`scalar_string`] and edge numbers.
pub fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        prop_oneof![
            any::<i64>(),
            Just(i64::MIN),
            Just(i64::MAX),
            Just(0),
            Just(-1),
            Just(65536)
        ]
        .prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        scalar_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::vec((scalar_string(), inner), 0..4)
                .prop_map(|fields| Value::Object(fields.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn floor_char(s: &str, mut at: usize) -> usize {
    at = at.min(s.len());
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// YAML syntax, for text mutations.
const TOKENS: &[&str] = &[
    ": ",
    "- ",
    "\n---\n",
    "{",
    "}",
    "[",
    "]",
    ", ",
    "&a ",
    "*a",
    "<<: *a\n",
    "!!binary ",
    "!!str ",
    "'",
    "\"",
    "\n  ",
    "\n",
    "#",
    "|\n  ",
    ">-\n  ",
    "? ",
    "\t",
    "%YAML 1.2\n",
    "...\n",
    "\\u00e9",
    "\\x00",
];

#[derive(Clone, Debug)]
enum TextEdit {
    Delete(u16, u8),
    Insert(u16, String),
    Duplicate(u16, u8),
}

fn text_edit() -> impl Strategy<Value = TextEdit> {
    prop_oneof![
        (any::<u16>(), any::<u8>()).prop_map(|(at, n)| TextEdit::Delete(at, n)),
        (
            any::<u16>(),
            prop_oneof![
                proptest::sample::select(TOKENS).prop_map(str::to_string),
                scalar_string()
            ]
        )
            .prop_map(|(at, s)| TextEdit::Insert(at, s)),
        (any::<u16>(), any::<u8>()).prop_map(|(at, n)| TextEdit::Duplicate(at, n)),
    ]
}

fn apply_text_edit(text: &mut String, edit: &TextEdit) {
    let at = |pos: u16, text: &String| floor_char(text, pos as usize % (text.len() + 1));
    match edit {
        TextEdit::Delete(pos, n) => {
            let start = at(*pos, text);
            let end = floor_char(text, start + *n as usize);
            text.replace_range(start..end, "");
        }
        TextEdit::Insert(pos, s) => {
            let start = at(*pos, text);
            text.insert_str(start, s);
        }
        TextEdit::Duplicate(pos, n) => {
            let start = at(*pos, text);
            let end = floor_char(text, start + *n as usize);
            let piece = text[start..end].to_string();
            text.insert_str(end, &piece);
        }
    }
}

/// A corpus file (or two concatenated) with a few text edits.
pub fn mutated_text() -> impl Strategy<Value = String> {
    (
        any::<proptest::sample::Index>(),
        proptest::option::of(any::<proptest::sample::Index>()),
        proptest::collection::vec(text_edit(), 0..6),
    )
        .prop_map(|(first, second, edits)| {
            let corpus = corpus();
            let mut text = first.get(corpus).clone();
            if let Some(second) = second {
                text.push_str("\n---\n");
                text.push_str(second.get(corpus).as_str());
            }
            for edit in &edits {
                apply_text_edit(&mut text, edit);
            }
            text
        })
}

#[derive(Clone, Debug)]
enum ValueEdit {
    /// Replace the value at the n-th path.
    Replace(proptest::sample::Index, Value),
    /// Replace the n-th scalar with one of the same type, so that the object still fits
    /// its Rust type and reaches the code behind the parser.
    SameType(proptest::sample::Index, String, i64, bool),
    /// Remove the n-th path from its object or list.
    Remove(proptest::sample::Index),
    /// Copy the value at one path over another.
    Copy(proptest::sample::Index, proptest::sample::Index),
}

fn value_edit() -> impl Strategy<Value = ValueEdit> {
    prop_oneof![
        2 => (any::<proptest::sample::Index>(), value()).prop_map(|(i, v)| ValueEdit::Replace(i, v)),
        4 => (
            any::<proptest::sample::Index>(),
            scalar_string(),
            prop_oneof![any::<i64>(), -2i64..70000],
            any::<bool>()
        )
            .prop_map(|(i, s, n, b)| ValueEdit::SameType(i, s, n, b)),
        1 => any::<proptest::sample::Index>().prop_map(ValueEdit::Remove),
        1 => (any::<proptest::sample::Index>(), any::<proptest::sample::Index>())
            .prop_map(|(a, b)| ValueEdit::Copy(a, b)),
    ]
}

/// JSON pointers of every value inside `v` (the root excluded).
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let p = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                out.push(p.clone());
                pointers(child, p, out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                let p = format!("{at}/{i}");
                out.push(p.clone());
                pointers(child, p, out);
            }
        }
        _ => {}
    }
}

fn apply_value_edit(doc: &mut Value, edit: &ValueEdit) {
    let mut paths = Vec::new();
    pointers(doc, String::new(), &mut paths);
    if paths.is_empty() {
        return;
    }
    match edit {
        ValueEdit::Replace(i, v) => {
            if let Some(slot) = doc.pointer_mut(i.get(paths.as_slice()).as_str()) {
                *slot = v.clone();
            }
        }
        ValueEdit::SameType(i, text, number, flag) => {
            let scalars: Vec<&String> = paths
                .iter()
                .filter(|p| {
                    doc.pointer(p)
                        .is_some_and(|v| !v.is_object() && !v.is_array())
                })
                .collect();
            if scalars.is_empty() {
                return;
            }
            let path = i.get(scalars.as_slice()).as_str();
            if let Some(slot) = doc.pointer_mut(path) {
                *slot = match slot {
                    Value::String(_) => Value::String(text.clone()),
                    Value::Number(_) => Value::from(*number),
                    Value::Bool(_) => Value::Bool(*flag),
                    _ => Value::Null,
                };
            }
        }
        ValueEdit::Remove(i) => {
            let path = i.get(paths.as_slice()).as_str();
            let (parent, last) = path.rsplit_once('/').unwrap_or(("", path));
            let last = last.replace("~1", "/").replace("~0", "~");
            match doc.pointer_mut(parent) {
                Some(Value::Object(map)) => {
                    map.remove(&last);
                }
                Some(Value::Array(items)) => {
                    if let Ok(n) = last.parse::<usize>()
                        && n < items.len()
                    {
                        items.remove(n);
                    }
                }
                _ => {}
            }
        }
        ValueEdit::Copy(from, to) => {
            let value = doc.pointer(from.get(paths.as_slice()).as_str()).cloned();
            if let (Some(value), Some(slot)) =
                (value, doc.pointer_mut(to.get(paths.as_slice()).as_str()))
            {
                *slot = value;
            }
        }
    }
}

/// One to five corpus documents, each with a few edits to its tree (a field replaced by a
/// value of any shape, removed, or copied over another), written as YAML or JSON: objects
/// that parse, with values no file of the corpus holds.
pub fn mutated_documents() -> impl Strategy<Value = String> {
    (
        // The documents of one corpus file (a whole topology), or some picked anywhere.
        proptest::option::of(any::<proptest::sample::Index>()),
        proptest::collection::vec(any::<proptest::sample::Index>(), 1..6),
        // Which document each edit goes to, and the edit.
        proptest::collection::vec((any::<proptest::sample::Index>(), value_edit()), 0..5),
        any::<bool>(),
    )
        .prop_map(|(file, picks, edits, as_json)| {
            let mut docs: Vec<Value> = match file {
                Some(file) => serde_saphyr::from_multiple::<Value>(file.get(corpus()).as_str())
                    .unwrap_or_default()
                    .into_iter()
                    .filter(Value::is_object)
                    .collect(),
                None => picks
                    .iter()
                    .map(|i| i.get(corpus_documents()).clone())
                    .collect(),
            };
            if docs.is_empty() {
                return String::new();
            }
            for (which, edit) in &edits {
                let n = which.index(docs.len());
                apply_value_edit(&mut docs[n], edit);
            }
            let mut out = String::new();
            for doc in &docs {
                let text = if as_json {
                    serde_json::to_string(doc).unwrap()
                } else {
                    serde_saphyr::to_string(doc)
                        .unwrap_or_else(|_| serde_json::to_string(doc).unwrap())
                };
                out.push_str("---\n");
                out.push_str(&text);
                out.push('\n');
            }
            out
        })
}

/// Any input a manifest reader may get: arbitrary text or bytes, corpus files with text
/// edits, and corpus documents with tree edits.
pub fn manifest_text() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => any::<String>(),
        1 => proptest::collection::vec(any::<u8>(), 0..512)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        3 => mutated_text(),
        5 => mutated_documents(),
    ]
}
