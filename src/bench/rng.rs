//! A small seeded random source for preset weights.
//!
//! candle's CPU `randn` cannot be seeded, so preset values come from our own
//! generator: SplitMix64 expands a seed into xoshiro256++ state, and the
//! Marsaglia polar method turns uniforms into normals. Every block of
//! [`BLOCK`] values of a tensor has its own stream, seeded from the run seed,
//! the tensor name and the block index, so the values do not depend on how
//! many threads draw them.

/// Values per independently seeded block.
pub const BLOCK: usize = 1 << 20;

/// SplitMix64: turns any 64-bit seed into well-mixed state words.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator whose state starts at `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next output; the state advances by the golden-ratio increment.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// xoshiro256++ (Blackman and Vigna): fast, 256 bits of state.
#[derive(Debug, Clone)]
pub struct Xoshiro256 {
    s: [u64; 4],
}

impl Xoshiro256 {
    /// Seeds the state from SplitMix64, as the authors recommend.
    pub fn seed_from(seed: u64) -> Self {
        let mut sm = SplitMix64::new(seed);
        Xoshiro256 {
            s: [sm.next_u64(), sm.next_u64(), sm.next_u64(), sm.next_u64()],
        }
    }

    /// The next output.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [-1, 1) with 24 bits of precision.
    fn next_signed_unit(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32) * (2.0 / (1u64 << 24) as f32) - 1.0
    }

    /// Fills `out` with normal(0, `std`) values (Marsaglia's polar method).
    pub fn fill_normal(&mut self, out: &mut [f32], std: f32) {
        let mut i = 0;
        while i < out.len() {
            let (u, v, s) = loop {
                let u = self.next_signed_unit();
                let v = self.next_signed_unit();
                let s = u * u + v * v;
                if s > 0.0 && s < 1.0 {
                    break (u, v, s);
                }
            };
            let f = std * (-2.0 * s.ln() / s).sqrt();
            out[i] = u * f;
            if i + 1 < out.len() {
                out[i + 1] = v * f;
            }
            i += 2;
        }
    }
}

/// The seed of one block of one tensor: FNV-1a of the name, mixed with the
/// run seed and the block index.
pub fn block_seed(seed: u64, name: &str, block: usize) -> u64 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    let mut sm = SplitMix64::new(
        seed ^ h.rotate_left(17) ^ (block as u64).wrapping_mul(0xA24B_AED4_963E_E407),
    );
    sm.next_u64()
}

/// Draws `n` normal(0, `std`) values for tensor `name`, converted by `conv`,
/// on every available core. The result depends only on `seed`, `name`, `n`.
pub fn normal_tensor<T, F>(seed: u64, name: &str, n: usize, std: f32, conv: F) -> Vec<T>
where
    T: Copy + Default + Send,
    F: Fn(f32) -> T + Sync,
{
    let mut out = vec![T::default(); n];
    let threads = std::thread::available_parallelism()
        .map(|p| p.get())
        .unwrap_or(1)
        .max(1);
    let blocks: Vec<(usize, &mut [T])> = out.chunks_mut(BLOCK).enumerate().collect();
    let per_thread = blocks.len().div_ceil(threads).max(1);
    let mut groups: Vec<Vec<(usize, &mut [T])>> = Vec::new();
    let mut it = blocks.into_iter().peekable();
    while it.peek().is_some() {
        groups.push(it.by_ref().take(per_thread).collect());
    }
    let conv = &conv;
    std::thread::scope(|scope| {
        for group in groups {
            scope.spawn(move || {
                let mut scratch = vec![0f32; BLOCK];
                for (index, block) in group {
                    let mut rng = Xoshiro256::seed_from(block_seed(seed, name, index));
                    let values = &mut scratch[..block.len()];
                    rng.fill_normal(values, std);
                    for (dst, v) in block.iter_mut().zip(values.iter()) {
                        *dst = conv(*v);
                    }
                }
            });
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_values_whatever_the_length_split() {
        let a = normal_tensor(7, "w", BLOCK + 10, 0.02, |v| v);
        let b = normal_tensor(7, "w", BLOCK + 10, 0.02, |v| v);
        assert_eq!(a, b);
        let c = normal_tensor(8, "w", 16, 0.02, |v| v);
        assert_ne!(a[..16], c[..]);
        let d = normal_tensor(7, "other", 16, 0.02, |v| v);
        assert_ne!(a[..16], d[..]);
    }

    #[test]
    fn normal_values_have_the_requested_spread() {
        let v = normal_tensor(1, "stats", 200_000, 0.02, |v| v as f64);
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0);
        assert!(mean.abs() < 2e-4, "mean {mean}");
        assert!((var.sqrt() - 0.02).abs() < 2e-4, "std {}", var.sqrt());
    }
}
