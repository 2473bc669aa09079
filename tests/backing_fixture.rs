//! Backing dirs written by an earlier release (`tests/fixtures/backing-v1`:
//! one per index, made by the binary before small files were stored at their
//! own length) mount unchanged: every name, link, mode and byte as written,
//! `ckptfs verify` clean, and they take new writes. A change of the storage
//! layout must keep this passing or convert such dirs (`ckptfs migrate`).

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{sha256_file, verify, Mount};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/backing-v1")
        .join(name)
}

/// `find . | sort` of a tree, as the fixture lists were made.
fn tree(root: &Path) -> Vec<String> {
    let out = Command::new("sh")
        .arg("-c")
        .arg("find . | LC_ALL=C sort")
        .current_dir(root)
        .output()
        .expect("find");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with("./.ckptfs"))
        .map(str::to_string)
        .collect()
}

#[test]
fn backing_dirs_of_the_previous_release_mount_unchanged() {
    for kind in ["files", "packed"] {
        let config = fixture(&format!("{kind}.toml"));
        let mut m = Mount::new(Some(config));
        m.unmount();
        // The fixture, copied whole (links and modes kept) over the fresh dir.
        fs::remove_dir_all(&m.backing).expect("clear backing");
        let st = Command::new("cp")
            .arg("-a")
            .arg(fixture(kind))
            .arg(&m.backing)
            .status()
            .expect("cp -a");
        assert!(st.success(), "{kind}: cp -a failed");
        m.start();

        let want_tree: Vec<String> = fs::read_to_string(fixture(&format!("{kind}.tree")))
            .expect("tree list")
            .lines()
            .map(str::to_string)
            .collect();
        let mut got_tree = tree(&m.mnt);
        got_tree.sort();
        let mut want_sorted = want_tree.clone();
        want_sorted.sort();
        assert_eq!(got_tree, want_sorted, "{kind}: names");
        let sums = fs::read_to_string(fixture(&format!("{kind}.sha256"))).expect("sums");
        for line in sums.lines() {
            let (sum, name) = line.split_once("  ").expect("sha256sum line");
            let path = m.mnt.join(name.trim_start_matches("./"));
            assert_eq!(sha256_file(&path), sum, "{kind}: {name}");
        }
        let link = fs::read_link(m.path("ckpt/latest")).expect("readlink");
        assert_eq!(link, Path::new("step-1/model.safetensors"), "{kind}");
        let mode = fs::metadata(m.path("ckpt/renamed.bin"))
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{kind}: mode");
        assert!(m.path("empty-dir").is_dir(), "{kind}");

        // New writes on old files: an append to the small JSON (stored as
        // one padded chunk by that release) and a new file beside them.
        let mut config_json = fs::read(m.path("ckpt/step-1/config.json")).expect("read");
        let more = vec![b'x'; 10_000];
        fs::OpenOptions::new()
            .append(true)
            .open(m.path("ckpt/step-1/config.json"))
            .and_then(|mut f| f.write_all(&more).and_then(|()| f.sync_all()))
            .expect("append");
        config_json.extend_from_slice(&more);
        fs::write(m.path("ckpt/new.txt"), b"written by this release\n").expect("write");
        m.remount();
        assert_eq!(
            fs::read(m.path("ckpt/step-1/config.json")).expect("read"),
            config_json,
            "{kind}: appended"
        );
        assert_eq!(
            fs::read(m.path("ckpt/new.txt")).expect("read"),
            b"written by this release\n",
            "{kind}"
        );
        m.unmount();
        let (code, out) = verify(&m.backing);
        assert_eq!(code, 0, "{kind}: {out}");
    }
}
