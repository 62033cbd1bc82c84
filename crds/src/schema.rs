//! Building blocks for the OpenAPI schema of kwire's CRDs.
//!
//! Validation lives in the schema so that the API server rejects bad input at
//! `kubectl apply`. Each rule carries a message that names the expected form;
//! the API server prefixes it with the path of the offending field.

use schemars::Schema;
use serde_json::{Value, json};

/// A CEL rule with the message a person sees when it fails.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CelRule {
    pub rule: &'static str,
    pub message: &'static str,
    /// Relative JSON path reported as the failing field (for rules placed on a parent object).
    pub field_path: Option<&'static str>,
}

impl CelRule {
    pub const fn new(rule: &'static str, message: &'static str) -> Self {
        Self {
            rule,
            message,
            field_path: None,
        }
    }

    pub const fn at(mut self, field_path: &'static str) -> Self {
        self.field_path = Some(field_path);
        self
    }

    pub fn to_json(&self) -> Value {
        let mut v = json!({ "rule": self.rule, "message": self.message });
        if let Some(path) = self.field_path {
            v["fieldPath"] = json!(path);
        }
        v
    }
}

/// A string schema with length bounds (bounds keep CEL cost estimates within the API server's limits).
pub fn string_schema(min_len: u32, max_len: u32, rules: &[CelRule]) -> Schema {
    let mut v = json!({ "type": "string", "minLength": min_len, "maxLength": max_len });
    add_rules(&mut v, rules);
    Schema::try_from(v).expect("a JSON object is a schema")
}

/// Appends CEL rules to a schema given as JSON.
pub fn add_rules(schema: &mut Value, rules: &[CelRule]) {
    if rules.is_empty() {
        return;
    }
    let list = schema
        .as_object_mut()
        .expect("schema is an object")
        .entry("x-kubernetes-validations")
        .or_insert_with(|| json!([]));
    let list = list
        .as_array_mut()
        .expect("x-kubernetes-validations is a list");
    list.extend(rules.iter().map(CelRule::to_json));
}

/// Finds the schema of a property by walking `properties` along `path` (e.g. `["spec", "remote"]`).
pub fn property_mut<'a>(schema: &'a mut Value, path: &[&str]) -> Option<&'a mut Value> {
    path.iter()
        .try_fold(schema, |s, key| s.get_mut("properties")?.get_mut(*key))
}
