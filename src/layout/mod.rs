//! How a file is laid out in the backing store: its Zarr arrays and the
//! manifest that commits them.

pub mod array;
pub mod manifest;
