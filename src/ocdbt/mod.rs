//! OCDBT: TensorStore's Optionally-Cooperative Distributed B+Tree key-value
//! format, so that a checkpoint stored with `index = "packed"` opens directly
//! in TensorStore (`{"driver":"ocdbt","base":"file://DIR/"}`).
//!
//! The codec modules (`envelope`, `data_file_table`, `btree`,
//! `version_tree`, `manifest`) follow `tensorstore/kvstore/ocdbt/index.rst`;
//! see `docs/packed-format.md` for the subset we write and read.

pub mod btree;
pub mod cli;
pub mod codec;
mod commit;
pub mod compact;
pub mod data_file;
pub mod data_file_table;
pub mod db;
pub mod envelope;
pub mod error;
pub mod manifest;
pub mod multi_get;
mod reclaim;
pub mod store;
pub mod tree_read;
pub mod tree_write;
pub mod verify;
pub mod version_tree;

pub use compact::CompactReport;
pub use db::{Db, DbOptions};
pub use envelope::Compression;
pub use error::{OcdbtError, Result};
pub use store::PackedStore;
pub use verify::{verify, versions, VerifyReport, VersionInfo};

#[cfg(test)]
mod tests;
