//! OCDBT interop with TensorStore, both ways: databases TensorStore wrote
//! (committed fixtures from `scripts/ocdbt_fixture.py`) are read byte for
//! byte, and zarr3 arrays zarrs writes into a `PackedStore` open in Python
//! TensorStore with `{"driver":"ocdbt","base":"file://DIR/","path":...}`.
//!
//! Needs python3 with numpy and tensorstore; fails (never skips) without.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use ckptfs::ocdbt::{verify, versions, Db, DbOptions};
use ckptfs::store::packed::PackedStore;
use zarrs::array::codec::{BytesCodec, GzipCodec, ZstdCodec};
use zarrs::array::{data_type, ArrayBuilder, ArrayBytes, CodecOptions};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/ocdbt")
        .join(name)
}

fn expected(dir: &Path) -> (u64, BTreeMap<String, Vec<u8>>) {
    let text = std::fs::read_to_string(dir.join("expected.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let keys = v["keys"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, hex)| {
            let hex = hex.as_str().unwrap();
            let bytes = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect();
            (k.clone(), bytes)
        })
        .collect();
    (v["generation"].as_u64().unwrap(), keys)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.join("d")).unwrap();
    for sub in ["", "d"] {
        for e in std::fs::read_dir(from.join(sub)).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_file() {
                std::fs::copy(e.path(), to.join(sub).join(e.file_name())).unwrap();
            }
        }
    }
}

/// Runs a Python snippet with `args`; panics with its output on failure.
fn python(script: &str, args: &[&str]) -> String {
    let probe = Command::new("python3")
        .args(["-c", "import numpy, tensorstore"])
        .output()
        .expect("python3 is required for the OCDBT interop tests");
    assert!(
        probe.status.success(),
        "python3 with numpy and tensorstore is required for the OCDBT interop tests: {}",
        String::from_utf8_lossy(&probe.stderr)
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "python failed:\n{text}");
    text
}

fn reads_tensorstore_fixture(name: &str) {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixture(name), tmp.path());
    let (generation, want) = expected(tmp.path());
    let db = Db::open_or_create(tmp.path(), DbOptions::default()).unwrap();
    assert_eq!(db.generation(), generation);
    let listed: Vec<String> = db
        .list_prefix(b"")
        .into_iter()
        .map(|(k, size)| {
            let k = String::from_utf8(k).unwrap();
            assert_eq!(size, want[&k].len() as u64, "{k}");
            k
        })
        .collect();
    assert_eq!(listed, want.keys().cloned().collect::<Vec<_>>());
    for (k, v) in &want {
        assert_eq!(db.get(k.as_bytes()).unwrap().unwrap(), *v, "{k}");
    }
    let report = verify(tmp.path()).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    let gens: Vec<u64> = versions(tmp.path())
        .unwrap()
        .iter()
        .map(|v| v.generation)
        .collect();
    assert_eq!(gens.last(), Some(&generation));

    // Our commit on top of TensorStore's database reads back in TensorStore.
    db.put(b"added/by/ckptfs", &vec![7u8; 5000]).unwrap();
    db.put(b"added/small", b"tiny").unwrap();
    assert_eq!(db.commit().unwrap(), generation + 1);
    drop(db);
    let dir = tmp.path().to_str().unwrap();
    python(
        r#"
import json, sys, tensorstore as ts
d = sys.argv[1]
kv = ts.KvStore.open({"driver": "ocdbt", "base": "file://" + d + "/"}).result()
want = {k: bytes.fromhex(v) for k, v in json.load(open(d + "/expected.json"))["keys"].items()}
want["added/by/ckptfs"] = bytes([7]) * 5000
want["added/small"] = b"tiny"
got = sorted(k.decode() for k in kv.list().result())
assert got == sorted(want), (got, sorted(want))
for k, v in want.items():
    assert kv[k] == v, k
"#,
        &[dir],
    );
}

#[test]
fn reads_a_tensorstore_database_with_default_config_and_version_nodes() {
    reads_tensorstore_fixture("defaults");
    // Older generations live in TensorStore's version-tree nodes.
    let gens = versions(&fixture("defaults")).unwrap();
    assert!(gens.len() > 16, "{} versions", gens.len());
    let (generation, _) = expected(&fixture("defaults"));
    // A copy: a reader creates its lock file beside the manifest.
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixture("defaults"), tmp.path());
    let old = Db::open_version(tmp.path(), generation - 20).unwrap();
    assert!(!old.list_prefix(b"").is_empty());
}

#[test]
fn reads_a_tensorstore_database_with_interior_nodes() {
    reads_tensorstore_fixture("small_nodes");
    let report = verify(&fixture("small_nodes")).unwrap();
    assert!(report.nodes > report.versions, "{report:?}");
}

fn f32_value(r: u64, c: u64) -> f32 {
    (r * 7 + c) as f32 * 0.5 - 3.0
}

fn bf16_value(r: u64, c: u64) -> half::bf16 {
    half::bf16::from_f32(((r * 7 + c) % 64) as f32 - 32.0)
}

#[test]
fn zarr_arrays_in_a_packed_store_open_in_tensorstore() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Db::open_or_create(
        tmp.path(),
        DbOptions {
            keep_versions: 4,
            ..DbOptions::default()
        },
    )
    .unwrap();
    let store = Arc::new(PackedStore::new(db.clone(), "ckpt"));
    let (shape, chunk) = (vec![10u64, 7], vec![4u64, 3]);
    let opts = CodecOptions::default().with_store_empty_chunks(true);
    for (name, bf16) in [("w_f32", false), ("w_bf16", true)] {
        let (dt, fill): (_, zarrs::array::FillValue) = if bf16 {
            (data_type::bfloat16(), half::bf16::ZERO.into())
        } else {
            (data_type::float32(), 0f32.into())
        };
        let mut b = ArrayBuilder::new(shape.clone(), chunk.clone(), dt, fill);
        b.array_to_bytes_codec(Arc::new(BytesCodec::little()));
        if bf16 {
            b.bytes_to_bytes_codecs(vec![Arc::new(ZstdCodec::new(3, false))]);
        } else {
            b.bytes_to_bytes_codecs(vec![Arc::new(GzipCodec::new(1).unwrap())]);
        }
        let path = format!("/tensors/{name}");
        let array = b.build(store.clone(), &path).unwrap();
        array.store_metadata().unwrap();
        // 3 x 3 chunks; the last row and column of chunks are edge chunks.
        for ci in 0..3u64 {
            for cj in 0..3u64 {
                let mut bytes = Vec::new();
                for r in ci * 4..ci * 4 + 4 {
                    for c in cj * 3..cj * 3 + 3 {
                        let inside = r < 10 && c < 7;
                        if bf16 {
                            let v = if inside {
                                bf16_value(r, c)
                            } else {
                                half::bf16::ZERO
                            };
                            bytes.extend_from_slice(&v.to_le_bytes());
                        } else {
                            let v = if inside { f32_value(r, c) } else { 0.0 };
                            bytes.extend_from_slice(&v.to_le_bytes());
                        }
                    }
                }
                array
                    .store_chunk_opt(&[ci, cj], ArrayBytes::new_flen(bytes), &opts)
                    .unwrap();
            }
        }
    }
    let first = db.commit().unwrap();
    // More commits push the first versions into a version-tree node.
    for i in 0..17 {
        db.put(format!("ckpt/extra/{i}").as_bytes(), b"x").unwrap();
        db.commit().unwrap();
    }
    let generation = db.generation();
    assert_eq!(generation, first + 17);
    let kept: Vec<u64> = versions(tmp.path())
        .unwrap()
        .iter()
        .map(|v| v.generation)
        .collect();
    assert_eq!(kept, (generation - 3..=generation).collect::<Vec<_>>());
    let report = verify(tmp.path()).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);

    let out = python(
        r#"
import sys, numpy as np, tensorstore as ts
d, generation = sys.argv[1], int(sys.argv[2])
def arr(p):
    return ts.open({"driver": "zarr3", "kvstore": {"driver": "ocdbt", "base": "file://" + d + "/", "path": p}}, open=True).result()
r, c = np.meshgrid(np.arange(10), np.arange(7), indexing="ij")
a = arr("ckpt/tensors/w_f32/")
v = a.read().result()
assert v.dtype == np.float32 and v.shape == (10, 7), (v.dtype, v.shape)
assert np.array_equal(v, ((r * 7 + c) * 0.5 - 3).astype(np.float32)), v
b = arr("ckpt/tensors/w_bf16/")
vb = b.read().result()
assert str(vb.dtype) == "bfloat16", vb.dtype
assert np.array_equal(vb.astype(np.float32), ((r * 7 + c) % 64 - 32).astype(np.float32)), vb
dump = ts.ocdbt.dump(ts.KvStore.open("file://" + d + "/").result()).result()
assert dump["versions"][-1]["generation_number"] == generation, dump["versions"]
print("versions", [v["generation_number"] for v in dump["versions"]])
"#,
        &[tmp.path().to_str().unwrap(), &generation.to_string()],
    );
    eprintln!("{out}");
}
