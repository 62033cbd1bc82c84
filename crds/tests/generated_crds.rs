//! The checked-in CRD YAML must be what the Rust types generate.

use std::path::Path;

#[test]
fn checked_in_crds_match_the_types() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let expected = kwire_crds::crd::to_yaml(&kwire_crds::crd::all());
    for file in [
        kwire_crds::crd::GENERATED_PATH,
        "charts/kwire/crds/kwire.dev.yaml",
    ] {
        let path = root.join(file);
        if file.starts_with("charts/") && !root.join("charts/kwire/Chart.yaml").exists() {
            continue;
        }
        let found = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        assert!(
            found == expected,
            "{file} is stale: run `cargo run -p kwire-crds --bin crdgen -- --write` and commit the result"
        );
    }
}

#[test]
fn checked_in_api_reference_matches_the_types() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(kwire_crds::docs::API_DOC_PATH);
    let found = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        found == kwire_crds::docs::api_reference(),
        "docs/api.md is stale: run `cargo run -p kwire-crds --bin crdgen -- --write` and commit the result"
    );
}

#[test]
fn every_kind_has_status_short_name_category_and_ready_column() {
    for crd in kwire_crds::crd::all() {
        let kind = &crd.spec.names.kind;
        assert_eq!(crd.spec.scope, "Namespaced", "{kind}");
        assert_eq!(
            crd.spec.names.categories.as_deref(),
            Some(&["kwire".to_string()][..]),
            "{kind}"
        );
        assert!(
            crd.spec
                .names
                .short_names
                .as_ref()
                .is_some_and(|s| !s.is_empty()),
            "{kind}"
        );
        let version = &crd.spec.versions[0];
        assert!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some(),
            "{kind}"
        );
        let columns = version
            .additional_printer_columns
            .as_deref()
            .unwrap_or_default();
        assert!(
            columns.iter().any(|c| c.name == "Ready"),
            "{kind} has no Ready column"
        );
        let schema = kwire_crds::crd::schema_of(&crd);
        let conditions = schema
            .pointer("/properties/status/properties/conditions")
            .unwrap_or_else(|| panic!("{kind} has no status.conditions"));
        assert_eq!(conditions["x-kubernetes-list-type"], "map", "{kind}");
        assert_eq!(
            conditions["x-kubernetes-list-map-keys"][0], "type",
            "{kind}"
        );
        assert!(
            schema
                .pointer("/properties/status/properties/observedGeneration")
                .is_some(),
            "{kind} has no status.observedGeneration"
        );
    }
}

#[test]
fn interface_node_name_is_a_selectable_field() {
    let crds = kwire_crds::crd::all();
    let interface = crds
        .iter()
        .find(|c| c.spec.names.kind == "Interface")
        .unwrap();
    let selectable = interface.spec.versions[0]
        .selectable_fields
        .as_deref()
        .unwrap_or_default();
    assert!(selectable.iter().any(|f| f.json_path == ".spec.nodeName"));
}
