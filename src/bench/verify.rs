//! Verification of a loaded model against the source tensors.
//!
//! A lossless strategy must give every tensor back bit for bit. A strategy
//! that stores floats narrowed (`[layout] dtype = "float16"` or
//! `"bfloat16"`) must give back the originals rounded to the stored dtype:
//! an error of at most half a unit in the last place, i.e. 2^-11 of the value
//! for float16 and 2^-8 for bfloat16, with float16's subnormal spacing as the
//! floor near zero and infinity (or the largest finite value) accepted past
//! its range.

use std::collections::HashMap;

use anyhow::{bail, Context, Result};
use candle_core::{CpuStorage, DType, Device, Layout, Storage, Tensor};
use half::{bf16, f16};
use serde::Serialize;

/// How a strategy stores floating-point tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Narrowing {
    /// Stored as written: the load must be bit-exact.
    None,
    Float16,
    Bfloat16,
}

impl Narrowing {
    /// Whether loads come back with less precision than the source.
    pub fn is_lossy(self) -> bool {
        self != Narrowing::None
    }
}

impl From<crate::config::StoredDtype> for Narrowing {
    /// How a layout's stored dtype narrows float tensors.
    fn from(d: crate::config::StoredDtype) -> Narrowing {
        use crate::config::StoredDtype;
        match d {
            StoredDtype::Keep => Narrowing::None,
            StoredDtype::Float16 => Narrowing::Float16,
            StoredDtype::Bfloat16 => Narrowing::Bfloat16,
        }
    }
}

/// The error a narrowed value may carry.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Tolerance {
    /// Allowed |error| / |value|.
    pub relative: f64,
    /// Allowed |error| near zero (half the smallest subnormal step).
    pub absolute_floor: f64,
    /// The stored dtype's largest finite value: beyond it, infinity is fine.
    pub max_finite: f64,
}

/// Tolerance for a float tensor of dtype `source` under `narrowing`, or None
/// when the value must come back exactly.
pub fn tolerance(narrowing: Narrowing, source: DType) -> Option<Tolerance> {
    let f16_t = Tolerance {
        relative: (2f64).powi(-11),
        absolute_floor: (2f64).powi(-25),
        max_finite: f16::MAX.to_f64(),
    };
    let bf16_t = Tolerance {
        relative: (2f64).powi(-8),
        absolute_floor: (2f64).powi(-134),
        max_finite: bf16::MAX.to_f64(),
    };
    let (stored, stored_dtype) = match narrowing {
        Narrowing::None => return None,
        Narrowing::Float16 => (f16_t, DType::F16),
        Narrowing::Bfloat16 => (bf16_t, DType::BF16),
    };
    match source {
        s if s == stored_dtype => None,
        DType::F32 | DType::F64 => Some(stored),
        // The value is rounded twice: to the stored dtype, then back to its
        // own (neither half-precision format holds the other).
        DType::F16 => Some(Tolerance {
            relative: stored.relative + f16_t.relative,
            absolute_floor: stored.absolute_floor.max(f16_t.absolute_floor),
            max_finite: stored.max_finite.min(f16_t.max_finite),
        }),
        DType::BF16 => Some(Tolerance {
            relative: stored.relative + bf16_t.relative,
            absolute_floor: stored.absolute_floor.max(bf16_t.absolute_floor),
            max_finite: stored.max_finite.min(bf16_t.max_finite),
        }),
        _ => None,
    }
}

/// Whether `loaded` is `source` rounded within `t`.
pub fn within(source: f64, loaded: f64, t: &Tolerance) -> bool {
    if source.is_nan() {
        return loaded.is_nan();
    }
    if source.abs() > t.max_finite {
        // Past the stored range: infinity, or a saturated largest value.
        return loaded.signum() == source.signum()
            && (loaded.is_infinite() || loaded.abs() >= t.max_finite * (1.0 - t.relative));
    }
    (source - loaded).abs() <= (t.relative * source.abs()).max(t.absolute_floor)
}

/// The outcome of one verification.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Verification {
    /// Every tensor matched: bit for bit, or within the narrowing's tolerance.
    pub passed: bool,
    /// Every tensor came back bit for bit.
    pub exact: bool,
    /// Tensors compared.
    pub tensors: usize,
    /// Elements compared.
    pub elements: u64,
    /// Largest |loaded - source| over finite values.
    pub max_abs_error: f64,
    /// The tensor holding it.
    pub max_abs_error_tensor: Option<String>,
    /// Why it failed.
    pub failure: Option<String>,
}

/// Compares `loaded` (any device) with the CPU `source`.
pub fn verify(
    source: &[(String, Tensor)],
    loaded: Vec<(String, Tensor)>,
    narrowing: Narrowing,
) -> Result<Verification> {
    let mut v = Verification {
        passed: true,
        exact: true,
        ..Default::default()
    };
    let mut loaded: HashMap<String, Tensor> = loaded.into_iter().collect();
    for (name, src) in source {
        let Some(got) = loaded.remove(name) else {
            return Ok(fail(
                v,
                format!("tensor {name} is missing from the loaded model"),
            ));
        };
        if got.dims() != src.dims() || got.dtype() != src.dtype() {
            return Ok(fail(
                v,
                format!(
                    "tensor {name}: loaded {:?} {:?}, saved {:?} {:?}",
                    got.dtype(),
                    got.dims(),
                    src.dtype(),
                    src.dims()
                ),
            ));
        }
        v.tensors += 1;
        v.elements += src.elem_count() as u64;
        let src = cpu_contiguous(src).with_context(|| format!("read source {name}"))?;
        let got = cpu_contiguous(&got).with_context(|| format!("read loaded {name}"))?;
        let (sa, la) = src.storage_and_layout();
        let (sb, lb) = got.storage_and_layout();
        let a = Elements::of(&sa, la).with_context(|| format!("source {name}"))?;
        let b = Elements::of(&sb, lb).with_context(|| format!("loaded {name}"))?;
        let Some(first) = a.first_difference(&b) else {
            continue;
        };
        v.exact = false;
        let Some(tol) = tolerance(narrowing, src.dtype()) else {
            return Ok(fail(
                v,
                format!(
                    "tensor {name} differs at element {first}: saved {:e}, loaded {:e} (this strategy is lossless)",
                    a.get(first),
                    b.get(first)
                ),
            ));
        };
        let mut worst = 0f64;
        for i in first..a.len() {
            let (x, y) = (a.get(i), b.get(i));
            if !within(x, y, &tol) {
                return Ok(fail(
                    v,
                    format!(
                        "tensor {name} element {i}: saved {x:e}, loaded {y:e}: error {:e} exceeds the {narrowing:?} rounding bound {:e}",
                        (x - y).abs(),
                        (tol.relative * x.abs()).max(tol.absolute_floor)
                    ),
                ));
            }
            if x.is_finite() && y.is_finite() {
                worst = worst.max((x - y).abs());
            }
        }
        if worst > v.max_abs_error {
            v.max_abs_error = worst;
            v.max_abs_error_tensor = Some(name.clone());
        }
    }
    if let Some(extra) = loaded.keys().next() {
        return Ok(fail(
            v,
            format!("the loaded model has a tensor the source lacks: {extra}"),
        ));
    }
    Ok(v)
}

fn fail(mut v: Verification, why: String) -> Verification {
    v.passed = false;
    v.exact = false;
    v.failure = Some(why);
    v
}

/// The tensor on the CPU with its elements in order, so its storage can be
/// compared in place (no copy for a CPU model).
fn cpu_contiguous(t: &Tensor) -> Result<Tensor> {
    let t = if t.device().is_cpu() {
        t.clone()
    } else {
        t.to_device(&Device::Cpu)?
    };
    Ok(if t.is_contiguous() {
        t
    } else {
        t.contiguous()?
    })
}

/// A contiguous tensor's elements, borrowed from its CPU storage.
enum Elements<'a> {
    U8(&'a [u8]),
    U32(&'a [u32]),
    I16(&'a [i16]),
    I32(&'a [i32]),
    I64(&'a [i64]),
    F16(&'a [f16]),
    Bf16(&'a [bf16]),
    F32(&'a [f32]),
    F64(&'a [f64]),
}

impl<'a> Elements<'a> {
    fn of(storage: &'a Storage, layout: &Layout) -> Result<Elements<'a>> {
        let Storage::Cpu(cpu) = storage else {
            bail!("tensor is not on the CPU");
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            bail!("tensor is not contiguous");
        };
        let r = start..end;
        Ok(match cpu {
            CpuStorage::U8(v) => Elements::U8(&v[r]),
            CpuStorage::U32(v) => Elements::U32(&v[r]),
            CpuStorage::I16(v) => Elements::I16(&v[r]),
            CpuStorage::I32(v) => Elements::I32(&v[r]),
            CpuStorage::I64(v) => Elements::I64(&v[r]),
            CpuStorage::F16(v) => Elements::F16(&v[r]),
            CpuStorage::BF16(v) => Elements::Bf16(&v[r]),
            CpuStorage::F32(v) => Elements::F32(&v[r]),
            CpuStorage::F64(v) => Elements::F64(&v[r]),
            _ => bail!("verification of 8-bit and smaller float tensors is not supported"),
        })
    }

    fn len(&self) -> usize {
        match self {
            Elements::U8(a) => a.len(),
            Elements::U32(a) => a.len(),
            Elements::I16(a) => a.len(),
            Elements::I32(a) => a.len(),
            Elements::I64(a) => a.len(),
            Elements::F16(a) => a.len(),
            Elements::Bf16(a) => a.len(),
            Elements::F32(a) => a.len(),
            Elements::F64(a) => a.len(),
        }
    }

    /// The first element whose bits differ (NaN payloads and signed zeros
    /// included); the length when only the lengths differ.
    fn first_difference(&self, o: &Elements) -> Option<usize> {
        fn first<T: PartialEq>(a: &[T], b: &[T]) -> Option<usize> {
            if a == b {
                return None;
            }
            a.iter()
                .zip(b)
                .position(|(x, y)| x != y)
                .or(Some(a.len().min(b.len())))
        }
        fn first_bits<T, B: PartialEq>(a: &[T], b: &[T], bits: impl Fn(&T) -> B) -> Option<usize> {
            if a.len() != b.len() {
                return Some(a.len().min(b.len()));
            }
            a.iter().zip(b).position(|(x, y)| bits(x) != bits(y))
        }
        match (self, o) {
            (Elements::U8(a), Elements::U8(b)) => first(a, b),
            (Elements::U32(a), Elements::U32(b)) => first(a, b),
            (Elements::I16(a), Elements::I16(b)) => first(a, b),
            (Elements::I32(a), Elements::I32(b)) => first(a, b),
            (Elements::I64(a), Elements::I64(b)) => first(a, b),
            (Elements::F16(a), Elements::F16(b)) => first_bits(a, b, |x| x.to_bits()),
            (Elements::Bf16(a), Elements::Bf16(b)) => first_bits(a, b, |x| x.to_bits()),
            (Elements::F32(a), Elements::F32(b)) => first_bits(a, b, |x| x.to_bits()),
            (Elements::F64(a), Elements::F64(b)) => first_bits(a, b, |x| x.to_bits()),
            _ => Some(0),
        }
    }

    /// Element `i` as f64 (NaN past the end).
    fn get(&self, i: usize) -> f64 {
        let v = match self {
            Elements::U8(a) => a.get(i).map(|x| *x as f64),
            Elements::U32(a) => a.get(i).map(|x| *x as f64),
            Elements::I16(a) => a.get(i).map(|x| *x as f64),
            Elements::I32(a) => a.get(i).map(|x| *x as f64),
            Elements::I64(a) => a.get(i).map(|x| *x as f64),
            Elements::F16(a) => a.get(i).map(|x| x.to_f64()),
            Elements::Bf16(a) => a.get(i).map(|x| x.to_f64()),
            Elements::F32(a) => a.get(i).map(|x| *x as f64),
            Elements::F64(a) => a.get(i).copied(),
        };
        v.unwrap_or(f64::NAN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t32(v: &[f32]) -> Tensor {
        Tensor::from_vec(v.to_vec(), v.len(), &Device::Cpu).expect("tensor")
    }

    #[test]
    fn identical_tensors_pass_exactly() {
        let src = vec![("a".to_string(), t32(&[0.5, -1.25, 3.0]))];
        let v = verify(&src, src.clone(), Narrowing::None).expect("verify");
        assert!(v.passed && v.exact, "{v:?}");
    }

    #[test]
    fn a_one_bit_change_fails_a_lossless_strategy() {
        let src = vec![("a".to_string(), t32(&[0.5, -1.25, 3.0]))];
        let got = vec![(
            "a".to_string(),
            t32(&[0.5, -1.25, f32::from_bits(3f32.to_bits() + 1)]),
        )];
        let v = verify(&src, got, Narrowing::None).expect("verify");
        assert!(!v.passed);
        assert!(v.failure.unwrap_or_default().contains("element 2"));
    }

    #[test]
    fn float16_rounding_passes_and_a_larger_error_fails() {
        let xs = [0.0123f32, -0.02, 1e-7, 3.0e-5, 70000.0, 1.0];
        let rounded: Vec<f32> = xs.iter().map(|x| f16::from_f32(*x).to_f32()).collect();
        let src = vec![("w".to_string(), t32(&xs))];
        let v = verify(
            &src,
            vec![("w".to_string(), t32(&rounded))],
            Narrowing::Float16,
        )
        .expect("verify");
        assert!(v.passed && !v.exact, "{v:?}");
        assert!(v.max_abs_error > 0.0);
        // Two float16 steps off is more than rounding.
        let mut off = rounded.clone();
        off[0] = f16::from_bits(f16::from_f32(xs[0]).to_bits() + 2).to_f32();
        let v =
            verify(&src, vec![("w".to_string(), t32(&off))], Narrowing::Float16).expect("verify");
        assert!(!v.passed, "{v:?}");
    }

    #[test]
    fn bfloat16_rounding_passes_but_not_under_a_float16_bound() {
        let xs = [0.0123f32, -0.02, 1e-30, 123.456];
        let rounded: Vec<f32> = xs.iter().map(|x| bf16::from_f32(*x).to_f32()).collect();
        let src = vec![("w".to_string(), t32(&xs))];
        let got = vec![("w".to_string(), t32(&rounded))];
        assert!(
            verify(&src, got.clone(), Narrowing::Bfloat16)
                .expect("v")
                .passed
        );
        assert!(!verify(&src, got, Narrowing::Float16).expect("v").passed);
    }

    #[test]
    fn missing_and_extra_tensors_fail() {
        let src = vec![("a".to_string(), t32(&[1.0]))];
        assert!(!verify(&src, vec![], Narrowing::None).expect("v").passed);
        let got = vec![
            ("a".to_string(), t32(&[1.0])),
            ("b".to_string(), t32(&[1.0])),
        ];
        assert!(!verify(&src, got, Narrowing::None).expect("v").passed);
    }
}
