//! ckptfs mounted like any other filesystem: `mount -t ckptfs` and fstab
//! lines (util-linux `mount`, through the `/sbin/mount.ckptfs` helper),
//! `umount`, and read-only mounts that change nothing in the backing dir.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{random, repo_config, verify, BIN};

const HELPER: &str = "/sbin/mount.ckptfs";

/// Links `/sbin/mount.ckptfs` (where mount(8) looks for helpers) to this
/// build's binary. Only a link is replaced: an installed binary is left
/// alone and the test says so.
fn install_helper() {
    let want = Path::new(BIN);
    match fs::symlink_metadata(HELPER) {
        Ok(m) if !m.file_type().is_symlink() => {
            panic!("{HELPER} is not a link; remove it to test this build's helper")
        }
        Ok(_) if fs::read_link(HELPER).is_ok_and(|t| t == want) => return,
        _ => {}
    }
    let tmp = format!("{HELPER}.{}", std::process::id());
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(want, &tmp).expect("link the helper");
    fs::rename(&tmp, HELPER).expect("install the helper");
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().expect("run");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn mounted(mnt: &Path) -> bool {
    let mounts = fs::read_to_string("/proc/mounts").expect("mounts");
    let mnt = mnt.to_string_lossy().replace(' ', "\\040");
    mounts
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(mnt.as_str()))
}

/// `umount` (util-linux) of a mount, then the wait for its daemon, which
/// commits and exits on its own once the kernel lets go.
fn umount_and_wait(backing: &Path, mnt: &Path) {
    let pid: Option<i32> = fs::read_to_string(backing.join(".ckptfs/lock"))
        .ok()
        .and_then(|s| s.trim().parse().ok());
    let (ok, out) = run(Command::new("umount").arg(mnt));
    assert!(ok, "umount {}: {out}", mnt.display());
    let deadline = Instant::now() + Duration::from_secs(60);
    while let Some(pid) = pid {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat.is_empty() || stat.contains(") Z ") {
            break;
        }
        assert!(Instant::now() < deadline, "daemon {pid} still running");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every path under `dir` with its size and mtime.
fn listing(dir: &Path) -> Vec<(PathBuf, u64, i64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).expect("read dir") {
            let p = e.expect("entry").path();
            let m = fs::symlink_metadata(&p).expect("stat");
            if m.is_dir() {
                stack.push(p.clone());
            }
            out.push((p, m.len(), m.mtime_nsec() + m.mtime() * 1_000_000_000));
        }
    }
    out.sort();
    out
}

#[test]
fn mount_t_ckptfs_fstab_lines_and_read_only_mounts() {
    install_helper();
    let tmp = tempfile::tempdir().expect("tmp");
    for layout in ["default", "ts-ocdbt"] {
        let backing = tmp.path().join(format!("{layout}-backing"));
        let mnt = tmp.path().join(format!("{layout}-mnt"));
        fs::create_dir_all(&mnt).expect("mkdir");
        let config = repo_config(layout);
        let opts = format!("config={},nofail", config.display());

        // -f: says what it would run, mounts nothing.
        let (ok, out) = run(Command::new("mount")
            .args(["-f", "-v", "-t", "ckptfs", "-o", &opts])
            .arg(&backing)
            .arg(&mnt));
        assert!(ok, "mount -f: {out}");
        assert!(!mounted(&mnt), "mount -f mounted");

        let (ok, out) = run(Command::new("mount")
            .args(["-t", "ckptfs", "-o", &opts])
            .arg(&backing)
            .arg(&mnt));
        assert!(ok, "{layout}: mount -t ckptfs: {out}");
        assert!(mounted(&mnt), "{layout}: not in /proc/mounts after mount");
        let data = random(3_000_000, 7);
        fs::create_dir(mnt.join("ck")).expect("mkdir");
        fs::write(mnt.join("ck/a.bin"), &data).expect("write");
        umount_and_wait(&backing, &mnt);
        assert!(!mounted(&mnt), "{layout}: still mounted after umount");
        let (code, out) = verify(&backing);
        assert_eq!(code, 0, "{layout}: verify after umount:\n{out}");

        // What a crash could leave: a read-only mount passes it over.
        // (Where the packed catalog is the record, file homes are kept
        // by id under .ckptfs/homes.)
        let homes = backing.join(".ckptfs/homes");
        let leftover = if homes.is_dir() {
            homes.join("0123456789abcdef0123456789abcdef.ckptfs-tmp.1.1")
        } else {
            backing.join("ck/b.bin.ckptfs-tmp.1.1")
        };
        fs::create_dir_all(&leftover).expect("leftover");
        let before = listing(&backing);

        // An fstab line, read-only.
        let fstab = tmp.path().join(format!("{layout}.fstab"));
        fs::write(
            &fstab,
            format!(
                "# ckptfs\n{} {} ckptfs {},ro,x-systemd.automount 0 0\n",
                backing.display(),
                mnt.display(),
                opts
            ),
        )
        .expect("fstab");
        let (ok, out) = run(Command::new("mount").arg("-T").arg(&fstab).arg(&mnt));
        assert!(ok, "{layout}: mount from fstab: {out}");
        assert!(
            fs::read(mnt.join("ck/a.bin")).expect("read") == data,
            "{layout}: the read-only mount reads other bytes"
        );
        let e = fs::write(mnt.join("ck/c.bin"), b"x").expect_err("write on ro");
        assert_eq!(
            e.raw_os_error(),
            Some(libc::EROFS),
            "{layout}: create on ro"
        );
        let e = fs::OpenOptions::new()
            .append(true)
            .open(mnt.join("ck/a.bin"))
            .expect_err("append on ro");
        assert_eq!(
            e.raw_os_error(),
            Some(libc::EROFS),
            "{layout}: append on ro"
        );
        let (ok, out) = run(Command::new(BIN).arg("umount").arg(&mnt));
        assert!(ok, "{layout}: ckptfs umount: {out}");
        // The state folder holds the lock and the profile, as for any mount.
        let state = backing.join(".ckptfs");
        let tree = |l: Vec<(PathBuf, u64, i64)>| -> Vec<_> {
            l.into_iter()
                .filter(|(p, ..)| !p.starts_with(&state) || p.starts_with(&homes))
                .collect()
        };
        let (before, after) = (tree(before), tree(listing(&backing)));
        assert_eq!(
            before, after,
            "{layout}: the read-only mount changed the backing dir"
        );
        assert!(leftover.exists());

        // A writable mount cleans up after the crash.
        let (ok, out) = run(Command::new("mount")
            .args(["-t", "ckptfs", "-o", &opts])
            .arg(&backing)
            .arg(&mnt));
        assert!(ok, "{layout}: remount: {out}");
        assert!(!leftover.exists(), "{layout}: recovery left the leftover");
        umount_and_wait(&backing, &mnt);

        // Options it does not know are refused, with what it knows.
        let (ok, out) = run(Command::new("mount")
            .args(["-t", "ckptfs", "-o", "compress=9"])
            .arg(&backing)
            .arg(&mnt));
        assert!(!ok && out.contains("compress=9"), "{layout}: {out}");
        assert!(!mounted(&mnt));
    }
}

/// A backing dir whose files are split between the indexes (mounted with a
/// packed config, then with the `files` one): a read-only mount shows the
/// live tree, both kinds of files, as they were committed.
#[test]
fn a_read_only_mount_shows_files_of_both_indexes() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (backing, mnt) = (tmp.path().join("backing"), tmp.path().join("mnt"));
    fs::create_dir_all(&mnt).expect("mkdir");
    let mount = |extra: &[&str], config: &str| {
        let (ok, out) = run(Command::new(BIN)
            .args(["mount", "--daemon", "--config"])
            .arg(repo_config(config))
            .args(extra)
            .arg(&backing)
            .arg(&mnt));
        assert!(ok, "mount {extra:?} {config}: {out}");
    };
    let umount = || {
        let (ok, out) = run(Command::new(BIN).arg("umount").arg(&mnt));
        assert!(ok, "umount: {out}");
    };
    let packed = random(1_500_000, 1);
    let files = random(1_200_000, 2);
    mount(&[], "ts-ocdbt");
    fs::write(mnt.join("packed.bin"), &packed).expect("write packed");
    umount();
    mount(&[], "default");
    fs::write(mnt.join("files.bin"), &files).expect("write files");
    fs::rename(mnt.join("packed.bin"), mnt.join("renamed.bin")).expect("rename");
    umount();
    mount(&["--read-only"], "default");
    let mut names: Vec<_> = fs::read_dir(&mnt)
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n != ".ckptfs")
        .collect();
    names.sort();
    let read = |n: &str| fs::read(mnt.join(n)).unwrap_or_else(|e| panic!("read {n}: {e}"));
    let (got_files, got_packed) = (read("files.bin"), read("renamed.bin"));
    umount();
    assert_eq!(names, ["files.bin", "renamed.bin"]);
    assert!(
        got_files == files,
        "the files index's file reads other bytes"
    );
    assert!(got_packed == packed, "the packed file reads other bytes");
}
