//! The mount's own profile (written at unmount), boiled down to totals per
//! FUSE operation and per backend stage.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use serde_json::Value;

/// Totals of one operation or stage.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct OpTotals {
    /// Times it ran.
    pub count: u64,
    /// Times it failed.
    pub errors: u64,
    /// Bytes it moved.
    pub bytes: u64,
    /// Seconds spent in it, summed over every run.
    pub total_s: f64,
    /// Longest single run, in seconds.
    pub max_s: f64,
}

/// One mount session's profile.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ProfileSummary {
    /// Totals per FUSE operation.
    pub ops: BTreeMap<String, OpTotals>,
    /// Totals per backend stage.
    pub stages: BTreeMap<String, OpTotals>,
    /// Bytes the daemon wrote to the backing store.
    pub backend_written_bytes: Option<u64>,
    /// Bytes the daemon read from the backing store.
    pub backend_read_bytes: Option<u64>,
    /// The most chunk data held at once from the mount's memory budget.
    pub memory_budget_peak_bytes: Option<u64>,
    /// Opens the kernel served by passthrough (their bytes never reached
    /// the daemon, so they are in no op or stage figure).
    pub passthrough_opens: Option<u64>,
}

/// Reads a profile file; Err says why there is none to read.
pub fn read(path: &Path) -> Result<ProfileSummary, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("no profile at {}: {e}", path.display()))?;
    let doc: Value = serde_json::from_str(&text)
        .map_err(|e| format!("profile {} is not JSON: {e}", path.display()))?;
    Ok(summarise(&doc))
}

/// Takes what it recognises and ignores the rest, so that a richer profile
/// format still yields its totals.
pub fn summarise(doc: &Value) -> ProfileSummary {
    let profile = doc.get("profile").unwrap_or(doc);
    let totals = |key: &str| -> BTreeMap<String, OpTotals> {
        profile
            .get(key)
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(name, v)| {
                        let u = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
                        let f = |k: &str| v.get(k).and_then(Value::as_f64).unwrap_or(0.0);
                        (
                            name.clone(),
                            OpTotals {
                                count: u("count"),
                                errors: u("errors"),
                                bytes: u("bytes"),
                                total_s: f("total_s"),
                                max_s: f("max_s"),
                            },
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    ProfileSummary {
        ops: totals("ops"),
        stages: totals("stages"),
        backend_written_bytes: profile.get("backend_written_bytes").and_then(Value::as_u64),
        backend_read_bytes: profile.get("backend_read_bytes").and_then(Value::as_u64),
        memory_budget_peak_bytes: doc.get("memory_budget_peak_bytes").and_then(Value::as_u64),
        passthrough_opens: doc
            .get("io_paths")
            .and_then(|p| p.get("opens_passthrough"))
            .and_then(Value::as_u64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_per_op_are_read_from_the_mount_profile() {
        let doc = serde_json::json!({
            "config": {},
            "profile": {
                "ops": {"write": {"count": 3, "errors": 0, "bytes": 300, "total_s": 0.5, "max_s": 0.2}},
                "stages": {"encode": {"count": 2, "errors": 0, "bytes": 0, "total_s": 0.1, "max_s": 0.06}},
                "backend_written_bytes": 4096,
                "backend_read_bytes": 0
            },
            "memory_budget_peak_bytes": 1024
        });
        let s = summarise(&doc);
        assert_eq!(s.ops["write"].count, 3);
        assert_eq!(s.ops["write"].bytes, 300);
        assert_eq!(s.stages["encode"].total_s, 0.1);
        assert_eq!(s.backend_written_bytes, Some(4096));
        assert_eq!(s.memory_budget_peak_bytes, Some(1024));
    }
}
