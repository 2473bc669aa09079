//! Backing stores behind zarrs' storage traits.

pub mod direct_read;
pub mod durable;
pub mod group_sync;
pub mod packed;
