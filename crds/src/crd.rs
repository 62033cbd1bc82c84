//! The five CustomResourceDefinitions, as the API server receives them.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps,
};
use kube::CustomResourceExt;
use serde_json::Value;

use crate::schema::{CelRule, add_rules, property_mut};
use crate::v1alpha1::{Interface, Mesh, Network, Peer, Route, mesh};
use crate::v1alpha1::{interface_rules, mesh_rules, network_rules, peer_rules, route_rules};

/// Where `crdgen` writes the CRDs, relative to the workspace root.
pub const GENERATED_PATH: &str = "crds/generated/kwire.dev.yaml";

/// Every kwire CRD, with the cross-field and transition rules that the derive
/// cannot express placed on their objects.
pub fn all() -> Vec<CustomResourceDefinition> {
    vec![
        with_rules(Network::crd(), network_rules()),
        with_rules(Interface::crd(), interface_rules()),
        with_rules(Peer::crd(), peer_rules()),
        with_rules(Route::crd(), route_rules()),
        mesh_crd(),
    ]
}

/// The Mesh CRD: its rules, and the rule of every selector requirement (`matchExpressions`
/// items, which are not properties, so not reachable by a [`with_rules`] path).
fn mesh_crd() -> CustomResourceDefinition {
    let mut crd = with_rules(Mesh::crd(), mesh_rules());
    let mut schema = schema_of(&crd);
    for path in mesh::SELECTOR_PATHS {
        let target = property_mut(&mut schema, path)
            .and_then(|s| s.pointer_mut("/properties/matchExpressions/items"))
            .unwrap_or_else(|| panic!("Mesh: no selector at {path:?}"));
        add_rules(target, &[mesh::REQUIREMENT_RULE]);
    }
    crd.spec.versions[0]
        .schema
        .as_mut()
        .expect("schema present")
        .open_api_v3_schema = Some(serde_json::from_value(schema).expect("still a schema"));
    crd
}

/// The openAPIV3Schema of a CRD's only version, as JSON.
pub fn schema_of(crd: &CustomResourceDefinition) -> Value {
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("every kwire CRD has a schema");
    serde_json::to_value(schema).expect("a schema serializes")
}

fn with_rules(
    mut crd: CustomResourceDefinition,
    rules: &[(&[&str], CelRule)],
) -> CustomResourceDefinition {
    let mut schema = schema_of(&crd);
    strip_nullable(&mut schema);
    if let Some(spec_doc) = schema.pointer("/properties/spec/description").cloned() {
        schema["description"] = spec_doc;
    }
    for (path, rule) in rules {
        let target = property_mut(&mut schema, path)
            .unwrap_or_else(|| panic!("{}: no property at {path:?}", crd.spec.names.kind));
        add_rules(target, std::slice::from_ref(rule));
    }
    let schema: JSONSchemaProps = serde_json::from_value(schema).expect("still a schema");
    crd.spec.versions[0]
        .schema
        .as_mut()
        .expect("schema present")
        .open_api_v3_schema = Some(schema);
    crd
}

/// Removes `nullable` (and `null` enum members) that the derive adds to every `Option`,
/// and integer formats the API server does not know.
///
/// kwire never stores an explicit null: without `nullable` the API server prunes a null
/// before validation, so `has(self.field)` in CEL means "the user set a value". Public for
/// kinds defined outside this crate (`kwire-mesh`'s Mesh).
pub fn strip_nullable(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            map.remove("nullable");
            // schemars names Rust integer widths; the API server only knows int32/int64
            // and warns about the rest on every CRD install.
            if map
                .get("format")
                .and_then(Value::as_str)
                .is_some_and(|f| f.starts_with("uint") || f == "int8" || f == "int16")
            {
                map.remove("format");
            }
            if let Some(Value::Array(members)) = map.get_mut("enum") {
                members.retain(|m| !m.is_null());
            }
            map.values_mut().for_each(strip_nullable);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_nullable),
        _ => {}
    }
}

/// The CRDs as one multi-document YAML file, with a do-not-edit header.
pub fn to_yaml(crds: &[CustomResourceDefinition]) -> String {
    let mut out = String::from(
        "# Generated from the Rust types in crds/src by `cargo run -p kwire-crds --bin crdgen`.\n# Do not edit: change the types and run the command again.\n",
    );
    for crd in crds {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(crd).expect("a CRD serializes to YAML"));
    }
    out
}
