//! A fake dataplane for unit tests: [`crate::kernel_model`] plus a log of
//! executed steps, write and observe counters, and failure injection.
//!
//! Clones share one modelled kernel, so a test can keep a clone to inject
//! drift or failures while a [`crate::run::Reconciler`] owns another.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{Dataplane, DataplaneError};
use crate::kernel_model::apply_step;
use crate::model::ObservedNode;
use crate::observe::ObserveError;
use crate::plan::Step;

type Matcher = Box<dyn Fn(&Step) -> bool + Send>;

struct Failure {
    matches: Matcher,
    remaining: usize,
}

struct Inner {
    state: ObservedNode,
    log: Vec<Step>,
    writes: u64,
    observes: u64,
    failures: Vec<Failure>,
    observe_failures: VecDeque<()>,
}

/// In-memory [`Dataplane`] for tests.
#[derive(Clone)]
pub struct RecordingDataplane {
    inner: Arc<Mutex<Inner>>,
}

impl RecordingDataplane {
    /// A dataplane whose kernel currently looks like `initial`.
    pub fn new(initial: ObservedNode) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                state: initial,
                log: Vec::new(),
                writes: 0,
                observes: 0,
                failures: Vec::new(),
                observe_failures: VecDeque::new(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A copy of the modelled kernel.
    pub fn state(&self) -> ObservedNode {
        self.lock().state.clone()
    }

    /// Changes the modelled kernel behind kwire's back (drift).
    pub fn with_state<R>(&self, f: impl FnOnce(&mut ObservedNode) -> R) -> R {
        f(&mut self.lock().state)
    }

    /// Successfully executed steps, in order.
    pub fn log(&self) -> Vec<Step> {
        self.lock().log.clone()
    }

    pub fn clear_log(&self) {
        self.lock().log.clear();
    }

    pub fn observes(&self) -> u64 {
        self.lock().observes
    }

    /// The next `times` steps for which `matches` returns true fail.
    pub fn fail_when(&self, times: usize, matches: impl Fn(&Step) -> bool + Send + 'static) {
        self.lock().failures.push(Failure {
            matches: Box::new(matches),
            remaining: times,
        });
    }

    /// The next `times` observations fail.
    pub fn fail_observes(&self, times: usize) {
        self.lock()
            .observe_failures
            .extend(std::iter::repeat_n((), times));
    }
}

impl Dataplane for RecordingDataplane {
    async fn observe(&mut self) -> Result<ObservedNode, ObserveError> {
        let mut inner = self.lock();
        inner.observes += 1;
        if inner.observe_failures.pop_front().is_some() {
            return Err(ObserveError::Injected);
        }
        Ok(inner.state.clone())
    }

    async fn execute(&mut self, step: &Step) -> Result<(), DataplaneError> {
        let mut inner = self.lock();
        inner.writes += 1;
        if let Some(f) = inner
            .failures
            .iter_mut()
            .find(|f| f.remaining > 0 && (f.matches)(step))
        {
            f.remaining -= 1;
            return Err(DataplaneError::Injected);
        }
        apply_step(&mut inner.state, step)?;
        inner.log.push(step.clone());
        Ok(())
    }

    fn writes(&self) -> u64 {
        self.lock().writes
    }
}
