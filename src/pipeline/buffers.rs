//! Recycled byte buffers for chunk data.
//!
//! A chunk buffer freed to the allocator is often handed back to the kernel
//! (large allocations are `mmap`ed), and the next chunk then lands on fresh
//! pages: every page costs a fault, a clear, and on a VM with free-page
//! reporting a fault in the host as well. Measured on the 2-core VM this
//! project runs on: copying 1 GB into freshly allocated memory ran at
//! 0.32 GB/s, into memory already touched at 11 GB/s. Chunks of one layout
//! all have the same few sizes, so keeping freed buffers for reuse keeps
//! the data path on resident memory.
//!
//! A load moves from tensor to tensor, and chunk sizes with it: a request
//! takes a free buffer of its class or of a larger one (up to twice its
//! size), and a full pool makes room for a buffer just freed by dropping
//! buffers of other classes, so the pool follows the sizes in use instead
//! of holding on to the last tensor's.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;

/// Buffers smaller than this come from the allocator's own free lists,
/// which already reuse them.
const MIN_POOLED: usize = 64 * 1024;

/// Capacities are rounded up to this, so sizes that differ by a few bytes
/// (compressed chunks) share a class.
const CLASS: usize = 64 * 1024;

/// Free buffers kept for reuse, by capacity class, up to `limit` bytes.
#[derive(Debug)]
pub struct BufferPool {
    free: Mutex<BTreeMap<usize, Vec<Vec<u8>>>>,
    retained: AtomicU64,
    limit: u64,
    reused: AtomicU64,
    allocated: AtomicU64,
}

fn class_of(len: usize) -> usize {
    len.div_ceil(CLASS) * CLASS
}

impl BufferPool {
    /// An empty pool that keeps at most `limit` bytes of free buffers.
    pub fn new(limit: u64) -> Arc<Self> {
        Arc::new(BufferPool {
            free: Mutex::new(BTreeMap::new()),
            retained: AtomicU64::new(0),
            limit,
            reused: AtomicU64::new(0),
            allocated: AtomicU64::new(0),
        })
    }

    /// A free buffer of class `class` or a larger one (at most twice it).
    fn recycle(&self, class: usize) -> Option<Vec<u8>> {
        let mut free = self.free.lock();
        let buf = free
            .range_mut(class..=class.saturating_mul(2))
            .find_map(|(_, v)| v.pop())?;
        self.retained
            .fetch_sub(buf.capacity() as u64, Ordering::Relaxed);
        self.reused.fetch_add(1, Ordering::Relaxed);
        Some(buf)
    }

    /// A buffer of exactly `len` bytes. Its contents are unspecified (a
    /// recycled buffer keeps old bytes): the caller overwrites all of it.
    pub fn take(&self, len: usize) -> Vec<u8> {
        if len >= MIN_POOLED {
            let class = class_of(len);
            if let Some(mut buf) = self.recycle(class) {
                // Within the capacity: `resize` zeroes only bytes past the
                // old length, never reallocates.
                buf.resize(len, 0);
                return buf;
            }
            self.allocated.fetch_add(1, Ordering::Relaxed);
            // Zeroed allocation: fresh pages come zeroed from the kernel, so
            // the first write touches them once (a `resize` would write
            // zeros over them first: a second pass over new memory).
            let mut buf = vec![0u8; class];
            buf.truncate(len);
            return buf;
        }
        vec![0u8; len]
    }

    /// An empty buffer with room for `cap` bytes, to be filled by
    /// appending (a new one is not zeroed first: only what is written gets
    /// touched).
    pub fn take_empty(&self, cap: usize) -> Vec<u8> {
        if cap >= MIN_POOLED {
            if let Some(mut buf) = self.recycle(class_of(cap)) {
                buf.clear();
                return buf;
            }
            self.allocated.fetch_add(1, Ordering::Relaxed);
            return Vec::with_capacity(class_of(cap));
        }
        Vec::with_capacity(cap)
    }

    /// Keeps `buf` for reuse, unless the pool is full or it is small.
    pub fn give(&self, mut buf: Vec<u8>) {
        let cap = buf.capacity();
        if cap < MIN_POOLED || !cap.is_multiple_of(CLASS) {
            return;
        }
        if cap as u64 > self.limit {
            return;
        }
        // Keep the bytes initialised up to the capacity so `take` never
        // has to zero a recycled buffer again.
        if buf.len() < cap {
            buf.resize(cap, 0);
        }
        let mut dropped = Vec::new();
        {
            let mut free = self.free.lock();
            while self.retained.load(Ordering::Relaxed) + cap as u64 > self.limit {
                // Room is made from other classes only: buffers of this
                // one are as good as the one given.
                let Some(old) = free
                    .iter_mut()
                    .filter(|(c, _)| **c != cap)
                    .find_map(|(_, v)| v.pop())
                else {
                    return;
                };
                self.retained
                    .fetch_sub(old.capacity() as u64, Ordering::Relaxed);
                dropped.push(old);
            }
            self.retained.fetch_add(cap as u64, Ordering::Relaxed);
            free.entry(cap).or_default().push(buf);
        }
        // Freed outside the lock (large buffers go back to the kernel).
        drop(dropped);
    }

    /// `buf` as shared bytes that return to this pool when the last
    /// reference is dropped.
    pub fn share(self: &Arc<Self>, buf: Vec<u8>) -> Bytes {
        Bytes::from_owner(Pooled {
            buf,
            pool: self.clone(),
        })
    }

    /// Bytes held by free buffers.
    pub fn retained(&self) -> u64 {
        self.retained.load(Ordering::Relaxed)
    }

    /// (buffers reused, buffers newly allocated) since the mount started.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.reused.load(Ordering::Relaxed),
            self.allocated.load(Ordering::Relaxed),
        )
    }
}

/// A buffer that goes back to its pool when dropped.
struct Pooled {
    buf: Vec<u8>,
    pool: Arc<BufferPool>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.give(std::mem::take(&mut self.buf));
    }
}

/// The pool as the packed database's source of read buffers (a wrapper:
/// the trait belongs to the `ocdbt` crate and `Arc` is not ours).
pub struct PoolBuffers<'a>(pub &'a Arc<BufferPool>);

impl crate::ocdbt::multi_get::Buffers for PoolBuffers<'_> {
    fn take(&self, len: usize) -> Vec<u8> {
        BufferPool::take(self.0, len)
    }
    fn share(&self, buf: Vec<u8>) -> Bytes {
        BufferPool::share(self.0, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_freed_buffer_is_reused_for_the_next_of_its_class() {
        let pool = BufferPool::new(1 << 30);
        let a = pool.take(100_000);
        let ptr = a.as_ptr();
        assert_eq!(a.len(), 100_000);
        let shared = pool.share(a);
        assert_eq!(pool.retained(), 0);
        drop(shared);
        assert!(pool.retained() >= 100_000);
        let b = pool.take(100_001);
        assert_eq!(b.as_ptr(), ptr, "same allocation reused");
        assert_eq!(b.len(), 100_001);
        assert_eq!(pool.counts(), (1, 1));
    }

    #[test]
    fn the_pool_follows_the_sizes_in_use() {
        let pool = BufferPool::new(1 << 20);
        // Fill it with 256 KiB buffers (the last tensor's chunks).
        let big: Vec<_> = (0..4).map(|_| pool.take(256 * 1024)).collect();
        for b in big {
            pool.give(b);
        }
        assert_eq!(pool.retained(), 1 << 20);
        // A smaller request takes one of them (within twice its size)...
        let a = pool.take(160 * 1024);
        assert_eq!((a.len(), a.capacity()), (160 * 1024, 256 * 1024));
        assert_eq!(pool.counts(), (1, 4));
        // ...a much smaller one does not.
        let b = pool.take(64 * 1024);
        assert_eq!(b.capacity(), 64 * 1024);
        assert_eq!(pool.counts(), (1, 5));
        // The pool is full of the old size: a buffer of the new size
        // given back displaces one of them instead of being dropped.
        pool.give(a);
        assert_eq!(pool.retained(), 1 << 20);
        pool.give(b);
        assert!(pool.retained() <= 1 << 20);
        let c = pool.take(64 * 1024);
        assert_eq!(pool.counts(), (2, 5), "the 64 KiB buffer was kept");
        assert_eq!(c.capacity(), 64 * 1024);
    }

    #[test]
    fn the_pool_keeps_no_more_than_its_limit() {
        let pool = BufferPool::new(200 * 1024);
        let bufs: Vec<_> = (0..5).map(|_| pool.take(128 * 1024)).collect();
        for b in bufs {
            pool.give(b);
        }
        assert!(pool.retained() <= 200 * 1024, "{}", pool.retained());
        // Small buffers are left to the allocator.
        pool.give(vec![0u8; 100]);
        assert!(pool.retained() <= 200 * 1024);
    }
}
