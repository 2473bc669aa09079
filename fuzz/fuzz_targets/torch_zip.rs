//! PyTorch zip (`torch.save`): the file written in pieces through sniffing
//! and the zip planner (see `ckptfs_fuzz`).
#![no_main]

use std::sync::OnceLock;

use ckptfs::config::Chunking;
use libfuzzer_sys::fuzz_target;

static RULES: OnceLock<Vec<(Chunking, u64)>> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let Some((seed, file)) = ckptfs_fuzz::split_input(data) else {
        return;
    };
    let rules = RULES.get_or_init(ckptfs_fuzz::shipped_rules);
    ckptfs_fuzz::plan_stream(seed, file, rules);
});
