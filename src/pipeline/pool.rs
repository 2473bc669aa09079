//! The worker pool that encodes and stores chunks off the FUSE threads.
//!
//! A tokio runtime's blocking pool, capped at the configured concurrency:
//! chunk work is CPU (codecs) and blocking file I/O, so it belongs on
//! blocking threads; jobs beyond the cap queue.

use std::io;

/// Runs chunk jobs with at most `concurrency` at once.
pub struct WorkerPool {
    /// Taken only by `drop`.
    runtime: Option<tokio::runtime::Runtime>,
}

impl WorkerPool {
    /// A pool that runs at most `concurrency` jobs at once (at least one),
    /// its threads named `name`.
    pub fn new(concurrency: usize, name: &str) -> io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(concurrency.max(1))
            .thread_name(name)
            .enable_time()
            .build()?;
        Ok(WorkerPool {
            runtime: Some(runtime),
        })
    }

    /// Queues a job; it runs as soon as a worker is free.
    pub fn spawn(&self, job: impl FnOnce() + Send + 'static) {
        if let Some(rt) = &self.runtime {
            drop(rt.spawn_blocking(job));
        }
    }
}

impl Drop for WorkerPool {
    /// Every job holds the pipeline that owns its pool, so when a pool goes
    /// no other job of it runs; but the last holder may be a job on this
    /// very pool (a read-ahead finishing after the core was dropped), and a
    /// shutdown that waits for its threads would wait for itself forever.
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}
