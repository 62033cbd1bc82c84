use std::collections::BTreeSet;
use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use kwire_crds::manifest::{KwireObject, parse_manifests};
use kwire_crds::v1alpha1::{Interface, Network};

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn req(name: &str, uid: &str, host_index: Option<u32>) -> Request {
    Request {
        interface: name.into(),
        uid: uid.into(),
        host_index,
    }
}

fn alloc(address: &str, interface: &str, uid: Option<&str>) -> Allocation {
    Allocation {
        address: address.into(),
        interface: interface.into(),
        uid: uid.map(Into::into),
    }
}

fn addresses(outcome: &Outcome) -> Vec<(&str, &str)> {
    outcome
        .allocations
        .iter()
        .map(|a| (a.interface.as_str(), a.address.as_str()))
        .collect()
}

#[test]
fn usable_addresses_skip_network_and_broadcast_only_where_they_exist() {
    let cases = [
        ("10.1.0.0/24", Some("10.1.0.1"), Some("10.1.0.254"), 254),
        ("10.1.0.0/30", Some("10.1.0.1"), Some("10.1.0.2"), 2),
        ("10.1.0.0/31", Some("10.1.0.0"), Some("10.1.0.1"), 2),
        ("10.1.0.7/32", Some("10.1.0.7"), Some("10.1.0.7"), 1),
        (
            "fd00:1::/64",
            Some("fd00:1::1"),
            Some("fd00:1::ffff:ffff:ffff:ffff"),
            u128::MAX,
        ),
        ("fd00:1::/127", Some("fd00:1::"), Some("fd00:1::1"), 2),
        ("fd00:1::5/128", Some("fd00:1::5"), Some("fd00:1::5"), 1),
    ];
    for (cidr, first, last, count) in cases {
        let cidr = net(cidr);
        let usable = Usable::of(cidr);
        assert_eq!(
            nth_usable(cidr, 1).map(|a| a.to_string()).as_deref(),
            first,
            "{cidr}"
        );
        if count != u128::MAX {
            assert_eq!(usable.count(), count, "{cidr}");
            let n = u32::try_from(count).unwrap();
            assert_eq!(
                nth_usable(cidr, n).map(|a| a.to_string()).as_deref(),
                last,
                "{cidr}"
            );
            assert_eq!(nth_usable(cidr, n + 1), None, "{cidr}");
        } else {
            assert_eq!(usable.count(), (1u128 << 64) - 1);
        }
        assert_eq!(nth_usable(cidr, 0), None);
    }
}

#[test]
fn the_lowest_free_address_is_handed_out_in_request_order() {
    let out = allocate(
        "n",
        net("10.1.0.0/24"),
        &[],
        &[req("a", "1", None), req("b", "2", None)],
        &[],
    );
    assert_eq!(
        addresses(&out),
        [("a", "10.1.0.1/24"), ("b", "10.1.0.2/24")]
    );
    assert_eq!(out.added.len(), 2);
    assert!(out.released.is_empty() && out.errors.is_empty());
    assert_eq!(out.address_of("2"), Some("10.1.0.2/24"));
}

#[test]
fn a_host_index_names_the_nth_usable_address() {
    let out = allocate(
        "link-ab",
        net("10.1.0.0/24"),
        &[],
        &[
            req("b", "2", Some(2)),
            req("a", "1", Some(1)),
            req("z", "9", Some(254)),
        ],
        &[],
    );
    assert_eq!(
        addresses(&out),
        [
            ("a", "10.1.0.1/24"),
            ("b", "10.1.0.2/24"),
            ("z", "10.1.0.254/24")
        ]
    );
}

#[test]
fn host_index_requests_are_served_before_lowest_free_ones_in_the_same_pass() {
    let out = allocate(
        "n",
        net("10.1.0.0/24"),
        &[],
        &[req("free", "1", None), req("pinned", "2", Some(1))],
        &[],
    );
    assert_eq!(
        addresses(&out),
        [("pinned", "10.1.0.1/24"), ("free", "10.1.0.2/24")]
    );
}

#[test]
fn an_existing_allocation_is_never_moved_to_a_lower_free_address() {
    let out = allocate(
        "n",
        net("10.1.0.0/24"),
        &[alloc("10.1.0.9/24", "a", Some("1"))],
        &[req("a", "1", None)],
        &[],
    );
    assert_eq!(addresses(&out), [("a", "10.1.0.9/24")]);
    assert!(out.added.is_empty() && out.released.is_empty());
}

#[test]
fn an_allocation_is_released_only_when_its_holder_is_gone() {
    let recorded = [
        alloc("10.1.0.1/24", "a", Some("1")),
        alloc("10.1.0.2/24", "b", Some("2")),
    ];
    let out = allocate(
        "n",
        net("10.1.0.0/24"),
        &recorded,
        &[req("b", "2", None)],
        &[],
    );
    assert_eq!(addresses(&out), [("b", "10.1.0.2/24")]);
    assert_eq!(out.released, [recorded[0].clone()]);
}

#[test]
fn a_recreated_interface_is_a_new_holder_served_after_the_old_one_is_released() {
    let recorded = [alloc("10.1.0.5/24", "a", Some("old"))];
    // The old object is still live (being deleted): the new one must not share its address.
    let both = allocate(
        "n",
        net("10.1.0.0/24"),
        &recorded,
        &[req("a", "old", None), req("a", "new", None)],
        &[],
    );
    assert_eq!(both.address_of("old"), Some("10.1.0.5/24"));
    assert_eq!(both.address_of("new"), Some("10.1.0.1/24"));
    // With a hostIndex, the new object waits until the old one is gone.
    let recorded = [alloc("10.1.0.1/24", "a", Some("old"))];
    let waiting = allocate(
        "n",
        net("10.1.0.0/24"),
        &recorded,
        &[req("a", "old", Some(1)), req("a", "new", Some(1))],
        &[],
    );
    assert_eq!(waiting.address_of("new"), None);
    assert!(matches!(
        waiting.errors["new"],
        IpamError::HostIndexConflict { .. }
    ));
    let released = allocate(
        "n",
        net("10.1.0.0/24"),
        &recorded,
        &[req("a", "new", Some(1))],
        &[],
    );
    assert_eq!(released.address_of("new"), Some("10.1.0.1/24"));
    assert_eq!(released.released, recorded);
}

#[test]
fn recorded_allocations_without_uid_are_adopted_by_name() {
    let out = allocate(
        "n",
        net("10.1.0.0/24"),
        &[alloc("10.1.0.3/24", "a", None)],
        &[req("a", "1", None)],
        &[],
    );
    assert_eq!(out.allocations, [alloc("10.1.0.3/24", "a", Some("1"))]);
}

#[test]
fn damaged_records_are_released_duplicates_keep_the_lowest_address() {
    let recorded = [
        alloc("10.1.0.7/24", "a", Some("1")),
        alloc("10.1.0.4/24", "a", Some("1")),
        alloc("10.9.0.1/24", "b", Some("2")),
        alloc("10.1.0.0/24", "c", Some("3")),
        alloc("garbage", "d", Some("4")),
    ];
    let out = allocate(
        "n",
        net("10.1.0.0/24"),
        &recorded,
        &[
            req("a", "1", None),
            req("b", "2", None),
            req("c", "3", None),
            req("d", "4", None),
        ],
        &[],
    );
    assert_eq!(out.address_of("1"), Some("10.1.0.4/24"));
    assert_eq!(out.released.len(), 4);
    let unique: BTreeSet<_> = out.allocations.iter().map(|a| &a.address).collect();
    assert_eq!(unique.len(), 4);
}

#[test]
fn addresses_written_by_hand_inside_the_network_are_never_handed_out() {
    let reserved = [Reserved {
        address: "10.1.0.1".parse().unwrap(),
        interface: "manual".into(),
    }];
    let out = allocate(
        "link",
        net("10.1.0.0/24"),
        &[],
        &[req("a", "1", None), req("b", "2", Some(1))],
        &reserved,
    );
    assert_eq!(out.address_of("1"), Some("10.1.0.2/24"));
    let err = out.errors["2"].to_string();
    assert!(
        err.contains("Interface b") && err.contains("Interface manual"),
        "{err}"
    );
}

#[test]
fn a_host_index_conflict_names_both_holders_and_the_fix() {
    let out = allocate(
        "link-ab",
        net("10.1.0.0/24"),
        &[alloc("10.1.0.2/24", "b-wg0-server", Some("b"))],
        &[
            req("b-wg0-server", "b", Some(2)),
            req("x-wg0", "x", Some(2)),
        ],
        &[],
    );
    let err = &out.errors["x"];
    assert_eq!(err.reason(), "HostIndexConflict");
    assert_eq!(
        err.to_string(),
        "hostIndex 2 of Network link-ab (10.1.0.2/24) is requested by Interface x-wg0 but already held by Interface b-wg0-server: give x-wg0 another hostIndex, or remove its hostIndex to take the lowest free address"
    );
    assert_eq!(out.address_of("x"), None);
}

#[test]
fn changing_a_host_index_moves_the_address_when_the_new_one_is_free() {
    let recorded = [
        alloc("10.1.0.1/24", "a", Some("1")),
        alloc("10.1.0.2/24", "b", Some("2")),
    ];
    let moved = allocate(
        "n",
        net("10.1.0.0/24"),
        &recorded,
        &[req("a", "1", Some(5)), req("b", "2", None)],
        &[],
    );
    assert_eq!(moved.address_of("1"), Some("10.1.0.5/24"));
    assert_eq!(moved.released, [alloc("10.1.0.1/24", "a", Some("1"))]);
    let blocked = allocate(
        "n",
        net("10.1.0.0/24"),
        &recorded,
        &[req("a", "1", Some(2)), req("b", "2", None)],
        &[],
    );
    assert_eq!(
        blocked.address_of("1"),
        Some("10.1.0.1/24"),
        "keeps its address while blocked"
    );
    assert_eq!(blocked.errors["1"].reason(), "HostIndexConflict");
}

#[test]
fn out_of_range_host_indexes_and_full_networks_are_errors_with_a_fix() {
    let out = allocate(
        "tiny",
        net("10.1.0.0/30"),
        &[],
        &[
            req("a", "1", Some(3)),
            req("b", "2", None),
            req("c", "3", None),
            req("d", "4", None),
        ],
        &[],
    );
    assert_eq!(out.errors["1"].reason(), "HostIndexOutOfRange");
    assert!(out.errors["1"].to_string().contains("from 1 to 2"));
    assert_eq!(out.errors["4"].reason(), "NetworkExhausted");
    assert_eq!(out.allocations.len(), 2);
}

#[test]
fn ipv6_networks_allocate_from_one_and_print_compressed() {
    let out = allocate(
        "v6",
        net("fd00:3::/64"),
        &[],
        &[req("a", "1", None), req("b", "2", Some(16))],
        &[],
    );
    assert_eq!(
        addresses(&out),
        [("a", "fd00:3::1/64"), ("b", "fd00:3::10/64")]
    );
}

fn interfaces_of(text: &str) -> (Vec<Network>, Vec<Arc<Interface>>) {
    let mut networks = Vec::new();
    let mut interfaces = Vec::new();
    for object in parse_manifests(text).unwrap() {
        match object {
            KwireObject::Network(n) => networks.push(Network::clone(&n)),
            KwireObject::Interface(i) => interfaces.push(Arc::new(Interface::clone(&i))),
            _ => {}
        }
    }
    (networks, interfaces)
}

#[test]
fn the_seed_relay_networks_give_a_b_and_c_the_seeds_addresses() {
    let (networks, interfaces) =
        interfaces_of(include_str!("../../../examples/seed/relay-networks.yaml"));
    let got: Vec<Vec<(String, String)>> = networks
        .iter()
        .map(|n| {
            allocate_for_network(n, None, &interfaces)
                .unwrap()
                .allocations
                .into_iter()
                .map(|a| (a.interface, a.address))
                .collect()
        })
        .collect();
    let s = |a: &str, b: &str| (a.to_string(), b.to_string());
    assert_eq!(
        got,
        [
            vec![
                s("a-wg0-client", "10.1.0.1/24"),
                s("b-wg0-server", "10.1.0.2/24")
            ],
            vec![
                s("b-wg1-client", "10.2.0.1/24"),
                s("c-wg0-server", "10.2.0.2/24")
            ],
        ]
    );
}

#[test]
fn interfaces_of_other_namespaces_neither_ask_nor_reserve() {
    let (networks, interfaces) =
        interfaces_of(include_str!("../../../examples/seed/relay-networks.yaml"));
    let mut network = networks[0].clone();
    network.metadata.namespace = Some("elsewhere".into());
    let out = allocate_for_network(&network, None, &interfaces).unwrap();
    assert!(out.allocations.is_empty());
}

// ---- property tests -------------------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    Create(Option<u32>),
    Delete(usize),
    Recreate(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => proptest::option::weighted(0.4, 1u32..=16).prop_map(Op::Create),
        2 => any::<usize>().prop_map(Op::Delete),
        1 => any::<usize>().prop_map(Op::Recreate),
    ]
}

struct Model {
    live: Vec<Request>,
    next: u32,
}

impl Model {
    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Create(host_index) => {
                self.next += 1;
                self.live.push(req(
                    &format!("if{}", self.next),
                    &format!("u{}", self.next),
                    host_index,
                ));
            }
            Op::Delete(i) if !self.live.is_empty() => {
                let i = i % self.live.len();
                self.live.remove(i);
            }
            Op::Recreate(i) if !self.live.is_empty() => {
                let i = i % self.live.len();
                self.next += 1;
                let mut again = self.live.remove(i);
                again.uid = format!("u{}", self.next);
                self.live.push(again);
            }
            _ => {}
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_create_and_delete_sequences_never_overlap_and_never_move_live_holders(
        ops in proptest::collection::vec(op(), 1..60)
    ) {
        let cidr = net("10.9.0.0/28");
        let mut model = Model { live: Vec::new(), next: 0 };
        let mut recorded: Vec<Allocation> = Vec::new();
        for op in &ops {
            model.apply(op);
            let out = allocate("n", cidr, &recorded, &model.live, &[]);

            let unique: BTreeSet<_> = out.allocations.iter().map(|a| a.address.clone()).collect();
            prop_assert_eq!(unique.len(), out.allocations.len(), "an address was handed out twice");

            let live: BTreeSet<_> = model.live.iter().map(|r| r.uid.clone()).collect();
            for a in &out.allocations {
                prop_assert!(live.contains(a.uid.as_ref().unwrap()), "{:?} held by a dead holder", a);
            }
            for old in &recorded {
                if live.contains(old.uid.as_ref().unwrap()) {
                    prop_assert!(out.allocations.contains(old), "{:?} was moved or dropped", old);
                } else {
                    prop_assert!(out.released.contains(old));
                }
            }
            for r in &model.live {
                let got = out.address_of(&r.uid);
                prop_assert!(got.is_some() != out.errors.contains_key(&r.uid), "{:?}", r);
                if let (Some(h), Some(got)) = (r.host_index, got) {
                    prop_assert_eq!(parse_recorded(got), nth_usable(cidr, h));
                }
                if let Some(IpamError::HostIndexConflict { wanted_by, held_by, address, .. }) = out.errors.get(&r.uid) {
                    prop_assert_eq!(wanted_by, &r.interface);
                    let holder = out.allocations.iter().find(|a| &a.address == address).unwrap();
                    prop_assert_eq!(&holder.interface, held_by);
                }
            }

            // Rebuilding from what was recorded reproduces the same state, in any order.
            let mut shuffled = out.allocations.clone();
            shuffled.reverse();
            let again = allocate("n", cidr, &shuffled, &model.live, &[]);
            prop_assert_eq!(&again.allocations, &out.allocations);
            prop_assert!(again.added.is_empty() && again.released.is_empty());

            recorded = out.allocations;
        }
    }

    #[test]
    fn contested_host_indexes_produce_an_error_naming_both_holders(
        host_index in 1u32..=14, extra in 1usize..4
    ) {
        let cidr = net("10.9.0.0/28");
        let mut requests = vec![req("first", "u0", Some(host_index))];
        for i in 0..extra {
            requests.push(req(&format!("late{i}"), &format!("u{}", i + 1), Some(host_index)));
        }
        let out = allocate("n", cidr, &[], &requests, &[]);
        prop_assert_eq!(out.allocations.len(), 1);
        for r in &requests[1..] {
            let message = out.errors[&r.uid].to_string();
            prop_assert!(message.contains(&format!("Interface {}", r.interface)), "{}", message);
            prop_assert!(message.contains("Interface first"), "{}", message);
        }
    }
}
