//! PyTorch's zip checkpoints (`torch.save`): stored (uncompressed) records,
//! each a local header, the data, and a data descriptor. `data.pkl` comes
//! first; its pickle names every storage with its dtype and element count,
//! so each `data/<key>` record is known to be a tensor before its bytes
//! arrive. Everything else (headers, pickle, small records, the central
//! directory) is kept as raw bytes.

use std::collections::HashMap;

use super::pickle::{scan, ScanError, StorageRef};
use super::{Next, TensorSpec};

const LOCAL: &[u8; 4] = b"PK\x03\x04";
const DESCRIPTOR: &[u8; 4] = b"PK\x07\x08";

/// Whether the file starts like a torch zip (a local header of a stored
/// record whose name ends in `data.pkl`).
pub fn sniff(head: &[u8]) -> bool {
    if head.len() < 30 || &head[..4] != LOCAL {
        return false;
    }
    let n = u16::from_le_bytes([head[26], head[27]]) as usize;
    head.len() >= 30 + n && head[30..30 + n].ends_with(b"data.pkl")
}

enum State {
    AtHeader,
    Record {
        name: String,
        size: Option<u64>,
        descriptor: bool,
    },
    /// After `len` data bytes: the descriptor.
    Descriptor {
        len: u64,
    },
    Done,
}

/// Walks a torch zip record by record, telling each storage record's data (a tensor, typed by
/// `data.pkl`) from the bytes around it.
pub struct ZipPlanner {
    state: State,
    storages: HashMap<String, StorageRef>,
}

fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([b[i], b[i + 1]])
}
fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}
fn u64_at(b: &[u8], i: usize) -> u64 {
    u64::from_le_bytes([
        b[i],
        b[i + 1],
        b[i + 2],
        b[i + 3],
        b[i + 4],
        b[i + 5],
        b[i + 6],
        b[i + 7],
    ])
}

/// Length of the data descriptor at the start of `b` for `len` data bytes:
/// with or without its signature, 32- or 64-bit sizes.
fn descriptor_len(b: &[u8], len: u64) -> Option<Result<u64, ()>> {
    let sig = b.len() >= 4 && &b[..4] == DESCRIPTOR;
    let base = if sig { 4 } else { 0 };
    if b.len() < base + 12 {
        return None;
    }
    if u32_at(b, base + 4) as u64 == len && u32_at(b, base + 8) as u64 == len {
        return Some(Ok(base as u64 + 12));
    }
    if b.len() < base + 20 {
        return None;
    }
    if u64_at(b, base + 4) == len && u64_at(b, base + 12) == len {
        return Some(Ok(base as u64 + 20));
    }
    Some(Err(()))
}

impl ZipPlanner {
    /// A planner at the start of the archive, before its first local header.
    pub fn new() -> Self {
        ZipPlanner {
            state: State::AtHeader,
            storages: HashMap::new(),
        }
    }

    fn rest(&mut self, why: &str) -> Next {
        if !why.is_empty() {
            tracing::info!("torch zip: {why}; the rest of the file is kept as raw bytes");
        }
        self.state = State::Done;
        Next::Rest
    }

    /// Decides what the bytes at `pos` (`look`) are, as [`Planner::next`](super::Planner::next)
    /// does for a torch zip.
    pub fn next(&mut self, pos: u64, look: &[u8], eof: bool) -> Next {
        let more = |s: &mut Self| {
            if eof {
                s.rest("truncated")
            } else {
                Next::NeedMore
            }
        };
        match &self.state {
            State::Done => Next::Rest,
            State::AtHeader => {
                if look.len() < 4 {
                    return more(self);
                }
                if &look[..4] != LOCAL {
                    // Central directory and end records: raw to the end.
                    return self.rest("");
                }
                if look.len() < 30 {
                    return more(self);
                }
                let flags = u16_at(look, 6);
                let method = u16_at(look, 8);
                let n = u16_at(look, 26) as usize;
                let m = u16_at(look, 28) as usize;
                if look.len() < 30 + n + m {
                    return more(self);
                }
                if method != 0 {
                    return self.rest("compressed record");
                }
                let name = String::from_utf8_lossy(&look[30..30 + n]).into_owned();
                let descriptor = flags & 0x8 != 0;
                let size = (!descriptor).then(|| u32_at(look, 18) as u64);
                self.state = State::Record {
                    name,
                    size,
                    descriptor,
                };
                Next::Raw((30 + n + m) as u64)
            }
            State::Record {
                name,
                size,
                descriptor,
            } => {
                let (name, size, descriptor) = (name.clone(), *size, *descriptor);
                let after = |len: u64| {
                    if descriptor {
                        State::Descriptor { len }
                    } else {
                        State::AtHeader
                    }
                };
                if name.ends_with("data.pkl") {
                    match scan(look) {
                        Ok(s) => {
                            if size.is_some_and(|sz| sz != s.len as u64) {
                                return self.rest("pickle size differs from its header");
                            }
                            self.storages = s.storages;
                            self.state = after(s.len as u64);
                            Next::Raw(s.len as u64)
                        }
                        Err(ScanError::Incomplete) if look.len() < super::LOOKAHEAD_LIMIT => {
                            more(self)
                        }
                        Err(ScanError::Incomplete) => self.rest("pickle too large"),
                        Err(ScanError::Invalid(why)) => self.rest(&format!("pickle: {why}")),
                    }
                } else if let Some(key) = name.rsplit_once("/data/").map(|(_, k)| k.to_string()) {
                    let Some(st) = self.storages.get(&key).cloned() else {
                        return self.rest(&format!("record {name} is no storage of the pickle"));
                    };
                    let Some(len) = st.numel.checked_mul(st.dtype.size()) else {
                        return self.rest("storage size overflows");
                    };
                    if size.is_some_and(|sz| sz != len) {
                        return self.rest("storage size differs from its header");
                    }
                    self.state = after(len);
                    if len == 0 {
                        return Next::Raw(0);
                    }
                    Next::Tensor(TensorSpec {
                        name,
                        dtype: st.dtype,
                        // The tensor's own shape when one contiguous tensor
                        // covers the storage, so chunking means what it does
                        // for safetensors; shared or strided storages: 1-D.
                        shape: st.shape.clone().unwrap_or_else(|| vec![st.numel]),
                        start: pos,
                        len,
                    })
                } else if let Some(sz) = size {
                    self.state = State::AtHeader;
                    Next::Raw(sz)
                } else {
                    // A small record: it ends where a descriptor names its length.
                    let limit = look.len().min(1 << 20);
                    for i in 0..limit {
                        match descriptor_len(&look[i..], i as u64) {
                            Some(Ok(_)) => {
                                self.state = State::Descriptor { len: i as u64 };
                                return Next::Raw(i as u64);
                            }
                            Some(Err(())) => continue,
                            None => return more(self),
                        }
                    }
                    if look.len() >= 1 << 20 {
                        return self.rest("record without descriptor");
                    }
                    more(self)
                }
            }
            State::Descriptor { len } => {
                let len = *len;
                match descriptor_len(look, len) {
                    None => more(self),
                    Some(Ok(n)) => {
                        self.state = State::AtHeader;
                        Next::Raw(n)
                    }
                    Some(Err(())) => self.rest("data descriptor does not match"),
                }
            }
        }
    }
}

impl Default for ZipPlanner {
    fn default() -> Self {
        Self::new()
    }
}
