//! The streaming prefetcher: one per open file handle, for every chunked
//! layout (files index and packed index alike).
//!
//! It watches the handle's reads. While they keep moving forward (the
//! kernel's parallel read-ahead requests may arrive slightly out of order),
//! the window ahead of the reader doubles, up to `io.prefetch_max_bytes`; a
//! read elsewhere (a seek) shrinks it back to its first size. The chunks of
//! the window are loaded on the mount's read pool (its own threads, apart
//! from the save pool), in file order, a batch per job so the packed index
//! merges neighbouring chunks into large reads, and are pinned in the cache
//! until read. The pinned total of all handles stays within half the cache.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;

use super::cache::ChunkKey;
use super::chunk_load::{self, ChunkRef};
use super::sealed::SealedRead;
use super::Pipeline;

/// Chunks of one prefetch job, at most (a job is also cut at this many
/// bytes, so several jobs of a window run at once).
const JOB_CHUNKS: usize = 512;
const JOB_BYTES: u64 = 16 << 20;

#[derive(Default)]
struct State {
    /// End of the furthest read so far.
    hi: u64,
    /// Bytes ahead of `hi` to keep loaded.
    window: u64,
    /// Everything below this has been queued.
    queued_to: u64,
    /// Chunks this handle queued, with the file offset past which the
    /// reader no longer needs them (unpinned when the handle goes).
    pinned: VecDeque<(ChunkKey, u64)>,
}

/// Read-ahead state of one open file handle.
#[derive(Default)]
pub struct Prefetcher {
    state: Mutex<State>,
}

impl Prefetcher {
    /// Records a read of `[offset, offset + len)` of a file of `size` bytes
    /// served by `reader`, and queues the chunks the window now covers.
    pub fn on_read(
        &self,
        pipe: &Arc<Pipeline>,
        reader: &Arc<dyn SealedRead>,
        offset: u64,
        len: u64,
        size: u64,
    ) {
        let io = &pipe.config.io;
        if io.readahead_chunks == 0 || io.prefetch_max_bytes == 0 {
            return;
        }
        let first = (reader.chunk_hint() * io.readahead_chunks as u64)
            .max(len)
            .min(io.prefetch_max_bytes);
        let max = io.prefetch_max_bytes.max(first);
        let (from, to) = {
            let mut s = self.state.lock();
            let end = offset + len;
            // Forward within reach of the furthest read: sequential (the
            // kernel's read-ahead keeps a few requests in flight at once).
            let slack = len.max(1 << 20) * 4;
            let sequential = s.window > 0 && offset + slack >= s.hi && offset <= s.hi + slack;
            if sequential {
                s.window = (s.window * 2).min(max);
            } else {
                s.window = first;
                s.queued_to = end;
                // Chunks queued for the old position are no longer wanted.
                for (key, _) in s.pinned.drain(..) {
                    pipe.cache.unpin(&key);
                }
            }
            s.hi = s.hi.max(end);
            if !sequential {
                s.hi = end;
            }
            let hi = s.hi;
            while s.pinned.front().is_some_and(|(_, past)| *past <= hi) {
                if let Some((key, _)) = s.pinned.pop_front() {
                    pipe.cache.unpin(&key);
                }
            }
            // Keep every handle's pinned chunks within half the cache.
            let room = (pipe.cache.limit() / 2).saturating_sub(pipe.cache.pinned_bytes());
            let target = (hi + s.window).min(size).min(s.queued_to.max(hi) + room);
            let from = s.queued_to.max(hi);
            if target <= from {
                return;
            }
            s.queued_to = target;
            (from, target)
        };
        let mut refs = Vec::new();
        reader.chunks(from, to, &mut refs);
        if refs.is_empty() {
            return;
        }
        {
            let mut s = self.state.lock();
            for r in &refs {
                s.pinned.push_back((r.key, to));
            }
        }
        submit(pipe, reader, refs);
    }

    /// Lets the chunks this handle loaded ahead be evicted again.
    pub fn release(&self, pipe: &Pipeline) {
        let mut s = self.state.lock();
        for (key, _) in s.pinned.drain(..) {
            pipe.cache.unpin(&key);
        }
    }
}

/// Loads the chunks of a read of `[offset, offset + len)` that are neither
/// cached nor on their way, as one batch before the read copies them: the
/// packed index then fetches neighbours in one store read (one round trip
/// on an object store) instead of one per chunk.
pub fn load_request(pipe: &Pipeline, reader: &Arc<dyn SealedRead>, offset: u64, len: u64) {
    let mut refs = Vec::new();
    reader.chunks(offset, offset + len, &mut refs);
    refs.retain(|r| !pipe.cache.contains(&r.key));
    if refs.len() > 1 {
        chunk_load::load_batch(pipe, reader.source(), &refs, false);
    }
}

/// Queues `refs` (in file order) on the read pool, in batches.
fn submit(pipe: &Arc<Pipeline>, reader: &Arc<dyn SealedRead>, refs: Vec<ChunkRef>) {
    let mut batch: Vec<ChunkRef> = Vec::new();
    let mut bytes = 0u64;
    let send = |batch: Vec<ChunkRef>| {
        let (p, r) = (pipe.clone(), reader.clone());
        pipe.read_pool.spawn(move || {
            let mut t = p.profiler.stage("prefetch");
            t.add_bytes(chunk_load::load_batch(&p, r.source(), &batch, true));
        });
    };
    for r in refs {
        // Already cached or on its way: nothing to queue.
        if pipe.cache.contains(&r.key) {
            continue;
        }
        bytes += r.decoded as u64;
        batch.push(r);
        if batch.len() >= JOB_CHUNKS || bytes >= JOB_BYTES {
            send(std::mem::take(&mut batch));
            bytes = 0;
        }
    }
    if !batch.is_empty() {
        send(batch);
    }
}
