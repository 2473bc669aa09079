//! Primitive encodings: LEB128 varints, fixed-width integers, and a bounded
//! reader that turns every short read or overflow into an error.

use super::error::{corrupt, Result};

/// Appends `v` as an unsigned LEB128 varint.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A cursor over bytes that never reads past the end.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Whether every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// The next byte.
    pub fn byte(&mut self) -> Result<u8> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or_else(|| corrupt("unexpected end of data"))?;
        self.pos += 1;
        Ok(b)
    }

    /// The next `n` bytes, borrowed from the buffer.
    pub fn bytes(&mut self, n: u64) -> Result<&'a [u8]> {
        let n = usize::try_from(n).map_err(|_| corrupt("length exceeds address space"))?;
        if n > self.remaining() {
            return Err(corrupt(format!(
                "length {n} exceeds the {} bytes left",
                self.remaining()
            )));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// A LEB128 varint of at most 64 bits; a 10th byte may carry only bit 63.
    pub fn varint(&mut self) -> Result<u64> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = self.byte()?;
            let part = u64::from(b & 0x7f);
            if i == 9 && (b & 0x7e) != 0 {
                return Err(corrupt("varint overflows 64 bits"));
            }
            v |= part << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(corrupt("varint longer than 10 bytes"))
    }

    /// A varint that must not exceed `max` (counts, lengths, ids).
    pub fn varint_max(&mut self, max: u64, what: &str) -> Result<u64> {
        let v = self.varint()?;
        if v > max {
            return Err(corrupt(format!("{what} {v} exceeds limit {max}")));
        }
        Ok(v)
    }

    /// The next four bytes as a little-endian `u32`.
    pub fn u32_le(&mut self) -> Result<u32> {
        let b = self.bytes(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// The next eight bytes as a little-endian `u64`.
    pub fn u64_le(&mut self) -> Result<u64> {
        let b = self.bytes(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
}

/// Length of the common prefix of two byte strings.
pub fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Converts a decoded count to `usize` for preallocation, capped so that a
/// hostile count cannot reserve more memory than the input could describe.
pub fn capped(n: u64, remaining: usize) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX).min(remaining)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_round_trips_edge_values() {
        for v in [0u64, 1, 127, 128, 300, 1 << 35, u64::MAX - 1, u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            let mut r = Reader::new(&out);
            assert_eq!(r.varint().unwrap(), v);
            assert!(r.is_empty());
        }
    }

    #[test]
    fn varint_rejects_overflow_and_truncation() {
        assert!(Reader::new(&[0xff; 11]).varint().is_err());
        assert!(
            Reader::new(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02])
                .varint()
                .is_err()
        );
        assert!(Reader::new(&[0x80]).varint().is_err());
        assert!(Reader::new(&[]).varint().is_err());
    }

    #[test]
    fn reader_refuses_lengths_past_the_end() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert!(r.bytes(4).is_err());
        assert!(r.bytes(u64::MAX).is_err());
        assert_eq!(r.bytes(3).unwrap(), &[1, 2, 3]);
    }
}
