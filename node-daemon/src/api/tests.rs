//! [`drive`] against a fake API server with no objects: what happens when its own tasks end.

use std::convert::Infallible;
use std::time::Duration;

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::{Bytes, Frame};

use super::*;

/// An API server without objects: every list is empty, every watch stays open and quiet.
fn empty_api_server() -> Client {
    let service = tower::service_fn(|request: http::Request<kube::client::Body>| async move {
        let watch = request
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|p| p == "watch=true"));
        let body: BoxBody<Bytes, Infallible> = if watch {
            StreamBody::new(futures::stream::pending::<Result<Frame<Bytes>, Infallible>>()).boxed()
        } else {
            Full::new(Bytes::from_static(
                br#"{"apiVersion":"v1","kind":"List","metadata":{"resourceVersion":"1"},"items":[]}"#,
            ))
            .boxed()
        };
        let response = http::Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(body)
            .expect("a response");
        Ok::<_, Infallible>(response)
    });
    Client::new(service, "default")
}

struct Driven {
    desired: watch::Receiver<Option<DesiredNode>>,
    status: watch::Sender<NodeStatus>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), DriveError>>,
}

/// Starts [`drive`] for `node` and waits until it published the (empty) desired state.
async fn start(node: &str) -> Driven {
    let (desired_tx, mut desired) = watch::channel(None);
    let (status, status_rx) = watch::channel(NodeStatus::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let config = ApiConfig {
        node_name: node.into(),
        key_dir: std::env::temp_dir(),
        resync_period: Duration::from_secs(3600),
        metrics: Arc::default(),
    };
    let task = tokio::spawn(drive(
        empty_api_server(),
        config,
        desired_tx,
        status_rx,
        async {
            let _ = stopped.await;
        },
    ));
    desired
        .wait_for(Option::is_some)
        .await
        .expect("drive published the desired state");
    Driven {
        desired,
        status,
        stop,
        task,
    }
}

#[tokio::test]
async fn drive_returns_ok_at_shutdown() {
    let d = start("node-stops").await;
    assert_eq!(d.desired.borrow().clone(), Some(DesiredNode::default()));
    d.stop.send(()).unwrap();
    assert!(d.task.await.unwrap().is_ok());
}

#[tokio::test]
async fn a_status_report_task_that_panics_makes_drive_fail() {
    let d = start("node-report-panics").await;
    fail_points::panic_in_report("node-report-panics");
    // Wake the report task: it panics on its next round.
    d.status.send_modify(|_| {});
    let result = d.task.await.unwrap();
    match result {
        Err(DriveError::ReportFailed(why)) => {
            assert!(why.contains("injected failure"), "{why}");
        }
        other => panic!("expected the report task's failure, got {other:?}"),
    }
    drop(d.stop);
}

#[tokio::test]
async fn a_status_report_task_that_returns_makes_drive_fail() {
    let d = start("node-report-returns").await;
    // The report task returns once its reconciler is gone.
    drop(d.status);
    assert!(matches!(
        d.task.await.unwrap(),
        Err(DriveError::ReportEnded)
    ));
    drop(d.stop);
}
