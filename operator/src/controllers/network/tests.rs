use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kwire_crds::v1alpha1::{Allocation, NetworkStatus};
use serde_json::json;

use super::*;
use crate::fixtures::*;
use crate::ipam::Pool;
use crate::reasons;
use crate::status::needs_patch;

fn now(s: i64) -> Time {
    Time(Timestamp::from_second(s).unwrap())
}

fn pools() -> Vec<Pool> {
    Pool::parse_all(&["10.100.0.0/16", "fd00:100::/48"]).unwrap()
}

fn nets(v: &[&str]) -> Vec<IpNet> {
    v.iter().map(|s| s.parse().unwrap()).collect()
}

#[test]
fn an_explicit_cidr_is_used_as_written() {
    let d = decide_cidr(&network("n", "10.1.0.0/24"), &[], &[], None);
    assert_eq!(
        d,
        CidrDecision::Ready {
            cidr: "10.1.0.0/24".parse().unwrap(),
            source: "spec.cidr".into(),
            carved_now: false
        }
    );
}

#[test]
fn a_prefix_length_is_carved_from_the_first_pool_of_the_family_around_taken_cidrs() {
    let d = decide_cidr(
        &network_carved("n", 24),
        &pools(),
        &nets(&["10.100.0.0/24"]),
        None,
    );
    assert_eq!(
        d,
        CidrDecision::Ready {
            cidr: "10.100.1.0/24".parse().unwrap(),
            source: "pool ipv4-0".into(),
            carved_now: true
        }
    );
    let v6 = patch_spec(network_carved("n", 64), json!({"ipFamily": "IPv6"}));
    let d = decide_cidr(&v6, &pools(), &[], None);
    assert!(matches!(d, CidrDecision::Ready { cidr, .. } if cidr.to_string() == "fd00:100::/64"));
}

#[test]
fn a_carved_cidr_is_sticky_once_recorded_or_reserved() {
    let mut n = network_carved("n", 24);
    n.status = Some(NetworkStatus {
        cidr: Some("10.100.7.0/24".into()),
        ..Default::default()
    });
    let d = decide_cidr(&n, &pools(), &[], None);
    assert!(
        matches!(d, CidrDecision::Ready { cidr, carved_now: false, .. } if cidr.to_string() == "10.100.7.0/24")
    );
    let reserved = decide_cidr(
        &network_carved("n", 24),
        &pools(),
        &[],
        Some("10.100.9.0/24".parse().unwrap()),
    );
    assert!(
        matches!(reserved, CidrDecision::Ready { cidr, carved_now: false, .. } if cidr.to_string() == "10.100.9.0/24")
    );
}

#[test]
fn changing_the_prefix_length_of_a_network_in_use_is_refused_with_a_fix() {
    let mut n = network_carved("n", 25);
    n.status = Some(NetworkStatus {
        cidr: Some("10.100.7.0/24".into()),
        allocations: vec![Allocation {
            address: "10.100.7.1/24".into(),
            interface: "a".into(),
            uid: Some("u".into()),
        }],
        ..Default::default()
    });
    let CidrDecision::Failed { reason, message } = decide_cidr(&n, &pools(), &[], None) else {
        panic!()
    };
    assert_eq!(reason, reasons::PREFIX_LENGTH_CHANGE_BLOCKED);
    assert!(message.contains("set prefixLength back to 24"), "{message}");
}

#[test]
fn pool_problems_become_the_ready_reason() {
    let cases = [
        (network_carved("n", 24), vec![], "NoPool"),
        (
            patch_spec(network_carved("n", 24), json!({"pool": "nope"})),
            pools(),
            "UnknownPool",
        ),
        (network_carved("n", 8), pools(), "PrefixLengthDoesNotFit"),
    ];
    for (n, pools, reason) in cases {
        let d = decide_cidr(&n, &pools, &[], None);
        assert!(
            matches!(&d, CidrDecision::Failed { reason: r, .. } if *r == reason),
            "{d:?}"
        );
        let plan = plan_network(&n, &[], &d, &now(1));
        let ready = plan
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", reason)
        );
    }
}

fn seed() -> (
    kwire_crds::v1alpha1::Network,
    Vec<Arc<kwire_crds::v1alpha1::Interface>>,
) {
    (
        network("link-ab", "10.1.0.0/24"),
        vec![
            Arc::new(interface_in("a", "a", "link-ab", Some(1))),
            Arc::new(interface_in("b", "b", "link-ab", Some(2))),
            Arc::new(interface_in("x", "x", "other", None)),
        ],
    )
}

#[test]
fn the_plan_records_every_allocation_and_announces_them_in_one_event_on_the_network() {
    let (n, interfaces) = seed();
    let d = decide_cidr(&n, &[], &[], None);
    let plan = plan_network(&n, &interfaces, &d, &now(1));
    assert_eq!(plan.status.cidr.as_deref(), Some("10.1.0.0/24"));
    assert_eq!(plan.status.allocated, Some(2));
    let got: Vec<_> = plan
        .status
        .allocations
        .iter()
        .map(|a| (a.interface.as_str(), a.address.as_str(), a.uid.as_deref()))
        .collect();
    assert_eq!(
        got,
        [
            ("a", "10.1.0.1/24", Some("uid-a")),
            ("b", "10.1.0.2/24", Some("uid-b"))
        ]
    );
    let events: Vec<_> = plan
        .events
        .iter()
        .map(|(r, e)| (r.clone(), e.reason.as_str(), e.note.as_str()))
        .collect();
    assert_eq!(
        events,
        [(
            Regarding::Network,
            "AddressAllocated",
            "allocated 2 addresses from Network link-ab: 10.1.0.1/24 to Interface a, 10.1.0.2/24 to Interface b"
        )]
    );
    let ready = plan
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(
        ready.message,
        "10.1.0.0/24 from spec.cidr; 2 of 254 addresses allocated"
    );
}

#[test]
fn replanning_from_the_recorded_status_changes_nothing_and_announces_nothing() {
    let (mut n, interfaces) = seed();
    let d = decide_cidr(&n, &[], &[], None);
    let first = plan_network(&n, &interfaces, &d, &now(1));
    n.status = Some(first.status.clone());
    let second = plan_network(&n, &interfaces, &d, &now(99));
    assert!(!needs_patch(n.status.as_ref(), &second.status));
    assert!(second.events.is_empty());
}

#[test]
fn a_conflict_sets_the_conflict_condition_and_warns_the_interface_once() {
    let (mut n, mut interfaces) = seed();
    interfaces.push(Arc::new(interface_in("late", "c", "link-ab", Some(2))));
    let d = decide_cidr(&n, &[], &[], None);
    let first = plan_network(&n, &interfaces, &d, &now(1));
    let conflict = first
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "Conflict")
        .unwrap();
    assert_eq!(
        (conflict.status.as_str(), conflict.reason.as_str()),
        ("True", "HostIndexConflict")
    );
    assert!(
        conflict
            .message
            .contains("requested by Interface late but already held by Interface b")
    );
    let warnings: Vec<_> = first.events.iter().filter(|(_, e)| e.warning).collect();
    assert_eq!(warnings.len(), 1);
    assert_eq!(warnings[0].0, Regarding::Interface("late".into()));
    n.status = Some(first.status);
    let second = plan_network(&n, &interfaces, &d, &now(2));
    assert!(second.events.is_empty());
}

#[test]
fn a_deleted_interface_releases_its_address_with_an_event_on_the_network() {
    let (mut n, interfaces) = seed();
    let d = decide_cidr(&n, &[], &[], None);
    n.status = Some(plan_network(&n, &interfaces, &d, &now(1)).status);
    let plan = plan_network(&n, &interfaces[..1], &d, &now(2));
    assert_eq!(plan.status.allocated, Some(1));
    assert_eq!(plan.events.len(), 1);
    assert_eq!(plan.events[0].0, Regarding::Network);
    assert!(
        plan.events[0]
            .1
            .note
            .starts_with("released 10.1.0.2/24 of Interface b")
    );
}

#[test]
fn a_large_batch_of_allocations_is_one_event_naming_the_first_few() {
    let n = network("big", "10.2.0.0/24");
    let interfaces: Vec<_> = (0..20)
        .map(|i| Arc::new(interface_in(&format!("i{i:02}"), "n", "big", None)))
        .collect();
    let d = decide_cidr(&n, &[], &[], None);
    let plan = plan_network(&n, &interfaces, &d, &now(1));
    assert_eq!(plan.status.allocations.len(), 20);
    let allocated: Vec<_> = plan
        .events
        .iter()
        .filter(|(_, e)| e.reason == "AddressAllocated")
        .collect();
    assert_eq!(allocated.len(), 1, "{:?}", plan.events);
    let (regarding, event) = allocated[0];
    assert_eq!(*regarding, Regarding::Network);
    assert!(
        event
            .note
            .starts_with("allocated 20 addresses from Network big: "),
        "{}",
        event.note
    );
    assert!(event.note.ends_with(", and 12 more"), "{}", event.note);
    assert_eq!(event.note.matches(" to Interface ").count(), 8);
}
