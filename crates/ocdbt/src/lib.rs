//! OCDBT: TensorStore's Optionally-Cooperative Distributed B+Tree key-value
//! format, so that a checkpoint stored with `index = "packed"` opens directly
//! in TensorStore (`{"driver":"ocdbt","base":"file://DIR/"}`).
//!
//! The codec modules (`envelope`, `data_file_table`, `btree`,
//! `version_tree`, `manifest`) follow `tensorstore/kvstore/ocdbt/index.rst`;
//! see `docs/packed-format.md` for the subset we write and read.
//!
//! A crate of its own: the database and its codecs, with no Zarr library
//! and no printing; `ckptfs` puts a Zarr store on top (`src/store/packed.rs`).

pub mod btree;
pub mod codec;
mod commit;
pub mod compact;
pub mod data_file;
pub mod data_file_table;
pub mod db;
pub mod edit;
pub mod envelope;
pub mod error;
pub mod fsutil;
pub mod manifest;
pub mod multi_get;
pub mod readers;
mod reclaim;
pub mod remote;
pub mod tree_read;
pub mod tree_write;
pub mod verify;
pub mod version_tree;

pub use compact::CompactReport;
pub use db::{Db, DbOptions, Sealed};
pub use edit::Change;
pub use envelope::Compression;
pub use error::{OcdbtError, Result};
pub use remote::Remote;
pub use verify::{
    referenced, referenced_remote, verify, verify_remote, versions, versions_remote, Referenced,
    VerifyReport, VersionInfo,
};

#[cfg(test)]
mod tests;
