//! Where the consumer runs its blocking store calls.
//!
//! In a real process every sled call of a session's apply path runs on a thread of that
//! session's own, a [`Runner`], so a slow disk never stalls the reader or the keepalive
//! poller, and a panic in apply is caught on its thread. One thread, not tokio's
//! blocking pool: the pool hands each call to whichever idle thread its condition
//! variable wakes, so consecutive batches of a refresh ran on three threads in turn,
//! and each batch found sled's nodes, the epoch collector's garbage and the allocator's
//! free lists on another thread. The same refresh on one thread takes a seventh less
//! CPU and a fifth less time (`docs/benchmarks-history.md`).
//!
//! A deterministic simulation (turmoil, one thread, simulated clock) cannot hand work
//! to other threads without giving up replayability, so it runs the same calls inline
//! instead, with panics still caught. The choice is made per task through a
//! task-local, so the production configuration needs no new field.
//!
//! A store that has failed ends the wait for work handed to the thread: a flush stuck
//! in sled (see [`tether_store::failure`]) never returns, and a session waiting for it
//! would hold its agreement, and the process's shutdown, for ever.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;

use tether_store::{FailureLatch, StoreFailure};
use thiserror::Error;
use tokio::sync::oneshot;
use tracing::Instrument;

/// How blocking work is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Executor {
    /// On the session's own thread (production).
    #[default]
    Dedicated,
    /// On the calling task's thread (deterministic simulation).
    Inline,
}

tokio::task_local! {
    static EXECUTOR: Executor;
}

/// Why blocking work produced no result.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TaskError {
    /// The work panicked (the panic was caught).
    #[error("task panicked")]
    Panicked,
    /// The work never ran or its result was lost (the thread is gone).
    #[error("task cancelled: {0}")]
    Cancelled(String),
    /// The store failed while the work was under way; it was not waited for.
    #[error("the store failed: {0}")]
    StoreFailed(StoreFailure),
}

/// Runs `fut` with blocking work executed by `executor`.
pub async fn scope<F: std::future::Future>(executor: Executor, fut: F) -> F::Output {
    EXECUTOR.scope(executor, fut).await
}

/// The executor in force for the current task ([`Executor::Dedicated`] outside any
/// [`scope`]).
pub fn current() -> Executor {
    EXECUTOR.try_with(|e| *e).unwrap_or_default()
}

/// A unit of work for the thread.
type Job = Box<dyn FnOnce() + Send>;

/// Runs one session's blocking work, in the order it is handed over, per the
/// [`current`] executor. Owned by the session: [`Runner::stop`] ends the thread once
/// the work handed to it is done; dropped without it, the thread still finishes
/// that work and then ends.
#[derive(Debug)]
pub struct Runner {
    kind: Kind,
    /// The failure of the store the work writes to, which ends every wait for it.
    failure: FailureLatch,
}

#[derive(Debug)]
enum Kind {
    Thread {
        /// Work for the thread; closing it ends the thread.
        jobs: mpsc::Sender<Job>,
        /// Resolves (closed) when the thread has ended.
        ended: oneshot::Receiver<()>,
    },
    Inline,
}

impl Runner {
    /// Starts a runner for the current executor; `name` names its thread, and the
    /// failure of `failure`'s store ends the wait for its work.
    pub fn start(name: &str, failure: FailureLatch) -> std::io::Result<Self> {
        let kind = match current() {
            Executor::Inline => Kind::Inline,
            Executor::Dedicated => {
                let (jobs, queue) = mpsc::channel::<Job>();
                let (ended_tx, ended) = oneshot::channel();
                std::thread::Builder::new().name(name.to_string()).spawn(move || {
                    // Each job catches its own panic, so the thread outlives a failed apply.
                    for job in queue {
                        job();
                    }
                    drop(ended_tx);
                })?;
                Kind::Thread { jobs, ended }
            }
        };
        Ok(Self { kind, failure })
    }

    /// Runs blocking `f` and returns its result; a panic becomes
    /// [`TaskError::Panicked`]. Log lines of `f` carry the caller's span.
    pub async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, TaskError> {
        match &self.kind {
            Kind::Inline => std::panic::catch_unwind(AssertUnwindSafe(f)).map_err(|_| TaskError::Panicked),
            Kind::Thread { jobs, .. } => {
                let (tx, rx) = oneshot::channel();
                let span = tracing::Span::current();
                let job: Job = Box::new(move || {
                    let result = span.in_scope(|| std::panic::catch_unwind(AssertUnwindSafe(f)));
                    // The caller may have gone (its session was dropped): nobody to tell.
                    let _ = tx.send(result);
                });
                if jobs.send(job).is_err() {
                    return Err(TaskError::Cancelled("the store thread has ended".into()));
                }
                match self.failure.unless_failed(rx.in_current_span()).await.map_err(TaskError::StoreFailed)? {
                    Ok(Ok(v)) => Ok(v),
                    Ok(Err(_)) => Err(TaskError::Panicked),
                    Err(_) => Err(TaskError::Cancelled("the store thread dropped the work".into())),
                }
            }
        }
    }

    /// Ends the thread after the work already handed to it, and waits for it to end,
    /// unless the store fails meanwhile: the thread may then be stuck in it.
    pub async fn stop(self) {
        if let Kind::Thread { jobs, ended } = self.kind {
            drop(jobs);
            // Closed, never sent: the thread drops its end as it returns.
            let _ = self.failure.unless_failed(ended).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn both_executors_return_results_and_catch_panics() {
        for executor in [Executor::Dedicated, Executor::Inline] {
            let (ok, panicked, after) = scope(executor, async {
                assert_eq!(current(), executor);
                let runner = Runner::start("test-runner", FailureLatch::default()).unwrap();
                let ok = runner.run(|| 7).await;
                let panicked = runner.run(|| -> u8 { panic!("planted") }).await;
                // The thread survives a panicking job.
                let after = runner.run(|| 8).await;
                runner.stop().await;
                (ok, panicked, after)
            })
            .await;
            assert_eq!(ok, Ok(7));
            assert_eq!(panicked, Err(TaskError::Panicked));
            assert_eq!(after, Ok(8));
        }
        assert_eq!(current(), Executor::Dedicated);
    }

    /// Work stuck in a store that fails (a flush sled never finishes) is not waited for:
    /// the caller hears of the failure, and `stop` returns, the thread left behind.
    #[tokio::test]
    async fn a_failed_store_ends_the_wait_for_stuck_work_and_the_stop() {
        let failure =
            FailureLatch::watched(std::time::Duration::from_millis(300), std::path::Path::new("/nonexistent/db"));
        let runner = Runner::start("test-runner", failure.clone()).unwrap();
        let (_never, stuck) = std::sync::mpsc::channel::<()>();
        let flushing = failure.clone();
        let mut job = Box::pin(runner.run(move || flushing.flushing(|| stuck.recv())));
        assert!(tokio::time::timeout(std::time::Duration::from_millis(50), &mut job).await.is_err());
        // The watchdog takes the store as failed once the flush passes its limit.
        let ended = tokio::time::timeout(std::time::Duration::from_secs(10), &mut job).await.expect("the wait ended");
        drop(job);
        assert!(
            matches!(&ended, Err(TaskError::StoreFailed(f)) if f.to_string().contains("has not finished")),
            "{ended:?}"
        );
        tokio::time::timeout(std::time::Duration::from_secs(5), runner.stop()).await.expect("stop returned");
    }

    #[tokio::test]
    async fn a_runner_runs_its_work_in_order_on_one_thread_and_stop_waits_for_it() {
        let runner = Runner::start("test-runner", FailureLatch::default()).unwrap();
        let caller = std::thread::current().id();
        let mut seen = Vec::new();
        for i in 0..20 {
            seen.push(runner.run(move || (i, std::thread::current().id())).await.unwrap());
        }
        let threads: std::collections::HashSet<_> = seen.iter().map(|(_, t)| *t).collect();
        assert_eq!(threads.len(), 1, "every job on the same thread");
        assert!(!threads.contains(&caller), "not on the caller's thread");
        assert_eq!(seen.iter().map(|(i, _)| *i).collect::<Vec<_>>(), (0..20).collect::<Vec<_>>());
        // Work whose caller has gone still runs, and stop waits for it.
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = done.clone();
        let job = runner.run(move || {
            go_rx.recv().unwrap();
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        // Polled once (handed to the thread), then dropped.
        assert!(tokio::time::timeout(std::time::Duration::ZERO, job).await.is_err());
        let stopping = runner.stop();
        tokio::pin!(stopping);
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(20), &mut stopping).await.is_err(),
            "stop returned while its thread was still working"
        );
        assert!(!done.load(std::sync::atomic::Ordering::SeqCst));
        go_tx.send(()).unwrap();
        stopping.await;
        assert!(done.load(std::sync::atomic::Ordering::SeqCst));
    }
}
