//! zarrs' own storage test suite (`zarrs_storage::store_test`) against
//! each store the filesystem keeps Zarr arrays in: the directory layout
//! (`DurableStore` over a folder), the packed index as a zarrs store
//! (`PackedStore` over a key prefix of an OCDBT database), and a
//! `DurableStore` whose data keys live in that database. Each store is also
//! reopened and read again, since a store here is only as good as what it
//! keeps across a restart.

use std::sync::Arc;

use ckptfs::ocdbt::{Db, DbOptions};
use ckptfs::store::durable::DurableStore;
use ckptfs::store::packed::PackedStore;
use zarrs_storage::byte_range::ByteRangeIterator;
use zarrs_storage::{
    store_test, Bytes, ListableStorageTraits, MaybeBytesIterator, OffsetBytesIterator,
    ReadableStorageTraits, StorageError, StoreKey, StoreKeys, StoreKeysPrefixes, StorePrefix,
    WritableStorageTraits,
};

/// The directory store refuses to erase its root on purpose (it is a
/// file's backing folder, manifest included): the suite's opening
/// `erase_prefix("")` becomes an erase of every listed key here, which is
/// what the suite means by it. Everything else goes straight through.
struct EraseRootByKeys<'a>(&'a DurableStore);

impl ReadableStorageTraits for EraseRootByKeys<'_> {
    fn get_partial_many<'a>(
        &'a self,
        key: &StoreKey,
        byte_ranges: ByteRangeIterator<'a>,
    ) -> Result<MaybeBytesIterator<'a>, StorageError> {
        self.0.get_partial_many(key, byte_ranges)
    }
    fn size_key(&self, key: &StoreKey) -> Result<Option<u64>, StorageError> {
        self.0.size_key(key)
    }
    fn supports_get_partial(&self) -> bool {
        self.0.supports_get_partial()
    }
}

impl WritableStorageTraits for EraseRootByKeys<'_> {
    fn set(&self, key: &StoreKey, value: Bytes) -> Result<(), StorageError> {
        self.0.set(key, value)
    }
    fn set_partial_many(
        &self,
        key: &StoreKey,
        offset_values: OffsetBytesIterator,
    ) -> Result<(), StorageError> {
        self.0.set_partial_many(key, offset_values)
    }
    fn erase(&self, key: &StoreKey) -> Result<(), StorageError> {
        self.0.erase(key)
    }
    fn erase_prefix(&self, prefix: &StorePrefix) -> Result<(), StorageError> {
        if prefix.as_str().is_empty() {
            return self.0.list()?.iter().try_for_each(|k| self.0.erase(k));
        }
        self.0.erase_prefix(prefix)
    }
    fn supports_set_partial(&self) -> bool {
        self.0.supports_set_partial()
    }
}

impl ListableStorageTraits for EraseRootByKeys<'_> {
    fn list(&self) -> Result<StoreKeys, StorageError> {
        self.0.list()
    }
    fn list_prefix(&self, prefix: &StorePrefix) -> Result<StoreKeys, StorageError> {
        self.0.list_prefix(prefix)
    }
    fn list_dir(&self, prefix: &StorePrefix) -> Result<StoreKeysPrefixes, StorageError> {
        self.0.list_dir(prefix)
    }
    fn size_prefix(&self, prefix: &StorePrefix) -> Result<u64, StorageError> {
        self.0.size_prefix(prefix)
    }
}

#[test]
fn the_directory_store_passes_the_zarrs_suite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = DurableStore::open(dir.path()).expect("open");
    assert!(
        store.erase_prefix(&StorePrefix::root()).is_err(),
        "the root of a file's folder must not be erasable"
    );
    let suite = EraseRootByKeys(&store);
    store_test::store_write(&suite).expect("store_write");
    store_test::store_read(&suite).expect("store_read");
    store_test::store_list(&suite).expect("store_list");
    store_test::store_list_size(&suite).expect("store_list_size");
    drop(store);
    let store = DurableStore::open(dir.path()).expect("reopen");
    store_test::store_read(&store).expect("store_read after reopening");
    store_test::store_list(&store).expect("store_list after reopening");
}

#[test]
fn the_packed_store_passes_the_zarrs_suite() {
    let dir = tempfile::tempdir().expect("tempdir");
    for prefix in ["", "file-7/"] {
        let db = Db::open_or_create(dir.path(), DbOptions::default()).expect("db");
        let store = PackedStore::new(db.clone(), prefix);
        store_test::store_write(&store).expect("store_write");
        store_test::store_read(&store).expect("store_read");
        store_test::store_list(&store).expect("store_list");
        store_test::store_list_size(&store).expect("store_list_size");
        // Durable at commit: what a reopened database reads.
        db.commit().expect("commit");
        drop(store);
        drop(db);
        let db = Db::open_or_create(dir.path(), DbOptions::default()).expect("reopen");
        let store = PackedStore::new(db, prefix);
        store_test::store_read(&store).expect("store_read after reopening");
        store_test::store_list(&store).expect("store_list after reopening");
    }
}

#[test]
fn a_directory_store_with_packed_data_passes_the_zarrs_suite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db: Arc<Db> = Db::open_or_create(dir.path(), DbOptions::default()).expect("db");
    let files = dir.path().join("file");
    std::fs::create_dir_all(&files).expect("mkdir");
    let store = DurableStore::open_packed(&files, db, "f1").expect("open");
    store_test::store_write(&store).expect("store_write");
    store_test::store_read(&store).expect("store_read");
    store_test::store_list(&store).expect("store_list");
    store_test::store_list_size(&store).expect("store_list_size");
}
