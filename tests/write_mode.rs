//! `io.write_mode`: write-only opens (a save) go straight to the daemon by
//! default, bypassing the kernel's page cache; a reader holding the file
//! open with cached pages sees the new bytes where they were written, a new
//! open sees the committed file, and every byte survives a remount. With
//! `write_mode = "cached"` writers go through the page cache as before.

mod common;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;

use common::{random, repo_config, verify, write_config, Mount};
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
