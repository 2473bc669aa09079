//! `PackedStore`: a zarrs store whose keys live in an OCDBT database under a
//! key prefix, so zarrs arrays are written into (and read from) the packed
//! index. Writes become durable at `Db::commit`.

use std::io;
use std::sync::Arc;

use zarrs_storage::byte_range::{ByteRange, ByteRangeIterator, InvalidByteRangeError};
use zarrs_storage::{
    Bytes, ListableStorageTraits, MaybeBytesIterator, OffsetBytesIterator, ReadableStorageTraits,
    StorageError, StoreKey, StoreKeys, StoreKeysPrefixes, StorePrefix, StorePrefixes,
    WritableStorageTraits,
};

use ocdbt::multi_get::{Buffers, CacheUse};
use ocdbt::{Db, OcdbtError};

use super::chunks::ChunkStore;

/// A view of `db` under `prefix` (empty, or ending in `/`).
#[derive(Clone)]
pub struct PackedStore {
    pub db: Arc<Db>,
    pub prefix: String,
}

fn err(e: OcdbtError) -> StorageError {
    StorageError::Other(e.to_string())
}

fn db_err(e: OcdbtError) -> io::Error {
    match e {
        OcdbtError::Io { source, .. } => source,
        other => io::Error::other(other.to_string()),
    }
}

impl PackedStore {
    /// The values of `db` under `prefix` (a file's `<id>/`).
    pub fn new(db: Arc<Db>, prefix: impl Into<String>) -> Self {
        let mut prefix = prefix.into();
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        Self { db, prefix }
    }

    fn full(&self, key: &str) -> Vec<u8> {
        format!("{}{key}", self.prefix).into_bytes()
    }

    /// Store-relative keys (with sizes) under a store-relative prefix.
    fn keys_under(&self, prefix: &str) -> Result<Vec<(StoreKey, u64)>, StorageError> {
        let skip = self.prefix.len();
        let mut out = Vec::new();
        for (k, size) in self.db.list_prefix(&self.full(prefix)) {
            let rel = std::str::from_utf8(&k[skip..])
                .map_err(|_| StorageError::Other("non-UTF-8 key in packed store".into()))?;
            out.push((StoreKey::new(rel)?, size));
        }
        Ok(out)
    }
}

impl ReadableStorageTraits for PackedStore {
    fn get_partial_many<'a>(
        &'a self,
        key: &StoreKey,
        byte_ranges: ByteRangeIterator<'a>,
    ) -> Result<MaybeBytesIterator<'a>, StorageError> {
        let full = self.full(key.as_str());
        let Some(size) = self.db.size(&full) else {
            return Ok(None);
        };
        let mut out = Vec::new();
        for range in byte_ranges {
            let (start, end) = (range.start(size), range.end(size));
            if end > size || start > end {
                out.push(Err(InvalidByteRangeError::new(range, size).into()));
                continue;
            }
            let got = if matches!(range, ByteRange::FromStart(0, None)) {
                self.db.get(&full)
            } else {
                self.db.get_range(&full, start, end - start)
            };
            match got.map_err(err)? {
                Some(b) => out.push(Ok(b)),
                // Erased between the size check and the read.
                None => return Ok(None),
            }
        }
        Ok(Some(Box::new(out.into_iter())))
    }

    fn size_key(&self, key: &StoreKey) -> Result<Option<u64>, StorageError> {
        Ok(self.db.size(&self.full(key.as_str())))
    }

    fn supports_get_partial(&self) -> bool {
        true
    }
}

impl WritableStorageTraits for PackedStore {
    fn set(&self, key: &StoreKey, value: Bytes) -> Result<(), StorageError> {
        self.db.put(&self.full(key.as_str()), &value).map_err(err)
    }

    fn set_partial_many(
        &self,
        key: &StoreKey,
        offset_values: OffsetBytesIterator,
    ) -> Result<(), StorageError> {
        // Values are immutable once appended: read, patch, write anew.
        let full = self.full(key.as_str());
        let mut data = self
            .db
            .get(&full)
            .map_err(err)?
            .map(|b| b.to_vec())
            .unwrap_or_default();
        for (offset, value) in offset_values {
            let start = usize::try_from(offset)
                .map_err(|_| StorageError::Other("offset exceeds address space".into()))?;
            let end = start
                .checked_add(value.len())
                .ok_or_else(|| StorageError::Other("offset overflows".into()))?;
            if data.len() < end {
                data.resize(end, 0);
            }
            data[start..end].copy_from_slice(&value);
        }
        self.db.put(&full, &data).map_err(err)
    }

    fn erase(&self, key: &StoreKey) -> Result<(), StorageError> {
        self.db
            .delete(&self.full(key.as_str()))
            .map(|_| ())
            .map_err(err)
    }

    fn erase_prefix(&self, prefix: &StorePrefix) -> Result<(), StorageError> {
        self.db
            .delete_prefix(&self.full(prefix.as_str()))
            .map(|_| ())
            .map_err(err)
    }

    fn supports_set_partial(&self) -> bool {
        true
    }
}

impl ListableStorageTraits for PackedStore {
    fn list(&self) -> Result<StoreKeys, StorageError> {
        self.list_prefix(&StorePrefix::root())
    }

    fn list_prefix(&self, prefix: &StorePrefix) -> Result<StoreKeys, StorageError> {
        Ok(self
            .keys_under(prefix.as_str())?
            .into_iter()
            .map(|(k, _)| k)
            .collect())
    }

    fn list_dir(&self, prefix: &StorePrefix) -> Result<StoreKeysPrefixes, StorageError> {
        let p = prefix.as_str();
        let mut keys = Vec::new();
        let mut prefixes: StorePrefixes = Vec::new();
        for (k, _) in self.keys_under(p)? {
            let rest = &k.as_str()[p.len()..];
            match rest.find('/') {
                Some(i) => {
                    let child = StorePrefix::new(format!("{p}{}/", &rest[..i]))?;
                    if prefixes.last() != Some(&child) {
                        prefixes.push(child);
                    }
                }
                None => keys.push(k),
            }
        }
        prefixes.dedup();
        Ok(StoreKeysPrefixes::new(keys, prefixes))
    }

    fn size_prefix(&self, prefix: &StorePrefix) -> Result<u64, StorageError> {
        Ok(self
            .keys_under(prefix.as_str())?
            .iter()
            .map(|(_, s)| s)
            .sum())
    }
}

impl ChunkStore for PackedStore {
    /// Neighbouring values come in one read (see `Db::get_many`).
    fn read_values(
        &self,
        keys: &[&str],
        _size_hint: Option<usize>,
        buffers: &dyn Buffers,
        drop_cache: bool,
    ) -> Vec<io::Result<Option<Bytes>>> {
        let full: Vec<Vec<u8>> = keys.iter().map(|k| self.full(k)).collect();
        let cache = if drop_cache {
            CacheUse::DropAfterRead
        } else {
            CacheUse::Keep
        };
        self.db
            .get_many(&full, buffers, cache)
            .into_iter()
            .map(|r| r.map_err(db_err))
            .collect()
    }

    /// The database stores the zeros (values are not sparse).
    fn put_sparse(&self, key: &str, value: &[u8], len: u64) -> io::Result<()> {
        let key = self.full(key);
        if len == value.len() as u64 {
            return self.db.put(&key, value).map_err(db_err);
        }
        let mut whole = value.to_vec();
        whole.resize(usize::try_from(len).map_err(io::Error::other)?, 0);
        self.db.put(&key, &whole).map_err(db_err)
    }

    /// One append to the data file for all of them (see `Db::put_many`).
    fn put_many(&self, items: &[(&str, &[u8])]) -> io::Result<()> {
        let keys: Vec<Vec<u8>> = items.iter().map(|(k, _)| self.full(k)).collect();
        let pairs: Vec<(&[u8], &[u8])> = keys
            .iter()
            .zip(items)
            .map(|(k, (_, v))| (k.as_slice(), *v))
            .collect();
        self.db.put_many(&pairs).map_err(db_err)
    }

    fn erase_value(&self, key: &str) -> io::Result<()> {
        self.db.delete(&self.full(key)).map(|_| ()).map_err(db_err)
    }

    /// Values become durable with the database commit in `seal`.
    fn barrier(&self) -> io::Result<()> {
        Ok(())
    }

    /// Stores the manifest as `<id>/zarr.json` and commits the database
    /// (one group commit shared with concurrent callers).
    fn seal(&self, manifest_json: &[u8]) -> io::Result<()> {
        self.db
            .put(&self.full("zarr.json"), manifest_json)
            .map_err(db_err)?;
        self.db.commit().map_err(db_err)?;
        Ok(())
    }

    fn erase_generation(&self, gen: u64) {
        let _ = self.db.delete_prefix(&self.full(&format!("g{gen}/")));
    }

    /// Durable with the database's next commit; recovery removes the keys
    /// after a crash.
    fn erase_file(&self) {
        let _ = self.db.delete_prefix(self.prefix.as_bytes());
    }

    fn shared_prefix(&self) -> Option<&str> {
        Some(&self.prefix)
    }

    /// Commits what was deleted since the last commit (a version without
    /// it), then punches out what no kept version references.
    fn make_room(&self, drop_history: bool) -> bool {
        make_room(&self.db, drop_history)
    }
}

/// Commits what was deleted since the last commit (a version without it),
/// then has `db` punch out what no kept version references (with
/// `drop_history`, all but the newest version's); whether it could.
pub fn make_room(db: &Db, drop_history: bool) -> bool {
    let _ = db.commit();
    db.reclaim(drop_history).is_ok()
}

/// Runs `op`; on ENOSPC asks `room` to make room, without and then with
/// dropping the database's history, trying again after each, before the
/// caller sees ENOSPC. For work outside the database on the disk its data
/// files fill (a file's home).
pub fn with_room(
    room: &dyn Fn(bool) -> bool,
    op: &mut dyn FnMut() -> crate::error::FsResult<()>,
) -> crate::error::FsResult<()> {
    let mut tries = [false, true].into_iter();
    loop {
        match op() {
            Err(e) if e.errno == libc::ENOSPC => match tries.next() {
                Some(drop_history) if room(drop_history) => {}
                _ => return Err(e),
            },
            r => return r,
        }
    }
}
