//! Drives the checkpoint planners the way the filesystem does, without a
//! backing store, and checks what they decide.
//!
//! A fuzz input is two bytes that seed how the file is cut into write
//! requests, then the file itself. The bytes go through the same steps as
//! `fs::file` (sniff buffer until `Planner::Sniff` decides) and
//! `pipeline::format_write::FormatWriter` (look-ahead buffer, `Next::Raw`,
//! `Next::Tensor`, `Next::Rest`, the end of the data), and every tensor the
//! planner names goes through the chunk-shape and slab arithmetic of
//! `FormatWriter::start_tensor` for each shipped mount config.

use ckptfs::config::{Chunking, MountConfig};
use ckptfs::format::{Format, Next, Planner, TensorSpec, LOOKAHEAD_LIMIT};
use ckptfs::layout::tensor::chunk_for;

/// Splits a fuzz input into (write sizes seed, file bytes).
pub fn split_input(data: &[u8]) -> Option<(u16, &[u8])> {
    if data.len() < 2 {
        return None;
    }
    Some((u16::from_le_bytes([data[0], data[1]]), &data[2..]))
}

/// Write request sizes: tiny, page-sized, FUSE-sized and odd, from a seed.
pub struct Writes {
    state: u32,
}

impl Writes {
    pub fn new(seed: u16) -> Self {
        Writes {
            state: (seed as u32) << 8 | 0x9e37_0001,
        }
    }

    fn next_u32(&mut self) -> u32 {
        // xorshift32: deterministic for a given seed.
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.state = x;
        x
    }

    pub fn next_len(&mut self) -> usize {
        let r = self.next_u32();
        match r % 8 {
            0 => 1,
            1 => 1 + (r >> 8) as usize % 16,
            2 => 1 + (r >> 8) as usize % 300,
            3 => 4096,
            4 => 1 + (r >> 8) as usize % 8192,
            5 => 128 << 10,
            6 => 4 << 20,
            _ => 1 + (r >> 8) as usize % 65536,
        }
    }
}

/// The chunking rules of the shipped mount configs (those this build accepts).
pub fn shipped_rules() -> Vec<(Chunking, u64)> {
    let texts = [
        include_str!("../../mount-configs/default.toml"),
        include_str!("../../mount-configs/passthrough.toml"),
        include_str!("../../mount-configs/chunked.toml"),
        include_str!("../../mount-configs/recommended.toml"),
        include_str!("../../mount-configs/tensorstore-basic.toml"),
        include_str!("../../mount-configs/t5x.toml"),
        include_str!("../../mount-configs/ts-chunks.toml"),
        include_str!("../../mount-configs/zstd-bf16.toml"),
    ];
    texts
        .iter()
        .filter_map(|t| MountConfig::parse(t, "fuzz").ok())
        .map(|c| (c.layout.chunking, c.io.memory_budget))
        .collect()
}

/// What the planner made of the file, in file order.
#[derive(Debug, Default)]
pub struct Outcome {
    pub format: Option<Format>,
    /// (start, len, is_tensor)
    pub segments: Vec<(u64, u64, bool)>,
}

#[derive(Debug)]
enum Current {
    Undecided,
    Raw(Option<u64>),
    Tensor { left: u64 },
}

/// `FormatWriter`'s bookkeeping, without storing anything.
struct Stream<'r> {
    planner: Planner,
    pos: u64,
    look: Vec<u8>,
    current: Current,
    out: Outcome,
    rules: &'r [(Chunking, u64)],
    /// Planner calls, to catch a planner that never moves on.
    calls: u64,
    limit: u64,
}

impl<'r> Stream<'r> {
    fn new(rules: &'r [(Chunking, u64)], total: usize) -> Self {
        Stream {
            planner: Planner::Sniff,
            pos: 0,
            look: Vec::new(),
            current: Current::Undecided,
            out: Outcome::default(),
            rules,
            calls: 0,
            limit: 64 + 4 * total as u64,
        }
    }

    fn segment(&mut self, start: u64, len: u64, tensor: bool) {
        if len == 0 {
            return;
        }
        if let Some(last) = self.out.segments.last_mut() {
            if !tensor && !last.2 && last.0 + last.1 == start {
                last.1 += len;
                return;
            }
        }
        self.out.segments.push((start, len, tensor));
    }

    fn push(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match &mut self.current {
                Current::Undecided => {
                    self.look.extend_from_slice(data);
                    data = &[];
                    self.decide(false);
                }
                Current::Raw(left) => {
                    let n = left.map_or(data.len() as u64, |l| l.min(data.len() as u64)) as usize;
                    if let Some(l) = left {
                        *l -= n as u64;
                    }
                    let done = *left == Some(0);
                    let start = self.pos;
                    self.segment(start, n as u64, false);
                    self.pos += n as u64;
                    data = &data[n..];
                    if done {
                        self.current = Current::Undecided;
                        let look = std::mem::take(&mut self.look);
                        if !look.is_empty() {
                            self.push(&look);
                        }
                    }
                }
                Current::Tensor { left } => {
                    let n = (*left).min(data.len() as u64);
                    *left -= n;
                    let done = *left == 0;
                    data = &data[n as usize..];
                    self.pos += n;
                    if done {
                        self.current = Current::Undecided;
                    }
                }
            }
        }
    }

    fn decide(&mut self, eof: bool) {
        while matches!(self.current, Current::Undecided) {
            if self.look.is_empty() && !eof {
                return;
            }
            self.calls += 1;
            assert!(
                self.calls <= self.limit,
                "planner asked {} times for {} bytes: it does not move on",
                self.calls,
                self.limit
            );
            let (next, format) = self.planner.next(self.pos, &self.look, eof);
            if format.is_some() && self.out.format.is_none() {
                self.out.format = format;
            }
            let next = match next {
                Next::NeedMore if self.look.len() > LOOKAHEAD_LIMIT || eof => Next::Rest,
                n => n,
            };
            match next {
                Next::NeedMore => return,
                Next::Raw(n) => self.current = Current::Raw(Some(n)),
                Next::Rest => self.current = Current::Raw(None),
                Next::Tensor(spec) => self.start_tensor(spec),
            }
            let look = std::mem::take(&mut self.look);
            if !look.is_empty() {
                self.push(&look);
            }
            if eof && self.look.is_empty() {
                return;
            }
        }
    }

    /// The checks `FormatWriter::start_tensor` relies on: the tensor starts
    /// here, its length is its shape's, and the chunk and slab sizes of every
    /// shipped layout are computable.
    fn start_tensor(&mut self, spec: TensorSpec) {
        assert_eq!(
            spec.start, self.pos,
            "tensor {:?} not at the stream position",
            spec.name
        );
        let size = spec.dtype.size();
        assert!(size > 0, "tensor {:?} of a zero-sized dtype", spec.name);
        let numel = spec
            .shape
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .expect("element count overflows");
        assert_eq!(
            numel.checked_mul(size),
            Some(spec.len),
            "tensor length is not its shape's"
        );
        assert!(
            spec.start
                .checked_add(spec.len)
                .is_some_and(|e| e <= i64::MAX as u64),
            "tensor ends past the largest file offset"
        );
        let row_elems = spec
            .shape
            .iter()
            .skip(1)
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .expect("row element count overflows");
        let row_bytes = if spec.shape.len() > 1 {
            row_elems.checked_mul(size).expect("row bytes overflow")
        } else {
            size
        };
        for (rule, _budget) in self.rules {
            let chunk = chunk_for(&spec.shape, spec.dtype, rule);
            assert_eq!(
                chunk.len(),
                spec.shape.len(),
                "chunk rank differs from the shape's"
            );
            for (c, d) in chunk.iter().zip(&spec.shape) {
                assert!(
                    *c >= 1 && *c <= (*d).max(1),
                    "chunk {chunk:?} for shape {:?}",
                    spec.shape
                );
            }
            let slab = chunk.first().copied().unwrap_or(1).checked_mul(row_bytes);
            let chunk_elems = chunk.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
            assert!(slab.is_some(), "slab bytes overflow for {:?}", spec.shape);
            assert!(
                chunk_elems.is_some(),
                "chunk elements overflow for {:?}",
                spec.shape
            );
        }
        self.segment(spec.start, spec.len, true);
        self.current = if spec.len == 0 {
            Current::Raw(Some(0))
        } else {
            Current::Tensor { left: spec.len }
        };
    }

    fn finish(mut self) -> Outcome {
        if matches!(self.current, Current::Undecided) {
            self.decide(true);
        }
        self.out
    }
}

/// Feeds `file` in write requests cut by `seed` through sniffing and
/// planning, and checks the plan covers the file in order.
pub fn plan_stream(seed: u16, file: &[u8], rules: &[(Chunking, u64)]) -> Outcome {
    let mut writes = Writes::new(seed);
    let mut sniff: Vec<u8> = Vec::new();
    let mut stream: Option<Stream> = None;
    let mut raw = false;
    let mut rest = file;
    while !rest.is_empty() {
        let n = writes.next_len().min(rest.len());
        let (piece, tail) = rest.split_at(n);
        rest = tail;
        if let Some(s) = stream.as_mut() {
            s.push(piece);
            continue;
        }
        if raw {
            continue;
        }
        sniff.extend_from_slice(piece);
        resolve(&mut sniff, &mut stream, &mut raw, false, rules, file.len());
    }
    if stream.is_none() && !raw {
        resolve(&mut sniff, &mut stream, &mut raw, true, rules, file.len());
    }
    let Some(s) = stream else {
        return Outcome {
            format: Some(Format::Raw),
            segments: vec![(0, file.len() as u64, false)],
        };
    };
    let out = s.finish();
    check_cover(&out, file.len() as u64);
    out
}

/// `fs::file`'s `resolve`: the sniff buffer becomes a planned stream, or raw.
fn resolve<'r>(
    sniff: &mut Vec<u8>,
    stream: &mut Option<Stream<'r>>,
    raw: &mut bool,
    eof: bool,
    rules: &'r [(Chunking, u64)],
    total: usize,
) {
    let (next, format) = Planner::Sniff.next(0, sniff, eof);
    if matches!(next, Next::NeedMore) && !eof && sniff.len() < LOOKAHEAD_LIMIT {
        return;
    }
    match format {
        Some(f) if f != Format::Raw => {
            let mut s = Stream::new(rules, total);
            let buf = std::mem::take(sniff);
            s.push(&buf);
            *stream = Some(s);
        }
        _ => *raw = true,
    }
}

/// Segments start at 0, follow each other without gaps or overlap, and end
/// at the file's end (a tensor cut short by the end of the data aside).
pub fn check_cover(out: &Outcome, len: u64) {
    let mut pos = 0u64;
    for &(start, n, _) in &out.segments {
        assert_eq!(
            start, pos,
            "segments {:?} leave a gap or overlap",
            out.segments
        );
        pos = start.checked_add(n).expect("segment end overflows");
    }
    match out.segments.last() {
        Some(&(_, _, true)) => assert!(pos >= len, "segments end at {pos} before the file ({len})"),
        _ => assert_eq!(
            pos, len,
            "segments {:?} do not cover {len} bytes",
            out.segments
        ),
    }
}
