//! `.ckptfs/accesslog`: one line per operation, streamed to each reader,
//! at profile level `full` (at lower levels a reader gets no lines).
//!
//! With no reader attached nothing is formatted (one atomic load per
//! operation). Each reader has a bounded queue; when it is full the line is
//! dropped and counted rather than slowing the filesystem down.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

const QUEUE_LINES: usize = 10_240;

/// One reader of `.ckptfs/accesslog`: its queue of lines not yet read.
#[derive(Default)]
pub struct Reader {
    lines: Mutex<VecDeque<String>>,
    ready: Condvar,
}

/// The readers attached to the access log and the lines their full queues dropped.
#[derive(Default)]
pub struct AccessLog {
    readers: Mutex<Vec<Arc<Reader>>>,
    active: AtomicUsize,
    dropped: AtomicU64,
}

impl AccessLog {
    /// Whether anyone is reading (check before formatting a line).
    pub fn enabled(&self) -> bool {
        self.active.load(Ordering::Relaxed) > 0
    }

    /// A new reader; it gets every line pushed from now on.
    pub fn attach(&self) -> Arc<Reader> {
        let r = Arc::new(Reader::default());
        let mut readers = self.readers.lock();
        readers.push(r.clone());
        self.active.store(readers.len(), Ordering::Relaxed);
        r
    }

    /// Removes a reader (its file was closed).
    pub fn detach(&self, r: &Arc<Reader>) {
        let mut readers = self.readers.lock();
        readers.retain(|x| !Arc::ptr_eq(x, r));
        self.active.store(readers.len(), Ordering::Relaxed);
    }

    /// Lines dropped because a reader's queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Queues `line` for every reader (dropped for a reader whose queue is full).
    pub fn push(&self, line: String) {
        for r in self.readers.lock().iter() {
            let mut q = r.lines.lock();
            if q.len() >= QUEUE_LINES {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            q.push_back(line.clone());
            r.ready.notify_all();
        }
    }
}

impl Reader {
    /// Up to `max` bytes of whole lines, waiting up to a second for one.
    pub fn read(&self, max: usize) -> Vec<u8> {
        let mut q = self.lines.lock();
        if q.is_empty() {
            self.ready.wait_for(&mut q, Duration::from_secs(1));
        }
        let mut out = Vec::new();
        while let Some(line) = q.front() {
            if !out.is_empty() && out.len() + line.len() > max {
                break;
            }
            if line.len() > max {
                // A line longer than the request: cut it (rare: huge names).
                out.extend_from_slice(&line.as_bytes()[..max]);
                q.pop_front();
                break;
            }
            out.extend_from_slice(line.as_bytes());
            q.pop_front();
        }
        out
    }
}
