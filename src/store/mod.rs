//! Backing stores behind zarrs' storage traits.

pub mod attrs_xattr;
pub mod chunks;
pub mod dir_chunks;
pub mod dir_names;
pub mod dir_namespace;
pub mod dir_scan;
pub mod direct_read;
pub mod direct_write;
pub mod durable;
pub mod group_sync;
pub mod lease;
pub mod namespace;
pub mod ns_catalog;
pub mod ns_live;
pub mod packed;
pub mod s3;
pub mod s3_cache;
pub mod s3_gc;
pub mod trash;
pub mod upstream;
