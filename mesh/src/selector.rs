//! Label selectors over Nodes, matched with kube-core's `Selector` (pure, no client).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use kube_core::{Selector, SelectorExt};

use crate::api::{NodeSelector, SelectorOperator};

/// A selector the API server would have rejected, found by code that reads manifests
/// without one (`kwire lint`, `kwire plan`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{field}: requirement on {key:?} with operator {operator:?} {problem}: give In and NotIn at least one value, Exists and DoesNotExist none"
)]
pub struct SelectorError {
    /// Where the selector is, e.g. `spec.nodeSelector`.
    pub field: &'static str,
    pub key: String,
    pub operator: SelectorOperator,
    pub problem: &'static str,
}

/// A checked selector, ready to match.
#[derive(Clone, Debug)]
pub struct CompiledSelector(Selector);

impl CompiledSelector {
    /// Checks `selector` as the Mesh schema does and prepares it for matching.
    pub fn new(selector: &NodeSelector, field: &'static str) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        for r in selector.match_expressions.iter().flatten() {
            let has_values = r.values.as_ref().is_some_and(|v| !v.is_empty());
            let wants_values = matches!(r.operator, SelectorOperator::In | SelectorOperator::NotIn);
            if has_values != wants_values {
                return Err(SelectorError {
                    field,
                    key: r.key.clone(),
                    operator: r.operator,
                    problem: if wants_values {
                        "has no values"
                    } else {
                        "has values"
                    },
                });
            }
            let operator = match r.operator {
                SelectorOperator::In => "In",
                SelectorOperator::NotIn => "NotIn",
                SelectorOperator::Exists => "Exists",
                SelectorOperator::DoesNotExist => "DoesNotExist",
            };
            requirements.push(LabelSelectorRequirement {
                key: r.key.clone(),
                operator: operator.to_string(),
                values: r.values.clone(),
            });
        }
        let label_selector = LabelSelector {
            match_labels: selector.match_labels.clone(),
            match_expressions: Some(requirements),
        };
        // Every operator is one kube-core knows and In/NotIn carry values: conversion holds.
        let compiled = Selector::try_from(label_selector).expect("requirements checked above");
        Ok(Self(compiled))
    }

    /// Whether a Node with these labels is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.matches(labels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::SelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn req(key: &str, operator: SelectorOperator, values: &[&str]) -> SelectorRequirement {
        SelectorRequirement {
            key: key.into(),
            operator,
            values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
        }
    }

    fn selector(
        match_labels: &[(&str, &str)],
        exprs: Vec<SelectorRequirement>,
    ) -> CompiledSelector {
        CompiledSelector::new(
            &NodeSelector {
                match_labels: (!match_labels.is_empty()).then(|| labels(match_labels)),
                match_expressions: Some(exprs),
            },
            "spec.nodeSelector",
        )
        .unwrap()
    }

    #[test]
    fn empty_selector_selects_every_node() {
        let s = CompiledSelector::new(&NodeSelector::default(), "spec.nodeSelector").unwrap();
        assert!(s.matches(&labels(&[])));
        assert!(s.matches(&labels(&[("a", "b")])));
    }

    #[test]
    fn match_labels_and_every_operator_behave_as_kubernetes() {
        let s = selector(&[("role", "edge")], vec![]);
        assert!(s.matches(&labels(&[("role", "edge"), ("x", "y")])));
        assert!(!s.matches(&labels(&[("role", "core")])));
        assert!(!s.matches(&labels(&[])));

        let s = selector(&[], vec![req("zone", SelectorOperator::In, &["a", "b"])]);
        assert!(s.matches(&labels(&[("zone", "b")])));
        assert!(!s.matches(&labels(&[("zone", "c")])));
        assert!(!s.matches(&labels(&[])));

        let s = selector(&[], vec![req("zone", SelectorOperator::NotIn, &["a"])]);
        assert!(s.matches(&labels(&[("zone", "b")])));
        assert!(
            s.matches(&labels(&[])),
            "NotIn selects nodes without the label"
        );
        assert!(!s.matches(&labels(&[("zone", "a")])));

        let s = selector(&[], vec![req("gw", SelectorOperator::Exists, &[])]);
        assert!(s.matches(&labels(&[("gw", "")])));
        assert!(!s.matches(&labels(&[])));

        let s = selector(&[], vec![req("gw", SelectorOperator::DoesNotExist, &[])]);
        assert!(s.matches(&labels(&[])));
        assert!(!s.matches(&labels(&[("gw", "1")])));

        // All requirements must hold.
        let s = selector(
            &[("os", "linux")],
            vec![
                req("zone", SelectorOperator::In, &["a"]),
                req("drain", SelectorOperator::DoesNotExist, &[]),
            ],
        );
        assert!(s.matches(&labels(&[("os", "linux"), ("zone", "a")])));
        assert!(!s.matches(&labels(&[("os", "linux"), ("zone", "a"), ("drain", "1")])));
        assert!(!s.matches(&labels(&[("os", "linux"), ("zone", "b")])));
    }

    #[test]
    fn requirements_the_schema_rejects_are_errors_that_say_what_to_do() {
        let bad = NodeSelector {
            match_labels: None,
            match_expressions: Some(vec![req("zone", SelectorOperator::In, &[])]),
        };
        let e = CompiledSelector::new(&bad, "spec.nodeSelector").unwrap_err();
        assert_eq!(e.problem, "has no values");
        assert!(e.to_string().contains("spec.nodeSelector"), "{e}");
        assert!(e.to_string().contains("at least one value"), "{e}");

        let bad = NodeSelector {
            match_labels: None,
            match_expressions: Some(vec![req("zone", SelectorOperator::Exists, &["a"])]),
        };
        let e = CompiledSelector::new(&bad, "spec.nodeSelector").unwrap_err();
        assert_eq!(e.problem, "has values");
    }
}
