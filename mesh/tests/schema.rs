//! The Mesh schema: what the API server will accept and reject once the CRD is installed,
//! checked with the same CEL library `kwire lint` uses for the other kinds.

use kwire_mesh::api::{self, Mesh, TopologyType};
use serde_json::{Value, json};

fn mesh(spec: Value) -> Value {
    json!({
        "apiVersion": "kwire.dev/v1alpha1",
        "kind": "Mesh",
        "metadata": {"name": "overlay", "namespace": "net"},
        "spec": spec,
    })
}

fn problems(object: &Value) -> Vec<String> {
    match kube_cel::Validator::new().validate(&api::schema(), object, None) {
        Ok(()) => Vec::new(),
        Err(e) => e.into_vec().iter().map(ToString::to_string).collect(),
    }
}

fn rejected_with(object: Value, field: &str, message: &str) {
    let p = problems(&object);
    assert!(
        p.iter().any(|p| p.contains(field) && p.contains(message)),
        "expected {field}: {message}, got {p:?}"
    );
}

#[test]
fn the_examples_of_each_topology_are_accepted_and_read_back() {
    let full = json!({
        "nodeSelector": {"matchLabels": {"kwire.dev/mesh": "overlay"}},
        "networks": [{"name": "overlay-v4"}, {"name": "overlay-v6"}],
        "announce": {"podCIDRs": true},
    });
    let hub = json!({
        "nodeSelector": {},
        "topology": {"type": "HubAndSpoke", "hubAndSpoke": {"hubSelector": {"matchLabels": {"role": "hub"}}}},
        "networks": [{"name": "overlay-v4"}],
        "device": {"deviceName": "wgmesh", "listenPort": 51900, "persistentKeepalive": 25},
    });
    let sites = json!({
        "nodeSelector": {"matchExpressions": [{"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]}]},
        "topology": {"type": "Locations", "locations": {"label": "site", "gatewayAddress": "ExternalIP",
            "gatewaySelector": {"matchExpressions": [{"key": "no-gateway", "operator": "DoesNotExist"}]}}},
        "networks": [{"name": "overlay-v4"}],
        "device": {"keyRotation": {"every": "720h"}},
        "announce": {"prefixes": [{"nodeName": "edge-1", "cidrs": ["192.168.10.0/24"]}]},
    });
    for spec in [full, hub, sites] {
        let object = mesh(spec);
        assert_eq!(problems(&object), Vec::<String>::new(), "{object}");
        let read: Mesh = serde_json::from_value(object).unwrap();
        assert_eq!(
            read.spec.device.listen_port == 51820,
            read.spec.device.device_name.is_none()
        );
    }
    let read: Mesh = serde_json::from_value(mesh(json!({
        "nodeSelector": {}, "networks": [{"name": "n"}]
    })))
    .unwrap();
    assert_eq!(
        read.spec.topology.type_,
        TopologyType::FullMesh,
        "the default topology"
    );
    assert_eq!(read.spec.location_label(), "topology.kubernetes.io/zone");
}

#[test]
fn hub_and_spoke_needs_its_hub_selector_and_only_it() {
    rejected_with(
        mesh(
            json!({"nodeSelector": {}, "networks": [{"name": "n"}], "topology": {"type": "HubAndSpoke"}}),
        ),
        "spec.topology.hubAndSpoke",
        "set exactly when spec.topology.type is HubAndSpoke",
    );
    rejected_with(
        mesh(json!({"nodeSelector": {}, "networks": [{"name": "n"}],
            "topology": {"hubAndSpoke": {"hubSelector": {}}}})),
        "spec.topology.hubAndSpoke",
        "set exactly when spec.topology.type is HubAndSpoke",
    );
    rejected_with(
        mesh(json!({"nodeSelector": {}, "networks": [{"name": "n"}],
            "topology": {"type": "FullMesh", "locations": {}}})),
        "spec.topology.locations",
        "only for spec.topology.type Locations",
    );
}

#[test]
fn selector_requirements_need_values_exactly_for_in_and_notin() {
    rejected_with(
        mesh(
            json!({"nodeSelector": {"matchExpressions": [{"key": "zone", "operator": "In"}]},
            "networks": [{"name": "n"}]}),
        ),
        "spec.nodeSelector.matchExpressions[0]",
        "In and NotIn need at least one value",
    );
    rejected_with(
        mesh(json!({"nodeSelector": {}, "networks": [{"name": "n"}],
            "topology": {"type": "Locations", "locations": {"gatewaySelector":
                {"matchExpressions": [{"key": "gw", "operator": "Exists", "values": ["x"]}]}}}})),
        "gatewaySelector.matchExpressions[0]",
        "Exists and DoesNotExist take no values",
    );
    rejected_with(
        mesh(json!({"nodeSelector": {}, "networks": [{"name": "n"}],
            "topology": {"type": "HubAndSpoke", "hubAndSpoke": {"hubSelector":
                {"matchExpressions": [{"key": "hub", "operator": "NotIn", "values": []}]}}}})),
        "hubSelector.matchExpressions[0]",
        "In and NotIn need at least one value",
    );
}

#[test]
fn device_rules_match_the_interface_rules() {
    rejected_with(
        mesh(json!({"nodeSelector": {}, "networks": [{"name": "n"}],
            "device": {"keyMode": "NodeLocal", "keyRotation": {"every": "720h"}}})),
        "spec.device.keyRotation",
        "cannot be used with keyMode NodeLocal",
    );
    rejected_with(
        mesh(json!({"nodeSelector": {}, "networks": [{"name": "n"}],
            "device": {"keyRotation": {"every": "30s"}}})),
        "spec.device.keyRotation.every",
        "at least 1m",
    );
    let mut long = mesh(json!({"nodeSelector": {}, "networks": [{"name": "n"}]}));
    long["metadata"]["name"] = json!("a-mesh-name-of-many-characters");
    rejected_with(
        long.clone(),
        "spec.device.deviceName",
        "set spec.device.deviceName",
    );
    long["spec"]["device"] = json!({"deviceName": "wgmesh"});
    assert_eq!(problems(&long), Vec::<String>::new());
}

#[test]
fn the_schema_is_bounded_and_has_no_nullable() {
    let schema = api::schema();
    let text = schema.to_string();
    assert!(
        !text.contains("\"nullable\""),
        "has() must mean the user set the field"
    );
    let spec = &schema["properties"]["spec"]["properties"];
    assert_eq!(spec["networks"]["maxItems"], 2);
    assert_eq!(
        spec["nodeSelector"]["properties"]["matchExpressions"]["maxItems"],
        16
    );
    assert_eq!(spec["announce"]["properties"]["prefixes"]["maxItems"], 256);
    let status = &schema["properties"]["status"]["properties"];
    assert_eq!(status["unreadyMembers"]["maxItems"], 16);
    assert_eq!(status["locations"]["maxItems"], 256);
    assert_eq!(
        spec["nodeSelector"]["properties"]["matchExpressions"]["items"]["properties"]["operator"]["enum"],
        json!(["In", "NotIn", "Exists", "DoesNotExist"])
    );
}

#[test]
fn the_mesh_is_a_registered_kind_with_its_rules() {
    // The operator acts on Meshes, so the kind is installed with the others (crdgen, the
    // chart, docs/api.md): see docs/decisions/0010-mesh-kind.md.
    let kinds: Vec<String> = kwire_crds::crd::all()
        .iter()
        .map(|c| c.spec.names.kind.clone())
        .collect();
    assert!(kinds.contains(&"Mesh".to_string()), "{kinds:?}");
    let yaml = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../crds/generated/kwire.dev.yaml"
    ))
    .unwrap();
    assert!(yaml.contains("kind: Mesh"), "crds/generated is stale");
    let schema = api::schema();
    let rules = schema.pointer(
        "/properties/spec/properties/nodeSelector/properties/matchExpressions/items/x-kubernetes-validations",
    );
    assert!(rules.is_some_and(|r| {
        r.to_string()
            .contains("In and NotIn need at least one value")
    }));
}

#[test]
fn the_example_in_the_decision_record_is_accepted() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/decisions/0010-mesh-kind.md"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let start = text.find("```yaml\n").expect("a yaml block") + "```yaml\n".len();
    let end = start + text[start..].find("```").unwrap();
    let object: Value = serde_saphyr::from_str(&text[start..end]).unwrap();
    assert_eq!(problems(&object), Vec::<String>::new());
    let mesh: Mesh = serde_json::from_value(object).unwrap();
    assert_eq!(mesh.spec.topology.type_, TopologyType::Locations);
}
