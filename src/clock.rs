//! UTC timestamps for result folders, reports and the access log, without
//! a date library.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now as `2026-11-23T150405Z` (a folder name: no colons).
pub fn compact_utc_now() -> String {
    compact_utc(unix_now())
}

/// Now as `2026-11-23T15:04:05Z`.
pub fn iso_utc_now() -> String {
    let (y, mo, d, h, mi, s) = civil(unix_now());
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// Now as `2026-11-23 15:04:05.123456` (access-log lines).
pub fn log_utc_now() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let (y, mo, d, h, mi, s) = civil(now.as_secs() as i64);
    format!(
        "{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{:06}",
        now.subsec_micros()
    )
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub fn compact_utc(secs: i64) -> String {
    let (y, mo, d, h, mi, s) = civil(secs);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}{mi:02}{s:02}Z")
}

/// Seconds since the epoch to (year, month, day, hour, minute, second), after
/// Howard Hinnant's `civil_from_days`.
fn civil(secs: i64) -> (i64, u32, u32, u32, u32, u32) {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        m,
        d,
        (rem / 3600) as u32,
        (rem % 3600 / 60) as u32,
        (rem % 60) as u32,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_seconds_become_utc_dates() {
        assert_eq!(compact_utc(0), "1970-01-01T000000Z");
        // 2026-11-23 15:04:05 UTC
        assert_eq!(compact_utc(1_795_446_245), "2026-11-23T150405Z");
        // 2024-02-29 23:59:59 UTC (a leap day)
        assert_eq!(compact_utc(1_709_251_199), "2024-02-29T235959Z");
    }
}
