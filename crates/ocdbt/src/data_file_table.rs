//! The data-file table that starts every manifest and node body: the paths
//! of the data files its references point into, prefix-compressed.
//!
//! A path is `base_path + relative_path`; a node reached through a file
//! with base path `B` resolves its own table relative to `transitive + B`.
//! We write every path as a relative path with an empty base path.

use super::codec::{capped, common_prefix, put_varint, Reader};
use super::error::{corrupt, Result};

/// Longest full data-file path the format allows.
pub const MAX_PATH_LEN: u64 = 65535;

/// One decoded entry: the full path from the database root, and the
/// transitive prefix that nodes stored in that file resolve against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataFilePath {
    /// Path of the data file relative to the database root.
    pub full: String,
    /// Prefix for the tables of nodes stored in this file.
    pub transitive: String,
}

/// Writes a table of `(base_path, relative_path)` pairs, which must be
/// sorted by `(base, relative)` and distinct, as TensorStore writes them.
pub fn encode(out: &mut Vec<u8>, paths: &[(&str, &str)]) {
    put_varint(out, paths.len() as u64);
    let mut prefixes = Vec::with_capacity(paths.len());
    prefixes.push(0);
    for w in paths.windows(2) {
        let ((pb, pr), (cb, cr)) = (w[0], w[1]);
        let mut p = common_prefix(pb.as_bytes(), cb.as_bytes());
        // The shared prefix may run into the relative part only when the
        // base paths are equal.
        if pb.len() == cb.len() && p == cb.len() {
            p += common_prefix(pr.as_bytes(), cr.as_bytes());
        }
        prefixes.push(p);
        put_varint(out, p as u64);
    }
    for (p, (b, r)) in prefixes.iter().zip(paths) {
        put_varint(out, (b.len() + r.len() - p) as u64);
    }
    for (b, _) in paths {
        put_varint(out, b.len() as u64);
    }
    for (p, (b, r)) in prefixes.iter().zip(paths) {
        let full = format!("{b}{r}");
        out.extend_from_slice(&full.as_bytes()[*p..]);
    }
}

/// The `(base, relative)` pairs of decoded or built entries.
pub fn pairs(files: &[DataFilePath]) -> Vec<(&str, &str)> {
    files
        .iter()
        .map(|f| {
            let base = f.transitive.len().min(f.full.len());
            f.full.split_at(base)
        })
        .collect()
}

/// Reads a table; `transitive` is the prefix of the file the record came
/// from (empty for the manifest).
pub fn decode(r: &mut Reader, transitive: &str) -> Result<Vec<DataFilePath>> {
    let n = r.varint()?;
    // Each file costs at least three varint bytes, so a count larger than
    // the remaining input is a lie; this bounds every allocation below.
    if n > r.remaining() as u64 {
        return Err(corrupt(format!("data file count {n} exceeds the input")));
    }
    let n = n as usize;
    let max_len = MAX_PATH_LEN.saturating_sub(transitive.len() as u64);
    let mut prefix = vec![0u64; n];
    for p in prefix.iter_mut().skip(1) {
        *p = r.varint_max(max_len, "path prefix length")?;
    }
    let mut suffix = Vec::with_capacity(capped(n as u64, r.remaining()));
    for _ in 0..n {
        suffix.push(r.varint_max(max_len, "path suffix length")?);
    }
    let mut base = Vec::with_capacity(n);
    for _ in 0..n {
        base.push(r.varint_max(max_len, "base path length")?);
    }
    let mut out: Vec<DataFilePath> = Vec::with_capacity(n);
    let mut prev: Vec<u8> = Vec::new();
    let mut prev_base = 0u64;
    for i in 0..n {
        let total = prefix[i]
            .checked_add(suffix[i])
            .filter(|t| *t <= max_len)
            .ok_or_else(|| corrupt("data file path too long"))?;
        if prefix[i] > prev.len() as u64 {
            return Err(corrupt("path prefix longer than the previous path"));
        }
        if base[i] > total {
            return Err(corrupt("base path longer than the path"));
        }
        if prefix[i] > prev_base.min(base[i]) && base[i] != prev_base {
            return Err(corrupt("path prefix crosses a differing base path"));
        }
        let mut path = prev[..prefix[i] as usize].to_vec();
        path.extend_from_slice(r.bytes(suffix[i])?);
        let text =
            std::str::from_utf8(&path).map_err(|_| corrupt("data file path is not UTF-8"))?;
        let base_part = text
            .get(..base[i] as usize)
            .ok_or_else(|| corrupt("base path splits a character"))?;
        out.push(DataFilePath {
            full: format!("{transitive}{text}"),
            transitive: format!("{transitive}{base_part}"),
        });
        prev_base = base[i];
        prev = path;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_round_trips_with_prefix_compression() {
        let paths = ["d/0011", "d/0022", "d/01", "e"];
        let pairs: Vec<_> = paths.iter().map(|p| ("", *p)).collect();
        let mut out = Vec::new();
        encode(&mut out, &pairs);
        let got = decode(&mut Reader::new(&out), "").unwrap();
        let full: Vec<_> = got.iter().map(|p| p.full.as_str()).collect();
        assert_eq!(full, paths);
        let got = decode(&mut Reader::new(&out), "sub/").unwrap();
        assert_eq!(got[0].full, "sub/d/0011");
        assert_eq!(got[0].transitive, "sub/");
        // Base paths survive the round trip as transitive prefixes.
        let pairs = [("p0/", "d/a"), ("p0/", "d/b"), ("p1/", "d/a")];
        let mut out = Vec::new();
        encode(&mut out, &pairs);
        let got = decode(&mut Reader::new(&out), "").unwrap();
        assert_eq!(got[1].full, "p0/d/b");
        assert_eq!(got[1].transitive, "p0/");
        assert_eq!(got[2].full, "p1/d/a");
        assert_eq!(got[2].transitive, "p1/");
    }

    #[test]
    fn table_rejects_hostile_counts_and_lengths() {
        // A count of 2^40 files with almost no input behind it.
        let mut out = Vec::new();
        put_varint(&mut out, 1 << 40);
        assert!(decode(&mut Reader::new(&out), "").is_err());
        // One file whose suffix runs past the end.
        let out = [1u8, 200, 0, b'a'];
        assert!(decode(&mut Reader::new(&out), "").is_err());
        // A prefix longer than the previous path.
        let out = [2u8, 9, 1, 1, 0, 0, b'a', b'b'];
        assert!(decode(&mut Reader::new(&out), "").is_err());
    }
}
