//! Tensor element types: safetensors and PyTorch names, their Zarr v3 data
//! types, and the narrowing casts of the stored-dtype policy.

use half::{bf16, f16};
use zarrs::array::{data_type, DataType};

use crate::config::StoredDtype;

/// An element type as a checkpoint format names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Dtype {
    Bool,
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F16,
    BF16,
    F32,
    F64,
    /// A type the backing store has no array type for (F8, complex, …):
    /// such tensors are kept as raw bytes.
    Other(u8),
}

impl Dtype {
    /// From a safetensors `dtype` string.
    pub fn from_safetensors(s: &str) -> Option<Dtype> {
        Some(match s {
            "BOOL" => Dtype::Bool,
            "U8" => Dtype::U8,
            "I8" => Dtype::I8,
            "U16" => Dtype::U16,
            "I16" => Dtype::I16,
            "U32" => Dtype::U32,
            "I32" => Dtype::I32,
            "U64" => Dtype::U64,
            "I64" => Dtype::I64,
            "F16" => Dtype::F16,
            "BF16" => Dtype::BF16,
            "F32" => Dtype::F32,
            "F64" => Dtype::F64,
            "F8_E4M3" | "F8_E5M2" | "F8_E8M0" | "E8M0" => Dtype::Other(1),
            "F4" | "F6_E2M3" | "F6_E3M2" => return None,
            "C64" => Dtype::Other(8),
            _ => return None,
        })
    }

    /// From a PyTorch storage class name (`FloatStorage`, …).
    pub fn from_torch_storage(s: &str) -> Option<Dtype> {
        Some(match s {
            "BoolStorage" => Dtype::Bool,
            "ByteStorage" => Dtype::U8,
            "CharStorage" => Dtype::I8,
            "ShortStorage" => Dtype::I16,
            "IntStorage" => Dtype::I32,
            "LongStorage" => Dtype::I64,
            "HalfStorage" => Dtype::F16,
            "BFloat16Storage" => Dtype::BF16,
            "FloatStorage" => Dtype::F32,
            "DoubleStorage" => Dtype::F64,
            "ComplexFloatStorage" => Dtype::Other(8),
            "ComplexDoubleStorage" => Dtype::Other(16),
            "UInt16Storage" => Dtype::U16,
            "UInt32Storage" => Dtype::U32,
            "UInt64Storage" => Dtype::U64,
            "Float8_e4m3fnStorage" | "Float8_e5m2Storage" => Dtype::Other(1),
            _ => return None,
        })
    }

    /// Bytes per element.
    pub fn size(self) -> u64 {
        match self {
            Dtype::Bool | Dtype::U8 | Dtype::I8 => 1,
            Dtype::U16 | Dtype::I16 | Dtype::F16 | Dtype::BF16 => 2,
            Dtype::U32 | Dtype::I32 | Dtype::F32 => 4,
            Dtype::U64 | Dtype::I64 | Dtype::F64 => 8,
            Dtype::Other(n) => n as u64,
        }
    }

    /// The name written in array attributes: the variant name (`F32`, `BF16`, …), or `other<N>` for
    /// a type known only by its width.
    pub fn name(self) -> String {
        match self {
            Dtype::Other(n) => format!("other{n}"),
            d => format!("{d:?}"),
        }
    }

    /// The Zarr v3 data type, if the store has one.
    pub fn zarr(self) -> Option<DataType> {
        Some(match self {
            Dtype::Bool => data_type::bool(),
            Dtype::U8 => data_type::uint8(),
            Dtype::I8 => data_type::int8(),
            Dtype::U16 => data_type::uint16(),
            Dtype::I16 => data_type::int16(),
            Dtype::U32 => data_type::uint32(),
            Dtype::I32 => data_type::int32(),
            Dtype::U64 => data_type::uint64(),
            Dtype::I64 => data_type::int64(),
            Dtype::F16 => data_type::float16(),
            Dtype::BF16 => data_type::bfloat16(),
            Dtype::F32 => data_type::float32(),
            Dtype::F64 => data_type::float64(),
            Dtype::Other(_) => return None,
        })
    }

    /// The dtype a tensor of this type is stored as under `policy`.
    pub fn stored(self, policy: StoredDtype) -> Dtype {
        match (self, policy) {
            (Dtype::F32 | Dtype::F64, StoredDtype::Float16) => Dtype::F16,
            (Dtype::F32 | Dtype::F64, StoredDtype::Bfloat16) => Dtype::BF16,
            (d, _) => d,
        }
    }
}

/// Narrows little-endian `from` elements to `to` (F32/F64 → F16/BF16).
pub fn narrow(data: &[u8], from: Dtype, to: Dtype) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() / from.size() as usize * 2);
    let push = |out: &mut Vec<u8>, v: f32| match to {
        Dtype::BF16 => out.extend_from_slice(&bf16::from_f32(v).to_le_bytes()),
        _ => out.extend_from_slice(&f16::from_f32(v).to_le_bytes()),
    };
    match from {
        Dtype::F64 => {
            for c in data.chunks_exact(8) {
                let v = f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
                match to {
                    Dtype::BF16 => out.extend_from_slice(&bf16::from_f64(v).to_le_bytes()),
                    _ => out.extend_from_slice(&f16::from_f64(v).to_le_bytes()),
                }
            }
        }
        _ => {
            for c in data.chunks_exact(4) {
                push(&mut out, f32::from_le_bytes([c[0], c[1], c[2], c[3]]));
            }
        }
    }
    out
}

/// Narrows little-endian `from` elements (F32/F64) to `to` (F16/BF16)
/// into `out`, in one pass: returns the largest |x − rounded| over finite
/// values, and feeds the bytes the file will read back (the rounded
/// values in `from`'s type) to `widened` when given (a torch zip record's
/// CRC). Without that CRC, F32 to F16 uses the CPU's F16C instructions
/// where it has them (`f16_simd`) and F32 to BF16 a vectorized loop;
/// otherwise `half`'s slice conversions.
pub fn narrow_into(
    data: &[u8],
    from: Dtype,
    to: Dtype,
    out: &mut Vec<u8>,
    mut widened: Option<&mut crc32fast::Hasher>,
) -> f64 {
    use half::slice::HalfFloatSliceExt;
    const BLOCK: usize = 1024;
    out.clear();
    let mut worst = 0f64;
    if from == Dtype::F64 {
        for c in data.chunks_exact(8) {
            let x = f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
            let (bytes, y) = match to {
                Dtype::BF16 => {
                    let h = bf16::from_f64(x);
                    (h.to_le_bytes(), h.to_f64())
                }
                _ => {
                    let h = f16::from_f64(x);
                    (h.to_le_bytes(), h.to_f64())
                }
            };
            out.extend_from_slice(&bytes);
            if x.is_finite() && y.is_finite() {
                worst = worst.max((x - y).abs());
            }
            if let Some(h) = widened.as_deref_mut() {
                h.update(&y.to_le_bytes());
            }
        }
        return worst;
    }
    if widened.is_none() {
        out.resize(data.len() / 4 * 2, 0);
        if to == Dtype::BF16 {
            return f64::from(narrow_bf16(data, out));
        }
        if to == Dtype::F16 {
            if let Some(w) = super::f16_simd::narrow(data, out) {
                return f64::from(w);
            }
        }
    }
    let mut xs = [0f32; BLOCK];
    let mut back = [0f32; BLOCK];
    let mut hs = [f16::ZERO; BLOCK];
    let mut bs = [bf16::ZERO; BLOCK];
    let mut wide = [0u8; BLOCK * 4];
    // Written in place, two bytes per element: no per-element push.
    out.resize(data.len() / 4 * 2, 0);
    for (block, dst) in data.chunks(BLOCK * 4).zip(out.chunks_mut(BLOCK * 2)) {
        let n = block.len() / 4;
        for (x, c) in xs.iter_mut().zip(block.chunks_exact(4)) {
            *x = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
        if to == Dtype::BF16 {
            bs[..n].convert_from_f32_slice(&xs[..n]);
            bs[..n].convert_to_f32_slice(&mut back[..n]);
            for (o, h) in dst.chunks_exact_mut(2).zip(&bs[..n]) {
                o.copy_from_slice(&h.to_le_bytes());
            }
        } else {
            hs[..n].convert_from_f32_slice(&xs[..n]);
            hs[..n].convert_to_f32_slice(&mut back[..n]);
            for (o, h) in dst.chunks_exact_mut(2).zip(&hs[..n]) {
                o.copy_from_slice(&h.to_le_bytes());
            }
        }
        // |x − y| is exact in f32 (y is x rounded to fewer bits), and not
        // finite exactly when x or y is not (NaN, or overflow to ±inf).
        let mut w = 0f32;
        for (x, y) in xs[..n].iter().zip(&back[..n]) {
            let d = (x - y).abs();
            w = if d.is_finite() { w.max(d) } else { w };
        }
        worst = worst.max(f64::from(w));
        if let Some(h) = widened.as_deref_mut() {
            for (w, y) in wide.chunks_exact_mut(4).zip(&back[..n]) {
                w.copy_from_slice(&y.to_le_bytes());
            }
            h.update(&wide[..n * 4]);
        }
    }
    worst
}

/// F32 → BF16 without branches, so the compiler vectorizes it (`half`
/// converts one element at a time, about 0.6 GB/s): round to nearest even
/// on the bits, NaN kept quiet, as `half::bf16::from_f32`. Returns the
/// largest |x − rounded| over elements whose both values are finite.
fn narrow_bf16(data: &[u8], out: &mut [u8]) -> f32 {
    // Non-negative finite floats order like their bits: the maximum is an
    // integer reduction, which vectorizes where a float one does not.
    let mut worst = 0u32;
    for (c, o) in data.chunks_exact(4).zip(out.chunks_exact_mut(2)) {
        let b = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        let nan = (b & 0x7FFF_FFFF) > 0x7F80_0000;
        let rounded = (b.wrapping_add(0x7FFF + ((b >> 16) & 1))) >> 16;
        let h = if nan { (b >> 16) | 0x0040 } else { rounded };
        o.copy_from_slice(&(h as u16).to_le_bytes());
        let d = (f32::from_bits(b) - f32::from_bits(h << 16)).abs();
        let d = if d < f32::INFINITY { d.to_bits() } else { 0 };
        worst = worst.max(d);
    }
    f32::from_bits(worst)
}

/// Widens stored F16/BF16 elements back to the file's F32/F64.
pub fn widen(data: &[u8], stored: Dtype, to: Dtype) -> Vec<u8> {
    let mut out = vec![0u8; data.len() / 2 * to.size() as usize];
    widen_into(data, stored, to, &mut out);
    out
}

/// Widens the stored F16/BF16 elements of `src` into `out` (the file's
/// F32/F64, `to.size()` bytes each): F16 → F32 with the CPU's F16C
/// instructions where it has them, BF16 → F32 as a shift.
pub fn widen_into(src: &[u8], stored: Dtype, to: Dtype, out: &mut [u8]) {
    if stored == Dtype::F16 && to == Dtype::F32 && super::f16_simd::widen(src, out) {
        return;
    }
    if stored == Dtype::BF16 && to == Dtype::F32 {
        for (s, o) in src.chunks_exact(2).zip(out.chunks_exact_mut(4)) {
            let bits = u32::from(u16::from_le_bytes([s[0], s[1]])) << 16;
            o.copy_from_slice(&bits.to_le_bytes());
        }
        return;
    }
    for (c, o) in src
        .chunks_exact(2)
        .zip(out.chunks_exact_mut(to.size() as usize))
    {
        let b = [c[0], c[1]];
        let v = match stored {
            Dtype::BF16 => bf16::from_le_bytes(b).to_f64(),
            _ => f16::from_le_bytes(b).to_f64(),
        };
        match to {
            Dtype::F64 => o.copy_from_slice(&v.to_le_bytes()),
            _ => o.copy_from_slice(&(v as f32).to_le_bytes()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_pass_narrowing_matches_element_by_element() {
        let vals: Vec<f32> = (0..3000)
            .map(|i| ((i as f32) * 0.37 - 500.0) * 1e-3)
            .collect();
        let mut bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        bytes.extend_from_slice(&f32::NAN.to_le_bytes());
        for to in [Dtype::F16, Dtype::BF16] {
            let mut out = Vec::new();
            let mut h = crc32fast::Hasher::new();
            let err = narrow_into(&bytes, Dtype::F32, to, &mut out, Some(&mut h));
            assert_eq!(out, narrow(&bytes, Dtype::F32, to));
            let back = widen(&out, to, Dtype::F32);
            assert_eq!(h.finalize(), crc32fast::hash(&back));
            assert!(err > 0.0 && err < 1e-2, "{err}");
        }
    }

    #[test]
    fn the_largest_error_skips_what_does_not_round_to_a_finite_value() {
        // Overflow to inf in f16 (1e6), infinities, NaN, subnormals, and a
        // length that is no multiple of the block, with two stray bytes.
        let mut vals: Vec<f32> = (0..2500).map(|i| (i as f32 - 1200.5) * 1.7e-3).collect();
        vals.extend([
            1e6,
            -1e6,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            f32::from_bits(0xFFC0_1234),
            f32::from_bits(0x7F80_0001),
            f32::MAX,
            -f32::MAX,
            3e-6,
            6e-8,
        ]);
        let mut bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        bytes.extend_from_slice(&[7, 7]);
        for to in [Dtype::F16, Dtype::BF16] {
            let mut out = Vec::new();
            let err = narrow_into(&bytes, Dtype::F32, to, &mut out, None);
            assert_eq!(out.len(), vals.len() * 2);
            assert_eq!(out, narrow(&bytes, Dtype::F32, to), "{to:?}");
            let want = vals
                .iter()
                .map(|&x| {
                    let y = if to == Dtype::BF16 {
                        bf16::from_f32(x).to_f64()
                    } else {
                        f16::from_f32(x).to_f64()
                    };
                    let x = f64::from(x);
                    if x.is_finite() && y.is_finite() {
                        (x - y).abs()
                    } else {
                        0.0
                    }
                })
                .fold(0.0, f64::max);
            assert_eq!(err, want, "{to:?}");
        }
    }

    #[test]
    fn narrow_then_widen_rounds_through_the_stored_type() {
        let vals = [0.1f32, -3.5, 65504.0, 1e-8, 0.0];
        let bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        let back = widen(
            &narrow(&bytes, Dtype::F32, Dtype::F16),
            Dtype::F16,
            Dtype::F32,
        );
        for (i, v) in vals.iter().enumerate() {
            let got = f32::from_le_bytes([
                back[i * 4],
                back[i * 4 + 1],
                back[i * 4 + 2],
                back[i * 4 + 3],
            ]);
            assert_eq!(got, f16::from_f32(*v).to_f32());
        }
    }
}
