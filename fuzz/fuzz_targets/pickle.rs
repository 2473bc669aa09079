//! The pickle reader: a scan never panics, a complete pickle's length is
//! within the input, and the same pickle scans the same when cut at its end.
#![no_main]

use ckptfs::format::pickle::{scan, ScanError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match scan(data) {
        Ok(s) => {
            assert!(s.len >= 1 && s.len <= data.len());
            let again = scan(&data[..s.len]).expect("the pickle alone scans");
            assert_eq!(again.len, s.len);
            assert_eq!(again.storages, s.storages);
            for st in s.storages.values() {
                // The zip planner multiplies these with checks; the size must be known.
                assert!(st.dtype.size() > 0);
            }
            // One byte short of STOP is never a complete pickle.
            assert!(scan(&data[..s.len - 1]).is_err());
        }
        Err(ScanError::Incomplete) | Err(ScanError::Invalid(_)) => {}
    }
});
