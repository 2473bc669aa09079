//! Tracks the chunks of one file that are being encoded and stored.
//!
//! Workers report each chunk's checksum or its error here; a commit waits
//! until nothing is in flight and then takes the first error, so a failure
//! (ENOSPC, say) reaches the writer at its next write, fsync or close.

use std::collections::BTreeMap;

use parking_lot::{Condvar, Mutex};

use crate::error::{FsError, FsResult};

#[derive(Debug, Default)]
struct State {
    pending: usize,
    error: Option<FsError>,
    crcs: BTreeMap<u64, u32>,
}

/// The chunks of one file on their way to the store: how many, their
/// checksums, and the first error.
#[derive(Debug, Default)]
pub struct Inflight {
    state: Mutex<State>,
    done: Condvar,
}

impl Inflight {
    /// Counts one more chunk in flight; each `start` is matched by one `finish`.
    pub fn start(&self) {
        self.state.lock().pending += 1;
    }

    /// Records the outcome of one chunk.
    pub fn finish(&self, index: u64, result: FsResult<u32>) {
        let mut s = self.state.lock();
        s.pending -= 1;
        match result {
            Ok(crc) => {
                s.crcs.insert(index, crc);
            }
            Err(e) => {
                if s.error.is_none() {
                    s.error = Some(e);
                }
            }
        }
        if s.pending == 0 {
            self.done.notify_all();
        }
    }

    /// Waits for every chunk in flight; returns the first error, once.
    pub fn wait(&self) -> FsResult<()> {
        let mut s = self.state.lock();
        while s.pending > 0 {
            self.done.wait(&mut s);
        }
        match s.error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The first error so far, without waiting.
    pub fn take_error(&self) -> Option<FsError> {
        self.state.lock().error.take()
    }

    /// Whether no chunk is in flight.
    pub fn is_idle(&self) -> bool {
        self.state.lock().pending == 0
    }

    /// Checksums reported since the last call.
    pub fn drain_crcs(&self) -> BTreeMap<u64, u32> {
        std::mem::take(&mut self.state.lock().crcs)
    }
}
