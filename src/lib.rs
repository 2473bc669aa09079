//! ckptfs: a FUSE filesystem for model checkpoints over a chunked Zarr v3
//! backing store, with a built-in profiler.

#[cfg(feature = "bench")]
pub mod advise;
#[cfg(feature = "bench")]
pub mod bench;
pub mod clock;
pub mod config;
pub mod error;
pub mod format;
pub mod fs;
pub mod inspect;
pub mod layout;
pub mod mount;
pub mod mount_helper;
/// The OCDBT database (its own crate), under its old path.
pub use ::ocdbt;
pub mod packed_cli;
pub mod pipeline;
pub mod profile;
pub mod publish;
pub mod store;
pub mod verify;
pub mod writeback;
