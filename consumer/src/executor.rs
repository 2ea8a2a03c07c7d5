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

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;

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
    /// Starts a runner for the current executor; `name` names its thread.
    pub fn start(name: &str) -> std::io::Result<Self> {
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
        Ok(Self { kind })
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
                match rx.in_current_span().await {
                    Ok(Ok(v)) => Ok(v),
                    Ok(Err(_)) => Err(TaskError::Panicked),
                    Err(_) => Err(TaskError::Cancelled("the store thread dropped the work".into())),
                }
            }
        }
    }

    /// Ends the thread after the work already handed to it, and waits for it to end.
    pub async fn stop(self) {
        if let Kind::Thread { jobs, ended } = self.kind {
            drop(jobs);
            // Closed, never sent: the thread drops its end as it returns.
            let _ = ended.await;
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
                let runner = Runner::start("test-runner").unwrap();
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

    #[tokio::test]
    async fn a_runner_runs_its_work_in_order_on_one_thread_and_stop_waits_for_it() {
        let runner = Runner::start("test-runner").unwrap();
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
