//! The mounted filesystem: the core (POSIX semantics over files and a
//! namespace tree) and the FUSE adapter in front of it.

pub mod attr;
pub mod control;
pub mod core;
pub mod file;
pub mod fuse;
pub mod io_mode;
pub mod ns_index;
pub mod tree;
