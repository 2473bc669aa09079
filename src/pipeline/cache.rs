//! The decoded-chunk cache for readers, bounded in bytes, with one load per
//! chunk however many readers (or read-ahead jobs) ask for it at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use lru::LruCache;
use parking_lot::{Condvar, Mutex};

use crate::error::{FsError, FsResult};

/// (file id, generation, chunk index).
pub type ChunkKey = (u64, u64, u64);

type Slot = Arc<(Mutex<Option<FsResult<Arc<Vec<u8>>>>>, Condvar)>;

struct Inner {
    lru: LruCache<ChunkKey, Arc<Vec<u8>>>,
    bytes: u64,
}

pub struct ChunkCache {
    limit: u64,
    inner: Mutex<Inner>,
    loading: Mutex<HashMap<ChunkKey, Slot>>,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
}

impl ChunkCache {
    pub fn new(limit: u64) -> Self {
        ChunkCache {
            limit,
            inner: Mutex::new(Inner {
                lru: LruCache::unbounded(),
                bytes: 0,
            }),
            loading: Mutex::new(HashMap::new()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    pub fn get(&self, key: &ChunkKey) -> Option<Arc<Vec<u8>>> {
        self.inner.lock().lru.get(key).cloned()
    }

    pub fn contains(&self, key: &ChunkKey) -> bool {
        self.inner.lock().lru.contains(key) || self.loading.lock().contains_key(key)
    }

    fn insert(&self, key: ChunkKey, value: Arc<Vec<u8>>) {
        let size = value.len() as u64;
        if size > self.limit {
            return;
        }
        let mut inner = self.inner.lock();
        if let Some(old) = inner.lru.put(key, value) {
            inner.bytes -= old.len() as u64;
        }
        inner.bytes += size;
        while inner.bytes > self.limit {
            match inner.lru.pop_lru() {
                Some((_, v)) => inner.bytes -= v.len() as u64,
                None => break,
            }
        }
    }

    /// Drops one chunk (it is about to be rewritten).
    pub fn remove(&self, key: &ChunkKey) {
        let mut inner = self.inner.lock();
        if let Some(v) = inner.lru.pop(key) {
            inner.bytes -= v.len() as u64;
        }
    }

    pub fn bytes(&self) -> u64 {
        self.inner.lock().bytes
    }

    /// Returns the chunk, loading it once if absent.
    pub fn get_or_load(
        &self,
        key: ChunkKey,
        load: impl FnOnce() -> FsResult<Vec<u8>>,
    ) -> FsResult<Arc<Vec<u8>>> {
        if let Some(v) = self.get(&key) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(v);
        }
        let (slot, leader) = {
            let mut loading = self.loading.lock();
            match loading.get(&key) {
                Some(s) => (s.clone(), false),
                None => {
                    let s: Slot = Arc::new((Mutex::new(None), Condvar::new()));
                    loading.insert(key, s.clone());
                    (s, true)
                }
            }
        };
        if !leader {
            // Another reader is loading it: wait for its result.
            self.hits.fetch_add(1, Ordering::Relaxed);
            let mut result = slot.0.lock();
            while result.is_none() {
                slot.1.wait(&mut result);
            }
            return result
                .clone()
                .unwrap_or_else(|| Err(FsError::new(libc::EIO, "chunk load vanished")));
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let result = load().map(Arc::new);
        if let Ok(v) = &result {
            self.insert(key, v.clone());
        }
        *slot.0.lock() = Some(result.clone());
        slot.1.notify_all();
        self.loading.lock().remove(&key);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_to_stay_within_limit() {
        let c = ChunkCache::new(250);
        for i in 0..5 {
            c.get_or_load((1, 1, i), || Ok(vec![0u8; 100]))
                .expect("load");
        }
        assert!(c.bytes() <= 250);
        assert!(c.get(&(1, 1, 4)).is_some());
        assert!(c.get(&(1, 1, 0)).is_none());
    }

    #[test]
    fn load_errors_are_not_cached() {
        let c = ChunkCache::new(1000);
        let e = c.get_or_load((1, 1, 1), || Err(FsError::new(libc::EIO, "x")));
        assert!(e.is_err());
        let ok = c.get_or_load((1, 1, 1), || Ok(vec![1])).expect("ok");
        assert_eq!(*ok, vec![1]);
    }
}
