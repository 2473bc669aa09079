//! The byte-shuffle filter (`numcodecs.shuffle` in Zarr v3): byte `j` of
//! element `i` goes to `j * count + i`, so each byte position of the
//! elements forms one plane. Weights stored wider than their values (f16
//! values in f32, a float's low mantissa bytes) then give zstd long runs to
//! match instead of Huffman literals: smaller data that decodes faster.
//!
//! Element sizes 2 and 4 (half and single floats) have loops the compiler
//! vectorises (one element assembled at a time, not one byte): the unshuffle
//! runs on every chunk a reader decodes, and a byte-at-a-time loop costs as
//! much as the codec saves. Other sizes take the plain loop.

/// Shuffles `src` into `dst` (both `len` bytes, `len` a multiple of
/// `elem`): the encoding of `numcodecs.shuffle` with `elementsize = elem`.
pub fn shuffle(src: &[u8], dst: &mut [u8], elem: usize) {
    debug_assert_eq!(src.len(), dst.len());
    let count = src.len() / elem.max(1);
    match elem {
        2 => {
            let (p0, p1) = dst.split_at_mut(count);
            for ((e, a), b) in src.chunks_exact(2).zip(p0).zip(p1) {
                *a = e[0];
                *b = e[1];
            }
        }
        4 => {
            let (p0, rest) = dst.split_at_mut(count);
            let (p1, rest) = rest.split_at_mut(count);
            let (p2, p3) = rest.split_at_mut(count);
            let planes = p0.iter_mut().zip(p1).zip(p2).zip(p3);
            for (e, (((a, b), c), d)) in src.chunks_exact(4).zip(planes) {
                *a = e[0];
                *b = e[1];
                *c = e[2];
                *d = e[3];
            }
        }
        _ => {
            for (i, e) in src.chunks_exact(elem.max(1)).enumerate() {
                for (j, byte) in e.iter().enumerate() {
                    dst[j * count + i] = *byte;
                }
            }
        }
    }
    // Bytes past the last whole element (none for tensor chunks) stay put.
    let tail = count * elem.max(1);
    dst[tail..].copy_from_slice(&src[tail..]);
}

/// Reverses [`shuffle`]: planes in `src` back to elements in `dst`.
pub fn unshuffle(src: &[u8], dst: &mut [u8], elem: usize) {
    debug_assert_eq!(src.len(), dst.len());
    let count = src.len() / elem.max(1);
    match elem {
        2 => {
            let (p0, p1) = src.split_at(count);
            for ((e, a), b) in dst.chunks_exact_mut(2).zip(p0).zip(p1) {
                e.copy_from_slice(&[*a, *b]);
            }
        }
        4 => {
            let (p0, rest) = src.split_at(count);
            let (p1, rest) = rest.split_at(count);
            let (p2, p3) = rest.split_at(count);
            let planes = p0
                .iter()
                .zip(&p1[..count])
                .zip(&p2[..count])
                .zip(&p3[..count]);
            for (e, (((a, b), c), d)) in dst.chunks_exact_mut(4).zip(planes) {
                e.copy_from_slice(&[*a, *b, *c, *d]);
            }
        }
        _ => {
            for (i, e) in dst.chunks_exact_mut(elem.max(1)).enumerate() {
                for (j, byte) in e.iter_mut().enumerate() {
                    *byte = src[j * count + i];
                }
            }
        }
    }
    let tail = count * elem.max(1);
    dst[tail..].copy_from_slice(&src[tail..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition, byte by byte, as numcodecs writes it.
    fn reference(src: &[u8], elem: usize) -> Vec<u8> {
        let count = src.len() / elem;
        let mut out = src.to_vec();
        for i in 0..count {
            for j in 0..elem {
                out[j * count + i] = src[i * elem + j];
            }
        }
        out
    }

    #[test]
    fn shuffle_matches_the_definition_and_unshuffle_reverses_it() {
        let mut x = 0x9e37_79b9u32;
        for elem in [1usize, 2, 3, 4, 8, 16] {
            for count in [0usize, 1, 7, 64, 1001] {
                let len = count * elem + if elem > 1 { elem / 2 } else { 0 };
                let src: Vec<u8> = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 17;
                        x ^= x << 5;
                        x as u8
                    })
                    .collect();
                let mut shuffled = vec![0u8; len];
                shuffle(&src, &mut shuffled, elem);
                assert_eq!(
                    shuffled,
                    reference(&src, elem),
                    "elem {elem}, count {count}"
                );
                let mut back = vec![0u8; len];
                unshuffle(&shuffled, &mut back, elem);
                assert_eq!(back, src, "elem {elem}, count {count}");
            }
        }
    }
}
