//! The decoded-chunk cache for readers, bounded in bytes, with one load per
//! chunk however many readers (or prefetch jobs) ask for it at once.
//!
//! Sharded by key so parallel FUSE reads and prefetch workers rarely meet on
//! a lock. A chunk the prefetcher loaded is *pinned* until a reader takes it
//! (or its prefetcher lets it go): eviction skips pinned chunks, so read-ahead
//! never throws away what it fetched before it is used. The prefetchers keep
//! the pinned total within a share of the limit.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use lru::LruCache;
use parking_lot::{Condvar, Mutex};

use crate::error::{FsError, FsResult};

/// (inode, generation or reader epoch, chunk index or tensor chunk key).
pub type ChunkKey = (u64, u64, u64);

const SHARDS: usize = 16;

type Slot = Arc<(Mutex<Option<FsResult<Bytes>>>, Condvar)>;

struct Entry {
    data: Bytes,
    pinned: bool,
    /// When it was last used (the cache's clock): eviction takes the
    /// oldest of the shards' least recent entries, a global LRU.
    tick: u64,
}

#[derive(Default)]
struct Shard {
    lru: Option<LruCache<ChunkKey, Entry>>,
    loading: HashMap<ChunkKey, Slot>,
}

impl Shard {
    fn lru(&mut self) -> &mut LruCache<ChunkKey, Entry> {
        self.lru.get_or_insert_with(LruCache::unbounded)
    }
}

/// Decoded chunks by key, bounded by `limit` bytes (pinned read-ahead chunks excepted), shared by
/// every reader and prefetcher of the mount.
pub struct ChunkCache {
    limit: u64,
    shards: Vec<Mutex<Shard>>,
    /// Bytes cached in all shards (one budget: a shard may hold more than
    /// its share, so chunks larger than limit/SHARDS are cached too).
    bytes: AtomicU64,
    pinned: AtomicU64,
    clock: AtomicU64,
    /// Lookups answered from the cache (or by waiting on a load another asker started).
    pub hits: AtomicU64,
    /// Lookups that had to load the chunk.
    pub misses: AtomicU64,
}

/// The right to load one chunk: other askers wait for its result. Dropped
/// without [`LoadGuard::finish`], it reports an error to them.
pub struct LoadGuard<'a> {
    cache: &'a ChunkCache,
    key: ChunkKey,
    slot: Slot,
    done: bool,
}

impl LoadGuard<'_> {
    /// Publishes the load's result; `pin` keeps the chunk until it is read.
    pub fn finish(mut self, result: FsResult<Bytes>, pin: bool) -> FsResult<Bytes> {
        self.done = true;
        if let Ok(v) = &result {
            self.cache.insert(self.key, v.clone(), pin);
        }
        self.publish(result.clone());
        result
    }

    fn publish(&self, result: FsResult<Bytes>) {
        *self.slot.0.lock() = Some(result);
        self.slot.1.notify_all();
        self.cache.shard(&self.key).lock().loading.remove(&self.key);
    }
}

impl Drop for LoadGuard<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.publish(Err(FsError::new(libc::EIO, "chunk load abandoned")));
        }
    }
}

impl ChunkCache {
    /// An empty cache of at most `limit` bytes.
    pub fn new(limit: u64) -> Self {
        ChunkCache {
            limit,
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            bytes: AtomicU64::new(0),
            pinned: AtomicU64::new(0),
            clock: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    fn shard_index(key: &ChunkKey) -> usize {
        let h = key
            .0
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .wrapping_add(key.1.wrapping_mul(31))
            .wrapping_add(key.2.wrapping_mul(0xff51_afd7_ed55_8ccd));
        (h >> 59) as usize % SHARDS
    }

    fn shard(&self, key: &ChunkKey) -> &Mutex<Shard> {
        &self.shards[Self::shard_index(key)]
    }

    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed)
    }

    /// The least recent unpinned entry of a shard (pinned ones found at
    /// its end are moved up: they are about to be read).
    fn oldest(&self, shard: &mut Shard) -> Option<(u64, ChunkKey)> {
        let lru = shard.lru();
        for _ in 0..lru.len() {
            let (k, e) = lru.peek_lru()?;
            if !e.pinned {
                return Some((e.tick, *k));
            }
            let k = *k;
            lru.promote(&k);
        }
        None
    }

    /// Evicts the globally least recent unpinned chunks until the total is
    /// within the limit (one shard lock at a time).
    fn evict(&self) {
        while self.bytes.load(Ordering::Relaxed) > self.limit {
            let victim = self
                .shards
                .iter()
                .enumerate()
                .filter_map(|(i, s)| self.oldest(&mut s.lock()).map(|(t, k)| (t, i, k)))
                .min();
            let Some((_, i, key)) = victim else {
                return; // everything left is pinned
            };
            let mut s = self.shards[i].lock();
            if s.lru().peek(&key).is_some_and(|e| !e.pinned) {
                if let Some(e) = s.lru().pop(&key) {
                    self.bytes.fetch_sub(e.data.len() as u64, Ordering::Relaxed);
                }
            }
        }
    }

    /// The cached chunk, unpinning it (a reader has it now).
    pub fn get(&self, key: &ChunkKey) -> Option<Bytes> {
        let tick = self.tick();
        let mut s = self.shard(key).lock();
        let e = s.lru().get_mut(key)?;
        e.tick = tick;
        if e.pinned {
            e.pinned = false;
            self.pinned
                .fetch_sub(e.data.len() as u64, Ordering::Relaxed);
        }
        Some(e.data.clone())
    }

    /// Whether the chunk is cached or being loaded.
    pub fn contains(&self, key: &ChunkKey) -> bool {
        let mut s = self.shard(key).lock();
        s.loading.contains_key(key) || s.lru().contains(key)
    }

    /// Lets a pinned chunk be evicted again (its prefetcher moved on).
    pub fn unpin(&self, key: &ChunkKey) {
        let mut s = self.shard(key).lock();
        if let Some(e) = s.lru().peek_mut(key) {
            if e.pinned {
                e.pinned = false;
                self.pinned
                    .fetch_sub(e.data.len() as u64, Ordering::Relaxed);
            }
        }
    }

    /// Bytes of chunks loaded ahead and not read yet.
    pub fn pinned_bytes(&self) -> u64 {
        self.pinned.load(Ordering::Relaxed)
    }

    /// The cache's size in bytes (`io.cache`).
    pub fn limit(&self) -> u64 {
        self.limit
    }

    fn insert(&self, key: ChunkKey, data: Bytes, pin: bool) {
        let size = data.len() as u64;
        if size > self.limit && !pin {
            return;
        }
        let tick = self.tick();
        {
            let mut s = self.shard(&key).lock();
            if pin {
                self.pinned.fetch_add(size, Ordering::Relaxed);
            }
            let entry = Entry {
                data,
                pinned: pin,
                tick,
            };
            if let Some(old) = s.lru().put(key, entry) {
                self.bytes
                    .fetch_sub(old.data.len() as u64, Ordering::Relaxed);
                if old.pinned {
                    self.pinned
                        .fetch_sub(old.data.len() as u64, Ordering::Relaxed);
                }
            }
            self.bytes.fetch_add(size, Ordering::Relaxed);
        }
        self.evict();
    }

    /// Drops one chunk (it is about to be rewritten).
    pub fn remove(&self, key: &ChunkKey) {
        let mut s = self.shard(key).lock();
        if let Some(e) = s.lru().pop(key) {
            self.bytes.fetch_sub(e.data.len() as u64, Ordering::Relaxed);
            if e.pinned {
                self.pinned
                    .fetch_sub(e.data.len() as u64, Ordering::Relaxed);
            }
        }
    }

    /// Bytes of chunks cached now, pinned ones included.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Claims the load of `key`, unless it is cached or already loading.
    pub fn begin(&self, key: ChunkKey) -> Option<LoadGuard<'_>> {
        let mut s = self.shard(&key).lock();
        if s.loading.contains_key(&key) || s.lru().contains(&key) {
            return None;
        }
        let slot: Slot = Arc::new((Mutex::new(None), Condvar::new()));
        s.loading.insert(key, slot.clone());
        Some(LoadGuard {
            cache: self,
            key,
            slot,
            done: false,
        })
    }

    /// Returns the chunk, loading it once if absent.
    pub fn get_or_load(
        &self,
        key: ChunkKey,
        load: impl FnOnce() -> FsResult<Bytes>,
    ) -> FsResult<Bytes> {
        let tick = self.tick();
        let slot = {
            let mut s = self.shard(&key).lock();
            if let Some(e) = s.lru().get_mut(&key) {
                e.tick = tick;
                if e.pinned {
                    e.pinned = false;
                    self.pinned
                        .fetch_sub(e.data.len() as u64, Ordering::Relaxed);
                }
                self.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(e.data.clone());
            }
            match s.loading.get(&key) {
                Some(slot) => Some(slot.clone()),
                None => {
                    let slot: Slot = Arc::new((Mutex::new(None), Condvar::new()));
                    s.loading.insert(key, slot.clone());
                    drop(s);
                    self.misses.fetch_add(1, Ordering::Relaxed);
                    let guard = LoadGuard {
                        cache: self,
                        key,
                        slot,
                        done: false,
                    };
                    return guard.finish(load(), false);
                }
            }
        };
        // Another reader or a prefetch job is loading it: wait for it.
        self.hits.fetch_add(1, Ordering::Relaxed);
        let Some(slot) = slot else {
            return Err(FsError::new(libc::EIO, "chunk load vanished"));
        };
        let mut result = slot.0.lock();
        while result.is_none() {
            slot.1.wait(&mut result);
        }
        let out = result
            .clone()
            .unwrap_or_else(|| Err(FsError::new(libc::EIO, "chunk load vanished")));
        drop(result);
        if out.is_ok() {
            // It was loaded pinned for us: the reader has it now.
            self.unpin(&key);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(n: usize) -> Bytes {
        Bytes::from(vec![0u8; n])
    }

    #[test]
    fn evicts_to_stay_within_limit() {
        let c = ChunkCache::new(250);
        for i in 0..200 {
            c.get_or_load((1, 1, i), || Ok(bytes(100))).expect("load");
        }
        assert!(c.bytes() <= 250);
        assert!(c.get(&(1, 1, 199)).is_some());
    }

    #[test]
    fn load_errors_are_not_cached() {
        let c = ChunkCache::new(1 << 20);
        let e = c.get_or_load((1, 1, 1), || Err(FsError::new(libc::EIO, "x")));
        assert!(e.is_err());
        let ok = c.get_or_load((1, 1, 1), || Ok(bytes(1))).expect("ok");
        assert_eq!(ok.len(), 1);
    }

    #[test]
    fn pinned_chunks_survive_eviction_until_read() {
        let c = ChunkCache::new(100);
        let g = c.begin((7, 1, 0)).expect("claim");
        g.finish(Ok(bytes(90)), true).expect("load");
        assert_eq!(c.pinned_bytes(), 90);
        // Fill every shard well past its limit.
        for i in 1..2000 {
            c.get_or_load((7, 1, i), || Ok(bytes(90))).expect("load");
        }
        assert!(c.get(&(7, 1, 0)).is_some(), "pinned chunk evicted");
        assert_eq!(c.pinned_bytes(), 0, "reading unpins");
    }

    #[test]
    fn a_waiter_gets_the_result_of_a_claimed_load() {
        let c = Arc::new(ChunkCache::new(1 << 20));
        let guard = c.begin((1, 2, 3)).expect("claim");
        assert!(c.begin((1, 2, 3)).is_none(), "claimed once");
        let c2 = c.clone();
        let waiter = std::thread::spawn(move || {
            c2.get_or_load((1, 2, 3), || Err(FsError::new(libc::EIO, "second load")))
                .map(|b| b.len())
        });
        std::thread::sleep(std::time::Duration::from_millis(20));
        guard.finish(Ok(bytes(5)), true).expect("finish");
        assert_eq!(waiter.join().expect("join").expect("result"), 5);
        assert_eq!(c.pinned_bytes(), 0);
    }
}
