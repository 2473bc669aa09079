//! An S3-compatible object store as the home of a packed (OCDBT)
//! database: `s3://BUCKET/PREFIX` holds `manifest.ocdbt` and `d/<id>`,
//! the layout TensorStore's `ocdbt` driver reads over its `s3` kvstore.
//!
//! Endpoint, region and credentials come from the usual `AWS_*`
//! environment variables (`AWS_ENDPOINT_URL`, `AWS_REGION`,
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_ALLOW_HTTP`). Every
//! request is bounded (a timeout and a few retries), so a store that is
//! down answers an error within a minute instead of hanging a reader.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as ObjectPath;
use object_store::{ClientConfigKey, ObjectStoreExt, RetryConfig};
use parking_lot::Mutex;

use super::s3_cache::BlockCache;
use crate::config::StoreSettings;

/// Per request, including the body (a 16 MiB part on a slow link).
const REQUEST_TIMEOUT: &str = "30s";
const CONNECT_TIMEOUT: &str = "5s";
/// Retries of a failed request, and the time they may take in all.
const MAX_RETRIES: usize = 3;
const RETRY_WINDOW: std::time::Duration = std::time::Duration::from_secs(20);

/// `s3://BUCKET/PREFIX`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    pub bucket: String,
    /// Without leading or trailing `/`; empty for the bucket's root.
    pub prefix: String,
}

impl S3Location {
    /// Whether `s` names an object store location rather than a local path.
    pub fn is_s3(s: &std::ffi::OsStr) -> bool {
        s.to_str().is_some_and(|s| s.starts_with("s3://"))
    }

    /// Parses `s3://bucket/prefix`.
    pub fn parse(s: &str) -> Result<Self> {
        let Some(rest) = s.strip_prefix("s3://") else {
            bail!("{s:?} is not an s3:// location (s3://BUCKET/PREFIX)");
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            bail!("{s:?} names no bucket (s3://BUCKET/PREFIX)");
        }
        let prefix = prefix.trim_matches('/').to_string();
        if prefix.split('/').any(|p| p == "." || p == "..") {
            bail!("{s:?}: a prefix may not contain . or .. segments");
        }
        Ok(S3Location {
            bucket: bucket.to_string(),
            prefix,
        })
    }
}

impl fmt::Display for S3Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix.is_empty() {
            write!(f, "s3://{}", self.bucket)
        } else {
            write!(f, "s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

/// A connection to one bucket and prefix, with its own runtime so that
/// callers on any thread (FUSE workers, the save pool) can block on it.
pub struct S3Store {
    pub location: S3Location,
    pub store: Arc<AmazonS3>,
    /// Taken at drop, which may happen on a thread of another runtime.
    rt: Option<tokio::runtime::Runtime>,
}

impl Drop for S3Store {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "S3Store({})", self.location)
    }
}

impl S3Store {
    /// Connects to `location` with settings from the environment. Nothing
    /// is requested yet: a wrong endpoint shows at the first request.
    pub fn connect(location: S3Location) -> Result<Self> {
        Self::connect_with(location, &StoreSettings::default())
    }

    /// [`S3Store::connect`] with a mount config's `[store]` settings over
    /// the environment's.
    pub fn connect_with(location: S3Location, settings: &StoreSettings) -> Result<Self> {
        let mut builder = AmazonS3Builder::from_env();
        if let Some(e) = &settings.endpoint {
            builder = builder.with_endpoint(e);
        }
        if let Some(r) = &settings.region {
            builder = builder.with_region(r);
        }
        if let Some(h) = settings.allow_http {
            builder = builder.with_allow_http(h);
        }
        if let (Some(id), Some(secret)) = (&settings.access_key_id, &settings.secret_access_key) {
            builder = builder
                .with_access_key_id(id)
                .with_secret_access_key(secret);
        }
        let store = builder
            .with_bucket_name(&location.bucket)
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::Timeout),
                REQUEST_TIMEOUT,
            )
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
                CONNECT_TIMEOUT,
            )
            .with_retry(RetryConfig {
                max_retries: MAX_RETRIES,
                retry_timeout: RETRY_WINDOW,
                ..RetryConfig::default()
            })
            .build()
            .with_context(|| format!("configure {location} (see the AWS_* variables)"))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .thread_name("ckptfs-s3")
            .enable_all()
            .build()
            .context("start the object store runtime")?;
        Ok(S3Store {
            location,
            store: Arc::new(store),
            rt: Some(rt),
        })
    }

    /// The object for `key` under the prefix.
    pub fn path(&self, key: &str) -> ObjectPath {
        if self.location.prefix.is_empty() {
            ObjectPath::from(key)
        } else {
            ObjectPath::from(format!("{}/{key}", self.location.prefix))
        }
    }

    /// Runs `fut` on the store's runtime and waits for it, from any thread
    /// (a tokio worker of another runtime included).
    pub fn block_on<T: Send + 'static>(
        &self,
        fut: impl Future<Output = T> + Send + 'static,
    ) -> io::Result<T> {
        let Some(rt) = &self.rt else {
            return Err(io::Error::other("object store connection closed"));
        };
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        rt.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv()
            .map_err(|_| io::Error::other("object store request abandoned"))
    }

    /// The object's bytes, or `None` when it does not exist.
    pub fn get_opt(&self, key: &str) -> io::Result<Option<Vec<u8>>> {
        let (store, path) = (self.store.clone(), self.path(key));
        let got = self.block_on(async move {
            match store.get(&path).await {
                Ok(r) => r.bytes().await.map(Some),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        })?;
        got.map(|b| b.map(|b| b.to_vec()))
            .map_err(|e| to_io(e, &self.location, key))
    }
}

impl S3Store {
    /// Every object under the prefix: key (below the prefix) and size.
    pub fn list_all(&self) -> io::Result<Vec<(String, u64)>> {
        use futures::TryStreamExt;
        use object_store::ObjectStore;
        let (store, prefix) = (self.store.clone(), self.path(""));
        let strip = format!("{}/", self.location.prefix);
        let listed = self.block_on(async move {
            let prefix = (!prefix.as_ref().is_empty()).then_some(prefix);
            store.list(prefix.as_ref()).try_collect::<Vec<_>>().await
        })?;
        let listed = listed.map_err(|e| to_io(e, &self.location, ""))?;
        Ok(listed
            .into_iter()
            .map(|o| {
                let key = o.location.as_ref();
                let key = key.strip_prefix(strip.as_str()).unwrap_or(key);
                (key.to_string(), o.size)
            })
            .collect())
    }

    /// The objects under `sub/` (below the prefix), with their sizes and
    /// the store's time of their last write.
    pub fn list_meta(&self, sub: &str) -> io::Result<Vec<ObjectInfo>> {
        use futures::TryStreamExt;
        use object_store::ObjectStore;
        let (store, dir) = (self.store.clone(), self.path(sub));
        let strip = match self.location.prefix.is_empty() {
            true => String::new(),
            false => format!("{}/", self.location.prefix),
        };
        let listed =
            self.block_on(async move { store.list(Some(&dir)).try_collect::<Vec<_>>().await })?;
        let listed = listed.map_err(|e| to_io(e, &self.location, sub))?;
        Ok(listed
            .into_iter()
            .map(|o| {
                let key = o.location.as_ref();
                ObjectInfo {
                    key: key.strip_prefix(strip.as_str()).unwrap_or(key).to_string(),
                    size: o.size,
                    modified_ms: o.last_modified.timestamp_millis(),
                }
            })
            .collect())
    }

    /// Writes a small object whole.
    pub fn put_small(&self, key: &str, bytes: Vec<u8>) -> io::Result<()> {
        let (store, path) = (self.store.clone(), self.path(key));
        self.block_on(async move {
            store
                .put(&path, object_store::PutPayload::from(bytes))
                .await
        })?
        .map(drop)
        .map_err(|e| to_io(e, &self.location, key))
    }

    /// Deletes one object (one that is gone already is no error).
    pub fn delete(&self, key: &str) -> io::Result<()> {
        let (store, path) = (self.store.clone(), self.path(key));
        match self.block_on(async move { store.delete(&path).await })? {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(to_io(e, &self.location, key)),
        }
    }

    /// The store's clock now, in ms since the Unix epoch: the time it gives
    /// a scratch object written for the purpose. Leases and object ages
    /// are compared on this clock, so the hosts' clocks do not matter.
    pub fn now_ms(&self) -> io::Result<i64> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let key = format!(".ckptfs-clock-{}-{nanos}", std::process::id());
        self.put_small(&key, Vec::new())?;
        let (store, path) = (self.store.clone(), self.path(&key));
        let head = self.block_on(async move { store.head(&path).await })?;
        let _ = self.delete(&key);
        head.map(|m| m.last_modified.timestamp_millis())
            .map_err(|e| to_io(e, &self.location, &key))
    }

    /// Deletes every object under the prefix (a benchmark's scratch copy).
    pub fn delete_all(&self) -> io::Result<usize> {
        let keys = self.list_all()?;
        for (key, _) in &keys {
            let (store, path) = (self.store.clone(), self.path(key));
            self.block_on(async move { store.delete(&path).await })?
                .map_err(|e| to_io(e, &self.location, key))?;
        }
        Ok(keys.len())
    }
}

/// One object of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Below the prefix (`d/<name>`, `leases/<name>`).
    pub key: String,
    pub size: u64,
    /// The store's time of its last write, ms since the Unix epoch.
    pub modified_ms: i64,
}

/// An object store error as an `io::Error` (NotFound stays NotFound; the
/// rest is EIO with the store's message).
pub fn to_io(e: object_store::Error, at: &S3Location, key: &str) -> io::Error {
    let kind = match e {
        object_store::Error::NotFound { .. } => io::ErrorKind::NotFound,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, format!("{at}/{key}: {e}"))
}

/// A packed database's files read from the store, through a local block
/// cache when it has one.
#[derive(Debug)]
pub struct S3Remote {
    store: Arc<S3Store>,
    cache: Option<BlockCache>,
    /// Sizes seen, per key: a reader needs no more than what the version
    /// it opened references, which lies below the size it saw first.
    sizes: Mutex<HashMap<String, u64>>,
}

impl S3Remote {
    /// Reads through `store`, with `cache` in front of it if given.
    pub fn new(store: Arc<S3Store>, cache: Option<BlockCache>) -> Self {
        S3Remote {
            store,
            cache,
            sizes: Mutex::new(HashMap::new()),
        }
    }

    /// Bytes in the local cache.
    pub fn cached_bytes(&self) -> u64 {
        self.cache.as_ref().map_or(0, |c| c.used())
    }
}

impl ocdbt::Remote for S3Remote {
    fn get(&self, key: &str) -> io::Result<Vec<u8>> {
        self.store.get_opt(key)?.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{}/{key}: no such object", self.store.location),
            )
        })
    }

    fn read_at(&self, key: &str, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        if let Some(cache) = &self.cache {
            let size = self.size(key)?;
            return cache.read_at(&self.store, key, size, offset, buf);
        }
        let s = &self.store;
        let (store, path) = (s.store.clone(), s.path(key));
        let range = offset..offset + buf.len() as u64;
        let bytes = s
            .block_on(async move { store.get_range(&path, range).await })?
            .map_err(|e| to_io(e, &s.location, key))?;
        if bytes.len() != buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "{}/{key}: {} bytes at {offset} asked, {} returned",
                    s.location,
                    buf.len(),
                    bytes.len()
                ),
            ));
        }
        buf.copy_from_slice(&bytes);
        Ok(())
    }

    fn size(&self, key: &str) -> io::Result<u64> {
        if let Some(&n) = self.sizes.lock().get(key) {
            return Ok(n);
        }
        let s = &self.store;
        let (store, path) = (s.store.clone(), s.path(key));
        let meta = s
            .block_on(async move { store.head(&path).await })?
            .map_err(|e| to_io(e, &s.location, key))?;
        self.sizes.lock().insert(key.to_string(), meta.size);
        Ok(meta.size)
    }

    fn describe(&self) -> String {
        self.store.location.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::S3Location;

    #[test]
    fn locations_parse_and_print_back() {
        let l = S3Location::parse("s3://ckpt/runs/a/").expect("parse");
        assert_eq!(l.bucket, "ckpt");
        assert_eq!(l.prefix, "runs/a");
        assert_eq!(l.to_string(), "s3://ckpt/runs/a");
        assert_eq!(
            S3Location::parse("s3://ckpt").expect("parse").to_string(),
            "s3://ckpt"
        );
        assert!(S3Location::parse("s3:///x").is_err());
        assert!(S3Location::parse("/tmp/x").is_err());
        assert!(S3Location::parse("s3://b/a/../c").is_err());
    }
}
