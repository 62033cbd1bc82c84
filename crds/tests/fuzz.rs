//! Fuzzing `kwire_crds::manifest::parse_manifests` and `validate_like_api_server`: no input
//! may make them panic (issue 16, item 13). A short pass in every test run; a long one
//! with `KWIRE_FUZZ_CASES=<n> cargo test -p kwire-crds --test fuzz -- --nocapture`
//! (docs/fuzzing.md).

mod support;

use kwire_crds::manifest::{KwireObject, parse_manifests, validate_like_api_server};
use proptest::prelude::*;
use serde_json::Value;

use support::manifest_gen::{config, manifest_text};

/// What `kwire lint` and the typed readers do with a text: parse it, and check each object
/// the way the API server would (as a create, and as an update of itself).
fn exercise(text: &str) {
    let Ok(objects) = parse_manifests(text) else {
        return;
    };
    for object in &objects {
        let _ = (object.kind(), object.name());
        let value = match object {
            KwireObject::Network(o) => serde_json::to_value(o),
            KwireObject::Interface(o) => serde_json::to_value(o),
            KwireObject::Peer(o) => serde_json::to_value(o),
            KwireObject::Route(o) => serde_json::to_value(o),
            KwireObject::Other { value, .. } => Ok(value.clone()),
        }
        .expect("a parsed object serializes");
        let _ = validate_like_api_server(&value, None);
        let _ = validate_like_api_server(&value, Some(&value));
    }
    // Also the raw documents, which lint checks before they are typed.
    if let Ok(docs) = serde_saphyr::from_multiple::<Value>(text) {
        for doc in docs.iter().filter(|d| !d.is_null()) {
            let _ = validate_like_api_server(doc, None);
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn fuzz_parse_manifests(text in manifest_text()) {
        exercise(&text);
    }
}

#[test]
fn fuzz_the_whole_corpus_parses_without_panicking() {
    for text in support::manifest_gen::corpus() {
        exercise(text);
    }
}
