//! safetensors: an 8-byte little-endian header length N, a JSON header of
//! N bytes (`dtype`, `shape`, `data_offsets` per tensor, `__metadata__`),
//! then the tensor bytes. Everything is validated before any byte is
//! interpreted: a bad header makes the file plain bytes, never an error.

use super::{Segment, TensorSpec};
use crate::layout::dtype::Dtype;

/// Largest header accepted (the format itself caps it at 100 MB).
pub const MAX_HEADER: u64 = 100 * 1000 * 1000;

/// Whether the first 9 bytes look like safetensors.
pub fn sniff(head: &[u8]) -> bool {
    if head.len() < 9 {
        return false;
    }
    let n = u64::from_le_bytes([
        head[0], head[1], head[2], head[3], head[4], head[5], head[6], head[7],
    ]);
    (2..=MAX_HEADER).contains(&n) && head[8] == b'{'
}

/// Bytes needed before the header can be parsed (`None` when fewer than 8
/// bytes are in, or the declared length overflows).
pub fn header_end(head: &[u8]) -> Option<u64> {
    if head.len() < 8 {
        return None;
    }
    let n = u64::from_le_bytes([
        head[0], head[1], head[2], head[3], head[4], head[5], head[6], head[7],
    ]);
    n.checked_add(8)
}

/// Parses the header and plans the file as segments, in file order. The
/// last segment is open-ended raw bytes (whatever follows the tensors).
pub fn plan(head: &[u8]) -> Result<Vec<Segment>, String> {
    let end = header_end(head).ok_or("short header or header length overflows")?;
    if end > 8 + MAX_HEADER {
        return Err(format!("header of {} bytes is too large", end - 8));
    }
    if (head.len() as u64) < end {
        return Err("short header".into());
    }
    let json: serde_json::Value = serde_json::from_slice(&head[8..end as usize])
        .map_err(|e| format!("header is not JSON: {e}"))?;
    let obj = json.as_object().ok_or("header is not a JSON object")?;
    let mut tensors = Vec::new();
    for (name, info) in obj {
        if name == "__metadata__" {
            continue;
        }
        let dtype_s = info
            .get("dtype")
            .and_then(|d| d.as_str())
            .ok_or_else(|| format!("tensor {name:?}: no dtype"))?;
        let dtype = Dtype::from_safetensors(dtype_s)
            .ok_or_else(|| format!("tensor {name:?}: unknown dtype {dtype_s}"))?;
        let shape: Vec<u64> = info
            .get("shape")
            .and_then(|s| s.as_array())
            .ok_or_else(|| format!("tensor {name:?}: no shape"))?
            .iter()
            .map(|d| {
                d.as_u64()
                    .ok_or_else(|| format!("tensor {name:?}: bad dimension"))
            })
            .collect::<Result<_, _>>()?;
        let offs = info
            .get("data_offsets")
            .and_then(|o| o.as_array())
            .filter(|o| o.len() == 2)
            .ok_or_else(|| format!("tensor {name:?}: bad data_offsets"))?;
        let (b, e) = (
            offs[0].as_u64().ok_or("bad offset")?,
            offs[1].as_u64().ok_or("bad offset")?,
        );
        let numel = shape
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .ok_or_else(|| format!("tensor {name:?}: element count overflows"))?;
        let bytes = numel
            .checked_mul(dtype.size())
            .ok_or_else(|| format!("tensor {name:?}: byte count overflows"))?;
        if e < b || e - b != bytes {
            return Err(format!(
                "tensor {name:?}: data_offsets [{b}, {e}] do not match {bytes} bytes"
            ));
        }
        tensors.push(TensorSpec {
            name: name.clone(),
            dtype,
            shape,
            start: end.checked_add(b).ok_or("offset overflows")?,
            len: bytes,
        });
    }
    tensors.sort_by_key(|t| (t.start, t.len));
    let mut segments = vec![Segment::Raw { start: 0, len: end }];
    let mut pos = end;
    for t in tensors {
        if t.start < pos {
            return Err(format!("tensor {:?} overlaps the previous one", t.name));
        }
        if t.start > pos {
            segments.push(Segment::Raw {
                start: pos,
                len: t.start - pos,
            });
        }
        pos = t.start + t.len;
        segments.push(Segment::Tensor(t));
    }
    Ok(segments)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(header: &str) -> Vec<u8> {
        let mut v = (header.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(header.as_bytes());
        v
    }

    #[test]
    fn plans_tensors_in_file_order() {
        let h = file(
            r#"{"b":{"dtype":"F32","shape":[2,2],"data_offsets":[8,24]},"a":{"dtype":"I64","shape":[1],"data_offsets":[0,8]},"__metadata__":{"format":"pt"}}"#,
        );
        assert!(sniff(&h));
        let segs = plan(&h).expect("plan");
        assert_eq!(segs.len(), 3);
        match &segs[1] {
            Segment::Tensor(t) => assert_eq!((t.name.as_str(), t.len), ("a", 8)),
            _ => panic!("expected tensor"),
        }
    }

    #[test]
    fn malformed_headers_are_refused() {
        for h in [
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#,
            r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[2,6]}}"#,
            r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,4]}}"#,
            r#"{"a":{"dtype":"Q9","shape":[1],"data_offsets":[0,4]}}"#,
            r#"[1,2]"#,
        ] {
            assert!(plan(&file(h)).is_err(), "{h}");
        }
        let mut short = file(r#"{"a":1}"#);
        short.truncate(10);
        assert!(plan(&short).is_err());
    }

    #[test]
    fn header_length_near_u64_max_is_refused() {
        // Found by fuzzing: 8 + the declared length overflowed.
        let mut h = vec![0xff; 8];
        h.extend_from_slice(br#"{"a":{"dtype":"U8","shape":[3],"data_offsets":[0,3]}}"#);
        assert_eq!(header_end(&h), None);
        assert!(!sniff(&h));
        assert!(plan(&h).is_err());
        let mut big = (MAX_HEADER + 1).to_le_bytes().to_vec();
        big.extend_from_slice(b"{}");
        assert!(plan(&big).is_err());
    }
}
