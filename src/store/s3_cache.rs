//! The local cache of an s3:// mount: objects are fetched in aligned
//! blocks, kept as files in the cache dir and evicted least recently used
//! past a size limit.
//!
//! A block is valid for as long as its object exists: a published data
//! file never changes below its current end (a publisher only replaces it
//! by a longer copy, see `publish`), so cached blocks survive remounts. A
//! block cut short by the object's end is used only for the bytes it holds.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use lru::LruCache;
use object_store::ObjectStoreExt;
use parking_lot::Mutex;

use super::s3::{to_io, S3Store};

/// Bytes per block: one GET each (a request's latency is paid per block).
pub const BLOCK: u64 = 4 << 20;

/// Blocks of one store's objects on local disk.
#[derive(Debug)]
pub struct BlockCache {
    dir: PathBuf,
    limit: u64,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Block file name -> its bytes, least recently used first out.
    lru: LruCache<String, u64>,
    used: u64,
}

impl BlockCache {
    /// Opens the cache in `dir` (created), keeping what an earlier mount
    /// left there, oldest first out, within `limit` bytes.
    pub fn open(dir: &Path, limit: u64) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let mut found = Vec::new();
        for e in fs::read_dir(dir)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            let meta = e.metadata()?;
            if name.ends_with(".tmp") || !meta.is_file() {
                let _ = fs::remove_file(e.path());
                continue;
            }
            found.push((meta.modified().ok(), name, meta.len()));
        }
        found.sort();
        let cache = BlockCache {
            dir: dir.to_path_buf(),
            limit,
            state: Mutex::new(State {
                lru: LruCache::unbounded(),
                used: 0,
            }),
        };
        for (_, name, len) in found {
            cache.insert(name, len);
        }
        Ok(cache)
    }

    /// Bytes the cache holds now.
    pub fn used(&self) -> u64 {
        self.state.lock().used
    }

    /// Records a block file and evicts the oldest past the limit.
    fn insert(&self, name: String, len: u64) {
        let mut gone = Vec::new();
        {
            let mut s = self.state.lock();
            if let Some(old) = s.lru.put(name, len) {
                s.used -= old;
            }
            s.used += len;
            while s.used > self.limit {
                let Some((n, l)) = s.lru.pop_lru() else { break };
                s.used -= l;
                gone.push(n);
            }
        }
        for n in gone {
            let _ = fs::remove_file(self.dir.join(n));
        }
    }

    /// The cached block, when it holds at least `need` bytes.
    fn lookup(&self, name: &str, need: u64) -> Option<fs::File> {
        let len = *self.state.lock().lru.get(name)?;
        if len < need {
            return None;
        }
        fs::File::open(self.dir.join(name)).ok()
    }

    /// Fills `buf` with `key`'s bytes from `offset`: cached blocks from
    /// disk, missing ones fetched together (one GET each, concurrently).
    pub fn read_at(
        &self,
        store: &Arc<S3Store>,
        key: &str,
        size: u64,
        offset: u64,
        buf: &mut [u8],
    ) -> io::Result<()> {
        let end = offset + buf.len() as u64;
        if end > size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "{}/{key}: bytes {offset}..{end} asked, the object has {size}",
                    store.location
                ),
            ));
        }
        let tag = block_tag(key);
        let mut missing = Vec::new();
        let mut b = offset / BLOCK;
        while b * BLOCK < end {
            let (lo, hi) = (b * BLOCK, ((b + 1) * BLOCK).min(size));
            let name = format!("{tag}-{b}");
            // Bytes of this block the read needs, relative to the block.
            let (a, z) = (offset.max(lo) - lo, end.min(hi) - lo);
            let dst = &mut buf[(offset.max(lo) - offset) as usize..(end.min(hi) - offset) as usize];
            match self.lookup(&name, z) {
                Some(f) if f.read_exact_at(dst, a).is_ok() => {}
                _ => missing.push((b, name, lo, hi)),
            }
            b += 1;
        }
        if missing.is_empty() {
            return Ok(());
        }
        let fetches: Vec<_> = missing
            .iter()
            .map(|(_, _, lo, hi)| {
                let (s, path) = (store.store.clone(), store.path(key));
                let range = *lo..*hi;
                async move { s.get_range(&path, range).await }
            })
            .collect();
        let got = store.block_on(async move {
            let mut set = tokio::task::JoinSet::new();
            for (i, f) in fetches.into_iter().enumerate() {
                set.spawn(async move { (i, f.await) });
            }
            let mut out = Vec::new();
            while let Some(r) = set.join_next().await {
                out.push(r);
            }
            out
        })?;
        let mut by_index = HashMap::new();
        for r in got {
            let (i, bytes) = r.map_err(|e| io::Error::other(format!("fetch task: {e}")))?;
            by_index.insert(i, bytes.map_err(|e| to_io(e, &store.location, key))?);
        }
        for (i, (_, name, lo, hi)) in missing.iter().enumerate() {
            let bytes = by_index
                .remove(&i)
                .ok_or_else(|| io::Error::other("fetch lost"))?;
            if bytes.len() as u64 != hi - lo {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "{}/{key}: {} bytes at {lo} asked, {} returned",
                        store.location,
                        hi - lo,
                        bytes.len()
                    ),
                ));
            }
            let (a, z) = (offset.max(*lo), end.min(*hi));
            buf[(a - offset) as usize..(z - offset) as usize]
                .copy_from_slice(&bytes[(a - lo) as usize..(z - lo) as usize]);
            self.keep(name, &bytes);
        }
        Ok(())
    }

    /// Writes a fetched block to the cache; a failure (disk full) only
    /// means it is fetched again next time.
    fn keep(&self, name: &str, bytes: &[u8]) {
        if bytes.len() as u64 > self.limit {
            return;
        }
        let tmp = self.dir.join(format!("{name}.{}.tmp", std::process::id()));
        let done = fs::write(&tmp, bytes).and_then(|_| fs::rename(&tmp, self.dir.join(name)));
        match done {
            Ok(()) => self.insert(name.to_string(), bytes.len() as u64),
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                tracing::debug!("cache block {name}: {e}");
            }
        }
    }
}

/// A size as `--cache-size` takes it: bytes, or with a K, M, G or T
/// suffix (powers of 1024; `iB`/`B` after it allowed).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (num, shift) = match t.chars().last() {
        Some('K' | 'k') => (&t[..t.len() - 1], 10),
        Some('M' | 'm') => (&t[..t.len() - 1], 20),
        Some('G' | 'g') => (&t[..t.len() - 1], 30),
        Some('T' | 't') => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a size (bytes, or a number with K, M, G or T)"))?;
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// A file name for `key`'s blocks (keys are `d/<id>`; any other byte is
/// spelled out so names stay flat and unambiguous).
fn block_tag(key: &str) -> String {
    key.bytes()
        .map(|c| match c {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' => (c as char).to_string(),
            other => format!("_{other:02x}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("0"), Ok(0));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn tags_are_flat_and_distinct() {
        assert_eq!(block_tag("d/ab12"), "d_2fab12");
        assert_ne!(block_tag("d/a_2f"), block_tag("d/a/"));
    }

    #[test]
    fn the_oldest_blocks_go_past_the_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = BlockCache::open(dir.path(), 10).expect("open");
        c.keep("a-0", &[1; 4]);
        c.keep("b-0", &[2; 4]);
        assert!(c.lookup("a-0", 4).is_some());
        c.keep("c-0", &[3; 4]);
        // `a` was used last: `b` goes.
        assert!(c.lookup("b-0", 1).is_none());
        assert!(!dir.path().join("b-0").exists());
        assert_eq!(c.used(), 8);
        // A block shorter than a read needs is no hit.
        assert!(c.lookup("c-0", 5).is_none());
        // Reopened, the cache keeps what is on disk.
        let again = BlockCache::open(dir.path(), 10).expect("reopen");
        assert_eq!(again.used(), 8);
    }
}
