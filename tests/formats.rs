//! Checkpoints written through a real mount by the real tools (numpy,
//! safetensors, torch) read back byte-identical under every lossless
//! layout, load to equal tensors, and their arrays open in TensorStore and
//! zarr-python; a lossy layout rounds floats only; malformed files are kept
//! as bytes, never executed, never written outside the backing dir.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::{repo_config, write_config, Mount};

fn script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/checkpoint_io.py")
}

/// Runs the script; returns what it printed.
fn python(args: &[&dyn AsRef<std::ffi::OsStr>]) -> String {
    let mut cmd = Command::new("python3");
    cmd.arg(script());
    for a in args {
        cmd.arg(a);
    }
    let out = cmd.output().expect("run python3");
    assert!(
        out.status.success(),
        "checkpoint_io.py {:?} failed:\n{}{}",
        args.iter()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .collect::<Vec<_>>(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn require_python_tools() {
    let ok = Command::new("python3")
        .args(["-c", "import numpy, safetensors, torch, tensorstore, zarr"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "these tests need python3 with numpy safetensors torch tensorstore zarr (pip install them)"
    );
}

fn same_bytes(a: &Path, b: &Path) {
    let st = Command::new("cmp").arg(a).arg(b).status().expect("cmp");
    assert!(st.success(), "{} and {} differ", a.display(), b.display());
}

/// Saves through the mount, keeps the as-written bytes, remounts cold.
fn save_and_remount(m: &mut Mount, big: u64) -> std::path::PathBuf {
    let dir = m.path("ck");
    fs::create_dir(&dir).expect("mkdir");
    python(&[&"save", &dir, &"--big-bytes", &big.to_string()]);
    let written = m.root.path().join("written");
    fs::create_dir_all(&written).expect("written dir");
    for f in ["model.safetensors", "model.pt"] {
        fs::copy(dir.join(f), written.join(f)).expect("copy out");
    }
    m.remount();
    written
}

#[test]
fn checkpoints_round_trip_byte_exact_on_every_lossless_layout() {
    require_python_tools();
    let tmp = tempfile::tempdir().expect("tmp");
    // A budget far below the 4 MB tensor: assembled chunk by chunk.
    let tight = write_config(
        tmp.path(),
        "tight-budget",
        "[layout]\nper_dim_max = 64\nraw_chunk_bytes = 65536\n[io]\nmemory_budget = 1048576\nconcurrency = 2\n",
    );
    let mut configs: Vec<_> = [
        "tensorstore-basic",
        "t5x",
        "ts-chunks",
        "ts-compression",
        "ts-concurrency",
        "recommended",
        "zstd",
        "default",
        "passthrough",
        "ts-ocdbt",
    ]
    .iter()
    .map(|n| (n.to_string(), repo_config(n)))
    .collect();
    configs.push(("tight-budget".into(), tight));
    // Byte-shuffled zstd chunks in the packed index: read back by the
    // mount, and by zarr-python from the keys TensorStore's ocdbt driver lists.
    let shuffled_packed = write_config(
        tmp.path(),
        "zstd-shuffle-packed",
        "[layout]\ntarget_bytes = 1048576\ncodec = \"zstd\"\nshuffle = true\nindex = \"packed\"\n",
    );
    configs.push(("zstd-shuffle-packed".into(), shuffled_packed));
    for (name, cfg) in configs {
        let mut m = Mount::new(Some(cfg));
        let written = save_and_remount(&mut m, 4 << 20);
        let dir = m.path("ck");
        for f in ["model.safetensors", "model.pt"] {
            same_bytes(&dir.join(f), &written.join(f));
        }
        python(&[&"compare", &dir, &written]);
        if name != "passthrough" {
            let out = python(&[&"arrays", &m.backing.join("ck"), &written]);
            // Layouts with `shuffle = true` byte-shuffle every float array.
            let shuffled = name.starts_with("zstd");
            assert_eq!(
                !out.contains("(0 byte-shuffled)"),
                shuffled,
                "{name}: arrays said {out}"
            );
        }
        m.unmount();
    }
}

#[test]
fn lossy_layouts_round_floats_through_the_stored_dtype_only() {
    require_python_tools();
    for (cfg, dtype) in [("ts-float16", "float16"), ("zstd-bf16", "bfloat16")] {
        let mut m = Mount::new(Some(repo_config(cfg)));
        let dir = m.path("ck");
        fs::create_dir(&dir).expect("mkdir");
        python(&[&"save", &dir]);
        let reference = m.root.path().join("reference");
        fs::create_dir_all(&reference).expect("ref");
        python(&[&"save", &reference]);
        m.remount();
        python(&[&"compare", &dir, &reference, &"--lossy", &dtype]);
        let out = python(&[&"arrays", &m.backing.join("ck"), &reference]);
        // zstd-bf16 byte-shuffles its 2-byte elements; ts-float16 has no codec.
        assert_eq!(
            !out.contains("(0 byte-shuffled)"),
            cfg == "zstd-bf16",
            "{cfg}: arrays said {out}"
        );
        m.unmount();
    }
}

#[test]
fn malformed_checkpoints_are_kept_as_bytes_and_nothing_runs() {
    require_python_tools();
    let mut m = Mount::new(Some(repo_config("tensorstore-basic")));
    let outside_before: Vec<_> = fs::read_dir(m.root.path())
        .expect("ls")
        .map(|e| e.expect("e").file_name())
        .collect();
    let dir = m.path("h");
    fs::create_dir(&dir).expect("mkdir");
    let reference = m.root.path().join("hostile-ref");
    fs::create_dir_all(&reference).expect("ref");
    let _ = fs::remove_file("/tmp/pwn");
    python(&[&"hostile", &dir, &reference]);
    m.remount();
    let mut n = 0;
    for entry in fs::read_dir(&reference).expect("ls ref") {
        let name = entry.expect("e").file_name();
        same_bytes(&dir.join(&name), &reference.join(&name));
        n += 1;
    }
    assert!(n >= 7);
    assert!(!Path::new("/tmp/pwn").exists(), "the pickle was executed");
    let mut outside_after: Vec<_> = fs::read_dir(m.root.path())
        .expect("ls")
        .map(|e| e.expect("e").file_name())
        .collect();
    outside_after.retain(|n| n != "hostile-ref");
    let mut before = outside_before;
    before.sort();
    outside_after.sort();
    assert_eq!(
        before, outside_after,
        "files appeared outside the backing dir"
    );
    // The mount is still up and writable.
    fs::write(m.path("after.txt"), b"still here").expect("write after");
    m.unmount();
}
