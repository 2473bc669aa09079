//! `io.write_mode`: write-only opens (a save) go straight to the daemon by
//! default, bypassing the kernel's page cache; a reader holding the file
//! open with cached pages sees the new bytes where they were written, a new
//! open sees the committed file, and every byte survives a remount. With
//! `write_mode = "cached"` writers go through the page cache as before.

mod common;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;

use common::{chunk_files, random, repo_config, verify, write_config, Mount};
use serde_json::Value;

fn opens(m: &Mount) -> (u64, u64) {
    let stats: Value = serde_json::from_slice(&fs::read(m.path(".ckptfs/stats")).expect("stats"))
        .expect("stats json");
    let n = |k: &str| stats["io_paths"][k].as_u64().unwrap_or(u64::MAX);
    (n("opens_direct"), n("opens_cached"))
}

/// Writes through write-only opens while a reader holds cached pages of
/// the file; checks what the reader, a new open and a remount see, and
/// returns the (direct, cached) opens the mount counted.
fn save_beside_a_reader(m: &mut Mount, name: &str) -> (u64, u64) {
    let mut want = random(10 << 20, 7);
    fs::write(m.path(name), &want).expect("save");
    let reader = fs::File::open(m.path(name)).expect("open reader");
    let mut got = vec![0u8; want.len()];
    reader.read_exact_at(&mut got, 0).expect("read all");
    assert!(got == want, "{name}: first read");

    // Overwrite inside the cached pages, unaligned, through a write-only open.
    let patch = random(5_000, 8);
    {
        let w = OpenOptions::new()
            .write(true)
            .open(m.path(name))
            .expect("open write-only");
        w.write_all_at(&patch, 1_000_003).expect("overwrite");
        want[1_000_003..1_005_003].copy_from_slice(&patch);
        let mut seen = vec![0u8; 10_000];
        reader.read_exact_at(&mut seen, 998_000).expect("reread");
        assert!(
            seen[..] == want[998_000..1_008_000],
            "{name}: the reader's cached pages show the old bytes"
        );
    }
    // Append through an O_APPEND write-only open.
    {
        let mut a = OpenOptions::new()
            .append(true)
            .open(m.path(name))
            .expect("open append");
        a.write_all(b"tail of the file").expect("append");
        want.extend_from_slice(b"tail of the file");
    }
    let mut seen = vec![0u8; want.len()];
    reader.read_exact_at(&mut seen, 0).expect("reread all");
    assert!(seen == want, "{name}: the reader after the writes");
    drop(reader);
    assert!(
        fs::read(m.path(name)).expect("new open") == want,
        "{name}: a new open"
    );
    let counts = opens(m);
    m.remount();
    assert!(
        fs::read(m.path(name)).expect("after remount") == want,
        "{name}: after a remount"
    );
    counts
}

#[test]
fn saves_bypass_the_page_cache_and_readers_see_what_was_written() {
    let cfg_dir = tempfile::tempdir().expect("tempdir");
    let cached = write_config(
        cfg_dir.path(),
        "default-cached-writes",
        &fs::read_to_string(repo_config("default"))
            .expect("read default")
            .replacen("[io]\n", "[io]\nwrite_mode = \"cached\"\n", 1),
    );
    for (label, config, direct) in [
        ("default", repo_config("default"), true),
        ("ts-ocdbt", repo_config("ts-ocdbt"), true),
        ("cached writes", cached, false),
    ] {
        let mut m = Mount::new(Some(config));
        let (d, c) = save_beside_a_reader(&mut m, "model.bin");
        // Three write-only opens (the save, the overwrite, the append),
        // two read opens (the reader, the new open).
        if direct {
            assert_eq!((d, c), (3, 2), "{label}: (direct, cached) opens");
        } else {
            assert_eq!((d, c), (0, 5), "{label}: (direct, cached) opens");
        }
        // A read-write open stays cached (it may read and mmap).
        let before = opens(&m);
        {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .open(m.path("model.bin"))
                .expect("open read-write");
            f.write_all_at(b"rw", 3).expect("rw write");
        }
        let after = opens(&m);
        assert_eq!(after.0, before.0, "{label}: a read-write open went direct");
        assert_eq!(after.1, before.1 + 1, "{label}");
        m.unmount();
        let (code, out) = verify(&m.backing);
        assert_eq!(code, 0, "{label}: {out}");
    }
}

/// Pages of `path` in the page cache, and all its pages (`mincore`).
fn resident_pages(path: &std::path::Path) -> (usize, usize) {
    use std::os::fd::AsRawFd;
    let f = fs::File::open(path).expect("open chunk");
    let len = f.metadata().expect("stat").len() as usize;
    let page = 4096;
    let pages = len.div_ceil(page);
    if len == 0 {
        return (0, 0);
    }
    // SAFETY: a read-only shared mapping of a file we hold open, of its
    // length; unmapped below, and its memory is never read.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    assert_ne!(addr, libc::MAP_FAILED, "mmap {}", path.display());
    let mut vec = vec![0u8; pages];
    // SAFETY: `addr` maps `len` bytes; `vec` has one byte per page.
    let rc = unsafe { libc::mincore(addr, len, vec.as_mut_ptr()) };
    // SAFETY: the mapping made above, unmapped once.
    unsafe { libc::munmap(addr, len) };
    assert_eq!(rc, 0, "mincore {}", path.display());
    (vec.iter().filter(|&&b| b & 1 == 1).count(), pages)
}

/// `io.chunk_writes`: by default a save's 8 MiB chunk files go to the disk
/// with `O_DIRECT` and leave nothing in the backing's page cache; with
/// `"cached"` they stay cached. Both read back exact after a remount.
#[test]
fn chunk_files_bypass_the_backing_page_cache_unless_cached_is_asked_for() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cached = write_config(tmp.path(), "cachedw", "[io]\nchunk_writes = \"cached\"\n");
    for (config, want_cached) in [(None, false), (Some(cached), true)] {
        let mut m = Mount::new(config);
        let data = random(32 << 20, 41);
        fs::write(m.path("w.bin"), &data).expect("save");
        m.unmount();
        let mut chunks = Vec::new();
        chunk_files(&m.backing.join("w.bin"), &mut chunks);
        assert_eq!(chunks.len(), 4, "{chunks:?}");
        let (resident, pages) = chunks
            .iter()
            .map(|c| resident_pages(c))
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        if want_cached {
            assert!(
                resident * 2 > pages,
                "cached chunk writes: {resident} of {pages} pages cached"
            );
        } else {
            assert!(
                resident * 20 < pages,
                "direct chunk writes: {resident} of {pages} pages cached"
            );
        }
        m.start();
        assert!(
            fs::read(m.path("w.bin")).expect("read") == data,
            "{want_cached}"
        );
        m.unmount();
        let (code, out) = verify(&m.backing);
        assert_eq!(code, 0, "{out}");
    }
}
