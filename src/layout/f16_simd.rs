//! F32 ↔ F16 eight lanes at a time with the CPU's F16C instructions.
//! `half`'s slice conversions check for the instruction once per four
//! elements, which held a float16 layout's save to about 1 GB/s of
//! casting on the FUSE write thread; these check once per call. Same
//! rounding (to nearest, ties to even) as `half::f16::from_f32`.

use half::f16;

/// Narrows the little-endian f32 elements of `data` into `out` (two bytes
/// each; `out` holds at least that) and returns the largest |x − rounded|
/// over elements whose both values are finite; `None` when this CPU has
/// no F16C (the caller converts another way).
pub fn narrow(data: &[u8], out: &mut [u8]) -> Option<f32> {
    #[cfg(target_arch = "x86_64")]
    {
        if out.len() >= data.len() / 4 * 2
            && std::arch::is_x86_feature_detected!("avx")
            && std::arch::is_x86_feature_detected!("f16c")
        {
            // SAFETY: the two features the function is compiled for were
            // detected above, and `out` was checked to be long enough.
            return Some(unsafe { narrow_f16c(data, out) });
        }
    }
    let _ = (data, out);
    None
}

/// Widens the little-endian f16 elements of `src` into f32 in `out` (four
/// bytes each; `out` holds at least that); false when this CPU has no
/// F16C (the caller converts another way).
pub fn widen(src: &[u8], out: &mut [u8]) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        if out.len() >= src.len() / 2 * 4
            && std::arch::is_x86_feature_detected!("avx")
            && std::arch::is_x86_feature_detected!("f16c")
        {
            // SAFETY: as in `narrow`.
            unsafe { widen_f16c(src, out) };
            return true;
        }
    }
    let _ = (src, out);
    false
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx,f16c")]
unsafe fn widen_f16c(src: &[u8], out: &mut [u8]) {
    use std::arch::x86_64::*;
    let n = src.len() / 2;
    let lanes = n / 8 * 8;
    let mut i = 0;
    while i < lanes {
        let h = _mm_loadu_si128(src.as_ptr().add(i * 2).cast::<__m128i>());
        _mm256_storeu_ps(
            out.as_mut_ptr().add(i * 4).cast::<f32>(),
            _mm256_cvtph_ps(h),
        );
        i += 8;
    }
    for j in lanes..n {
        let v = f16::from_le_bytes([src[j * 2], src[j * 2 + 1]]).to_f32();
        out[j * 4..j * 4 + 4].copy_from_slice(&v.to_le_bytes());
    }
}

/// One element the scalar way: the tail past the last eight lanes.
fn narrow_one(x: f32, out: &mut [u8]) -> f32 {
    let h = f16::from_f32(x);
    out.copy_from_slice(&h.to_le_bytes());
    let d = (x - h.to_f32()).abs();
    if d.is_finite() {
        d
    } else {
        0.0
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx,f16c")]
unsafe fn narrow_f16c(data: &[u8], out: &mut [u8]) -> f32 {
    use std::arch::x86_64::*;
    let n = data.len() / 4;
    let lanes = n / 8 * 8;
    let sign = _mm256_set1_ps(-0.0);
    let inf = _mm256_set1_ps(f32::INFINITY);
    let mut worst = _mm256_setzero_ps();
    let mut i = 0;
    while i < lanes {
        // Unaligned loads and stores; x86 is little-endian like the file.
        let x = _mm256_loadu_ps(data.as_ptr().add(i * 4).cast::<f32>());
        let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x);
        _mm_storeu_si128(out.as_mut_ptr().add(i * 2).cast::<__m128i>(), h);
        let y = _mm256_cvtph_ps(h);
        // |x − y| is exact in f32; NaN or inf exactly when x or y is not
        // finite, and the ordered compare drops both.
        let d = _mm256_andnot_ps(sign, _mm256_sub_ps(x, y));
        let finite = _mm256_cmp_ps::<_CMP_LT_OQ>(d, inf);
        worst = _mm256_max_ps(worst, _mm256_and_ps(d, finite));
        i += 8;
    }
    let mut w8 = [0f32; 8];
    _mm256_storeu_ps(w8.as_mut_ptr(), worst);
    let mut w = w8.iter().fold(0f32, |a, &b| a.max(b));
    for j in lanes..n {
        let c = &data[j * 4..j * 4 + 4];
        let x = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        w = w.max(narrow_one(x, &mut out[j * 2..j * 2 + 2]));
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_scalar_conversion_on_every_kind_of_value() {
        let mut vals: Vec<f32> = (0..4099).map(|i| (i as f32 - 2000.3) * 3.1e-3).collect();
        vals.extend([
            1e6,
            -1e6,
            65504.0,
            65520.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            3e-6,
            6e-8,
            -0.0,
            f32::MIN_POSITIVE,
        ]);
        let bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut out = vec![0u8; vals.len() * 2];
        let Some(err) = narrow(&bytes, &mut out) else {
            eprintln!("no F16C on this CPU: nothing to compare");
            return;
        };
        let mut want_err = 0f32;
        for (i, &x) in vals.iter().enumerate() {
            let mut one = [0u8; 2];
            want_err = want_err.max(narrow_one(x, &mut one));
            assert_eq!(&out[i * 2..i * 2 + 2], &one, "element {i} ({x})");
        }
        assert_eq!(err, want_err);
        assert!(err > 0.0);
    }

    #[test]
    fn widening_matches_the_scalar_conversion_on_every_f16() {
        // All 65,536 bit patterns, plus a tail past the last eight lanes.
        let mut src: Vec<u8> = (0..=u16::MAX).flat_map(|b| b.to_le_bytes()).collect();
        src.extend_from_slice(&0x3c01u16.to_le_bytes());
        let mut out = vec![0u8; src.len() * 2];
        if !widen(&src, &mut out) {
            eprintln!("no F16C on this CPU: nothing to compare");
            return;
        }
        for (i, c) in src.chunks_exact(2).enumerate() {
            let want = f16::from_le_bytes([c[0], c[1]]).to_f32();
            let o = &out[i * 4..i * 4 + 4];
            let got = f32::from_le_bytes([o[0], o[1], o[2], o[3]]);
            if want.is_nan() {
                assert!(got.is_nan(), "element {i}");
            } else {
                assert_eq!(got.to_bits(), want.to_bits(), "element {i}");
            }
        }
    }
}
