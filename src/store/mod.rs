//! Backing stores behind zarrs' storage traits.

pub mod durable;
pub mod group_sync;
