//! The Network plan: the CIDR in use, the allocations, `Ready` and `Conflict`; pure.

use std::sync::Arc;

use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kwire_crds::v1alpha1::{Allocation, Interface, IpFamily, Network, NetworkStatus, condition};

use crate::context::EventSpec;
use crate::ipam::{self, Pool, Usable};
use crate::reasons;
use crate::status::{DesiredCondition, NETWORK_READY, merge_conditions};

/// Where a Network's CIDR comes from, or why it has none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CidrDecision {
    Ready {
        cidr: IpNet,
        /// `spec.cidr`, or `pool <name>`.
        source: String,
        /// Carved in this pass (to be remembered until status shows it).
        carved_now: bool,
    },
    Failed {
        reason: &'static str,
        message: String,
    },
}

/// Decides the CIDR: `spec.cidr`; else the one recorded in status (sticky) when it still has
/// the requested prefix length; else one carved now from the pool, avoiding `taken` (every
/// other Network's CIDR). `reserved` is a CIDR this process already carved for the Network.
pub fn decide_cidr(
    network: &Network,
    pools: &[Pool],
    taken: &[IpNet],
    reserved: Option<IpNet>,
) -> CidrDecision {
    if let Some(cidr) = network.spec.cidr.as_ref().and_then(|c| c.net().ok()) {
        return CidrDecision::Ready {
            cidr,
            source: "spec.cidr".into(),
            carved_now: false,
        };
    }
    let Some(prefix_length) = network.spec.prefix_length else {
        return CidrDecision::Failed {
            reason: "NoCidr",
            message: "set spec.cidr or spec.prefixLength".into(),
        };
    };
    let status = network.status.as_ref();
    let recorded = status
        .and_then(|s| s.cidr.as_deref())
        .and_then(|c| c.parse::<IpNet>().ok())
        .or(reserved);
    let family = network.spec.ip_family.unwrap_or(IpFamily::IPv4);
    let pool_name = network.spec.pool.as_ref().map(|p| p.as_str());
    let pool_of = |cidr: IpNet| {
        pools.iter().find(|p| p.cidr.contains(&cidr)).map_or_else(
            || "a pool no longer configured".to_string(),
            |p| format!("pool {}", p.name),
        )
    };
    if let Some(cidr) = recorded {
        if cidr.prefix_len() == prefix_length {
            return CidrDecision::Ready {
                cidr,
                source: pool_of(cidr),
                carved_now: false,
            };
        }
        let in_use = status.is_some_and(|s| !s.allocations.is_empty());
        if in_use {
            return CidrDecision::Failed {
                reason: reasons::PREFIX_LENGTH_CHANGE_BLOCKED,
                message: format!(
                    "spec.prefixLength is {prefix_length} but the Network already uses {cidr} with addresses allocated: set prefixLength back to {}, or create a new Network",
                    cidr.prefix_len()
                ),
            };
        }
    }
    let carved = ipam::choose_pool(pools, pool_name, family)
        .and_then(|pool| ipam::carve(pool, prefix_length, taken).map(|cidr| (pool, cidr)));
    match carved {
        Ok((pool, cidr)) => CidrDecision::Ready {
            cidr,
            source: format!("pool {}", pool.name),
            carved_now: true,
        },
        Err(error) => CidrDecision::Failed {
            reason: error.reason(),
            message: error.to_string(),
        },
    }
}

/// Who an Event is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Regarding {
    Network,
    Interface(String),
}

/// What to do for one Network.
#[derive(Clone, Debug, PartialEq)]
pub struct NetworkPlan {
    pub status: NetworkStatus,
    pub events: Vec<(Regarding, EventSpec)>,
}

/// How many allocations an `AddressAllocated` Event names.
pub const EVENT_NAMES: usize = 8;

/// One Event for the addresses a reconcile allocated, about the Network (an Event per
/// Interface made a cold start send as many Events as Interfaces; each Interface's
/// `AddressAllocated` condition names its own address).
fn allocated_event(network: &str, added: &[Allocation]) -> Option<EventSpec> {
    let (first, rest) = (
        added.iter().take(EVENT_NAMES),
        added.len().saturating_sub(EVENT_NAMES),
    );
    let mut names: Vec<String> = first
        .map(|a| format!("{} to Interface {}", a.address, a.interface))
        .collect();
    if names.is_empty() {
        return None;
    }
    if rest > 0 {
        names.push(format!("and {rest} more"));
    }
    let count = added.len();
    let noun = if count == 1 { "address" } else { "addresses" };
    Some(EventSpec::normal(
        reasons::EVENT_ADDRESS_ALLOCATED,
        "AllocateAddress",
        format!(
            "allocated {count} {noun} from Network {network}: {}",
            names.join(", ")
        ),
    ))
}

/// Plans one Network: runs the allocator against the live Interfaces.
pub fn plan_network(
    network: &Network,
    interfaces: &[Arc<Interface>],
    decision: &CidrDecision,
    now: &Time,
) -> NetworkPlan {
    let name = network.name_any();
    let previous = network.status.clone().unwrap_or_default();
    let generation = network.metadata.generation;
    let mut events = Vec::new();
    let (ready, conflict, cidr, allocations) = match decision {
        CidrDecision::Failed { reason, message } => (
            DesiredCondition::failed(NETWORK_READY, reason, message.clone()),
            DesiredCondition::failed(
                condition::CONFLICT,
                reasons::NO_CONFLICT,
                "no addresses are allocated without a CIDR",
            ),
            previous.cidr.clone(),
            previous.allocations.clone(),
        ),
        CidrDecision::Ready {
            cidr,
            source,
            carved_now,
        } => {
            if *carved_now {
                events.push((
                    Regarding::Network,
                    EventSpec::normal(
                        reasons::EVENT_CIDR_CARVED,
                        "CarveCidr",
                        format!("carved {cidr} from {source}"),
                    ),
                ));
            }
            let outcome = ipam::allocate_for_network(network, Some(*cidr), interfaces)
                .expect("a CIDR is given");
            if let Some(event) = allocated_event(&name, &outcome.added) {
                events.push((Regarding::Network, event));
            }
            for a in &outcome.released {
                events.push((
                    Regarding::Network,
                    EventSpec::normal(
                        reasons::EVENT_ADDRESS_RELEASED,
                        "ReleaseAddress",
                        format!("released {} of Interface {}, which no longer exists or no longer uses this Network", a.address, a.interface),
                    ),
                ));
            }
            let previous_conflicts = previous
                .conditions
                .iter()
                .find(|c| c.type_ == condition::CONFLICT)
                .map(|c| c.message.clone())
                .unwrap_or_default();
            let holders: std::collections::BTreeMap<String, String> =
                ipam::requests_for(network, interfaces)
                    .into_iter()
                    .map(|r| (r.uid, r.interface))
                    .collect();
            let mut messages = Vec::new();
            let mut first_reason = None;
            for (uid, error) in &outcome.errors {
                let message = error.to_string();
                first_reason.get_or_insert(error.reason());
                if !previous_conflicts.contains(&message)
                    && let Some(interface) = holders.get(uid)
                {
                    events.push((
                        Regarding::Interface(interface.clone()),
                        EventSpec::warning(error.reason(), "AllocateAddress", message.clone()),
                    ));
                }
                messages.push(message);
            }
            let usable = Usable::of(*cidr).count();
            let ready = DesiredCondition::ok(
                NETWORK_READY,
                reasons::NETWORK_READY,
                format!(
                    "{cidr} from {source}; {} of {usable} addresses allocated",
                    outcome.allocations.len()
                ),
            );
            let conflict = match first_reason {
                None => DesiredCondition::failed(
                    condition::CONFLICT,
                    reasons::NO_CONFLICT,
                    "every Interface that asks for an address has one",
                ),
                Some(reason) => {
                    DesiredCondition::ok(condition::CONFLICT, reason, messages.join("; "))
                }
            };
            (ready, conflict, Some(cidr.to_string()), outcome.allocations)
        }
    };
    let desired = [ready, conflict];
    NetworkPlan {
        status: NetworkStatus {
            observed_generation: generation,
            conditions: merge_conditions(&previous.conditions, &desired, generation, now),
            cidr,
            allocated: Some(u32::try_from(allocations.len()).unwrap_or(u32::MAX)),
            allocations,
        },
        events,
    }
}
