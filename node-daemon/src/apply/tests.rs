use super::*;
use crate::fixtures::*;
use crate::model::*;
use crate::plan::plan;

fn two_devices() -> DesiredNode {
    DesiredNode::default()
        .with_device(
            "wg0",
            DesiredDevice::test("a/x")
                .with_address("10.1.0.1/24")
                .with_peer(pk(2), peer(&["10.1.0.2/32"])),
        )
        .with_device(
            "wg1",
            DesiredDevice::test("a/y")
                .with_address("10.2.0.1/24")
                .with_peer(pk(3), peer(&["10.2.0.2/32"])),
        )
        .with_route("10.9.0.0/24", "wg0", None, None)
}

#[tokio::test]
async fn an_error_on_one_device_skips_its_remaining_steps_and_not_the_others() {
    let d = two_devices();
    let mut dp = RecordingDataplane::new(ObservedNode::default());
    dp.fail_when(
        1,
        |s| matches!(s, Step::UpsertPeer { device, .. } if device.as_str() == "wg0"),
    );
    let p = plan(&d, &ObservedNode::default());
    let report = apply(&p, &mut dp).await;

    assert_eq!(report.errors.len(), 1);
    assert_eq!(report.failed_devices(), [name("wg0")].into());
    let wg0 = name("wg0");
    let err = report.errors_for(&wg0).next().unwrap();
    assert!(err.to_string().starts_with("+ wg0: add peer"), "{err}");
    // wg0 stopped after the failed peer: no address, not up, no route.
    let state = dp.state();
    let dev0 = &state.devices[&wg0];
    assert!(dev0.addresses.is_empty() && !dev0.up);
    assert!(state.routes.is_empty());
    // wg1 went all the way.
    let wg1 = &state.devices[&name("wg1")];
    assert!(wg1.up && wg1.addresses.len() == 1);
    assert_eq!(report.skipped, 3); // address, up, route of wg0
    assert_eq!(report.applied + report.skipped + 1, p.steps.len());
}

#[tokio::test]
async fn a_second_apply_after_convergence_makes_zero_writes() {
    let d = two_devices();
    let mut dp = RecordingDataplane::new(ObservedNode::default());
    let first = apply(&plan(&d, &dp.observe().await.unwrap()), &mut dp).await;
    assert!(first.is_success());
    assert_eq!(first.writes as usize, first.applied);
    let second = apply(&plan(&d, &dp.observe().await.unwrap()), &mut dp).await;
    assert_eq!((second.applied, second.writes), (0, 0));
}

#[tokio::test]
async fn failure_messages_do_not_contain_private_keys() {
    let d = two_devices();
    let mut dp = RecordingDataplane::new(ObservedNode::default());
    dp.fail_when(5, |s| matches!(s, Step::SetPrivateKey { .. }));
    let report = apply(&plan(&d, &ObservedNode::default()), &mut dp).await;
    let text: String = report.errors.iter().map(|e| format!("{e} {e:?}")).collect();
    assert!(text.contains("<redacted>"));
    // sk(1) is 32 bytes of 0x01: base64 "AQEB…".
    assert!(!text.contains("AQEBAQEB"), "{text}");
}

/// Counts the calls [`apply`] makes, and forwards them to a [`RecordingDataplane`].
struct Counting {
    inner: RecordingDataplane,
    singles: usize,
    wireguard_batches: Vec<usize>,
    route_batches: Vec<usize>,
}

impl Dataplane for Counting {
    async fn observe(&mut self) -> Result<ObservedNode, crate::observe::ObserveError> {
        self.inner.observe().await
    }
    async fn execute(&mut self, step: &Step) -> Result<(), DataplaneError> {
        self.singles += 1;
        self.inner.execute(step).await
    }
    async fn execute_wireguard(&mut self, steps: &[Step]) -> Result<(), (usize, DataplaneError)> {
        self.wireguard_batches.push(steps.len());
        self.inner.execute_wireguard(steps).await
    }
    async fn execute_routes(&mut self, steps: &[Step]) -> Vec<Result<(), DataplaneError>> {
        self.route_batches.push(steps.len());
        self.inner.execute_routes(steps).await
    }
    fn writes(&self) -> u64 {
        self.inner.writes()
    }
}

#[tokio::test]
async fn wireguard_steps_of_a_device_and_consecutive_routes_go_out_as_one_batch_each() {
    let mut device = DesiredDevice::test("a/x").with_address("10.1.0.1/24");
    for n in 2..=101 {
        device = device.with_peer(pk(n), peer(&[&format!("10.1.{n}.0/24")]));
    }
    let mut d = DesiredNode::default().with_device("wg0", device);
    for n in 0..50 {
        d = d.with_route(&format!("10.200.{n}.0/24"), "wg0", None, None);
    }
    let mut dp = Counting {
        inner: RecordingDataplane::new(ObservedNode::default()),
        singles: 0,
        wireguard_batches: Vec::new(),
        route_batches: Vec::new(),
    };
    let report = apply(&plan(&d, &ObservedNode::default()), &mut dp).await;
    assert!(report.is_success());
    // key + 100 peers in one request; 50 routes in one pipelined batch.
    assert_eq!(dp.wireguard_batches, vec![101]);
    assert_eq!(dp.route_batches, vec![50]);
    // create, mark, address, up
    assert_eq!(dp.singles, 4);
    assert_eq!(report.applied, 4 + 101 + 50);
}

#[tokio::test]
async fn a_failure_inside_a_wireguard_batch_applies_the_steps_before_it_and_skips_the_rest() {
    let d = DesiredNode::default().with_device(
        "wg0",
        DesiredDevice::test("a/x")
            .with_port(51820)
            .with_address("10.1.0.1/24")
            .with_peer(pk(2), peer(&["10.1.0.2/32"])),
    );
    let mut dp = RecordingDataplane::new(ObservedNode::default());
    dp.fail_when(1, |s| matches!(s, Step::SetListenPort { .. }));
    let report = apply(&plan(&d, &ObservedNode::default()), &mut dp).await;
    assert_eq!(report.errors.len(), 1);
    assert!(
        report.errors[0].step.contains("set listen port"),
        "{}",
        report.errors[0]
    );
    let state = dp.state();
    let wg = state.devices[&name("wg0")].wireguard.as_ref().unwrap();
    assert!(
        wg.private_key.is_some(),
        "the key, before the port, was applied"
    );
    assert!(wg.peers.is_empty(), "the peer, after the port, was not");
    // peer, address, up
    assert_eq!(report.skipped, 3);
}
