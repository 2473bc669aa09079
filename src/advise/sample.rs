//! Which tensors of a checkpoint the advisor measures: a sample that fits
//! the time budget and keeps the checkpoint's mix of shapes and dtypes.
//!
//! Tensors of one (dtype, shape) are chunked and encoded alike, so the sample
//! takes one of every such group that fits, then more of each group in
//! proportion to its share of the checkpoint's bytes (the big matrices
//! dominate save and load time), then the largest tensors that still fit.

use std::collections::{BTreeMap, BTreeSet};

/// One tensor, as the sampler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// The tensor's name in the checkpoint.
    pub name: String,
    /// Group key: dtype and shape, e.g. "F32[3200, 8640]".
    pub kind: String,
    /// Bytes of its data.
    pub bytes: u64,
}

/// The chosen tensors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sample {
    /// Names of the chosen tensors.
    pub names: BTreeSet<String>,
    /// Their bytes in total.
    pub bytes: u64,
    /// Distinct (dtype, shape) groups in the checkpoint.
    pub groups: usize,
    /// How many of those groups the sample has a tensor of.
    pub groups_sampled: usize,
}

/// Picks tensors adding up to at most `budget` bytes (at least one tensor,
/// whatever its size).
pub fn pick(tensors: &[TensorInfo], budget: u64) -> Sample {
    let total: u64 = tensors.iter().map(|t| t.bytes).sum();
    let mut groups: BTreeMap<&str, Vec<&TensorInfo>> = BTreeMap::new();
    for t in tensors {
        groups.entry(&t.kind).or_default().push(t);
    }
    // Largest groups first; members in name order, so a sample is stable.
    let mut ordered: Vec<(u64, Vec<&TensorInfo>)> = groups
        .into_values()
        .map(|mut v| {
            v.sort_by(|a, b| a.name.cmp(&b.name));
            (v.iter().map(|t| t.bytes).sum(), v)
        })
        .collect();
    ordered.sort_by_key(|g| std::cmp::Reverse(g.0));
    let mut out = Sample {
        groups: ordered.len(),
        ..Sample::default()
    };
    let mut taken = vec![0usize; ordered.len()];
    let take = |out: &mut Sample, t: &TensorInfo| {
        out.names.insert(t.name.clone());
        out.bytes += t.bytes;
    };
    // One of each group that fits, smallest first: a budget below the
    // largest tensor still covers every other kind.
    let mut by_size: Vec<usize> = (0..ordered.len()).collect();
    by_size.sort_by_key(|&g| ordered[g].1[0].bytes);
    for g in by_size {
        let t = ordered[g].1[0];
        if out.bytes + t.bytes <= budget {
            take(&mut out, t);
            taken[g] = 1;
        }
    }
    if out.names.is_empty() {
        // Not even the smallest fits: measure one of the biggest group.
        take(&mut out, ordered[0].1[0]);
        taken[0] = 1;
    }
    // Then each group up to its share of the budget.
    for (g, (group_bytes, members)) in ordered.iter().enumerate() {
        let share = (budget as f64 * *group_bytes as f64 / total.max(1) as f64) as u64;
        let mut have: u64 = members[..taken[g]].iter().map(|t| t.bytes).sum();
        while taken[g] < members.len() && have < share {
            let t = members[taken[g]];
            if out.bytes + t.bytes > budget {
                break;
            }
            take(&mut out, t);
            have += t.bytes;
            taken[g] += 1;
        }
    }
    // Whatever room is left, largest remaining tensors first.
    let mut rest: Vec<&TensorInfo> = ordered
        .iter()
        .enumerate()
        .flat_map(|(g, (_, m))| m[taken[g]..].iter().copied())
        .collect();
    rest.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.name.cmp(&b.name)));
    for t in rest {
        if out.bytes + t.bytes <= budget {
            take(&mut out, t);
        }
    }
    out.groups_sampled = tensors
        .iter()
        .filter(|t| out.names.contains(&t.name))
        .map(|t| &t.kind)
        .collect::<BTreeSet<_>>()
        .len();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, kind: &str, bytes: u64) -> TensorInfo {
        TensorInfo {
            name: name.into(),
            kind: kind.into(),
            bytes,
        }
    }

    fn llama_like() -> Vec<TensorInfo> {
        let mut v = vec![t("embed", "F32[32000, 3200]", 409_600_000)];
        for l in 0..4 {
            for p in ["q", "k", "v", "o"] {
                v.push(t(&format!("l{l}.{p}"), "F32[3200, 3200]", 40_960_000));
            }
            for p in ["gate", "up"] {
                v.push(t(&format!("l{l}.{p}"), "F32[8640, 3200]", 110_592_000));
            }
            v.push(t(&format!("l{l}.down"), "F32[3200, 8640]", 110_592_000));
            v.push(t(&format!("l{l}.norm"), "F32[3200]", 12_800));
        }
        v
    }

    #[test]
    fn a_budget_above_the_checkpoint_takes_everything() {
        let v = llama_like();
        let total: u64 = v.iter().map(|t| t.bytes).sum();
        let s = pick(&v, total);
        assert_eq!(s.names.len(), v.len());
        assert_eq!(s.bytes, total);
        assert_eq!(s.groups_sampled, s.groups);
    }

    #[test]
    fn a_small_budget_keeps_every_group_that_fits_and_stays_within_it() {
        let v = llama_like();
        let s = pick(&v, 800_000_000);
        assert!(s.bytes <= 800_000_000, "{} bytes", s.bytes);
        // embed, [3200,3200], [8640,3200], [3200,8640], [3200]: all fit.
        assert_eq!(s.groups, 5);
        assert_eq!(s.groups_sampled, 5);
        // The leftover room went to more matrices, not nothing.
        assert!(s.bytes > 409_600_000 + 40_960_000 + 2 * 110_592_000 + 12_800);
    }

    #[test]
    fn proportional_shares_follow_the_groups_bytes() {
        let v = llama_like();
        let total: u64 = v.iter().map(|t| t.bytes).sum();
        let s = pick(&v, total / 2);
        let mlp = s
            .names
            .iter()
            .filter(|n| n.ends_with("gate") || n.ends_with("up") || n.ends_with("down"))
            .count();
        let attn = s
            .names
            .iter()
            .filter(|n| {
                n.ends_with(".q") || n.ends_with(".k") || n.ends_with(".v") || n.ends_with(".o")
            })
            .count();
        assert!(mlp >= 4 && attn >= 2, "mlp {mlp} attn {attn}");
        assert!(s.bytes <= total / 2);
    }

    #[test]
    fn a_budget_below_the_largest_tensor_covers_the_other_kinds() {
        let v = llama_like();
        let s = pick(&v, 300_000_000);
        assert!(!s.names.contains("embed"));
        assert_eq!(s.groups_sampled, 4);
        assert!(
            s.bytes <= 300_000_000 && s.bytes > 250_000_000,
            "{}",
            s.bytes
        );
    }

    #[test]
    fn one_tensor_larger_than_the_budget_is_still_taken_alone() {
        let v = vec![t("big", "F32[10]", 1000), t("big2", "F32[10]", 1000)];
        let s = pick(&v, 10);
        assert_eq!(s.names.len(), 1);
        assert_eq!(s.bytes, 1000);
    }
}
