//! The field reference (`docs/api.md`), generated from the same schema the API server gets.

use std::fmt::Write as _;

use serde_json::Value;

use crate::crd;

/// Where `crdgen --write` puts the reference, relative to the workspace root.
pub const API_DOC_PATH: &str = "docs/api.md";

/// Markdown: per kind, its description, then one row per field with type, constraints and doc.
pub fn api_reference() -> String {
    let mut out = String::from(
        "# API reference: `kwire.dev/v1alpha1`\n\n\
         Generated from the Rust types by `cargo run -p kwire-crds --bin crdgen -- --write`; do not edit.\n\
         Every constraint listed here is enforced by the API server at `kubectl apply`.\n",
    );
    for crd in crd::all() {
        let kind = &crd.spec.names.kind;
        let short = crd
            .spec
            .names
            .short_names
            .clone()
            .unwrap_or_default()
            .join(", ");
        let schema = crd::schema_of(&crd);
        let _ = write!(
            out,
            "\n## {kind}\n\nShort name: `{short}`; category `kwire` (`kubectl get kwire`).\n\n{}\n",
            schema["description"].as_str().unwrap_or_default()
        );
        if let Some(rules) = schema
            .get("x-kubernetes-validations")
            .and_then(Value::as_array)
        {
            for rule in rules {
                let _ = writeln!(
                    out,
                    "\n- Object rule: {}",
                    rule["message"].as_str().unwrap_or_default()
                );
            }
        }
        for section in ["spec", "status"] {
            let _ = write!(
                out,
                "\n### {kind} `{section}`\n\n| field | type | constraints | description |\n|---|---|---|---|\n"
            );
            let mut rows = Vec::new();
            fields(&schema["properties"][section], section, &mut rows);
            for row in rows {
                out.push_str(&row);
            }
        }
    }
    out
}

fn fields(schema: &Value, path: &str, rows: &mut Vec<String>) {
    if let Some(rules) = schema
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        && schema.get("properties").is_some()
    {
        for rule in rules {
            rows.push(format!(
                "| `{path}` | object | {} | |\n",
                cell(rule["message"].as_str().unwrap_or_default())
            ));
        }
    }
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return;
    };
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for (name, prop) in props {
        let field = format!("{path}.{name}");
        let (ty, item) = match prop["type"].as_str() {
            Some("array") => (
                format!("[]{}", prop["items"]["type"].as_str().unwrap_or("?")),
                Some(&prop["items"]),
            ),
            Some(t) => (t.to_string(), None),
            None => ("any".to_string(), None),
        };
        let mut constraints = Vec::new();
        if required.contains(&name.as_str()) {
            constraints.push("required".to_string());
        }
        constraints.extend(describe(prop));
        if let Some(item) = item {
            constraints.extend(describe(item).into_iter().map(|c| format!("each: {c}")));
        }
        let doc = prop["description"].as_str().unwrap_or_default();
        rows.push(format!(
            "| `{field}` | {ty} | {} | {} |\n",
            cell(&constraints.join("; ")),
            cell(doc)
        ));
        fields(prop, &field, rows);
        if let Some(item) = item {
            fields(item, &format!("{field}[]"), rows);
        }
    }
}

fn describe(schema: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let num = |k: &str| schema.get(k).and_then(Value::as_f64).map(|v| v as i64);
    match (num("minimum"), num("maximum")) {
        (Some(lo), Some(hi)) => out.push(format!("{lo}–{hi}")),
        (Some(lo), None) if lo > 0 => out.push(format!("≥ {lo}")),
        _ => {}
    }
    match (num("minLength"), num("maxLength")) {
        (Some(lo), Some(hi)) if lo == hi => out.push(format!("{lo} characters")),
        (Some(lo), Some(hi)) => out.push(format!("{lo}–{hi} characters")),
        _ => {}
    }
    if let Some(max) = num("maxItems") {
        out.push(format!("at most {max} items"));
    }
    if let Some(default) = schema.get("default") {
        out.push(format!("default {default}"));
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        let names: Vec<String> = values
            .iter()
            .map(|v| format!("`{}`", v.as_str().unwrap_or_default()))
            .collect();
        out.push(format!("one of {}", names.join(", ")));
    }
    if schema.get("properties").is_none()
        && let Some(rules) = schema
            .get("x-kubernetes-validations")
            .and_then(Value::as_array)
    {
        out.extend(
            rules
                .iter()
                .map(|r| r["message"].as_str().unwrap_or_default().to_string()),
        );
    }
    out
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}
