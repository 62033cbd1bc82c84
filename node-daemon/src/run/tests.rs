//! The loop against the recording fake, on tokio's paused clock.

use std::time::Duration;

use tokio::sync::{oneshot, watch};

use super::*;
use crate::apply::RecordingDataplane;
use crate::fixtures::*;
use crate::model::*;
use crate::plan::Step;

fn desired() -> DesiredNode {
    DesiredNode::default()
        .with_device(
            "wg0",
            DesiredDevice::test("a/x")
                .with_address("10.1.0.1/24")
                .with_peer(pk(2), peer(&["10.1.0.2/32"])),
        )
        .with_route("10.9.0.0/24", "wg0", None, None)
}

struct Harness {
    fake: RecordingDataplane,
    status: watch::Receiver<NodeStatus>,
    desired: watch::Sender<Option<DesiredNode>>,
    events: KernelEvents,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Reconciler<RecordingDataplane>>,
}

fn start(initial: Option<DesiredNode>, resync: Duration) -> Harness {
    let fake = RecordingDataplane::new(ObservedNode::default());
    let reconciler = Reconciler::new(fake.clone(), Default::default());
    let status = reconciler.subscribe();
    let (desired, rx) = watch::channel(initial);
    let events = KernelEvents::new();
    let (stop, stop_rx) = oneshot::channel::<()>();
    let config = RunConfig {
        resync_period: resync,
        ..RunConfig::default()
    };
    let task = tokio::spawn(run(reconciler, rx, events.clone(), config, async {
        let _ = stop_rx.await;
    }));
    Harness {
        fake,
        status,
        desired,
        events,
        stop,
        task,
    }
}

async fn settle() {
    // Paused clock: sleeping lets the loop run until it waits on something.
    tokio::time::sleep(Duration::from_millis(10)).await;
}

/// Waits past the checks that follow a change (the fake's peers never shake hands, so
/// they run to the end of the schedule).
async fn past_followup() {
    tokio::time::sleep(*followup::OFFSETS.last().unwrap() + Duration::from_secs(1)).await;
}

fn shake_hands(h: &Harness, peer: PublicKey) {
    h.fake.with_state(|s| {
        s.devices
            .get_mut(&name("wg0"))
            .unwrap()
            .wireguard
            .as_mut()
            .unwrap()
            .peers
            .get_mut(&peer)
            .unwrap()
            .stats
            .last_handshake = Some(std::time::SystemTime::now());
    });
}

#[tokio::test(start_paused = true)]
async fn nothing_is_observed_or_written_while_the_desired_state_is_unknown() {
    let h = start(None, Duration::from_secs(30));
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(h.fake.observes(), 0);
    assert_eq!(h.fake.writes(), 0);
    h.stop.send(()).unwrap();
    h.task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_unchanged_desired_state_makes_zero_writes_on_every_resync() {
    let h = start(Some(desired()), Duration::from_secs(30));
    settle().await;
    let after_first = h.fake.writes();
    assert!(after_first > 0);
    past_followup().await;
    let looked = h.fake.observes();
    assert_eq!(
        looked,
        1 + followup::OFFSETS.len() as u64,
        "start, then the checks"
    );
    tokio::time::sleep(Duration::from_secs(95)).await;
    assert_eq!(h.fake.writes(), after_first);
    assert_eq!(h.fake.observes(), looked + 3, "three resyncs");
    // Re-sending an equal desired state takes the delta path: no observe, no write.
    h.desired.send(Some(desired())).unwrap();
    settle().await;
    assert_eq!(
        (h.fake.writes(), h.fake.observes()),
        (after_first, looked + 3)
    );
    h.stop.send(()).unwrap();
    h.task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_desired_change_is_applied_as_a_delta_without_reading_the_kernel_back() {
    let h = start(Some(desired()), Duration::from_secs(3600));
    past_followup().await;
    h.fake.clear_log();
    let observes = h.fake.observes();
    let mut changed = desired();
    changed
        .devices
        .get_mut(&name("wg0"))
        .unwrap()
        .peers
        .insert(pk(3), peer(&["10.1.0.3/32"]));
    h.desired.send(Some(changed)).unwrap();
    // Before the first check that follows the change.
    tokio::time::sleep(followup::OFFSETS[0] / 2).await;
    assert_eq!(h.fake.observes(), observes);
    let log = h.fake.log();
    assert_eq!(log.len(), 1);
    assert!(matches!(&log[0], Step::UpsertPeer { peer, .. } if *peer == pk(3)));
    h.stop.send(()).unwrap();
    h.task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_kwire_route_deleted_by_hand_comes_back_at_the_next_resync() {
    let h = start(Some(desired()), Duration::from_secs(30));
    settle().await;
    h.fake.with_state(|s| s.routes.clear());
    h.fake.clear_log();
    tokio::time::sleep(Duration::from_secs(31)).await;
    assert!(matches!(h.fake.log().as_slice(), [Step::AddRoute { .. }]));
    h.stop.send(()).unwrap();
    h.task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_peer_added_by_hand_to_a_kwire_device_is_removed_at_the_next_resync() {
    let h = start(Some(desired()), Duration::from_secs(30));
    settle().await;
    h.fake.with_state(|s| {
        let wg = s
            .devices
            .get_mut(&name("wg0"))
            .unwrap()
            .wireguard
            .as_mut()
            .unwrap();
        wg.peers.insert(pk(9), Default::default());
    });
    h.fake.clear_log();
    tokio::time::sleep(Duration::from_secs(31)).await;
    assert_eq!(
        h.fake.log(),
        vec![Step::RemovePeer {
            device: name("wg0"),
            peer: pk(9)
        }]
    );
    h.stop.send(()).unwrap();
    h.task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_link_removed_event_triggers_a_full_reconcile_that_restores_the_device() {
    let h = start(Some(desired()), Duration::from_secs(3600));
    settle().await;
    // wireguard-go died: the link and its routes are gone.
    h.fake.with_state(|s| {
        s.devices.clear();
        s.routes.clear();
    });
    h.fake.clear_log();
    h.events.send(KernelEvent::LinkRemoved(name("wg0")));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let log = h.fake.log();
    assert!(matches!(log.first(), Some(Step::CreateDevice { .. })));
    assert!(matches!(log.last(), Some(Step::AddRoute { .. })));
    h.stop.send(()).unwrap();
    h.task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_event_about_an_unrelated_link_does_not_observe_the_kernel() {
    let h = start(Some(desired()), Duration::from_secs(3600));
    past_followup().await;
    let observes = h.fake.observes();
    h.events.send(KernelEvent::LinkRemoved(name("veth1234")));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(h.fake.observes(), observes);
    h.stop.send(()).unwrap();
    h.task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_flood_of_kernel_events_is_coalesced_into_one_full_reconcile() {
    let h = start(Some(desired()), Duration::from_secs(3600));
    past_followup().await;
    let observes = h.fake.observes();
    // Far more deletions than any queue should hold, one of them kwire's, sent while the
    // loop cannot run (this runtime has one thread): they are merged, not queued.
    for i in 0..50_000 {
        h.events
            .send(KernelEvent::LinkRemoved(name(&format!("veth{i}"))));
    }
    h.events.send(KernelEvent::RouteRemoved);
    assert!(h.events.peek().names() <= events::MAX_NAMES);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(h.fake.observes(), observes + 1, "one full reconcile");
    assert!(h.events.peek().is_empty());
    h.stop.send(()).unwrap();
    h.task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_failed_step_is_retried_with_a_full_reconcile_after_a_backoff() {
    let fake_fails_once = |h: &Harness| {
        h.fake
            .fail_when(1, |s| matches!(s, Step::AddAddress { .. }))
    };
    let h = start(None, Duration::from_secs(3600));
    fake_fails_once(&h);
    h.desired.send(Some(desired())).unwrap();
    settle().await;
    assert!(h.fake.state().devices[&name("wg0")].addresses.is_empty());
    // The backoff, not the checks that follow a change, decides when to look again.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(h.fake.observes(), 1);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(h.fake.state().devices[&name("wg0")].addresses.len(), 1);
    h.stop.send(()).unwrap();
    h.task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_failed_observation_is_retried_and_nothing_is_torn_down() {
    let h = start(Some(desired()), Duration::from_secs(3600));
    past_followup().await;
    let writes = h.fake.writes();
    let observes = h.fake.observes();
    h.fake.fail_observes(3);
    h.events.send(KernelEvent::RouteRemoved);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(h.fake.writes(), writes);
    assert_eq!(h.fake.state().devices.len(), 1);
    assert_eq!(
        h.fake.observes(),
        observes + 4,
        "three failures, then success"
    );
    h.stop.send(()).unwrap();
    h.task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_closed_desired_source_keeps_the_last_desired_state_in_force() {
    let h = start(Some(desired()), Duration::from_secs(30));
    settle().await;
    drop(h.desired);
    h.fake.with_state(|s| s.routes.clear());
    tokio::time::sleep(Duration::from_secs(31)).await;
    assert_eq!(h.fake.state().routes.len(), 1);
    assert_eq!(h.fake.state().devices.len(), 1);
    h.stop.send(()).unwrap();
    h.task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn stopping_the_loop_leaves_the_data_plane_as_it_is() {
    let h = start(Some(desired()), Duration::from_secs(30));
    settle().await;
    let before = h.fake.state();
    let writes = h.fake.writes();
    h.stop.send(()).unwrap();
    let reconciler = h.task.await.unwrap();
    assert_eq!(h.fake.state(), before);
    assert_eq!(reconciler.dataplane().writes(), writes);
}

#[tokio::test(start_paused = true)]
async fn conflicts_are_published_in_the_status() {
    let h = start(None, Duration::from_secs(30));
    h.fake.with_state(|s| {
        s.devices.insert(name("wg0"), foreign_link("dummy"));
    });
    h.desired.send(Some(desired())).unwrap();
    settle().await;
    assert_eq!(h.fake.writes(), 0);
    h.stop.send(()).unwrap();
    let reconciler = h.task.await.unwrap();
    let status = reconciler.subscribe().borrow().clone();
    let reasons: Vec<_> = status.conflicts.iter().map(|c| c.reason()).collect();
    assert_eq!(reasons, vec!["InterfaceNameConflict", "DeviceUnavailable"]);
    assert!(status.observed.is_some());
}

#[tokio::test(start_paused = true)]
async fn a_new_peer_is_looked_at_again_soon_until_its_first_handshake() {
    let h = start(Some(desired()), Duration::from_secs(3600));
    // Start (0 ms), then checks at 10 and 25 ms.
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(h.fake.observes(), 3);
    assert!(h.status.borrow().fresh_peers.is_empty());
    shake_hands(&h, pk(2));
    // The check at 50 ms sees the handshake and publishes it; then no more checks.
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(h.fake.observes(), 4);
    let seen = h.status.borrow().observed.clone().unwrap();
    let stats = &seen.devices[&name("wg0")].wireguard.as_ref().unwrap().peers[&pk(2)].stats;
    assert!(stats.last_handshake.is_some());
    past_followup().await;
    assert_eq!(h.fake.observes(), 4);
    h.stop.send(()).unwrap();
    h.task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_peer_added_by_a_delta_is_fresh_until_the_next_look() {
    let h = start(Some(desired()), Duration::from_secs(3600));
    past_followup().await;
    let mut changed = desired();
    changed
        .devices
        .get_mut(&name("wg0"))
        .unwrap()
        .peers
        .insert(pk(3), peer(&["10.1.0.3/32"]));
    h.desired.send(Some(changed)).unwrap();
    tokio::time::sleep(followup::OFFSETS[0] / 2).await;
    // The published observation predates the new entry: the status knows it is new.
    assert_eq!(h.status.borrow().fresh_peers, [(name("wg0"), pk(3))].into());
    tokio::time::sleep(followup::OFFSETS[0]).await;
    let status = h.status.borrow().clone();
    assert!(status.fresh_peers.is_empty());
    assert!(
        status.observed.unwrap().devices[&name("wg0")]
            .wireguard
            .as_ref()
            .unwrap()
            .peers
            .contains_key(&pk(3))
    );
    h.stop.send(()).unwrap();
    h.task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn crossed_first_initiations_are_restarted_once_by_the_end_with_the_lower_key() {
    let own = sk(1).public_key();
    let higher = (0..=255u8).map(pk).find(|k| *k > own).unwrap();
    let want = DesiredNode::default().with_device(
        "wg0",
        DesiredDevice::test("a/x")
            .with_address("10.1.0.1/24")
            .with_peer(higher, peer(&["10.1.0.2/32"])),
    );
    let h = start(Some(want), Duration::from_secs(3600));
    settle().await;
    // Both ends sent an initiation and answered the other's; no handshake.
    h.fake.with_state(|s| {
        let stats = &mut s
            .devices
            .get_mut(&name("wg0"))
            .unwrap()
            .wireguard
            .as_mut()
            .unwrap()
            .peers
            .get_mut(&higher)
            .unwrap()
            .stats;
        stats.rx_bytes = followup::INITIATION_BYTES;
        stats.tx_bytes = followup::INITIATION_AND_RESPONSE_BYTES;
    });
    h.fake.clear_log();
    tokio::time::sleep(followup::CROSSED_AFTER / 2).await;
    assert!(
        h.fake.log().is_empty(),
        "a normal exchange may be completing"
    );
    past_followup().await;
    assert_eq!(
        h.fake.log(),
        vec![
            Step::RemovePeer {
                device: name("wg0"),
                peer: higher
            },
            Step::UpsertPeer {
                device: name("wg0"),
                peer: higher,
                change: crate::plan::PeerChange {
                    create: true,
                    allowed_ips: Some(nets(&["10.1.0.2/32"])),
                    ..Default::default()
                },
            },
        ]
    );
    h.stop.send(()).unwrap();
    h.task.await.unwrap();
}
