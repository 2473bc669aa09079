//! Backing stores behind zarrs' storage traits.

pub mod durable;
