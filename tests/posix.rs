//! POSIX behaviour of a real mount, driven by std::fs and by real tools.

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::process::Command;

use common::{layouts, repo_config, Mount};

fn each_layout(test: impl Fn(&Mount)) {
    let tmp = tempfile::tempdir().expect("tmp");
    for (_, config) in layouts(tmp.path()) {
        let mut m = Mount::new(Some(config));
        test(&m);
        m.unmount();
    }
}

fn errno(r: std::io::Result<impl Sized>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

#[test]
fn rename_over_existing_file_replaces_it_and_keeps_open_reader() {
    each_layout(|m| {
        fs::write(m.path("old"), b"old contents").expect("write old");
        fs::write(m.path("new.tmp"), b"new contents!").expect("write new");
        let mut reader = File::open(m.path("old")).expect("open old");
        fs::rename(m.path("new.tmp"), m.path("old")).expect("rename over");
        assert_eq!(fs::read(m.path("old")).expect("read"), b"new contents!");
        assert!(!m.path("new.tmp").exists());
        let mut got = Vec::new();
        reader.read_to_end(&mut got).expect("read replaced");
        assert_eq!(got, b"old contents");
    });
}

#[test]
fn rename_of_directories_and_errors() {
    each_layout(|m| {
        fs::create_dir_all(m.path("a/b")).expect("mkdir");
        fs::write(m.path("a/b/f"), b"x").expect("write");
        fs::rename(m.path("a"), m.path("c")).expect("rename dir");
        assert_eq!(fs::read(m.path("c/b/f")).expect("read moved"), b"x");
        fs::create_dir(m.path("empty")).expect("mkdir empty");
        fs::rename(m.path("c/b"), m.path("empty")).expect("rename over empty dir");
        assert_eq!(fs::read(m.path("empty/f")).expect("read"), b"x");
        fs::create_dir(m.path("full")).expect("mkdir");
        fs::write(m.path("full/g"), b"y").expect("write");
        assert_eq!(
            errno(fs::rename(m.path("empty"), m.path("full"))),
            libc::ENOTEMPTY
        );
        assert_eq!(
            errno(fs::rename(m.path("full"), m.path("full/sub"))),
            libc::EINVAL
        );
        assert_eq!(
            errno(fs::rename(m.path("full/g"), m.path("empty"))),
            libc::EISDIR
        );
        assert_eq!(errno(fs::rename(m.path("nope"), m.path("x"))), libc::ENOENT);
    });
}

#[test]
fn directories_and_errnos() {
    each_layout(|m| {
        fs::create_dir(m.path("d")).expect("mkdir");
        assert_eq!(errno(fs::create_dir(m.path("d"))), libc::EEXIST);
        fs::write(m.path("d/f"), b"1").expect("write");
        assert_eq!(errno(fs::remove_dir(m.path("d"))), libc::ENOTEMPTY);
        assert_eq!(errno(fs::remove_file(m.path("d"))), libc::EISDIR);
        assert_eq!(errno(fs::read(m.path("missing"))), libc::ENOENT);
        assert_eq!(errno(fs::remove_dir(m.path("d/f"))), libc::ENOTDIR);
        assert_eq!(
            errno(
                OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(m.path("d/f"))
            ),
            libc::EEXIST
        );
        fs::remove_file(m.path("d/f")).expect("unlink");
        fs::remove_dir(m.path("d")).expect("rmdir");
        // Names the backing store uses for itself are ordinary names here.
        fs::write(m.path("zarr.json"), b"user data").expect("write zarr.json");
        fs::create_dir(m.path("%x")).expect("mkdir %x");
        let mut names: Vec<_> = fs::read_dir(&m.mnt)
            .expect("readdir")
            .map(|e| e.expect("e").file_name().into_string().expect("utf8"))
            .collect();
        names.sort();
        // `.ckptfs` is the profiler's virtual directory (a dot-name).
        assert_eq!(names, vec!["%x", ".ckptfs", "zarr.json"]);
        assert_eq!(fs::read(m.path("zarr.json")).expect("read"), b"user data");
    });
}

#[test]
fn truncate_chmod_utimens_symlink_and_append() {
    each_layout(|m| {
        let p = m.path("t");
        fs::write(&p, vec![7u8; 10_000]).expect("write");
        let f = OpenOptions::new().write(true).open(&p).expect("open");
        f.set_len(20_000).expect("grow");
        f.set_len(5_000).expect("shrink");
        drop(f);
        let data = fs::read(&p).expect("read");
        assert_eq!(data, vec![7u8; 5_000]);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(fs::metadata(&p).expect("stat").mode() & 0o777, 0o600);
        let st = Command::new("touch")
            .args(["-m", "-d", "2001-02-03 04:05:06"])
            .arg(&p)
            .status()
            .expect("touch");
        assert!(st.success());
        assert_eq!(fs::metadata(&p).expect("stat").mtime(), 981_173_106);
        std::os::unix::fs::symlink("t", m.path("link")).expect("symlink");
        assert_eq!(
            fs::read_link(m.path("link")).expect("readlink").to_str(),
            Some("t")
        );
        assert_eq!(fs::read(m.path("link")).expect("follow").len(), 5_000);
        let mut a = OpenOptions::new().append(true).open(&p).expect("append");
        a.write_all(b"tail").expect("append write");
        drop(a);
        let data = fs::read(&p).expect("read");
        assert_eq!(data.len(), 5_004);
        assert_eq!(&data[5_000..], b"tail");
        // O_TRUNC on open.
        let mut t = OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&p)
            .expect("trunc");
        t.write_all(b"short").expect("write");
        drop(t);
        assert_eq!(fs::read(&p).expect("read"), b"short");
    });
}

#[test]
fn safetensors_style_truncate_then_fill_is_byte_exact() {
    // The Python safetensors writer sizes the file first, then fills it.
    each_layout(|m| {
        let p = m.path(".tmpAbC123");
        let mut seed = 99u64;
        let mut data = vec![0u8; 3_000_000];
        common::fill(&mut data, &mut seed);
        let mut f = OpenOptions::new()
            .write(true)
            .read(true)
            .create_new(true)
            .mode(0o644)
            .open(&p)
            .expect("create");
        f.set_len(data.len() as u64).expect("presize");
        for part in data.chunks(1 << 16) {
            f.write_all(part).expect("fill");
        }
        f.sync_all().expect("fsync");
        drop(f);
        fs::rename(&p, m.path("model.safetensors")).expect("publish");
        assert_eq!(fs::read(m.path("model.safetensors")).expect("read"), data);
    });
}

#[test]
fn dd_and_cp_round_trip() {
    each_layout(|m| {
        let src = m.root.path().join("src.bin");
        let st = Command::new("dd")
            .args(["if=/dev/urandom", "bs=1M", "count=9", "status=none"])
            .arg(format!("of={}", src.display()))
            .status()
            .expect("dd");
        assert!(st.success());
        let st = Command::new("cp")
            .arg(&src)
            .arg(m.path("copy.bin"))
            .status()
            .expect("cp");
        assert!(st.success());
        let st = Command::new("dd")
            .arg(format!("if={}", src.display()))
            .arg(format!("of={}", m.path("dd.bin").display()))
            .args(["bs=100000", "status=none", "conv=fsync"])
            .status()
            .expect("dd into mount");
        assert!(st.success());
        let want = fs::read(&src).expect("src");
        assert_eq!(fs::read(m.path("copy.bin")).expect("copy"), want);
        assert_eq!(fs::read(m.path("dd.bin")).expect("dd"), want);
        let st = Command::new("cmp")
            .arg(&src)
            .arg(m.path("copy.bin"))
            .status()
            .expect("cmp");
        assert!(st.success());
    });
}

#[test]
fn second_mount_of_a_live_backing_dir_is_refused() {
    let m = Mount::new(Some(repo_config("passthrough")));
    let other = m.root.path().join("mnt2");
    fs::create_dir(&other).expect("mnt2");
    let out = Command::new(common::BIN)
        .arg("mount")
        .arg(&m.backing)
        .arg(&other)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(msg.contains("already in use"), "{msg}");
}

#[test]
fn bad_config_fails_with_a_clear_message_and_status_2() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = common::write_config(tmp.path(), "bad", "[layout]\ncodec = \"lz4\"\n");
    fs::create_dir(tmp.path().join("m")).expect("m");
    let out = Command::new(common::BIN)
        .arg("mount")
        .arg("--config")
        .arg(&cfg)
        .arg(tmp.path().join("b"))
        .arg(tmp.path().join("m"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(
        msg.contains("layout.codec") && msg.contains("\"zstd\""),
        "{msg}"
    );
}

#[test]
fn statfs_and_daemon_mode() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (b, mnt) = (tmp.path().join("b"), tmp.path().join("m"));
    fs::create_dir(&mnt).expect("m");
    let st = Command::new(common::BIN)
        .args(["mount", "--daemon", "--log"])
        .arg(tmp.path().join("log"))
        .arg(&b)
        .arg(&mnt)
        .status()
        .expect("daemon");
    assert!(st.success());
    // The parent returned only once the mount answers.
    fs::write(mnt.join("x"), b"daemon").expect("write");
    let df = Command::new("df").arg(&mnt).output().expect("df");
    assert!(df.status.success());
    let st = Command::new(common::BIN)
        .arg("umount")
        .arg(&mnt)
        .status()
        .expect("umount");
    assert!(st.success());
    assert!(b.join("x").join("zarr.json").exists());
}

#[test]
fn fifos_sockets_and_device_nodes_are_made_listed_and_survive_a_remount() {
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    use std::os::unix::fs::FileTypeExt;
    let mut m = Mount::new(None);
    let perm = Mode::from_bits_truncate(0o640);
    mknod(&m.path("fifo"), SFlag::S_IFIFO, perm, 0).expect("mkfifo");
    mknod(&m.path("sock"), SFlag::S_IFSOCK, perm, 0).expect("mknod socket");
    mknod(&m.path("chr"), SFlag::S_IFCHR, perm, makedev(1, 3)).expect("mknod char");
    mknod(&m.path("blk"), SFlag::S_IFBLK, perm, makedev(7, 9)).expect("mknod block");
    let check = |m: &Mount| {
        let ft = |n: &str| fs::symlink_metadata(m.path(n)).expect("stat").file_type();
        assert!(ft("fifo").is_fifo());
        assert!(ft("sock").is_socket());
        assert!(ft("chr").is_char_device());
        assert!(ft("blk").is_block_device());
        let chr = fs::symlink_metadata(m.path("chr")).expect("stat");
        assert_eq!(chr.rdev(), makedev(1, 3));
        assert_eq!(chr.mode() & 0o7777, 0o640);
        let mut names: Vec<_> = fs::read_dir(&m.mnt)
            .expect("readdir")
            .map(|e| {
                let e = e.expect("entry");
                (
                    e.file_name().into_string().expect("utf8"),
                    e.file_type().expect("type"),
                )
            })
            .filter(|(n, _)| n != ".ckptfs")
            .collect();
        names.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(names.len(), 4);
        assert!(names[0].1.is_block_device() && names[1].1.is_char_device());
        assert!(names[2].1.is_fifo() && names[3].1.is_socket());
    };
    check(&m);
    // The kernel runs a fifo itself: data passes through without the daemon.
    let writer = {
        let p = m.path("fifo");
        std::thread::spawn(move || fs::write(p, b"through the pipe").expect("write fifo"))
    };
    assert_eq!(
        fs::read(m.path("fifo")).expect("read fifo"),
        b"through the pipe"
    );
    writer.join().expect("writer");
    m.remount();
    check(&m);
    fs::remove_file(m.path("fifo")).expect("unlink fifo");
    fs::rename(m.path("sock"), m.path("sock2")).expect("rename socket");
    m.remount();
    assert!(!m.path("fifo").exists());
    assert!(fs::symlink_metadata(m.path("sock2"))
        .expect("stat")
        .file_type()
        .is_socket());
    m.unmount();
}

#[test]
fn names_of_name_max_bytes_work_for_files_dirs_and_renames() {
    each_layout(|m| {
        let long = "f".repeat(255);
        fs::write(m.path(&long), b"x").expect("create 255-byte name");
        assert_eq!(fs::read(m.path(&long)).expect("read"), b"x");
        let dir = "d".repeat(255);
        fs::create_dir(m.path(&dir)).expect("mkdir 255-byte name");
        fs::rename(m.path(&long), m.path(&dir).join(&long)).expect("rename");
        assert_eq!(
            errno(fs::write(m.path(&"g".repeat(256)), b"x")),
            libc::ENAMETOOLONG
        );
        // Looking up a name longer than NAME_MAX is ENAMETOOLONG too, not ENOENT.
        assert_eq!(
            errno(fs::metadata(m.path(&"g".repeat(256)))),
            libc::ENAMETOOLONG
        );
        let p = m.path(&dir).join("h".repeat(256));
        assert_eq!(
            errno(fs::set_permissions(&p, fs::Permissions::from_mode(0o600))),
            libc::ENAMETOOLONG
        );
    });
}

#[test]
fn unlinked_open_file_has_no_links_and_still_reads_and_writes() {
    use std::os::unix::fs::FileExt;
    each_layout(|m| {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(m.path("gone"))
            .expect("create");
        fs::remove_file(m.path("gone")).expect("unlink");
        assert_eq!(f.metadata().expect("fstat").nlink(), 0);
        f.write_all_at(b"still here", 0).expect("write");
        let mut buf = [0u8; 10];
        f.read_exact_at(&mut buf, 0).expect("read");
        assert_eq!(&buf, b"still here");
        fs::write(m.path("kept"), b"k").expect("create");
        assert_eq!(fs::metadata(m.path("kept")).expect("stat").nlink(), 1);
    });
}

/// `ckptfs check-config X | head`: a reader that went away ends the command
/// by SIGPIPE, like other Unix tools, not by a panic (exit 101).
#[test]
fn a_closed_output_pipe_does_not_panic_the_cli() {
    use std::os::unix::process::ExitStatusExt;
    for _ in 0..3 {
        let mut child = Command::new(common::BIN)
            .arg("check-config")
            .arg(repo_config("default"))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn ckptfs");
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("wait");
        assert_ne!(
            out.status.code(),
            Some(101),
            "panicked: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() || out.status.signal() == Some(libc::SIGPIPE),
            "{:?}",
            out.status
        );
    }
}

/// Paths longer than PATH_MAX below the mount (the kernel hands a FUSE
/// filesystem one name at a time, so only the backing dir limits depth)
/// are longer still under the backing dir; the mount reaches them below
/// an open ancestor. Files, hard links, symlinks, fifos and renames down
/// there work and survive a remount, and `verify` walks them.
#[test]
fn paths_longer_than_path_max_work_across_remounts() {
    use std::os::fd::AsRawFd;
    use std::path::PathBuf;
    let level = |i: usize| format!("{i:02}{}", "d".repeat(238));
    let join = |range: std::ops::Range<usize>| -> String {
        range.map(level).collect::<Vec<_>>().join("/")
    };
    // 20 levels of 240-byte names: ~4.8 KB below the mount, reached as
    // /proc/self/fd/N (level 10, opened by its ~2.4 KB path) + the rest.
    let reach = |m: &Mount| -> (File, PathBuf) {
        let mid = File::open(m.path(&join(0..10))).expect("open level 10");
        let p = PathBuf::from(format!("/proc/self/fd/{}", mid.as_raw_fd())).join(join(10..20));
        (mid, p)
    };
    let tmp = tempfile::tempdir().expect("tmp");
    for (layout, config) in layouts(tmp.path()) {
        let mut m = Mount::new(Some(config));
        fs::create_dir_all(m.path(&join(0..10))).expect("mkdir -p mid");
        let (mid, deep) = reach(&m);
        fs::create_dir_all(&deep).expect("mkdir -p deep");
        let data = common::random(300_000, 31);
        fs::write(deep.join("f.bin"), &data).expect("write deep file");
        fs::hard_link(deep.join("f.bin"), deep.join("g.bin")).expect("link deep");
        std::os::unix::fs::symlink("f.bin", deep.join("s")).expect("symlink deep");
        nix::unistd::mkfifo(
            &deep.join("p"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .expect("mkfifo deep");
        fs::rename(deep.join("g.bin"), deep.join("h.bin")).expect("rename deep");
        // Renaming a directory on the way down moves what is below it.
        let above = deep.parent().expect("parent").to_path_buf();
        fs::rename(&deep, above.join(level(19))).expect("rename deep dir back");
        drop(mid);
        m.remount();
        let (mid, deep) = reach(&m);
        assert!(
            fs::read(deep.join("f.bin")).expect("read f") == data,
            "{layout}: f.bin"
        );
        assert!(
            fs::read(deep.join("h.bin")).expect("read h") == data,
            "{layout}: h.bin"
        );
        assert_eq!(
            fs::metadata(deep.join("h.bin")).expect("stat h").nlink(),
            2,
            "{layout}: nlink"
        );
        assert_eq!(
            fs::read_link(deep.join("s")).expect("readlink"),
            std::path::Path::new("f.bin")
        );
        fs::remove_file(deep.join("f.bin")).expect("unlink deep");
        drop(mid);
        m.unmount();
        let (code, out) = common::verify(&m.backing);
        assert_eq!(code, 0, "{layout}: verify:\n{out}");
        assert!(out.contains("1 files"), "{layout}: verify saw:\n{out}");
        m.start();
        let (mid, deep) = reach(&m);
        assert!(
            fs::read(deep.join("h.bin")).expect("read h") == data,
            "{layout}: h.bin"
        );
        drop(mid);
        fs::remove_dir_all(m.path(&level(0))).expect("rm -r deep");
        m.unmount();
    }
}

/// Tools that make a tree durable fsync every directory in it (an
/// extractor's last pass, `sync -f`); the reserved `.ckptfs` directory is
/// one of them and has nothing to flush.
#[test]
fn fsync_of_every_directory_succeeds_the_reserved_one_included() {
    let m = Mount::new(None);
    fs::create_dir(m.path("d")).expect("mkdir");
    fs::write(m.path("d/f"), b"x").expect("write");
    for dir in ["", "d", ".ckptfs"] {
        File::open(m.path(dir))
            .and_then(|d| d.sync_all())
            .unwrap_or_else(|e| panic!("fsync of directory {dir:?}: {e}"));
    }
}

/// A missing name is answered as a negative entry the kernel keeps: every
/// way of making that name through the mount shows it at once, and a
/// name removed reads as missing at once.
#[test]
fn names_looked_up_while_missing_appear_as_soon_as_they_are_made() {
    each_layout(|m| {
        type Make<'a> = &'a dyn Fn(&std::path::Path);
        let made: [(&str, Make); 6] = [
            ("f", &|p| fs::write(p, b"x").expect("create")),
            ("d", &|p| fs::create_dir(p).expect("mkdir")),
            ("s", &|p| {
                std::os::unix::fs::symlink("f", p).expect("symlink")
            }),
            ("l", &|p| fs::hard_link(m.path("f"), p).expect("link")),
            ("r", &|p| {
                fs::write(m.path("tmp"), b"y").expect("write tmp");
                fs::rename(m.path("tmp"), p).expect("rename");
            }),
            ("n", &|p| {
                nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o600))
                    .expect("mkfifo")
            }),
        ];
        for (name, make) in made {
            let p = m.path(name);
            // Twice: the second answer may come from the kernel's cache.
            for _ in 0..2 {
                assert_eq!(errno(fs::symlink_metadata(&p)), libc::ENOENT, "{name}");
            }
            make(&p);
            assert!(
                fs::symlink_metadata(&p).is_ok(),
                "{name} missing after it was made"
            );
        }
        assert_eq!(errno(fs::metadata(m.path("tmp"))), libc::ENOENT);
        fs::remove_file(m.path("r")).expect("unlink");
        assert_eq!(errno(fs::metadata(m.path("r"))), libc::ENOENT);
        fs::write(m.path("r"), b"again").expect("create again");
        assert_eq!(fs::read(m.path("r")).expect("read"), b"again");
    });
}
