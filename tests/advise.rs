//! `ckptfs advise` end to end: it measures candidate layouts on the tiny
//! preset through real mounts, and the config it writes is accepted by
//! `check-config`, mounts, and holds data; its printed front agrees with its
//! own measurements.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use common::{Mount, BIN};
use serde_json::Value;

fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("ckptfs-advise-test")
        .tempdir_in(std::env::var("CKPTFS_TEST_DIR").unwrap_or_else(|_| "/var/tmp".into()))
        .expect("tempdir")
}

/// Runs `ckptfs advise --preset tiny ARGS` in `dir`; returns stdout and the JSON.
fn advise(dir: &Path, args: &[&str]) -> (String, Value) {
    let o = Command::new(BIN)
        .args(["advise", "--preset", "tiny", "--time", "30s", "--runs", "1"])
        .args(args)
        .arg("--backing")
        .arg(dir)
        .arg("--out")
        .arg(dir.join("mine.toml"))
        .arg("--json")
        .arg(dir.join("advice.json"))
        .arg("--plot")
        .arg(dir.join("front.png"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run ckptfs advise");
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "advise failed:\n{stdout}\n{stderr}");
    let text = std::fs::read_to_string(dir.join("advice.json")).expect("advice.json");
    (stdout, serde_json::from_str(&text).expect("JSON"))
}

struct P {
    name: String,
    save: f64,
    load: f64,
    bytes: u64,
    lossy: bool,
}

fn points(j: &Value) -> Vec<P> {
    j["points"]
        .as_array()
        .expect("points")
        .iter()
        .map(|p| P {
            name: p["name"].as_str().expect("name").to_string(),
            save: p["save_s"].as_f64().expect("save_s"),
            load: p["load_s"].as_f64().expect("load_s"),
            bytes: p["bytes"].as_u64().expect("bytes"),
            lossy: p["lossy"].as_bool().expect("lossy"),
        })
        .collect()
}

fn dominated(p: &P, all: &[P]) -> bool {
    all.iter().any(|o| {
        o.save <= p.save
            && o.load <= p.load
            && o.bytes <= p.bytes
            && (o.save < p.save || o.load < p.load || o.bytes < p.bytes)
    })
}

#[test]
fn advise_writes_a_config_that_mounts_and_prints_the_front_of_its_own_figures() {
    let dir = scratch();
    let (stdout, j) = advise(dir.path(), &["--dtype", "bf16"]);
    let pts = points(&j);
    // Every first-round layout was measured (passthrough, 3 chunk sizes x
    // 2 codecs x 2 indexes), each with real figures.
    assert!(pts.len() >= 13, "{} points:\n{stdout}", pts.len());
    for p in &pts {
        assert!(p.save > 0.0 && p.load > 0.0 && p.bytes > 0, "{}", p.name);
        assert!(!p.lossy, "{} is lossy without --allow-lossy", p.name);
    }
    // The front is exactly the undominated points.
    let front: BTreeSet<String> = j["front"]
        .as_array()
        .expect("front")
        .iter()
        .map(|v| v.as_str().expect("name").to_string())
        .collect();
    let expect: BTreeSet<String> = pts
        .iter()
        .filter(|p| !dominated(p, &pts))
        .map(|p| p.name.clone())
        .collect();
    assert_eq!(front, expect);
    // The printed table marks the same front, and the choice.
    let marked: BTreeSet<String> = stdout
        .lines()
        .filter(|l| l.starts_with(" *") || l.starts_with(">*"))
        .filter_map(|l| l[2..].split_whitespace().next().map(str::to_string))
        .collect();
    assert_eq!(marked, front, "{stdout}");
    // Balanced: the least save + load, which nothing can dominate.
    let chosen = j["chosen"].as_str().expect("chosen");
    let best = pts
        .iter()
        .map(|p| p.save + p.load)
        .fold(f64::INFINITY, f64::min);
    let c = pts.iter().find(|p| p.name == chosen).expect("chosen point");
    assert!(c.save + c.load <= best * 1.03 + 1e-9, "{chosen}: {stdout}");
    assert!(stdout.contains(&format!("chosen: {chosen}:")), "{stdout}");

    // The written config: accepted, its comments cite the chosen figures,
    // and it mounts and keeps a file across a remount.
    let cfg = dir.path().join("mine.toml");
    let text = std::fs::read_to_string(&cfg).expect("config");
    assert!(text.contains(&format!("this layout ({chosen})")), "{text}");
    let st = Command::new(BIN)
        .arg("check-config")
        .arg(&cfg)
        .output()
        .expect("check-config");
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let mut m = Mount::new(Some(cfg));
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(m.path("x.bin"), &data).expect("write");
    m.remount();
    assert_eq!(std::fs::read(m.path("x.bin")).expect("read"), data);
    m.unmount();
    let png = std::fs::metadata(dir.path().join("front.png")).expect("plot");
    assert!(png.len() > 10_000);
}

#[test]
fn lossy_layouts_are_tried_only_when_allowed_and_store_fewer_bytes() {
    let dir = scratch();
    let (_, j) = advise(dir.path(), &["--dtype", "f32", "--goal", "size"]);
    assert!(points(&j).iter().all(|p| !p.lossy));

    let dir = scratch();
    let (stdout, j) = advise(
        dir.path(),
        &["--dtype", "f32", "--goal", "size", "--allow-lossy"],
    );
    let pts = points(&j);
    let lossy: Vec<&P> = pts.iter().filter(|p| p.lossy).collect();
    assert_eq!(lossy.len(), 2, "{stdout}");
    // Each narrowed layout beside the one it varies: half the bytes or less
    // (f32 to a 16-bit type), verified within rounding by the run itself.
    for p in lossy {
        let base = p.name.trim_end_matches("-bf16").trim_end_matches("-f16");
        let b = pts.iter().find(|q| q.name == base).expect("base layout");
        assert!(
            (p.bytes as f64) < 0.6 * b.bytes as f64,
            "{}: {} bytes vs {} for {base}",
            p.name,
            p.bytes,
            b.bytes
        );
    }
    // With lossy storage allowed, the smallest layout is a lossy one.
    let chosen = j["chosen"].as_str().expect("chosen");
    assert!(
        chosen.ends_with("-bf16") || chosen.ends_with("-f16"),
        "{stdout}"
    );
}
