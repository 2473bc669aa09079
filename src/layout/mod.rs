//! How a file is laid out in the backing store: its Zarr arrays and the
//! manifest that commits them.

pub mod array;
pub mod chunk_shape;
pub mod dtype;
pub mod f16_simd;
pub mod gzip;
pub mod manifest;
pub mod shuffle;
pub mod tensor;
