//! Reads of many values at once: values that sit side by side in a data
//! file (the chunks of one tensor, written in order) are fetched with one
//! large read instead of one `pread` each, the way TensorStore's ocdbt
//! kvstore batches its reads.

use std::sync::Arc;

use bytes::Bytes;

use super::data_file::{DataFile, DIRECT_ALIGN};
use super::db::Db;
use super::error::{OcdbtError, Result};
use super::tree_write::Value;

/// Where the buffers of large reads come from (a recycling pool, so reads
/// land on memory already in use), and how they are shared as values.
pub trait Buffers: Sync {
    /// A buffer of exactly `len` bytes; its contents may be anything.
    fn take(&self, len: usize) -> Vec<u8>;
    /// The buffer as shared bytes.
    fn share(&self, buf: Vec<u8>) -> Bytes;
}

/// Plain allocation.
pub struct Allocate;

impl Buffers for Allocate {
    fn take(&self, len: usize) -> Vec<u8> {
        vec![0u8; len]
    }
    fn share(&self, buf: Vec<u8>) -> Bytes {
        Bytes::from(buf)
    }
}

/// Values closer than this are read together (the gap is read and dropped).
const MERGE_GAP: u64 = 256 * 1024;
/// Largest single read of merged values.
const MERGE_MAX: u64 = 64 << 20;
/// The same from an object store, where a read is held twice while it
/// lands (the response and the caller's buffer) and one GET of this size
/// already pays its latency back many times.
const REMOTE_MERGE_MAX: u64 = 16 << 20;
/// Reads for a caller that keeps the bytes go around the page cache
/// (`O_DIRECT`) from this size on; below it the alignment padding costs
/// more than the copy saves.
const MIN_DIRECT: u64 = 64 * 1024;

/// How a batch read should treat the page cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheUse {
    /// Leave it as the kernel decides.
    Keep,
    /// The caller keeps the bytes: read around the page cache where the
    /// filesystem allows, else drop the kernel's copy after reading.
    DropAfterRead,
}

impl Db {
    /// The whole values of `keys` (pending writes included), in order.
    pub fn get_many(
        &self,
        keys: &[Vec<u8>],
        buffers: &dyn Buffers,
        cache: CacheUse,
    ) -> Vec<Result<Option<Bytes>>> {
        let values: Vec<Option<Value>> = {
            let ix = self.index.read();
            keys.iter().map(|k| ix.map.get(k).cloned()).collect()
        };
        let mut out: Vec<Result<Option<Bytes>>> = Vec::with_capacity(keys.len());
        // (file, offset, length, index into out)
        let mut far: Vec<(Arc<DataFile>, u64, u64, usize)> = Vec::new();
        for (i, v) in values.into_iter().enumerate() {
            match v {
                None => out.push(Ok(None)),
                Some(Value::Inline(b)) => out.push(Ok(Some(b))),
                Some(Value::Indirect(r)) => {
                    out.push(Ok(None));
                    far.push((r.file, r.offset, r.length, i));
                }
            }
        }
        far.sort_by(|a, b| {
            (Arc::as_ptr(&a.0) as usize, a.1).cmp(&(Arc::as_ptr(&b.0) as usize, b.1))
        });
        let merge_max = if self.remote.lock().is_some() {
            REMOTE_MERGE_MAX
        } else {
            MERGE_MAX
        };
        let mut start = 0;
        while start < far.len() {
            // Extend the run while the next value is in the same file, near.
            let (file, first, _, _) = &far[start];
            let mut end = start + 1;
            let mut hi = far[start].1 + far[start].2;
            while end < far.len()
                && Arc::ptr_eq(&far[end].0, file)
                && far[end].1 <= hi + MERGE_GAP
                && (far[end].1 + far[end].2).max(hi) - first <= merge_max
            {
                hi = hi.max(far[end].1 + far[end].2);
                end += 1;
            }
            let run = &far[start..end];
            match read_run(file, *first, hi, buffers, cache) {
                Ok(bytes) => {
                    for (_, off, len, i) in run {
                        let a = (off - first) as usize;
                        out[*i] = Ok(Some(bytes.slice(a..a + *len as usize)));
                    }
                }
                Err(e) => {
                    for (_, _, _, i) in run {
                        out[*i] = Err(duplicate(&e));
                    }
                }
            }
            start = end;
        }
        out
    }
}

/// The same error again, errno included (one failed read fails every value
/// it covered).
fn duplicate(e: &OcdbtError) -> OcdbtError {
    match e {
        OcdbtError::Io { path, source } => OcdbtError::Io {
            path: path.clone(),
            source: source
                .raw_os_error()
                .map(std::io::Error::from_raw_os_error)
                .unwrap_or_else(|| std::io::Error::new(source.kind(), source.to_string())),
        },
        OcdbtError::Corrupt(m) => OcdbtError::Corrupt(m.clone()),
        OcdbtError::Unsupported(m) => OcdbtError::Unsupported(m.clone()),
        OcdbtError::Invalid(m) => OcdbtError::Invalid(m.clone()),
    }
}

fn read_run(
    file: &DataFile,
    start: u64,
    end: u64,
    buffers: &dyn Buffers,
    cache: CacheUse,
) -> Result<Bytes> {
    let len =
        usize::try_from(end - start).map_err(|_| super::error::corrupt("value range too large"))?;
    if cache == CacheUse::DropAfterRead && end - start >= MIN_DIRECT {
        // Room to align both ends of the range and the buffer itself.
        let mut buf = buffers.take(len + 3 * DIRECT_ALIGN);
        if let Some(at) = file.read_direct(start, end - start, &mut buf)? {
            return Ok(buffers.share(buf).slice(at..at + len));
        }
    }
    let mut buf = buffers.take(len);
    file.read_into(start, &mut buf)?;
    if cache == CacheUse::DropAfterRead {
        file.drop_cached(start, end - start);
    }
    Ok(buffers.share(buf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DbOptions;

    #[test]
    fn neighbours_come_back_whole_and_in_the_order_asked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open_or_create(dir.path(), DbOptions::default()).expect("db");
        let value = |i: usize| -> Vec<u8> { (0..5000 + i).map(|j| (i * 7 + j) as u8).collect() };
        for i in 0..20 {
            db.put(format!("k{i:02}").as_bytes(), &value(i))
                .expect("put");
        }
        db.put(b"small", b"inline").expect("put");
        db.commit().expect("commit");
        let mut keys: Vec<Vec<u8>> = (0..20)
            .rev()
            .map(|i| format!("k{i:02}").into_bytes())
            .collect();
        keys.push(b"small".to_vec());
        keys.push(b"absent".to_vec());
        let got = db.get_many(&keys, &Allocate, CacheUse::DropAfterRead);
        for (n, i) in (0..20).rev().enumerate() {
            let v = got[n].as_ref().expect("ok").as_ref().expect("present");
            assert_eq!(&v[..], &value(i)[..], "k{i}");
        }
        assert_eq!(
            got[20].as_ref().expect("ok").as_deref(),
            Some(&b"inline"[..])
        );
        assert!(got[21].as_ref().expect("ok").is_none());
    }

    #[test]
    fn large_runs_read_around_the_cache_match_buffered_reads() {
        let dir = tempfile::tempdir_in(std::env::temp_dir()).expect("tempdir");
        let db = Db::open_or_create(dir.path(), DbOptions::default()).expect("db");
        // Odd sizes, so values start and end off block boundaries.
        let sizes = [100_003usize, 70_001, 300_000, 4097, 65_537];
        let value =
            |i: usize| -> Vec<u8> { (0..sizes[i]).map(|j| (i * 31 + j * 7) as u8).collect() };
        let keys: Vec<Vec<u8>> = (0..sizes.len())
            .map(|i| format!("v{i}").into_bytes())
            .collect();
        for (i, k) in keys.iter().enumerate().take(3) {
            db.put(k, &value(i)).expect("put");
        }
        db.commit().expect("commit");
        // The later values land in the same data file after the commit.
        for (i, k) in keys.iter().enumerate().skip(3) {
            db.put(k, &value(i)).expect("put");
        }
        db.commit().expect("commit");
        for cache in [CacheUse::DropAfterRead, CacheUse::Keep] {
            let got = db.get_many(&keys, &Allocate, cache);
            for (i, r) in got.iter().enumerate() {
                let v = r.as_ref().expect("ok").as_ref().expect("present");
                assert_eq!(&v[..], &value(i)[..], "v{i} {cache:?}");
            }
            // One value alone (a run of its own, not merged with others).
            let one = db.get_many(&keys[2..3], &Allocate, cache);
            let v = one[0].as_ref().expect("ok").as_ref().expect("present");
            assert_eq!(&v[..], &value(2)[..]);
        }
    }

    #[test]
    fn values_put_together_read_back_alone_and_after_reopening() {
        let dir = tempfile::tempdir_in(std::env::temp_dir()).expect("tempdir");
        let db = Db::open_or_create(dir.path(), DbOptions::default()).expect("db");
        let value = |i: usize| -> Vec<u8> {
            // Inline-sized and out-of-line values mixed.
            let n = if i.is_multiple_of(3) { 5 } else { 8192 + i };
            (0..n).map(|j| (i * 13 + j) as u8).collect()
        };
        let keys: Vec<Vec<u8>> = (0..40).map(|i| format!("c/{i}").into_bytes()).collect();
        let values: Vec<Vec<u8>> = (0..40).map(value).collect();
        let items: Vec<(&[u8], &[u8])> = keys
            .iter()
            .zip(&values)
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
            .collect();
        db.put_many(&items[..20]).expect("put_many");
        db.put_many(&items[20..]).expect("put_many");
        // A later value under a key replaces the batched one.
        db.put(b"c/7", b"again").expect("put");
        for (i, k) in keys.iter().enumerate() {
            let want: &[u8] = if i == 7 { b"again" } else { &values[i] };
            assert_eq!(db.get(k).expect("get").as_deref(), Some(want), "c/{i}");
        }
        db.commit().expect("commit");
        drop(db);
        let db = Db::open_or_create(dir.path(), DbOptions::default()).expect("reopen");
        let got = db.get_many(&keys, &Allocate, CacheUse::DropAfterRead);
        for (i, r) in got.iter().enumerate() {
            let want: &[u8] = if i == 7 { b"again" } else { &values[i] };
            assert_eq!(r.as_ref().expect("ok").as_deref(), Some(want), "c/{i}");
        }
        let long = vec![b'k'; 70_000];
        assert!(
            db.put_many(&[(b"ok", b"x"), (&long, b"y")]).is_err(),
            "a key too long is refused"
        );
        assert_eq!(
            db.get(b"ok").expect("get"),
            None,
            "nothing of a refused batch is stored"
        );
    }
}
