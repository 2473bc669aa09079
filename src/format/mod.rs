//! Checkpoint formats, recognised by content as the bytes arrive.
//!
//! A planner looks at the bytes at the current position and says what the
//! next segment of the file is: raw bytes (headers, pickle, zip records)
//! kept exactly, or a tensor with a dtype and shape. A file that matches no
//! format, or fails to parse at any point, is raw bytes from there on: a
//! valid file of an unknown format is never an error.

pub mod pickle;
pub mod safetensors;
pub mod torch_zip;

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::layout::dtype::Dtype;

/// Most bytes held while deciding what comes next.
pub const LOOKAHEAD_LIMIT: usize = 64 << 20;

/// A tensor's place in its file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorSpec {
    /// The tensor's name in the checkpoint (for a torch zip, the name of
    /// its storage record, `<archive>/data/<key>`).
    pub name: String,
    /// Element type as the file stores it.
    pub dtype: Dtype,
    /// Extent of each dimension, in elements.
    pub shape: Vec<u64>,
    /// File offset of its first byte.
    pub start: u64,
    /// Bytes the tensor occupies in the file.
    pub len: u64,
}

/// A planned stretch of a file whose structure is known ahead (a safetensors header lists every
/// tensor).
#[derive(Debug, Clone)]
pub enum Segment {
    Raw { start: u64, len: u64 },
    Tensor(TensorSpec),
}

/// What the next bytes are.
#[derive(Debug)]
pub enum Next {
    /// Not enough bytes yet to say.
    NeedMore,
    Raw(u64),
    Tensor(TensorSpec),
    /// Raw bytes to the end of the file.
    Rest,
}

/// Where a file's parse stands: sniffing its first bytes, following a plan, walking a torch zip
/// record by record, or raw to the end.
pub enum Planner {
    Sniff,
    Planned(VecDeque<Segment>),
    Zip(Box<torch_zip::ZipPlanner>),
    Rest,
}

/// The format name a planner settled on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Safetensors,
    TorchZip,
    Raw,
}

impl Format {
    /// The name recorded in the manifest's `format` field.
    pub fn name(self) -> &'static str {
        match self {
            Format::Safetensors => "safetensors",
            Format::TorchZip => "torch-zip",
            Format::Raw => "raw",
        }
    }
}

impl Planner {
    /// Decides the next segment from the bytes at `pos` (`look`); `eof`
    /// means no more bytes will come before a decision is needed.
    pub fn next(&mut self, pos: u64, look: &[u8], eof: bool) -> (Next, Option<Format>) {
        match self {
            Planner::Sniff => {
                if look.len() < 9 && !eof {
                    return (Next::NeedMore, None);
                }
                if safetensors::sniff(look) {
                    let end = safetensors::header_end(look).unwrap_or(0);
                    if end as usize > LOOKAHEAD_LIMIT {
                        *self = Planner::Rest;
                        return (Next::Rest, Some(Format::Raw));
                    }
                    if (look.len() as u64) < end && !eof {
                        return (Next::NeedMore, None);
                    }
                    match safetensors::plan(look) {
                        Ok(segs) => {
                            *self = Planner::Planned(segs.into());
                            let (n, _) = self.next(pos, look, eof);
                            return (n, Some(Format::Safetensors));
                        }
                        Err(reason) => {
                            tracing::info!(
                                "not a valid safetensors file, stored as raw bytes: {reason}"
                            );
                        }
                    }
                }
                if look.len() >= 4 && &look[..4] == b"PK\x03\x04" {
                    if look.len() < 30 + 4096 && !eof && !torch_zip::sniff(look) {
                        return (Next::NeedMore, None);
                    }
                    if torch_zip::sniff(look) {
                        let mut z = Box::new(torch_zip::ZipPlanner::new());
                        let n = z.next(pos, look, eof);
                        *self = Planner::Zip(z);
                        return (n, Some(Format::TorchZip));
                    }
                }
                *self = Planner::Rest;
                (Next::Rest, Some(Format::Raw))
            }
            Planner::Zip(z) => (z.next(pos, look, eof), None),
            Planner::Planned(q) => match q.pop_front() {
                Some(Segment::Raw { len, .. }) => (Next::Raw(len), None),
                Some(Segment::Tensor(t)) => (Next::Tensor(t), None),
                None => {
                    *self = Planner::Rest;
                    (Next::Rest, None)
                }
            },
            Planner::Rest => (Next::Rest, None),
        }
    }
}
