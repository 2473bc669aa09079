//! A copy of the mount's packed database kept elsewhere (an object store
//! that a writer mount of `s3://…` publishes to): `fsync` and `fsyncdir`
//! return once the copy holds the commit they made, or fail with `EIO`.

use crate::error::FsResult;

pub trait Upstream: Send + Sync {
    /// Returns once the copy holds `generation` of the database (or a
    /// newer one); an error when the attempt to publish it failed.
    fn sync(&self, generation: u64) -> FsResult<()>;

    /// What `.ckptfs/stats` shows of it.
    fn status(&self) -> serde_json::Value;
}
