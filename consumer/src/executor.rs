//! Where the consumer runs its blocking store calls.
//!
//! In a real process every sled call of the apply path runs on tokio's blocking pool, so
//! a slow disk never stalls the reader or the keepalive poller, and a panic in apply is
//! caught on its thread. A deterministic simulation (turmoil, one thread, simulated
//! clock) cannot hand work to other threads without giving up replayability, so it runs
//! the same calls inline instead, with panics still caught. The choice is made per task
//! through a task-local, so the production configuration needs no new field and keeps
//! using the pool.

use std::panic::AssertUnwindSafe;

use thiserror::Error;

/// How blocking work is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Executor {
    /// On tokio's blocking pool (production).
    #[default]
    BlockingPool,
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
    /// The blocking pool dropped the work (runtime shutting down).
    #[error("task cancelled: {0}")]
    Cancelled(String),
}

/// Runs `fut` with blocking work executed by `executor`.
pub async fn scope<F: std::future::Future>(executor: Executor, fut: F) -> F::Output {
    EXECUTOR.scope(executor, fut).await
}

/// The executor in force for the current task ([`Executor::BlockingPool`] outside any
/// [`scope`]).
pub fn current() -> Executor {
    EXECUTOR.try_with(|e| *e).unwrap_or_default()
}

/// Runs blocking `f` per the current executor; a panic becomes [`TaskError::Panicked`].
pub async fn run<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, TaskError> {
    match current() {
        Executor::BlockingPool => match tokio::task::spawn_blocking(f).await {
            Ok(v) => Ok(v),
            Err(e) if e.is_panic() => Err(TaskError::Panicked),
            Err(e) => Err(TaskError::Cancelled(e.to_string())),
        },
        Executor::Inline => std::panic::catch_unwind(AssertUnwindSafe(f)).map_err(|_| TaskError::Panicked),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn both_executors_return_results_and_catch_panics() {
        for executor in [Executor::BlockingPool, Executor::Inline] {
            let (ok, panicked) = scope(executor, async {
                assert_eq!(current(), executor);
                (run(|| 7).await, run(|| -> u8 { panic!("planted") }).await)
            })
            .await;
            assert_eq!(ok, Ok(7));
            assert_eq!(panicked, Err(TaskError::Panicked));
        }
        assert_eq!(current(), Executor::BlockingPool);
    }
}
