//! safetensors: the header parser on the whole input, then the file written
//! in pieces through sniffing and planning (see `ckptfs_fuzz`).
#![no_main]

use std::sync::OnceLock;

use ckptfs::config::Chunking;
use ckptfs::format::{safetensors, Segment};
use libfuzzer_sys::fuzz_target;

static RULES: OnceLock<Vec<(Chunking, u64)>> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let Some((seed, file)) = ckptfs_fuzz::split_input(data) else {
        return;
    };
    if let Ok(segments) = safetensors::plan(file) {
        // In file order, no overlap, each tensor its shape's length.
        let mut pos = 0u64;
        for s in &segments {
            let (start, len) = match s {
                Segment::Raw { start, len } => (*start, *len),
                Segment::Tensor(t) => {
                    let numel = t.shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
                    assert_eq!(
                        numel.and_then(|n| n.checked_mul(t.dtype.size())),
                        Some(t.len)
                    );
                    (t.start, t.len)
                }
            };
            assert_eq!(start, pos, "segments out of order: {segments:?}");
            pos = start.checked_add(len).expect("segment end overflows");
        }
    }
    let rules = RULES.get_or_init(ckptfs_fuzz::shipped_rules);
    ckptfs_fuzz::plan_stream(seed, file, rules);
});
