//! Hard links through a real mount: one file under several names, on the
//! plain, chunked and packed layouts; across remounts, renames over a
//! multiply-linked name, and kill -9 in the middle of `link` and `unlink`.

mod common;

use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use common::{random, repo_config, verify, write_config, Mount, CHUNKED_LAYOUTS};

fn nlink(p: &Path) -> u64 {
    fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("stat {}: {e}", p.display()))
        .nlink()
}

fn ino(p: &Path) -> u64 {
    fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("stat {}: {e}", p.display()))
        .ino()
}

fn read(p: &Path) -> Vec<u8> {
    fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// The layouts under test: plain, chunked with zstd on the files index,
/// and the packed index.
fn configs(dir: &Path) -> Vec<(String, std::path::PathBuf)> {
    let mut all = vec![("passthrough".to_string(), repo_config("passthrough"))];
    for (name, toml) in CHUNKED_LAYOUTS {
        if ["zstd-8k", "packed-4k"].contains(&name) {
            all.push((name.to_string(), write_config(dir, name, toml)));
        }
    }
    all
}

/// Checks the names of one file after every step, then again after a
/// remount: same inode, same link count, same bytes through every name.
fn check_names(m: &Mount, names: &[&str], want: &[u8], what: &str) {
    let first = ino(&m.path(names[0]));
    for n in names {
        let p = m.path(n);
        assert_eq!(ino(&p), first, "{what}: {n} is another inode");
        assert_eq!(nlink(&p), names.len() as u64, "{what}: st_nlink of {n}");
        assert!(read(&p) == want, "{what}: bytes read through {n} differ");
    }
}

#[test]
fn one_file_under_several_names_survives_writes_unlinks_renames_and_remounts() {
    let tmp = tempfile::tempdir().expect("tmp");
    for (layout, config) in configs(tmp.path()) {
        let mut m = Mount::new(Some(config));
        let mut model = random(300_000, 7);
        fs::write(m.path("a.bin"), &model).expect("write a");
        fs::create_dir(m.path("d")).expect("mkdir");
        fs::hard_link(m.path("a.bin"), m.path("d/b.bin")).expect("link b");
        fs::hard_link(m.path("a.bin"), m.path("c.bin")).expect("link c");
        check_names(&m, &["a.bin", "d/b.bin", "c.bin"], &model, &layout);

        // A write through one name is read through the others.
        let patch = random(70_000, 8);
        let mut f = OpenOptions::new()
            .write(true)
            .open(m.path("d/b.bin"))
            .expect("open b");
        f.seek(SeekFrom::Start(100_000)).expect("seek");
        f.write_all(&patch).expect("write b");
        f.sync_all().expect("fsync b");
        drop(f);
        model[100_000..170_000].copy_from_slice(&patch);
        check_names(&m, &["a.bin", "d/b.bin", "c.bin"], &model, &layout);

        // Removing the first name (where the file's data lives) keeps the
        // file under the others, also while it is open.
        let mut held = fs::File::open(m.path("c.bin")).expect("open c");
        fs::remove_file(m.path("a.bin")).expect("unlink a");
        assert!(!m.path("a.bin").exists(), "{layout}: a.bin still there");
        check_names(&m, &["d/b.bin", "c.bin"], &model, &layout);
        let mut through_held = Vec::new();
        held.read_to_end(&mut through_held).expect("read held");
        assert!(
            through_held == model,
            "{layout}: the held open reads other bytes"
        );
        drop(held);

        m.remount();
        check_names(&m, &["d/b.bin", "c.bin"], &model, &layout);

        // Renaming one name moves only that name.
        fs::rename(m.path("c.bin"), m.path("d/c2.bin")).expect("rename c");
        check_names(&m, &["d/b.bin", "d/c2.bin"], &model, &layout);

        // A rename over one name of a multiply-linked file leaves the
        // file under its other name.
        let other = random(5_000, 9);
        fs::write(m.path("new.bin"), &other).expect("write new");
        fs::rename(m.path("new.bin"), m.path("d/b.bin")).expect("rename over b");
        assert!(
            read(&m.path("d/b.bin")) == other,
            "{layout}: b.bin is not the renamed file"
        );
        assert_eq!(nlink(&m.path("d/b.bin")), 1, "{layout}: nlink of the new b");
        check_names(&m, &["d/c2.bin"], &model, &layout);

        // fifos and symlinks take hard links too.
        nix::unistd::mkfifo(
            &m.path("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o640),
        )
        .expect("mkfifo");
        fs::hard_link(m.path("fifo"), m.path("d/fifo2")).expect("link fifo");
        std::os::unix::fs::symlink("d/c2.bin", m.path("sym")).expect("symlink");
        fs::hard_link(m.path("sym"), m.path("sym2")).expect("link symlink");
        // A directory cannot be linked.
        let e = fs::hard_link(m.path("d"), m.path("d-link")).expect_err("link of a directory");
        assert_eq!(
            e.raw_os_error(),
            Some(libc::EPERM),
            "{layout}: link of a dir"
        );

        m.remount();
        check_names(&m, &["d/c2.bin"], &model, &layout);
        assert_eq!(
            nlink(&m.path("fifo")),
            2,
            "{layout}: fifo nlink after remount"
        );
        assert_eq!(
            ino(&m.path("fifo")),
            ino(&m.path("d/fifo2")),
            "{layout}: fifo inode"
        );
        assert_eq!(nlink(&m.path("sym2")), 2, "{layout}: symlink nlink");
        assert_eq!(
            fs::read_link(m.path("sym2")).expect("readlink"),
            Path::new("d/c2.bin"),
            "{layout}: symlink target"
        );
        fs::remove_file(m.path("fifo")).expect("unlink fifo");
        assert_eq!(
            nlink(&m.path("d/fifo2")),
            1,
            "{layout}: fifo nlink after unlink"
        );

        // The last name goes: the file and its data go with it.
        fs::remove_file(m.path("d/c2.bin")).expect("unlink c2");
        m.unmount();
        let (code, out) = verify(&m.backing);
        assert_eq!(code, 0, "{layout}: verify:\n{out}");
        assert!(
            out.contains("0 leftovers"),
            "{layout}: verify left leftovers:\n{out}"
        );
        m.start();
        let mut names: Vec<_> = fs::read_dir(m.path("d"))
            .expect("ls d")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["b.bin", "fifo2"],
            "{layout}: d after the last unlink"
        );
        m.unmount();
    }
}

/// kill -9 of the daemon while a process links and unlinks names of one
/// committed file: after the restart the file is whole under every name
/// that exists, its link count is the number of those names, and verify
/// finds nothing wrong.
#[test]
fn kill9_during_link_and_unlink_leaves_every_name_whole_or_absent() {
    let tmp = tempfile::tempdir().expect("tmp");
    for (layout, config) in configs(tmp.path()) {
        let mut most_names = 0;
        for round in 0..3u64 {
            let mut m = Mount::new(Some(config.clone()));
            let model = random(200_000, 20 + round);
            fs::write(m.path("f.bin"), &model).expect("write f");
            fs::File::open(m.path("f.bin"))
                .and_then(|f| f.sync_all())
                .expect("fsync f");
            let mnt = m.mnt.clone();
            let churn = std::thread::spawn(move || {
                for i in 0..100_000u64 {
                    let name = mnt.join(format!("l{}", i % 40));
                    let r = if i % 3 == 2 {
                        fs::remove_file(&name)
                    } else {
                        fs::hard_link(mnt.join("f.bin"), &name)
                    };
                    if let Err(e) = r {
                        if e.raw_os_error() == Some(libc::ENOTCONN) {
                            return;
                        }
                    }
                }
            });
            std::thread::sleep(Duration::from_millis(80 + 70 * round));
            m.kill9();
            let _ = churn.join();
            let (code, out) = verify(&m.backing);
            assert_eq!(
                code, 0,
                "{layout} round {round}: verify after kill -9:\n{out}"
            );
            m.start();
            let mut names = vec!["f.bin".to_string()];
            for i in 0..40 {
                if m.path(&format!("l{i}")).exists() {
                    names.push(format!("l{i}"));
                }
            }
            most_names = most_names.max(names.len());
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            check_names(&m, &refs, &model, &format!("{layout} round {round}"));
            m.unmount();
            let (code, out) = verify(&m.backing);
            assert_eq!(
                code, 0,
                "{layout} round {round}: verify after remount:\n{out}"
            );
            assert!(
                out.contains(&format!("({} further names)", names.len() - 1)),
                "{layout} round {round}: verify counted other names than {}:\n{out}",
                names.len() - 1
            );
        }
        // The churn must have got somewhere before the kills.
        assert!(most_names > 2, "{layout}: no round had links at the kill");
    }
}

/// `ckptfs inspect` of a further name reports the file itself (its record
/// names only the id; inspect finds the file's home).
#[test]
fn inspect_of_a_further_name_reports_the_file() {
    let tmp = tempfile::tempdir().expect("tmp");
    for (layout, config) in configs(tmp.path()) {
        let mut m = Mount::new(Some(config));
        fs::write(m.path("a.bin"), random(100_000, 41)).expect("write a");
        fs::create_dir(m.path("d")).expect("mkdir");
        fs::hard_link(m.path("a.bin"), m.path("d/b.bin")).expect("link");
        let run = |p: &Path| {
            let out = std::process::Command::new(common::BIN)
                .arg("inspect")
                .arg("--json")
                .arg(p)
                .output()
                .expect("run ckptfs inspect");
            assert!(
                out.status.success(),
                "{layout}: inspect {}: {}",
                p.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("inspect json")
        };
        let mut first = run(&m.path("a.bin"));
        let mut other = run(&m.path("d/b.bin"));
        // Everything but the path asked about: the same backing, layout, bytes.
        for v in [&mut first, &mut other] {
            v.as_object_mut().expect("object").remove("path");
        }
        assert_eq!(first, other, "{layout}: inspect differs between the names");
        m.unmount();
    }
}
