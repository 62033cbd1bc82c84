//! Reading kwire objects from YAML manifests, and checking them offline with the
//! same CEL rules the API server runs.

use std::sync::OnceLock;

use serde_json::Value;

use crate::crd;
use crate::v1alpha1::{GROUP, Interface, Network, Peer, Route, VERSION};

/// One document of a manifest file.
#[derive(Clone, Debug)]
pub enum KwireObject {
    Network(Box<Network>),
    Interface(Box<Interface>),
    Peer(Box<Peer>),
    Route(Box<Route>),
    /// Any other object (a Secret, a Namespace …), kept as written.
    Other {
        kind: String,
        value: Value,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("not valid YAML: {0}")]
    Yaml(String),
    #[error("document {index}: a Kubernetes object needs apiVersion and kind")]
    NotAnObject { index: usize },
    #[error("document {index} ({kind} {name}): {source}")]
    Shape {
        index: usize,
        kind: String,
        name: String,
        source: serde_json::Error,
    },
}

impl KwireObject {
    pub fn kind(&self) -> &str {
        match self {
            Self::Network(_) => "Network",
            Self::Interface(_) => "Interface",
            Self::Peer(_) => "Peer",
            Self::Route(_) => "Route",
            Self::Other { kind, .. } => kind,
        }
    }

    pub fn name(&self) -> Option<&str> {
        match self {
            Self::Network(o) => o.metadata.name.as_deref(),
            Self::Interface(o) => o.metadata.name.as_deref(),
            Self::Peer(o) => o.metadata.name.as_deref(),
            Self::Route(o) => o.metadata.name.as_deref(),
            Self::Other { value, .. } => value.pointer("/metadata/name").and_then(Value::as_str),
        }
    }
}

/// Parses every document of a (multi-document) YAML text. Empty documents are skipped.
pub fn parse_manifests(text: &str) -> Result<Vec<KwireObject>, ManifestError> {
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(text).map_err(|e| ManifestError::Yaml(e.to_string()))?;
    docs.into_iter()
        .filter(|doc| !doc.is_null())
        .enumerate()
        .map(|(index, doc)| parse_object(index, doc))
        .collect()
}

fn parse_object(index: usize, doc: Value) -> Result<KwireObject, ManifestError> {
    let (Some(api_version), Some(kind)) = (
        doc.get("apiVersion").and_then(Value::as_str),
        doc.get("kind").and_then(Value::as_str),
    ) else {
        return Err(ManifestError::NotAnObject { index });
    };
    let kind = kind.to_owned();
    if api_version != format!("{GROUP}/{VERSION}") {
        return Ok(KwireObject::Other { kind, value: doc });
    }
    let name = doc
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("<unnamed>")
        .to_owned();
    let shape = |source| ManifestError::Shape {
        index,
        kind: kind.clone(),
        name: name.clone(),
        source,
    };
    Ok(match kind.as_str() {
        "Network" => KwireObject::Network(Box::new(serde_json::from_value(doc).map_err(shape)?)),
        "Interface" => {
            KwireObject::Interface(Box::new(serde_json::from_value(doc).map_err(shape)?))
        }
        "Peer" => KwireObject::Peer(Box::new(serde_json::from_value(doc).map_err(shape)?)),
        "Route" => KwireObject::Route(Box::new(serde_json::from_value(doc).map_err(shape)?)),
        _ => KwireObject::Other { kind, value: doc },
    })
}

/// Checks an object against its CRD's schema as the API server would on create (or on
/// update, when `old` is given): required fields, lengths, ranges, list sizes, enums and
/// the CEL rules. Returns one line per problem, `path: message`. Objects of other kinds
/// pass. Rules the local CEL library cannot evaluate are reported, never passed silently.
pub fn validate_like_api_server(object: &Value, old: Option<&Value>) -> Vec<String> {
    let Some(kind) = object.get("kind").and_then(Value::as_str) else {
        return vec!["the object has no kind".into()];
    };
    let Some(schema) = schemas().iter().find(|(k, _)| k == kind).map(|(_, s)| s) else {
        return Vec::new();
    };
    let mut problems = Vec::new();
    check_structure(schema, object, "", &mut problems);
    if problems.is_empty()
        && let Err(errors) = kube_cel::Validator::new().validate(schema, object, old)
    {
        problems.extend(errors.iter().map(ToString::to_string));
    }
    problems
}

/// The OpenAPI constraints kwire's schemas use (the CEL rules are checked separately).
fn check_structure(schema: &Value, value: &Value, path: &str, problems: &mut Vec<String>) {
    let at = |p: &str| {
        if p.is_empty() {
            "<root>".to_string()
        } else {
            p.to_string()
        }
    };
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        problems.push(format!(
            "{}: Unsupported value: {value}: supported values: {}",
            at(path),
            Value::Array(allowed.clone())
        ));
    }
    match value {
        Value::Object(map) => {
            if let Some(required) = schema.get("required").and_then(Value::as_array) {
                for field in required.iter().filter_map(Value::as_str) {
                    if !map.contains_key(field) {
                        problems.push(format!("{}: Required value", join(path, field)));
                    }
                }
            }
            if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                for (key, child) in map {
                    match properties.get(key) {
                        Some(child_schema) => {
                            check_structure(child_schema, child, &join(path, key), problems)
                        }
                        // metadata is checked by the API server itself; unknown fields are pruned there.
                        None if path.is_empty() => {}
                        None => problems
                            .push(format!("{}: field not declared in schema", join(path, key))),
                    }
                }
            }
        }
        Value::Array(items) => {
            let n = items.len() as u64;
            if let Some(max) = schema
                .get("maxItems")
                .and_then(Value::as_u64)
                .filter(|m| n > *m)
            {
                problems.push(format!(
                    "{}: Too many: {n}: must have at most {max} items",
                    at(path)
                ));
            }
            if let Some(min) = schema
                .get("minItems")
                .and_then(Value::as_u64)
                .filter(|m| n < *m)
            {
                problems.push(format!(
                    "{}: Invalid value: must have at least {min} items",
                    at(path)
                ));
            }
            let list_type = schema.get("x-kubernetes-list-type").and_then(Value::as_str);
            let map_keys: Vec<&str> = schema
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|keys| keys.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let identity = |item: &Value| match list_type {
                Some("set") => Some(item.clone()),
                Some("map") => Some(Value::Array(
                    map_keys
                        .iter()
                        .map(|k| item.get(*k).cloned().unwrap_or(Value::Null))
                        .collect(),
                )),
                _ => None,
            };
            for (i, item) in items.iter().enumerate() {
                if let Some(id) = identity(item)
                    && items[..i]
                        .iter()
                        .any(|earlier| identity(earlier).as_ref() == Some(&id))
                {
                    // The wording of the API server's server-side apply.
                    problems.push(format!("{}: duplicate entries for key {id}", at(path)));
                }
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check_structure(item_schema, item, &format!("{}[{i}]", at(path)), problems);
                }
            }
        }
        Value::String(s) => {
            let n = s.chars().count() as u64;
            if let Some(max) = schema
                .get("maxLength")
                .and_then(Value::as_u64)
                .filter(|m| n > *m)
            {
                problems.push(format!(
                    "{}: Too long: may not be more than {max} bytes",
                    at(path)
                ));
            }
            if let Some(min) = schema
                .get("minLength")
                .and_then(Value::as_u64)
                .filter(|m| n < *m)
            {
                problems.push(format!(
                    "{}: Invalid value: should be at least {min} chars long",
                    at(path)
                ));
            }
        }
        Value::Number(num) => {
            let x = num.as_f64().unwrap_or_default();
            if let Some(max) = schema
                .get("maximum")
                .and_then(Value::as_f64)
                .filter(|m| x > *m)
            {
                problems.push(format!(
                    "{}: Invalid value: {num}: should be less than or equal to {max}",
                    at(path)
                ));
            }
            if let Some(min) = schema
                .get("minimum")
                .and_then(Value::as_f64)
                .filter(|m| x < *m)
            {
                problems.push(format!(
                    "{}: Invalid value: {num}: should be greater than or equal to {min}",
                    at(path)
                ));
            }
        }
        _ => {}
    }
    let expected = schema.get("type").and_then(Value::as_str);
    let matches = match (expected, value) {
        (Some("string"), Value::String(_))
        | (Some("object"), Value::Object(_))
        | (Some("array"), Value::Array(_))
        | (Some("boolean"), Value::Bool(_))
        | (Some("number"), Value::Number(_))
        | (None, _) => true,
        (Some("integer"), Value::Number(n)) => n.is_i64() || n.is_u64(),
        _ => false,
    };
    if !matches {
        let found = match value {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "list",
            Value::Object(_) => "map",
        };
        // The wording of the API server's server-side apply.
        let wanted = match expected {
            Some("integer" | "number") => "numeric (int or float)",
            Some(other) => other,
            None => "?",
        };
        problems.push(format!("{}: expected {wanted}, got {found}", at(path)));
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn schemas() -> &'static [(String, Value)] {
    static SCHEMAS: OnceLock<Vec<(String, Value)>> = OnceLock::new();
    SCHEMAS.get_or_init(|| {
        crd::all()
            .iter()
            .map(|c| (c.spec.names.kind.clone(), crd::schema_of(c)))
            .collect()
    })
}
