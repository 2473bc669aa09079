//! Chunk shapes for tensors: TensorStore-basic `min(N, dim)` and T5X's
//! `choose_chunk_shape`, with a floor so prime dimensions do not collapse.

/// `min(n, dim)` for every dimension (TensorStore's basic layout).
pub fn per_dim_max(shape: &[u64], n: u64) -> Vec<u64> {
    shape.iter().map(|&d| d.min(n).max(1)).collect()
}

fn divisors(n: u64) -> Vec<u64> {
    let mut small = Vec::new();
    let mut large = Vec::new();
    let mut i = 1;
    while i * i <= n {
        if n.is_multiple_of(i) {
            small.push(i);
            if i * i != n {
                large.push(n / i);
            }
        }
        i += 1;
    }
    small.extend(large.into_iter().rev());
    small
}

/// T5X `_choose_chunk_shape`: start from the full shape; while the element
/// count exceeds `target`, take the largest chunk dimension (first on ties)
/// down to its next smaller divisor. Chunks then tile the shape exactly.
///
/// With a prime dimension this can end with tiny chunks (T5X's own pitfall:
/// (7, 1000003) at 262,144 elements gives [7, 1]); if the result holds fewer
/// than `target / 16` elements, the shape falls back to rows of
/// `min(target, size)` along the last dimension, which wastes a little at the
/// edges but never explodes the chunk count.
pub fn choose_chunk_shape(shape: &[u64], target: u64) -> Vec<u64> {
    if shape.is_empty() {
        return Vec::new();
    }
    let target = target.max(1);
    let divs: Vec<Vec<u64>> = shape.iter().map(|&d| divisors(d.max(1))).collect();
    let mut pos: Vec<usize> = divs.iter().map(|d| d.len() - 1).collect();
    let size = |pos: &[usize]| -> u64 {
        pos.iter()
            .zip(&divs)
            .map(|(&p, d)| d[p])
            .fold(1u64, |a, b| a.saturating_mul(b))
    };
    while size(&pos) > target {
        let mut best: Option<usize> = None;
        for (i, d) in divs.iter().enumerate() {
            let cur = d[pos[i]];
            if cur > 1 && best.is_none_or(|b| cur > divs[b][pos[b]]) {
                best = Some(i);
            }
        }
        match best {
            Some(b) => pos[b] -= 1,
            None => break,
        }
    }
    let chosen: Vec<u64> = pos.iter().zip(&divs).map(|(&p, d)| d[p]).collect();
    let total: u64 = shape.iter().product();
    let floor = (target / 16).min(total);
    if size(&pos) >= floor.max(1) {
        return chosen;
    }
    // Floor: keep whole trailing dimensions while they fit, then split.
    let mut out = vec![1u64; shape.len()];
    let mut budget = target;
    for i in (0..shape.len()).rev() {
        let take = shape[i].min(budget).max(1);
        out[i] = take;
        budget /= take;
        if budget <= 1 {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t5x_examples_from_the_seeds() {
        let f32_target = 64 * 1024 * 1024 / 4;
        assert_eq!(
            choose_chunk_shape(&[32000, 3200], f32_target),
            vec![4000, 3200]
        );
        assert_eq!(
            choose_chunk_shape(&[32000, 3200], 64 * 1024 * 1024 / 2),
            vec![8000, 3200]
        );
        assert_eq!(choose_chunk_shape(&[32000, 3200], 262_144), vec![500, 400]);
        assert_eq!(
            choose_chunk_shape(&[3200, 8640], f32_target),
            vec![3200, 4320]
        );
        assert_eq!(choose_chunk_shape(&[3200, 3200], 262_144), vec![400, 640]);
        assert_eq!(choose_chunk_shape(&[3200], 262_144), vec![3200]);
    }

    #[test]
    fn prime_dimensions_get_a_floor() {
        let c = choose_chunk_shape(&[7, 1_000_003], 262_144);
        let n: u64 = c.iter().product();
        assert!(n >= 262_144 / 16, "{c:?}");
        assert!(n <= 262_144, "{c:?}");
    }

    #[test]
    fn per_dim_max_clamps() {
        assert_eq!(per_dim_max(&[3200, 10], 64), vec![64, 10]);
        assert_eq!(per_dim_max(&[0], 64), vec![1]);
    }
}
