//! Kernel events, coalesced instead of queued.
//!
//! A node can delete links much faster than a full reconcile runs (a pod churn removes
//! veths by the hundred), and every event the loop cares about leads to the same thing,
//! one full reconcile. So senders never queue: [`KernelEvents::send`] merges the event
//! into one [`Pending`] summary (the names of removed links, up to [`MAX_NAMES`], then
//! only "more than that"), and the loop takes the whole summary at once
//! ([`KernelEvents::next`]). Memory stays bounded whatever the kernel does, a sender never
//! blocks, and a burst costs one reconcile.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::KernelEvent;
use crate::model::IfaceName;

/// How many link names a [`Pending`] keeps before it only records that there were more.
pub const MAX_NAMES: usize = 256;

/// What happened since the loop last looked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pending {
    /// Links deleted, by name (at most [`MAX_NAMES`]).
    pub links_removed: BTreeSet<IfaceName>,
    /// wireguard-go processes of this daemon that exited, by device (at most [`MAX_NAMES`]).
    pub userspace_exited: BTreeSet<IfaceName>,
    /// A route with kwire's protocol was deleted.
    pub route_removed: bool,
    /// More names than [`MAX_NAMES`] came: which ones is no longer known.
    pub overflowed: bool,
}

impl Pending {
    pub fn is_empty(&self) -> bool {
        self.links_removed.is_empty()
            && self.userspace_exited.is_empty()
            && !self.route_removed
            && !self.overflowed
    }

    /// Merges one event.
    pub fn add(&mut self, event: KernelEvent) {
        let (names, name) = match event {
            KernelEvent::RouteRemoved => {
                self.route_removed = true;
                return;
            }
            KernelEvent::LinkRemoved(name) => (&mut self.links_removed, name),
            KernelEvent::UserspaceExited(name) => (&mut self.userspace_exited, name),
        };
        if names.len() < MAX_NAMES || names.contains(&name) {
            names.insert(name);
        } else {
            self.overflowed = true;
        }
    }

    /// Merges another summary.
    pub fn merge(&mut self, other: Pending) {
        self.route_removed |= other.route_removed;
        self.overflowed |= other.overflowed;
        for name in other.links_removed {
            self.add(KernelEvent::LinkRemoved(name));
        }
        for name in other.userspace_exited {
            self.add(KernelEvent::UserspaceExited(name));
        }
    }

    /// Whether anything here may concern kwire: a route or a process of its own, a link
    /// for which `is_ours` holds, or names that were not kept.
    pub fn concerns(&self, is_ours: impl Fn(&IfaceName) -> bool) -> bool {
        self.route_removed
            || self.overflowed
            || !self.userspace_exited.is_empty()
            || self.links_removed.iter().any(is_ours)
    }

    /// How many names are kept (for tests and logs).
    pub fn names(&self) -> usize {
        self.links_removed.len() + self.userspace_exited.len()
    }
}

#[derive(Debug, Default)]
struct Shared {
    pending: Mutex<Pending>,
    notify: Notify,
}

/// The sending and the receiving side of coalesced kernel events (clones share them).
#[derive(Debug, Clone, Default)]
pub struct KernelEvents {
    shared: Arc<Shared>,
}

impl KernelEvents {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `event`; never blocks, never grows beyond [`MAX_NAMES`] names.
    pub fn send(&self, event: KernelEvent) {
        self.lock().add(event);
        self.shared.notify.notify_one();
    }

    /// Takes what is pending now (possibly nothing).
    pub fn take(&self) -> Pending {
        std::mem::take(&mut *self.lock())
    }

    /// Waits until something is pending and takes it.
    pub async fn next(&self) -> Pending {
        loop {
            let pending = self.take();
            if !pending.is_empty() {
                return pending;
            }
            // A send between the take and here leaves a permit: this returns at once.
            self.shared.notify.notified().await;
        }
    }

    /// What is pending, without taking it.
    pub fn peek(&self) -> Pending {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.shared
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::name;

    #[test]
    fn a_flood_of_events_is_kept_in_bounded_memory() {
        let events = KernelEvents::new();
        for i in 0..100_000 {
            events.send(KernelEvent::LinkRemoved(name(&format!("veth{i}"))));
            events.send(KernelEvent::RouteRemoved);
        }
        events.send(KernelEvent::UserspaceExited(name("wg0")));
        let pending = events.take();
        assert!(pending.names() <= 2 * MAX_NAMES, "{}", pending.names());
        assert!(pending.overflowed && pending.route_removed);
        assert_eq!(pending.userspace_exited, [name("wg0")].into());
        assert!(events.take().is_empty(), "taken at once");
    }

    #[test]
    fn only_events_about_kwire_concern_it_unless_names_were_dropped() {
        let ours = |n: &IfaceName| n.as_str() == "wg0";
        let mut p = Pending::default();
        p.add(KernelEvent::LinkRemoved(name("veth1")));
        assert!(!p.concerns(ours));
        p.add(KernelEvent::LinkRemoved(name("wg0")));
        assert!(p.concerns(ours));
        let mut p = Pending {
            overflowed: true,
            ..Pending::default()
        };
        assert!(p.concerns(ours), "a dropped name may have been kwire's");
        p.merge(Pending {
            route_removed: true,
            ..Pending::default()
        });
        assert!(p.route_removed && p.overflowed);
    }

    #[tokio::test]
    async fn next_waits_for_an_event_and_a_send_before_the_wait_is_not_lost() {
        let events = KernelEvents::new();
        events.send(KernelEvent::RouteRemoved);
        assert!(events.next().await.route_removed);
        let sender = events.clone();
        let waiter = tokio::spawn(async move { events.next().await });
        tokio::task::yield_now().await;
        sender.send(KernelEvent::LinkRemoved(name("wg0")));
        let got = waiter.await.unwrap();
        assert_eq!(got.links_removed, [name("wg0")].into());
    }
}
