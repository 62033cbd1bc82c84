//! The daemon's long-lived tasks, tied to its health.
//!
//! Every task that must run as long as the daemon (the rtnetlink connections, the kernel
//! event monitor, the metrics server, the Kubernetes side with its status reports, the
//! desired-file watch) is spawned through [`Tasks`]. None of them ends while the daemon
//! runs, so the first one that does, whether it returned, failed or panicked, is a
//! failure: [`Tasks::ended`] marks `/healthz` failed ([`Metrics::fail`]) and tells the
//! caller, which exits non-zero so that the node's supervisor (the DaemonSet) restarts
//! the daemon instead of leaving it running with frozen state behind a green probe.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;

use tokio::task::{Id, JoinSet};

use crate::metrics::Metrics;

/// How a long-lived task ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskEnded {
    #[error("{task} stopped")]
    Returned { task: &'static str },
    #[error("{task} failed: {error}")]
    Failed { task: &'static str, error: String },
    #[error("{task} panicked: {message}")]
    Panicked { task: &'static str, message: String },
    #[error("{task} was cancelled")]
    Cancelled { task: &'static str },
}

impl TaskEnded {
    /// The name the task was spawned with.
    pub fn task(&self) -> &'static str {
        match self {
            TaskEnded::Returned { task }
            | TaskEnded::Failed { task, .. }
            | TaskEnded::Panicked { task, .. }
            | TaskEnded::Cancelled { task } => task,
        }
    }
}

/// The long-lived tasks of the daemon. Dropping it aborts them.
pub struct Tasks {
    set: JoinSet<Result<(), String>>,
    names: BTreeMap<Id, &'static str>,
    metrics: Arc<Metrics>,
}

impl Tasks {
    /// Ending tasks fail the `/healthz` of `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            set: JoinSet::new(),
            names: BTreeMap::new(),
            metrics,
        }
    }

    /// Spawns `future` as the long-lived task `task`: its end, `Ok` or `Err`, is a failure.
    pub fn spawn<T, E>(
        &mut self,
        task: &'static str,
        future: impl Future<Output = Result<T, E>> + Send + 'static,
    ) where
        E: Display,
    {
        let handle = self
            .set
            .spawn(async move { future.await.map(|_| ()).map_err(|e| e.to_string()) });
        self.names.insert(handle.id(), task);
    }

    /// How many tasks run.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// Waits until one of the tasks ends (forever if there are none), marks the daemon
    /// unhealthy and says which task ended and how.
    pub async fn ended(&mut self) -> TaskEnded {
        let Some(joined) = self.set.join_next_with_id().await else {
            return std::future::pending().await;
        };
        let id = match &joined {
            Ok((id, _)) => *id,
            Err(e) => e.id(),
        };
        let task = self.names.remove(&id).unwrap_or("a task");
        let ended = match joined {
            Ok((_, Ok(()))) => TaskEnded::Returned { task },
            Ok((_, Err(error))) => TaskEnded::Failed { task, error },
            Err(e) if e.is_panic() => {
                let payload = e.into_panic();
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "(no message)".into());
                TaskEnded::Panicked { task, message }
            }
            Err(_) => TaskEnded::Cancelled { task },
        };
        self.metrics.fail(ended.to_string());
        ended
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use hyper::Method;

    use super::*;
    use crate::metrics::respond;

    fn healthz(metrics: &Metrics) -> (u16, String) {
        use http_body_util::BodyExt as _;
        let response = respond(metrics, &Method::GET, "/healthz");
        let status = response.status().as_u16();
        let body = futures::executor::block_on(response.into_body().collect())
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
            .unwrap_or_default();
        (status, body)
    }

    #[tokio::test]
    async fn a_task_that_panics_fails_healthz_and_is_named() {
        let metrics = Arc::new(Metrics::default());
        let mut tasks = Tasks::new(metrics.clone());
        tasks.spawn("forever", std::future::pending::<Result<(), Infallible>>());
        let (fail, go) = tokio::sync::oneshot::channel::<()>();
        async fn panics_when_told(
            go: tokio::sync::oneshot::Receiver<()>,
        ) -> Result<(), Infallible> {
            let _ = go.await;
            panic!("injected failure")
        }
        tasks.spawn("status reports", panics_when_told(go));
        assert_eq!(healthz(&metrics).0, 200);
        fail.send(()).unwrap();
        let ended = tasks.ended().await;
        assert_eq!(
            ended,
            TaskEnded::Panicked {
                task: "status reports",
                message: "injected failure".into()
            }
        );
        let (code, body) = healthz(&metrics);
        assert_eq!(code, 503);
        assert!(body.contains("status reports panicked"), "{body}");
        assert_eq!(tasks.len(), 1, "the other task runs on");
    }

    #[tokio::test]
    async fn a_task_that_returns_or_fails_is_a_failure_too() {
        let metrics = Arc::new(Metrics::default());
        let mut tasks = Tasks::new(metrics.clone());
        tasks.spawn("kernel events", async { Ok::<(), Infallible>(()) });
        assert_eq!(
            tasks.ended().await,
            TaskEnded::Returned {
                task: "kernel events"
            }
        );
        tasks.spawn("metrics server", async {
            Err::<Infallible, _>(std::io::Error::from(std::io::ErrorKind::AddrInUse))
        });
        let ended = tasks.ended().await;
        assert_eq!(ended.task(), "metrics server");
        assert!(matches!(ended, TaskEnded::Failed { .. }), "{ended:?}");
        assert_eq!(healthz(&metrics).0, 503);
    }
}
