//! The mount config parser: any text gives a config or an error naming the
//! problem, never a panic; an accepted config is within the documented bounds.
#![no_main]

use ckptfs::config::{Chunking, MountConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match MountConfig::parse(text, "fuzz") {
        Ok(c) => {
            assert!((4096..=1 << 30).contains(&c.layout.raw_chunk_bytes));
            assert!((1..=1024).contains(&c.io.concurrency));
            assert!((1..=64).contains(&c.io.fuse_threads));
            assert!((4096..=16 << 20).contains(&c.io.max_request_bytes));
            if c.layout.chunking != Chunking::None {
                assert!(c.io.memory_budget >= c.layout.raw_chunk_bytes);
            }
            assert!(!c.to_json().is_null());
            // The same text parses the same way again.
            assert_eq!(MountConfig::parse(text, "fuzz").ok(), Some(c));
        }
        Err(e) => assert!(!e.0.is_empty()),
    }
});
