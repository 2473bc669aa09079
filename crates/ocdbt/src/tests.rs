//! Database behaviour tests on real directories.

use std::sync::Arc;

use super::*;

fn opts() -> DbOptions {
    DbOptions {
        max_inline_value_bytes: 16,
        auto_compact_garbage_ratio: None,
        ..DbOptions::default()
    }
}

fn big(i: usize, n: usize) -> Vec<u8> {
    (0..n).map(|j| (i * 31 + j * 7) as u8).collect()
}

#[test]
fn writes_are_visible_at_once_and_durable_after_commit() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_or_create(dir.path(), opts()).unwrap();
    db.put(b"a/zarr.json", b"{}").unwrap();
    db.put(b"a/c/0", &big(0, 5000)).unwrap();
    db.put(b"b/c/0", &big(1, 100)).unwrap();
    assert_eq!(db.get(b"a/c/0").unwrap().unwrap(), big(0, 5000));
    assert_eq!(
        db.get_range(b"a/c/0", 10, 5).unwrap().unwrap(),
        big(0, 5000)[10..15]
    );
    assert!(db.get_range(b"a/c/0", 4999, 2).is_err());
    assert_eq!(db.commit().unwrap(), 1);
    db.put(b"uncommitted", b"x").unwrap();
    drop(db);
    let db = Db::open_or_create(dir.path(), opts()).unwrap();
    assert_eq!(db.generation(), 1);
    assert_eq!(db.get(b"uncommitted").unwrap(), None);
    let listed = db.list_prefix(b"a/");
    assert_eq!(
        listed,
        vec![(b"a/c/0".to_vec(), 5000), (b"a/zarr.json".to_vec(), 2)]
    );
    assert_eq!(db.rename_prefix(b"a/", b"z/").unwrap(), 2);
    assert_eq!(db.delete_prefix(b"b/").unwrap(), 1);
    assert!(db.delete(b"z/zarr.json").unwrap());
    assert_eq!(db.commit().unwrap(), 2);
    drop(db);
    let db = Db::open_or_create(dir.path(), opts()).unwrap();
    assert_eq!(db.list_prefix(b""), vec![(b"z/c/0".to_vec(), 5000)]);
    assert_eq!(db.get(b"z/c/0").unwrap().unwrap(), big(0, 5000));
    assert!(verify(dir.path()).unwrap().is_ok());
}

#[test]
fn many_keys_build_interior_levels_that_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let o = DbOptions {
        max_decoded_node_bytes: 4096,
        ..opts()
    };
    let db = Db::open_or_create(dir.path(), o.clone()).unwrap();
    for i in 0..3000 {
        let key = format!("t/w{}/c/{}/{}", i % 7, i / 10, i % 10);
        db.put(key.as_bytes(), &big(i, 8 + i % 40)).unwrap();
    }
    db.commit().unwrap();
    let v = versions(dir.path()).unwrap();
    assert_eq!(v[0].num_keys, 3000);
    drop(db);
    let db = Db::open_or_create(dir.path(), o).unwrap();
    for i in 0..3000 {
        let key = format!("t/w{}/c/{}/{}", i % 7, i / 10, i % 10);
        assert_eq!(
            db.get(key.as_bytes()).unwrap().unwrap(),
            big(i, 8 + i % 40),
            "{key}"
        );
    }
    let report = verify(dir.path()).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert!(
        report.nodes > 3,
        "expected interior levels, got {} nodes",
        report.nodes
    );
}

#[test]
fn group_commit_from_several_threads_keeps_every_write() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_or_create(dir.path(), opts()).unwrap();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let db = Arc::clone(&db);
            std::thread::spawn(move || {
                for i in 0..40 {
                    db.put(format!("t{t}/k{i}").as_bytes(), &big(t * 100 + i, 300))
                        .unwrap();
                    if i % 10 == 9 {
                        db.commit().unwrap();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let generation = db.generation();
    // 32 commit calls; coalescing may merge some, never adds versions.
    assert!((1..=32).contains(&generation), "{generation}");
    drop(db);
    let db = Db::open_or_create(dir.path(), opts()).unwrap();
    for t in 0..8 {
        for i in 0..40 {
            let got = db.get(format!("t{t}/k{i}").as_bytes()).unwrap();
            assert_eq!(got.unwrap(), big(t * 100 + i, 300));
        }
    }
}

#[test]
fn keeps_the_last_k_versions_across_a_version_tree_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let o = DbOptions {
        keep_versions: 3,
        ..opts()
    };
    let db = Db::open_or_create(dir.path(), o.clone()).unwrap();
    for g in 1..=17u64 {
        db.put(b"k", format!("value of generation {g}").as_bytes())
            .unwrap();
        assert_eq!(db.commit().unwrap(), g);
    }
    let kept: Vec<u64> = versions(dir.path())
        .unwrap()
        .iter()
        .map(|v| v.generation)
        .collect();
    // 15 and 16 sit in a version-tree node, 17 inline.
    assert_eq!(kept, vec![15, 16, 17]);
    for g in [15u64, 16, 17] {
        let old = Db::open_version(dir.path(), g).unwrap();
        assert_eq!(
            old.get(b"k").unwrap().unwrap(),
            format!("value of generation {g}").as_bytes()
        );
        assert!(old.put(b"k", b"x").is_err());
    }
    assert!(Db::open_version(dir.path(), 14).is_err());
    assert!(verify(dir.path()).unwrap().is_ok());
}

#[test]
fn compact_reclaims_space_and_keeps_every_value_readable() {
    let dir = tempfile::tempdir().unwrap();
    let o = DbOptions {
        keep_versions: 1,
        target_data_file_size: 256 << 10,
        ..opts()
    };
    let db = Db::open_or_create(dir.path(), o.clone()).unwrap();
    for round in 0..3 {
        for i in 0..40 {
            db.put(format!("k{i}").as_bytes(), &big(i + round, 20_000))
                .unwrap();
        }
        db.commit().unwrap();
    }
    // Half the keys stay from round 2, the rest are rewritten once more.
    for i in 0..20 {
        db.put(format!("k{i}").as_bytes(), &big(i + 7, 20_000))
            .unwrap();
    }
    db.commit().unwrap();
    let before = db.data_bytes();
    let report = db.compact().unwrap();
    let after = db.data_bytes();
    assert!(report.files_removed > 0, "{report:?}");
    assert!(after < before / 2, "before {before}, after {after}");
    let on_disk: u64 = std::fs::read_dir(dir.path().join("d"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert_eq!(on_disk, after);
    let expect = |i: usize| {
        if i < 20 {
            big(i + 7, 20_000)
        } else {
            big(i + 2, 20_000)
        }
    };
    for i in 0..40 {
        assert_eq!(
            db.get(format!("k{i}").as_bytes()).unwrap().unwrap(),
            expect(i)
        );
    }
    let v = verify(dir.path()).unwrap();
    assert!(v.is_ok(), "{:?}", v.problems);
    drop(db);
    let db = Db::open_or_create(dir.path(), o).unwrap();
    for i in 0..40 {
        assert_eq!(
            db.get(format!("k{i}").as_bytes()).unwrap().unwrap(),
            expect(i)
        );
    }
}

#[test]
fn verify_reports_a_flipped_byte_and_a_truncated_file() {
    let dir = tempfile::tempdir().unwrap();
    let o = DbOptions {
        compression: Compression::None,
        ..opts()
    };
    let db = Db::open_or_create(dir.path(), o).unwrap();
    db.put(b"small", b"inline").unwrap();
    db.put(b"large", &big(3, 4000)).unwrap();
    db.commit().unwrap();
    drop(db);
    assert!(verify(dir.path()).unwrap().is_ok());
    let file = std::fs::read_dir(dir.path().join("d"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let good = std::fs::read(&file).unwrap();
    // The node follows the 4000-byte value; flip a byte inside it.
    let mut bad = good.clone();
    bad[4000 + 20] ^= 0x01;
    std::fs::write(&file, &bad).unwrap();
    let r = verify(dir.path()).unwrap();
    assert!(!r.is_ok());
    assert!(
        r.problems.iter().any(|p| p.contains("CRC")),
        "{:?}",
        r.problems
    );
    assert!(Db::open_or_create(dir.path(), opts()).is_err());
    // Truncated: the node is gone past the end.
    std::fs::write(&file, &good[..3000]).unwrap();
    assert!(!verify(dir.path()).unwrap().is_ok());
}

#[test]
fn corrupt_manifests_fail_to_open_without_panic() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_or_create(dir.path(), opts()).unwrap();
    db.put(b"k", b"v").unwrap();
    db.commit().unwrap();
    drop(db);
    let path = dir.path().join("manifest.ocdbt");
    let good = std::fs::read(&path).unwrap();
    for i in 0..good.len() {
        let mut bad = good.clone();
        bad[i] ^= 0x40;
        std::fs::write(&path, &bad).unwrap();
        assert!(Db::open_or_create(dir.path(), opts()).is_err(), "byte {i}");
    }
    std::fs::write(&path, &good[..good.len() - 1]).unwrap();
    assert!(Db::open_or_create(dir.path(), opts()).is_err());
}

#[test]
fn compaction_racing_puts_commits_and_file_rolls_loses_nothing() {
    // Small data files roll constantly and background compaction starts
    // after almost every commit, while writers put and commit in parallel:
    // a value appended to a file compaction picks must be relocated, and
    // the file being written to must never be deleted.
    let dir = tempfile::tempdir().unwrap();
    let o = DbOptions {
        target_data_file_size: 64 << 10,
        auto_compact_garbage_ratio: Some(0.05),
        compact_file_garbage_ratio: 0.05,
        keep_versions: 2,
        ..opts()
    };
    let db = Db::open_or_create(dir.path(), o.clone()).unwrap();
    std::thread::scope(|s| {
        for t in 0..4usize {
            let db = db.clone();
            s.spawn(move || {
                for round in 0..150usize {
                    let key = format!("t{t}/k{}", round % 7);
                    db.put(key.as_bytes(), &big(t * 1000 + round, 3000 + round * 13))
                        .unwrap();
                    if round % 3 == 0 {
                        db.commit().unwrap();
                    }
                }
                db.commit().unwrap();
            });
        }
        s.spawn(|| {
            for _ in 0..40 {
                db.compact().unwrap();
                std::thread::yield_now();
            }
        });
    });
    db.commit().unwrap();
    let expect = |t: usize, k: usize| {
        let round = (0..150).filter(|r| r % 7 == k).max().unwrap();
        big(t * 1000 + round, 3000 + round * 13)
    };
    // Every key holds its last write.
    let check_all = |db: &Db| {
        for t in 0..4 {
            for k in 0..7 {
                let key = format!("t{t}/k{k}");
                assert_eq!(
                    db.get(key.as_bytes()).unwrap().unwrap(),
                    expect(t, k),
                    "{key}"
                );
            }
        }
    };
    check_all(&db);
    drop(db);
    let report = verify(dir.path()).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let db = Db::open_or_create(dir.path(), o).unwrap();
    check_all(&db);
}

#[test]
fn compact_reclaims_garbage_in_the_file_being_written() {
    // One key rewritten by many commits: every old copy sits in the one
    // data file still open for appends (far below its target size).
    let dir = tempfile::tempdir().unwrap();
    let o = DbOptions {
        keep_versions: 1,
        ..opts()
    };
    let db = Db::open_or_create(dir.path(), o).unwrap();
    for i in 0..20 {
        db.put(b"k", &big(i, 100_000)).unwrap();
        db.commit().unwrap();
    }
    let before = db.data_bytes();
    let r = db.compact().unwrap();
    assert!(r.files_removed >= 1, "{r:?}");
    assert!(
        db.data_bytes() < before / 5,
        "{} of {before} bytes left",
        db.data_bytes()
    );
    assert_eq!(db.get(b"k").unwrap().unwrap(), big(19, 100_000));
    drop(db);
    assert!(verify(dir.path()).unwrap().problems.is_empty());
}

/// Blocks the data files under `dir/d` occupy on disk.
fn data_blocks(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir.join("d"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().blocks() * 512)
        .sum()
}

#[test]
fn reclaim_punches_out_what_nothing_references_and_keeps_every_live_value() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_or_create(
        dir.path(),
        DbOptions {
            keep_versions: 3,
            ..opts()
        },
    )
    .unwrap();
    for i in 0..64 {
        db.put(format!("keep/{i}").as_bytes(), &big(i, 40_000))
            .unwrap();
        db.put(format!("gone/{i}").as_bytes(), &big(i + 1, 40_000))
            .unwrap();
    }
    db.commit().unwrap();
    // Deleted but still in the kept versions: only history can free it.
    db.delete_prefix(b"gone/").unwrap();
    // Never referenced by any version: a pending value overwritten.
    db.put(b"pending", &big(4, 40_000)).unwrap();
    db.put(b"pending", &big(5, 40_000)).unwrap();
    db.put(b"keep/0", &big(99, 40_000)).unwrap();
    let full = data_blocks(dir.path());
    let first = db.reclaim(false).unwrap();
    assert!(first > 0, "nothing punched out ({full} bytes on disk)");
    assert!(data_blocks(dir.path()) < full);
    let second = db.reclaim(true).unwrap();
    assert!(
        second >= 50 * 40_000,
        "history given up, the deleted values should go: {second} bytes"
    );
    assert_eq!(db.get(b"keep/0").unwrap().unwrap(), big(99, 40_000));
    for i in 1..64 {
        assert_eq!(
            db.get(format!("keep/{i}").as_bytes()).unwrap().unwrap(),
            big(i, 40_000)
        );
    }
    assert_eq!(db.get(b"pending").unwrap().unwrap(), big(5, 40_000));
    assert_eq!(db.get(b"gone/3").unwrap(), None);
    db.commit().unwrap();
    drop(db);
    assert!(verify(dir.path()).unwrap().is_ok());
    let db = Db::open_or_create(dir.path(), opts()).unwrap();
    assert_eq!(db.get(b"keep/0").unwrap().unwrap(), big(99, 40_000));
    assert_eq!(db.get(b"keep/63").unwrap().unwrap(), big(63, 40_000));
}

/// Every record kind a real database holds decodes, and its body seeds the
/// store fuzzer (`fuzz/fuzz_targets/store.rs`: selector byte, then the body)
/// when CKPTFS_FUZZ_SEEDS names a directory (fuzz/make-seeds.sh sets it).
#[test]
fn real_records_decode_and_seed_the_store_fuzzer() {
    use super::envelope::{BTREE_NODE_MAGIC, MANIFEST_MAGIC, VERSION_NODE_MAGIC};
    use super::tree_read::{walk_tree, Visit};
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_or_create(
        dir.path(),
        DbOptions {
            max_inline_value_bytes: 64,
            keep_versions: 6,
            ..opts()
        },
    )
    .unwrap();
    // Past one bucket of 16 generations, so older versions sit in a
    // version-tree node; inline and out-of-line values, two prefixes.
    for g in 0..20usize {
        for i in 0..30 {
            db.put(
                format!("{g:02}/c/{i}").as_bytes(),
                &big(i, 10 + 300 * (i % 3)),
            )
            .unwrap();
        }
        db.put(b"zarr.json", format!("{{\"g\":{g}}}").as_bytes())
            .unwrap();
        db.commit().unwrap();
    }
    let mut seeds: Vec<(String, Vec<u8>)> = Vec::new();
    let raw = std::fs::read(dir.path().join(db::MANIFEST_FILE)).unwrap();
    let m = manifest::decode(&raw).unwrap();
    seeds.push((
        "manifest".into(),
        [
            &[0u8][..],
            &envelope::decode(&raw, MANIFEST_MAGIC, 1 << 20).unwrap(),
        ]
        .concat(),
    ));
    seeds.push(("manifest-record".into(), [&[5u8][..], &raw].concat()));
    assert!(!m.version_nodes.is_empty(), "no version-tree node written");
    for (i, n) in m.version_nodes.iter().enumerate() {
        let f = &m.files[n.location.file];
        let bytes = std::fs::read(dir.path().join(&f.full)).unwrap();
        let rec =
            &bytes[n.location.offset as usize..(n.location.offset + n.location.length) as usize];
        version_tree::decode(rec, "", m.config.version_tree_arity_log2).unwrap();
        let body = envelope::decode(rec, VERSION_NODE_MAGIC, 1 << 20).unwrap();
        seeds.push((
            format!("version-node-{i}"),
            [&[2u8, m.config.version_tree_arity_log2][..], &body].concat(),
        ));
    }
    let newest = db.committed.lock().last().cloned().unwrap();
    let mut nodes = 0;
    walk_tree(&*db, &newest, 16 << 20, &mut |v| {
        if let Visit::Node(r) = v {
            let rec = r.file.read_at(r.offset, r.length)?;
            btree::decode(&rec, "", 16 << 20)?;
            let body = envelope::decode(&rec, BTREE_NODE_MAGIC, 16 << 20)?;
            // After the height byte: the node's data-file table.
            seeds.push((format!("btree-node-{nodes}"), [&[1u8][..], &body].concat()));
            seeds.push((
                format!("file-table-{nodes}"),
                [&[3u8][..], &body[1..]].concat(),
            ));
            nodes += 1;
        }
        Ok(())
    })
    .unwrap();
    assert!(nodes > 0);
    if let Ok(out) = std::env::var("CKPTFS_FUZZ_SEEDS") {
        let out = std::path::Path::new(&out);
        std::fs::create_dir_all(out).unwrap();
        for (name, bytes) in seeds.iter().take(40) {
            std::fs::write(out.join(format!("seed-{name}")), bytes).unwrap();
        }
    }
}

#[test]
fn a_reader_of_a_dropped_version_holds_off_compaction_until_it_goes() {
    let dir = tempfile::tempdir().unwrap();
    let o = DbOptions {
        keep_versions: 1,
        target_data_file_size: 256 << 10,
        ..opts()
    };
    let db = Db::open_or_create(dir.path(), o).unwrap();
    for i in 0..40 {
        db.put(format!("k{i}").as_bytes(), &big(i, 20_000)).unwrap();
    }
    let g1 = db.commit().unwrap();
    let reader = Db::open_newest(dir.path()).unwrap();
    assert_eq!(reader.opened_generation(), Some(g1));
    for i in 0..40 {
        db.put(format!("k{i}").as_bytes(), &big(i + 1, 20_000))
            .unwrap();
    }
    db.commit().unwrap();
    assert!(Db::open_version(dir.path(), g1).is_err(), "g1 still kept");
    let report = db.compact().unwrap();
    assert!(report.skipped_for_readers, "{report:?}");
    assert_eq!(report.files_removed, 0);
    // A full disk's hole punching waits for the reader too.
    assert_eq!(db.reclaim(false).unwrap(), 0);
    for i in 0..40 {
        assert_eq!(
            reader.get(format!("k{i}").as_bytes()).unwrap().unwrap(),
            big(i, 20_000),
            "k{i} as version {g1} holds it"
        );
    }
    drop(reader);
    let report = db.compact().unwrap();
    assert!(!report.skipped_for_readers, "{report:?}");
    assert!(report.files_removed > 0, "{report:?}");
}

/// A `Remote` over a copy of a database's files, counting its reads.
#[derive(Debug)]
struct CopiedRemote {
    dir: std::path::PathBuf,
    reads: std::sync::atomic::AtomicUsize,
}

impl Remote for CopiedRemote {
    fn get(&self, key: &str) -> std::io::Result<Vec<u8>> {
        std::fs::read(self.dir.join(key))
    }
    fn read_at(&self, key: &str, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        std::fs::File::open(self.dir.join(key))?.read_exact_at(buf, offset)
    }
    fn size(&self, key: &str) -> std::io::Result<u64> {
        Ok(std::fs::metadata(self.dir.join(key))?.len())
    }
    fn describe(&self) -> String {
        format!("copy:{}", self.dir.display())
    }
}

#[test]
fn a_copy_elsewhere_opens_read_only_through_its_remote() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_or_create(dir.path(), opts()).unwrap();
    db.put(b"a/c/0", &big(0, 5000)).unwrap();
    db.put(b"a/c/1", &big(1, 7000)).unwrap();
    db.commit().unwrap();
    db.put(b"a/c/0", &big(2, 5000)).unwrap();
    db.commit().unwrap();
    drop(db);
    // The copy: the manifest and the data files, nothing else.
    let copy = tempfile::tempdir().unwrap();
    std::fs::create_dir(copy.path().join("d")).unwrap();
    std::fs::copy(
        dir.path().join("manifest.ocdbt"),
        copy.path().join("manifest.ocdbt"),
    )
    .unwrap();
    for e in std::fs::read_dir(dir.path().join("d")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), copy.path().join("d").join(e.file_name())).unwrap();
    }
    let remote = Arc::new(CopiedRemote {
        dir: copy.path().to_path_buf(),
        reads: Default::default(),
    });
    let newest = Db::open_remote(remote.clone(), None).unwrap();
    assert!(newest.is_read_only());
    assert_eq!(newest.opened_generation(), Some(2));
    assert_eq!(newest.get(b"a/c/0").unwrap().unwrap(), big(2, 5000));
    assert_eq!(
        newest.get_range(b"a/c/1", 100, 50).unwrap().unwrap(),
        big(1, 7000)[100..150]
    );
    let before = remote.reads.load(std::sync::atomic::Ordering::Relaxed);
    assert!(before > 0, "values were read through the remote");
    assert!(
        newest.put(b"x", b"y").is_err(),
        "a remote database is read-only"
    );
    let first = Db::open_remote(remote.clone(), Some(1)).unwrap();
    assert_eq!(first.get(b"a/c/0").unwrap().unwrap(), big(0, 5000));
    assert!(Db::open_remote(remote, Some(9)).is_err());
    // A copy without its data files fails with an error naming the object.
    std::fs::remove_dir_all(copy.path().join("d")).unwrap();
    let gone = Arc::new(CopiedRemote {
        dir: copy.path().to_path_buf(),
        reads: Default::default(),
    });
    let err = Db::open_remote(gone, None)
        .err()
        .expect("data files are missing");
    assert!(err.to_string().contains("copy:"), "{err}");
}

#[test]
fn a_sealed_copy_is_never_written_again_and_opens_as_the_version_it_froze() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_or_create(dir.path(), opts()).unwrap();
    db.put(b"a/c/0", &big(0, 5000)).unwrap();
    db.commit().unwrap();
    let _pin = db.pin_versions().unwrap();
    let sealed = db.seal_for_copy().unwrap();
    assert!(!sealed.files.is_empty());
    let sizes = |files: &[String]| -> Vec<u64> {
        files
            .iter()
            .map(|f| std::fs::metadata(dir.path().join(f)).unwrap().len())
            .collect()
    };
    let before = sizes(&sealed.files);
    // Writes after the seal go to new files; the sealed ones stay as they were.
    db.put(b"a/c/1", &big(1, 5000)).unwrap();
    db.commit().unwrap();
    assert_eq!(sizes(&sealed.files), before);
    assert!(db.seal_for_copy().unwrap().files.len() > sealed.files.len());
    // The frozen manifest and files alone are the version it named.
    let copy = tempfile::tempdir().unwrap();
    std::fs::create_dir(copy.path().join(data_file::DATA_DIR)).unwrap();
    for f in &sealed.files {
        std::fs::copy(dir.path().join(f), copy.path().join(f)).unwrap();
    }
    std::fs::write(copy.path().join(db::MANIFEST_FILE), &sealed.manifest).unwrap();
    let old = Db::open_version(copy.path(), 1).unwrap();
    assert_eq!(old.get(b"a/c/0").unwrap().unwrap(), big(0, 5000));
    assert_eq!(old.get(b"a/c/1").unwrap(), None);
}

#[test]
fn dead_files_go_without_a_copy_and_nothing_kept_points_into_them() {
    let dir = tempfile::tempdir().unwrap();
    let o = DbOptions {
        keep_versions: 2,
        target_data_file_size: 64 << 10,
        ..opts()
    };
    let db = Db::open_or_create(dir.path(), o).unwrap();
    let _ = std::fs::create_dir_all(dir.path().join(data_file::DATA_DIR));
    let sizes = || -> std::collections::BTreeMap<String, u64> {
        std::fs::read_dir(dir.path().join(data_file::DATA_DIR))
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    format!("d/{}", e.file_name().to_str().unwrap()),
                    e.metadata().unwrap().len(),
                )
            })
            .collect()
    };
    for round in 0..5 {
        for i in 0..10 {
            db.put(format!("k{i}").as_bytes(), &big(i + round, 20_000))
                .unwrap();
        }
        db.commit().unwrap();
        // As a writer that publishes does: no file is appended to twice.
        db.seal_for_copy().unwrap();
    }
    // A value written and not committed yet lives in a file of its own.
    db.put(b"pending", &big(99, 20_000)).unwrap();
    db.seal_for_copy().unwrap();
    let before = sizes();
    let report = db.drop_dead_files(false).unwrap();
    assert!(report.files_removed > 0, "{report:?}");
    assert_eq!(report.bytes_copied, 0);
    let after = sizes();
    for (f, len) in &after {
        if let Some(old) = before.get(f) {
            assert_eq!(len, old, "{f} was written again");
        }
    }
    let gone: Vec<&String> = before.keys().filter(|f| !after.contains_key(*f)).collect();
    assert_eq!(gone.len(), report.files_removed, "{gone:?}");
    let r = referenced(dir.path()).unwrap();
    assert_eq!(r.generations, vec![4, 5]);
    for f in &r.files {
        assert!(after.contains_key(f), "{f} is referenced but was dropped");
    }
    for f in gone {
        assert!(!r.files.contains(f), "{f} was dropped while referenced");
    }
    for i in 0..10 {
        assert_eq!(
            db.get(format!("k{i}").as_bytes()).unwrap().unwrap(),
            big(i + 4, 20_000)
        );
    }
    assert_eq!(db.get(b"pending").unwrap().unwrap(), big(99, 20_000));
    db.commit().unwrap();
    let v = verify(dir.path()).unwrap();
    assert!(v.is_ok(), "{:?}", v.problems);
    assert_eq!(db.get(b"pending").unwrap().unwrap(), big(99, 20_000));
}

#[test]
fn a_reopened_database_reclaims_what_a_killed_writer_never_committed() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_or_create(dir.path(), opts()).unwrap();
    db.put(b"kept", &big(1, 20_000)).unwrap();
    db.commit().unwrap();
    db.seal_for_copy().unwrap();
    // Appended, never committed: what a crash in the middle of a save leaves.
    db.put(b"lost", &big(2, 300_000)).unwrap();
    drop(db);
    let files = || {
        std::fs::read_dir(dir.path().join(data_file::DATA_DIR))
            .unwrap()
            .count()
    };
    let before = files();
    let db = Db::open_or_create(dir.path(), opts()).unwrap();
    assert_eq!(db.get(b"lost").unwrap(), None);
    let r = db.drop_dead_files(false).unwrap();
    assert_eq!(r.files_removed, 1, "{r:?}");
    assert!(r.bytes_reclaimed >= 300_000, "{r:?}");
    assert_eq!(files(), before - 1);
    assert_eq!(db.get(b"kept").unwrap().unwrap(), big(1, 20_000));
    assert!(verify(dir.path()).unwrap().is_ok());
}

#[test]
fn an_evicted_file_frees_its_blocks_and_reads_from_the_copy_also_after_a_reopen() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let copy = tempfile::tempdir().unwrap();
    std::fs::create_dir(copy.path().join("d")).unwrap();
    let remote = Arc::new(CopiedRemote {
        dir: copy.path().to_path_buf(),
        reads: Default::default(),
    });
    let as_remote = || Some(remote.clone() as Arc<dyn Remote>);
    let db = Db::open_or_create_with_copy(dir.path(), opts(), as_remote()).unwrap();
    db.put(b"a", &big(1, 300_000)).unwrap();
    db.commit().unwrap();
    let sealed = db.seal_for_copy().unwrap();
    db.put(b"b", &big(2, 300_000)).unwrap();
    db.commit().unwrap();
    // The file being appended to is never evicted.
    let current = db.writer.lock().as_ref().unwrap().path.clone();
    assert!(db.evict(&current).is_err());
    for f in &sealed.files {
        std::fs::copy(dir.path().join(f), copy.path().join(f)).unwrap();
    }
    let mut freed = 0;
    for f in &sealed.files {
        freed += db.evict(f).unwrap();
        let m = std::fs::metadata(dir.path().join(f)).unwrap();
        assert_eq!(m.blocks(), 0, "{f} still holds blocks");
        assert!(m.len() > 0, "{f} lost its length");
    }
    assert!(freed >= 300_000, "{freed}");
    let before = remote.reads.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(db.get(b"a").unwrap().unwrap(), big(1, 300_000));
    assert!(remote.reads.load(std::sync::atomic::Ordering::Relaxed) > before);
    assert_eq!(db.get(b"b").unwrap().unwrap(), big(2, 300_000));
    drop(db);
    // Reopened without the copy: refused, never zeros.
    let err = Db::open_or_create(dir.path(), opts())
        .err()
        .expect("needs the copy");
    assert!(err.to_string().contains("evicted"), "{err}");
    let db = Db::open_or_create_with_copy(dir.path(), opts(), as_remote()).unwrap();
    assert_eq!(db.get(b"a").unwrap().unwrap(), big(1, 300_000));
    db.put(b"c", &big(3, 1000)).unwrap();
    db.commit().unwrap();
    assert_eq!(db.get(b"b").unwrap().unwrap(), big(2, 300_000));
}

#[test]
fn a_batch_of_changes_is_in_a_commit_whole_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_or_create(dir.path(), opts()).unwrap();
    db.put(b"n/a", b"one").unwrap();
    db.put(b"n/b", &big(2, 100)).unwrap();
    db.put(b"n/a/x", b"below a").unwrap();
    db.commit().unwrap();
    // Swaps n/a (and what is below it) with n/b through a scratch name,
    // over and over, while another thread commits.
    let swap = |from: &[u8], to: &[u8]| {
        vec![
            Change::Delete(to.to_vec()),
            Change::DeletePrefix([to, b"/"].concat()),
            Change::Copy(from.to_vec(), to.to_vec()),
            Change::Delete(from.to_vec()),
            Change::RenamePrefix([from, b"/"].concat(), [to, b"/"].concat()),
        ]
    };
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let writer = {
        let (db, stop, done) = (Arc::clone(&db), Arc::clone(&stop), Arc::clone(&done));
        let mut all = swap(b"n/a", b"s");
        all.extend(swap(b"n/b", b"n/a"));
        all.extend(swap(b"s", b"n/b"));
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                db.apply(&all).unwrap();
                n += 1;
                done.store(n, std::sync::atomic::Ordering::Relaxed);
            }
            n
        })
    };
    for i in 0..40 {
        while done.load(std::sync::atomic::Ordering::Relaxed) <= i {
            std::thread::yield_now();
        }
        db.commit().unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(writer.join().unwrap() > 0);
    db.commit().unwrap();
    let kept: Vec<u64> = versions(dir.path())
        .unwrap()
        .iter()
        .map(|v| v.generation)
        .collect();
    for g in kept {
        let v = Db::open_version(dir.path(), g).unwrap();
        let keys: Vec<Vec<u8>> = v.list_prefix(b"").into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys.len(), 3, "version {g}: {keys:?}");
        let a = v.get(b"n/a").unwrap().unwrap();
        let b = v.get(b"n/b").unwrap().unwrap();
        let below = [b"n/a/x".as_slice(), b"n/b/x"]
            .iter()
            .filter(|k| v.get(k).unwrap().is_some())
            .count();
        assert_eq!(below, 1, "version {g}");
        assert!(
            (a.as_ref() == b"one" && b.as_ref() == big(2, 100).as_slice())
                || (b.as_ref() == b"one" && a.as_ref() == big(2, 100).as_slice()),
            "version {g}: a half-made swap"
        );
    }
}
