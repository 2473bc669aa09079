//! The packed database's catalog as the record of the live tree: a packed
//! mount made on an empty backing dir keeps its names as `.ns/` keys and
//! each file's home under `.ckptfs/homes/<id>`, so nothing in the backing
//! dir is named after a name in the mount.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use common::{random, verify, write_config, Mount};

fn packed_config(dir: &Path) -> std::path::PathBuf {
    write_config(
        dir,
        "packed",
        "[layout]\nraw_chunk_bytes = 65536\ncodec = \"none\"\nindex = \"packed\"\n[packed]\nauto_compact_ratio = 0\n",
    )
}

fn entries(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect()
}

/// What the backing root may hold besides names: the root document, the
/// filesystem's own dir and the database's manifest and data files.
fn only_own_entries(backing: &Path) {
    for name in entries(backing) {
        assert!(
            ["zarr.json", ".ckptfs", "d"].contains(&name.as_str())
                || name.starts_with("manifest.ocdbt"),
            "the backing root holds {name}"
        );
    }
}

#[test]
fn names_live_in_the_catalog_and_homes_by_id() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut m = Mount::new(Some(packed_config(tmp.path())));
    let a = random(300_000, 1);
    let b = random(5_000, 2);
    fs::create_dir_all(m.path("ck/step1")).expect("mkdir");
    fs::write(m.path("ck/step1/a.bin"), &a).expect("write a");
    fs::write(m.path("ck/b.txt"), &b).expect("write b");
    fs::hard_link(m.path("ck/step1/a.bin"), m.path("ck/a-link.bin")).expect("link");
    std::os::unix::fs::symlink("step1/a.bin", m.path("ck/latest")).expect("symlink");
    nix::unistd::mkfifo(
        &m.path("ck/pipe"),
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )
    .expect("mkfifo");
    // A rename of a directory moves names only.
    fs::rename(m.path("ck/step1"), m.path("ck/step2")).expect("rename dir");
    fs::set_permissions(&m.mnt, std::os::unix::fs::PermissionsExt::from_mode(0o750))
        .expect("chmod root");
    only_own_entries(&m.backing);
    let homes = m.backing.join(".ckptfs/homes");
    assert_eq!(entries(&homes).len(), 2, "one home per file, not per name");

    m.remount();
    only_own_entries(&m.backing);
    assert!(fs::read(m.path("ck/step2/a.bin")).expect("read a") == a);
    assert!(fs::read(m.path("ck/a-link.bin")).expect("read link") == a);
    assert!(fs::read(m.path("ck/b.txt")).expect("read b") == b);
    assert_eq!(
        fs::metadata(m.path("ck/a-link.bin")).expect("stat").nlink(),
        2
    );
    assert_eq!(
        fs::read_link(m.path("ck/latest")).expect("readlink"),
        Path::new("step1/a.bin")
    );
    assert!(fs::symlink_metadata(m.path("ck/pipe"))
        .expect("stat pipe")
        .file_type()
        .is_fifo());
    assert!(!m.path("ck/step1").exists());
    assert_eq!(
        fs::metadata(&m.mnt).expect("stat root").mode() & 0o777,
        0o750,
        "the root's mode"
    );

    // Unlinking the last name takes the home with it.
    fs::remove_file(m.path("ck/b.txt")).expect("unlink b");
    assert_eq!(entries(&homes).len(), 1);
    m.unmount();
    let (code, out) = verify(&m.backing);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("1 files (1 further names)"), "{out}");
}

/// A name near PATH_MAX: the backing dir holds no path of that length.
#[test]
fn paths_up_to_path_max_survive_a_remount() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut m = Mount::new(Some(packed_config(tmp.path())));
    let mut rel = String::new();
    while rel.len() + 250 < 3900 {
        if !rel.is_empty() {
            rel.push('/');
        }
        rel.push_str(&"d".repeat(200));
        fs::create_dir(m.path(&rel)).expect("mkdir deep");
    }
    let file = format!("{rel}/{}", "f".repeat(120));
    let data = random(70_000, 3);
    fs::write(m.path(&file), &data).expect("write deep");
    let moved = format!("{rel}/{}", "g".repeat(120));
    fs::rename(m.path(&file), m.path(&moved)).expect("rename deep");
    m.remount();
    assert!(fs::read(m.path(&moved)).expect("read deep") == data);
    assert!(!m.path(&file).exists());
    m.unmount();
    let (code, out) = verify(&m.backing);
    assert_eq!(code, 0, "{out}");
}

/// kill -9 with a file open and never committed, and one created after the
/// last commit: the next mount shows the committed files whole, removes
/// the homes no committed name reaches, and verify finds nothing left.
#[test]
fn kill9_leaves_committed_names_and_removes_uncommitted_homes() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut m = Mount::new(Some(packed_config(tmp.path())));
    let kept = random(200_000, 4);
    fs::create_dir(m.path("ck")).expect("mkdir");
    fs::write(m.path("ck/kept.bin"), &kept).expect("write kept");
    let mut open = fs::File::create(m.path("ck/open.bin")).expect("create open");
    std::io::Write::write_all(&mut open, &random(100_000, 5)).expect("write open");
    // Its home exists while it is open.
    assert_eq!(entries(&m.backing.join(".ckptfs/homes")).len(), 2);
    m.kill9();
    drop(open);
    let (code, out) = verify(&m.backing);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("1 leftovers"), "the open file's home: {out}");
    m.start();
    assert!(fs::read(m.path("ck/kept.bin")).expect("read kept") == kept);
    assert!(!m.path("ck/open.bin").exists());
    assert_eq!(entries(&m.backing.join(".ckptfs/homes")).len(), 1);
    m.unmount();
    let (code, out) = verify(&m.backing);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("0 leftovers"), "{out}");
}

/// A backing dir that already holds names when the packed index is first
/// used keeps the directory tree as its record (the catalog follows it).
#[test]
fn a_backing_with_names_keeps_its_directory_tree() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut m = Mount::new(None);
    fs::write(m.path("old.bin"), random(10_000, 6)).expect("write old");
    m.unmount();
    m.config = Some(packed_config(tmp.path()));
    let mut p = m;
    p.start();
    fs::write(p.path("new.bin"), random(10_000, 7)).expect("write new");
    assert!(p.backing.join("new.bin").is_dir(), "a home at its name");
    assert!(!p.backing.join(".ckptfs/homes").exists());
    p.unmount();
    let (code, out) = verify(&p.backing);
    assert_eq!(code, 0, "{out}");
}

/// Symlinks with several names stay one node each, across a kill -9 right
/// after the `link` and across remounts that number nodes afresh.
#[test]
fn hard_linked_symlinks_stay_one_node_each() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut m = Mount::new(Some(packed_config(tmp.path())));
    std::os::unix::fs::symlink("target-a", m.path("a1")).expect("symlink a");
    fs::hard_link(m.path("a1"), m.path("a2")).expect("link a");
    m.kill9();
    m.start();
    for _ in 0..2 {
        let n = format!("b{}", m.pid());
        std::os::unix::fs::symlink("target-b", m.path(&n)).expect("symlink b");
        fs::hard_link(m.path(&n), m.path(&format!("{n}-2"))).expect("link b");
        m.remount();
    }
    let ino = |name: &str| fs::symlink_metadata(m.path(name)).expect("lstat").ino();
    let nlink = |name: &str| fs::symlink_metadata(m.path(name)).expect("lstat").nlink();
    assert_eq!(ino("a1"), ino("a2"));
    assert_eq!(nlink("a1"), 2);
    let mut nodes = BTreeSet::from([ino("a1")]);
    for e in entries(&m.mnt) {
        if e.starts_with('b') && !e.ends_with("-2") {
            assert_eq!(ino(&e), ino(&format!("{e}-2")), "{e}");
            assert_eq!(nlink(&e), 2, "{e}");
            nodes.insert(ino(&e));
        }
    }
    assert_eq!(nodes.len(), 3, "three nodes, none merged");
}

/// Mounted with a `files`-index config, a backing whose names live in the
/// packed index puts new files into the index too: a file closed before a
/// kill -9 is there after it.
#[test]
fn a_files_index_config_on_a_live_catalog_keeps_closed_files() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut m = Mount::new(Some(packed_config(tmp.path())));
    fs::write(m.path("first.bin"), random(50_000, 8)).expect("write first");
    m.unmount();
    m.config = None;
    m.start();
    let data = random(120_000, 9);
    fs::write(m.path("second.bin"), &data).expect("write second");
    m.kill9();
    m.start();
    assert!(fs::read(m.path("second.bin")).expect("read second") == data);
    only_own_entries(&m.backing);
    m.unmount();
    let (code, out) = verify(&m.backing);
    assert_eq!(code, 0, "{out}");
}
