//! A pickle reader that executes nothing. It walks the opcodes of a
//! `torch.save` `data.pkl` to find where it ends (STOP) and which storages
//! it references: each `BINPERSID` of a `('storage', StorageType, key,
//! location, numel)` tuple. `GLOBAL` only records a name, `REDUCE` only
//! yields an opaque value: a pickle that names `os.system` is just data.
//!
//! It also notes the tensor views of each storage (the arguments of a
//! `torch._utils._rebuild_tensor_v2` reduce: storage, offset, size,
//! stride), so that a storage one contiguous tensor covers whole is stored
//! with that tensor's shape.

use std::collections::HashMap;

use crate::layout::dtype::Dtype;

#[derive(Debug, Clone)]
enum V {
    Str(String),
    Int(i64),
    Global(String),
    Tuple(Vec<V>),
    /// A storage reference (its key).
    Storage(String),
    Mark,
    Other,
}

/// One tensor over a storage.
#[derive(Debug, Clone, PartialEq, Eq)]
struct View {
    offset: i64,
    size: Vec<i64>,
    stride: Vec<i64>,
}

/// A storage a pickle refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageRef {
    /// The storage's key: its bytes are the record `<archive>/data/<key>`.
    pub key: String,
    /// Element type of the storage.
    pub dtype: Dtype,
    /// Elements in the storage.
    pub numel: u64,
    /// The shape of the one contiguous tensor that covers the storage
    /// whole, when there is exactly one such view (else it stays 1-D:
    /// shared or strided storages).
    pub shape: Option<Vec<u64>>,
}

/// The result of scanning a complete pickle.
#[derive(Debug)]
pub struct Scanned {
    /// Bytes up to and including STOP.
    pub len: usize,
    /// Every storage the pickle references, by key.
    pub storages: HashMap<String, StorageRef>,
}

/// Why a scan stopped early.
#[derive(Debug, PartialEq, Eq)]
pub enum ScanError {
    /// The pickle continues past the bytes given.
    Incomplete,
    Invalid(String),
}

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ScanError> {
        let end = self.pos.checked_add(n).ok_or(ScanError::Incomplete)?;
        if end > self.data.len() {
            return Err(ScanError::Incomplete);
        }
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, ScanError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, ScanError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, ScanError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, ScanError> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes([
            b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
        ]))
    }
    fn line(&mut self) -> Result<&'a [u8], ScanError> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or(ScanError::Incomplete)?;
        let s = &rest[..n];
        self.pos += n + 1;
        Ok(s)
    }
    /// A length-prefixed blob, bounded so a hostile length fails cleanly.
    fn blob(&mut self, n: u64) -> Result<&'a [u8], ScanError> {
        if n > (1 << 32) {
            return Err(ScanError::Invalid(format!("blob of {n} bytes")));
        }
        self.take(n as usize)
    }
}

fn invalid<T>(why: &str) -> Result<T, ScanError> {
    Err(ScanError::Invalid(why.to_string()))
}

/// Scans a pickle from the start of `data`.
pub fn scan(data: &[u8]) -> Result<Scanned, ScanError> {
    let mut c = Cursor { data, pos: 0 };
    let mut stack: Vec<V> = Vec::new();
    let mut memo: HashMap<u64, V> = HashMap::new();
    let mut storages: HashMap<String, StorageRef> = HashMap::new();
    let mut views: HashMap<String, Vec<View>> = HashMap::new();
    let pop_mark = |stack: &mut Vec<V>| -> Result<Vec<V>, ScanError> {
        let m = stack
            .iter()
            .rposition(|v| matches!(v, V::Mark))
            .ok_or(ScanError::Invalid("no mark".into()))?;
        let items = stack.split_off(m + 1);
        stack.pop();
        Ok(items)
    };
    loop {
        if stack.len() > 1 << 20 || memo.len() > 1 << 22 {
            return invalid("pickle too deep");
        }
        let op = c.u8()?;
        match op {
            0x80 => {
                c.u8()?; // PROTO
            }
            0x95 => {
                c.u64()?; // FRAME
            }
            b'.' => {
                for (key, st) in storages.iter_mut() {
                    st.shape = views.get(key).and_then(|v| whole_shape(v, st.numel));
                }
                return Ok(Scanned {
                    len: c.pos,
                    storages,
                });
            }
            b'c' => {
                let module = String::from_utf8_lossy(c.line()?).into_owned();
                let name = String::from_utf8_lossy(c.line()?).into_owned();
                stack.push(V::Global(format!("{module}.{name}")));
            }
            0x93 => {
                // STACK_GLOBAL
                let name = stack.pop();
                let module = stack.pop();
                match (module, name) {
                    (Some(V::Str(m)), Some(V::Str(n))) => stack.push(V::Global(format!("{m}.{n}"))),
                    _ => stack.push(V::Other),
                }
            }
            b'(' => stack.push(V::Mark),
            b')' => stack.push(V::Tuple(Vec::new())),
            b'}' | b']' => stack.push(V::Other),
            b'N' | 0x88 | 0x89 => stack.push(V::Other),
            b'J' => stack.push(V::Int(c.u32()? as i32 as i64)),
            b'K' => stack.push(V::Int(c.u8()? as i64)),
            b'M' => stack.push(V::Int(c.u16()? as i64)),
            0x8a => {
                // LONG1
                let n = c.u8()? as usize;
                let b = c.take(n)?;
                let mut v: i64 = 0;
                for (i, byte) in b.iter().enumerate().take(8) {
                    v |= (*byte as i64) << (8 * i);
                }
                if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                    v -= 1i64 << (8 * n);
                }
                stack.push(V::Int(v));
            }
            0x8b => {
                let n = c.u32()? as u64;
                c.blob(n)?;
                stack.push(V::Other);
            }
            b'G' => {
                c.take(8)?;
                stack.push(V::Other);
            }
            b'X' => {
                let n = c.u32()? as u64;
                stack.push(V::Str(String::from_utf8_lossy(c.blob(n)?).into_owned()));
            }
            0x8c => {
                let n = c.u8()? as u64;
                stack.push(V::Str(String::from_utf8_lossy(c.blob(n)?).into_owned()));
            }
            0x8d => {
                let n = c.u64()?;
                stack.push(V::Str(String::from_utf8_lossy(c.blob(n)?).into_owned()));
            }
            b'T' => {
                let n = c.u32()? as u64;
                stack.push(V::Str(String::from_utf8_lossy(c.blob(n)?).into_owned()));
            }
            b'U' => {
                let n = c.u8()? as u64;
                stack.push(V::Str(String::from_utf8_lossy(c.blob(n)?).into_owned()));
            }
            b'C' => {
                let n = c.u8()? as u64;
                c.blob(n)?;
                stack.push(V::Other);
            }
            b'B' => {
                let n = c.u32()? as u64;
                c.blob(n)?;
                stack.push(V::Other);
            }
            0x8e => {
                let n = c.u64()?;
                c.blob(n)?;
                stack.push(V::Other);
            }
            b'q' => {
                let i = c.u8()? as u64;
                if let Some(v) = stack.last() {
                    memo.insert(i, v.clone());
                }
            }
            b'r' => {
                let i = c.u32()? as u64;
                if let Some(v) = stack.last() {
                    memo.insert(i, v.clone());
                }
            }
            0x94 => {
                let i = memo.len() as u64;
                if let Some(v) = stack.last() {
                    memo.insert(i, v.clone());
                }
            }
            b'h' => {
                let i = c.u8()? as u64;
                stack.push(memo.get(&i).cloned().unwrap_or(V::Other));
            }
            b'j' => {
                let i = c.u32()? as u64;
                stack.push(memo.get(&i).cloned().unwrap_or(V::Other));
            }
            b't' => {
                let items = pop_mark(&mut stack)?;
                stack.push(V::Tuple(items));
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                if stack.len() < n {
                    return invalid("tuple underflow");
                }
                let items = stack.split_off(stack.len() - n);
                stack.push(V::Tuple(items));
            }
            b's' => {
                if stack.len() < 2 {
                    return invalid("setitem underflow");
                }
                stack.truncate(stack.len() - 2);
            }
            b'u' | b'e' => {
                pop_mark(&mut stack)?;
            }
            b'a' => {
                stack.pop();
            }
            b'R' | 0x81 => {
                // REDUCE / NEWOBJ: never called, the result is opaque;
                // a tensor rebuild's arguments are noted.
                if stack.len() < 2 {
                    return invalid("reduce underflow");
                }
                let args = stack.pop();
                let callable = stack.pop();
                if let (Some(V::Global(g)), Some(V::Tuple(a))) = (&callable, &args) {
                    if g == "torch._utils._rebuild_tensor_v2" {
                        if let Some((key, view)) = tensor_view(a) {
                            let v = views.entry(key).or_default();
                            if v.len() < 64 {
                                v.push(view);
                            }
                        }
                    }
                }
                stack.push(V::Other);
            }
            b'b' => {
                stack.pop();
            }
            b'Q' => {
                // BINPERSID: torch's storage reference.
                let pid = stack.pop();
                let mut value = V::Other;
                if let Some(V::Tuple(t)) = &pid {
                    if let Some(s) = storage_ref(t) {
                        value = V::Storage(s.key.clone());
                        storages.insert(s.key.clone(), s);
                    }
                }
                stack.push(value);
            }
            b'0' => {
                stack.pop();
            }
            b'2' => {
                let top = stack.last().cloned().unwrap_or(V::Other);
                stack.push(top);
            }
            b'1' => {
                pop_mark(&mut stack)?;
            }
            other => return invalid(&format!("unsupported opcode 0x{other:02x}")),
        }
    }
}

/// `(storage, offset, size, stride, ...)` of a tensor rebuild.
fn tensor_view(args: &[V]) -> Option<(String, View)> {
    let ints = |v: &V| -> Option<Vec<i64>> {
        match v {
            V::Tuple(t) => t
                .iter()
                .map(|x| match x {
                    V::Int(i) => Some(*i),
                    _ => None,
                })
                .collect(),
            _ => None,
        }
    };
    match args {
        [V::Storage(key), V::Int(offset), size, stride, ..] => Some((
            key.clone(),
            View {
                offset: *offset,
                size: ints(size)?,
                stride: ints(stride)?,
            },
        )),
        _ => None,
    }
}

/// The shape of the only view of a storage, when it covers all `numel`
/// elements from offset 0, row-major and contiguous.
fn whole_shape(views: &[View], numel: u64) -> Option<Vec<u64>> {
    let [v] = views else {
        return None;
    };
    if v.offset != 0 || v.size.len() != v.stride.len() || v.size.iter().any(|&d| d < 0) {
        return None;
    }
    let mut expect: i64 = 1;
    for (&d, &s) in v.size.iter().zip(&v.stride).rev() {
        if d > 1 && s != expect {
            return None;
        }
        expect = expect.checked_mul(d)?;
    }
    if expect as u64 != numel || numel == 0 || v.size.is_empty() {
        return None;
    }
    Some(v.size.iter().map(|&d| d as u64).collect())
}

fn storage_ref(t: &[V]) -> Option<StorageRef> {
    match t {
        [V::Str(tag), V::Global(class), key, _location, V::Int(numel)] if tag == "storage" => {
            let key = match key {
                V::Str(s) => s.clone(),
                V::Int(i) => i.to_string(),
                _ => return None,
            };
            let class = class.rsplit('.').next().unwrap_or_default();
            let dtype = Dtype::from_torch_storage(class)?;
            (*numel >= 0).then_some(StorageRef {
                key,
                dtype,
                numel: *numel as u64,
                shape: None,
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_storages_and_stop() {
        // (('storage', torch.FloatStorage, '0', 'cpu', 6) persistent id, STOP)
        let mut p = vec![0x80, 2];
        p.extend_from_slice(b"(X\x07\x00\x00\x00storage");
        p.extend_from_slice(b"ctorch\nFloatStorage\n");
        p.extend_from_slice(b"X\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x06tQ.");
        p.extend_from_slice(b"trailing");
        let s = scan(&p).expect("scan");
        assert_eq!(s.len, p.len() - 8);
        assert_eq!(
            s.storages.get("0"),
            Some(&StorageRef {
                key: "0".into(),
                dtype: Dtype::F32,
                numel: 6,
                shape: None,
            })
        );
    }

    #[test]
    fn contiguous_whole_views_give_their_shape_and_others_stay_flat() {
        let view = |offset, size: &[i64], stride: &[i64]| View {
            offset,
            size: size.to_vec(),
            stride: stride.to_vec(),
        };
        assert_eq!(
            whole_shape(&[view(0, &[2, 3], &[3, 1])], 6),
            Some(vec![2, 3])
        );
        assert_eq!(
            whole_shape(&[view(0, &[3, 1, 4], &[4, 9, 1])], 12),
            Some(vec![3, 1, 4])
        );
        // Transposed, offset, partial, shared: flat.
        assert_eq!(whole_shape(&[view(0, &[3, 2], &[1, 3])], 6), None);
        assert_eq!(whole_shape(&[view(2, &[2, 2], &[2, 1])], 6), None);
        assert_eq!(whole_shape(&[view(0, &[2, 2], &[2, 1])], 6), None);
        let v = view(0, &[2, 3], &[3, 1]);
        assert_eq!(whole_shape(&[v.clone(), v], 6), None);
        assert_eq!(whole_shape(&[view(0, &[], &[])], 1), None);
    }

    #[test]
    fn hostile_pickles_are_data() {
        // cos\nsystem\n(S'echo hi'\ntR. : protocol-0 STRING is unsupported -> invalid, never run.
        let p = b"cos\nsystem\n(S'echo pwned'\ntR.";
        assert!(matches!(scan(p), Err(ScanError::Invalid(_))));
        let p2 = b"cos\nsystem\n(X\x04\x00\x00\x00echotR.";
        assert!(scan(p2).is_ok());
        assert!(matches!(
            scan(b"\x80\x02(X\xff\xff\xff\xff"),
            Err(ScanError::Incomplete)
        ));
    }
}
