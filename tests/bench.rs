//! `ckptfs bench` end to end: the built binary saves and loads the tiny
//! preset through real mounts and writes results.json, results.md and the
//! figure.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_ckptfs");

fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("ckptfs-bench-test")
        .tempdir_in(std::env::var("CKPTFS_TEST_DIR").unwrap_or_else(|_| "/var/tmp".into()))
        .expect("tempdir")
}

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Runs `ckptfs bench ARGS --out DIR/out --work-dir DIR`; returns the exit
/// status, stdout and the parsed results.json.
fn bench(dir: &Path, args: &[&str]) -> (std::process::ExitStatus, String, Value) {
    let out = dir.join("out");
    let o = Command::new(BIN)
        .arg("bench")
        .args(args)
        .arg("--out")
        .arg(&out)
        .arg("--work-dir")
        .arg(dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run ckptfs bench");
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    let text = std::fs::read_to_string(out.join("results.json"))
        .unwrap_or_else(|e| panic!("no results.json ({e}); stdout:\n{stdout}\nstderr:\n{stderr}"));
    let json: Value = serde_json::from_str(&text).expect("results.json is JSON");
    (o.status, format!("{stdout}\n{stderr}"), json)
}

fn strategy<'a>(r: &'a Value, name: &str) -> &'a Value {
    r["strategies"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("strategy {name} missing from results"))
}

#[test]
fn tiny_preset_through_plain_passthrough_and_chunked_records_every_run() {
    let dir = scratch();
    let (status, log, r) = bench(
        dir.path(),
        &[
            "--preset",
            "tiny",
            "--strategies",
            "plain,passthrough,chunked",
            "--runs",
            "2",
        ],
    );
    assert!(status.success(), "bench failed:\n{log}");
    assert_eq!(r["model"]["tensors"], 21, "{log}");
    assert_eq!(r["strategies"].as_array().map(Vec::len), Some(3));
    for name in ["plain", "passthrough", "chunked"] {
        let s = strategy(&r, name);
        assert_eq!(s["status"], "ok", "{name}: {s}");
        let runs = s["runs"].as_array().expect("runs");
        assert_eq!(runs.len(), 2, "{name}");
        for run in runs {
            let f = |k: &str| run[k].as_f64().unwrap_or(-1.0);
            assert!(f("save_s") > 0.0 && f("load_s") > 0.0, "{name}: {run}");
            assert_eq!(run["verification"]["passed"], true, "{name}: {run}");
            assert_eq!(run["verification"]["exact"], true, "{name}: {run}");
            assert!(
                run["backing"]["bytes"].as_u64().unwrap_or(0) > 4_000_000,
                "{name}: {run}"
            );
            assert!(
                run["backing"]["files"].as_u64().unwrap_or(0) >= 1,
                "{name}: {run}"
            );
        }
        // Each round starts one strategy later: plain, passthrough,
        // chunked first, then passthrough, chunked, plain.
        let places: Vec<u64> = runs
            .iter()
            .map(|r| r["place"].as_u64().unwrap_or(0))
            .collect();
        let want = match name {
            "plain" => [1, 3],
            "passthrough" => [2, 1],
            _ => [3, 2],
        };
        assert_eq!(places, want, "{name}: places of its runs");
        // A lossless layout stores the same bytes every time.
        assert_eq!(
            runs[0]["backing"]["apparent_bytes"], runs[1]["backing"]["apparent_bytes"],
            "{name}"
        );
        assert_eq!(
            runs[0]["backing"]["files"], runs[1]["backing"]["files"],
            "{name}"
        );
        assert_eq!(s["summary"]["sizes_equal_across_runs"], true, "{name}");
        if name == "passthrough" {
            // The kernel wrote the file itself: the daemon saw its opens.
            assert!(
                runs[0]["profile_save"]["passthrough_opens"]
                    .as_u64()
                    .unwrap_or(0)
                    > 0,
                "{name}: {}",
                runs[0]
            );
        } else if name != "plain" {
            assert!(
                runs[0]["daemon_peak_rss_save_bytes"].as_u64().unwrap_or(0) > 0,
                "{name}"
            );
            assert!(
                runs[0]["profile_save"]["ops"]["write"]["count"]
                    .as_u64()
                    .unwrap_or(0)
                    > 0,
                "{name}: {}",
                runs[0]
            );
        }
    }
    assert_eq!(r["baseline"], "plain");
    assert!(r["machine"]["cores"].as_u64().unwrap_or(0) >= 1);
    assert!(strategy(&r, "chunked")["config_toml"]
        .as_str()
        .unwrap_or("")
        .contains("[layout]"));

    let out = dir.path().join("out");
    let png = std::fs::read(out.join("results.png")).expect("results.png");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    assert!(png.len() > 20_000, "figure is only {} bytes", png.len());
    let md = std::fs::read_to_string(out.join("results.md")).expect("results.md");
    assert!(md.contains("| strategy | save s | load s |"), "{md}");
    for name in ["| plain |", "| passthrough |", "| chunked |"] {
        assert!(md.contains(name), "{name} missing from:\n{md}");
    }
    assert!(
        log.contains("fastest save:") && log.contains("smallest lossless layout:"),
        "{log}"
    );
}

#[test]
fn a_mount_that_refuses_its_config_is_reported_unavailable() {
    let dir = scratch();
    let configs = dir.path().join("configs");
    std::fs::create_dir_all(&configs).expect("configs dir");
    std::fs::copy(
        repo("mount-configs/passthrough.toml"),
        configs.join("passthrough.toml"),
    )
    .expect("copy config");
    std::fs::write(configs.join("refused.toml"), "[layout]\ncodec = \"lz5\"\n")
        .expect("write config");
    let configs_arg = configs.to_string_lossy().into_owned();
    let (status, log, r) = bench(
        dir.path(),
        &["--preset", "tiny", "--runs", "1", "--configs", &configs_arg],
    );
    assert!(
        status.success(),
        "an unavailable strategy must not fail the bench:\n{log}"
    );
    let refused = strategy(&r, "refused");
    assert_eq!(refused["status"], "unavailable", "{refused}");
    assert!(
        refused["reason"]
            .as_str()
            .unwrap_or("")
            .contains("layout.codec"),
        "{refused}"
    );
    assert_eq!(strategy(&r, "passthrough")["status"], "ok");
    let md = std::fs::read_to_string(dir.path().join("out/results.md")).expect("results.md");
    assert!(md.contains("| refused | unavailable: "), "{md}");
}

#[test]
fn an_external_save_tool_and_an_experiment_file_drive_the_run() {
    let dir = scratch();
    let exp = dir.path().join("study.toml");
    std::fs::write(
        &exp,
        "preset = \"tiny\"\nlayers = 1\ndtype = \"bf16\"\nstrategies = [\"plain\", \"passthrough\"]\nruns = 3\nsave_tool = \"cmd:cp {src} {dst}\"\n",
    )
    .expect("write experiment");
    let exp_arg = exp.to_string_lossy().into_owned();
    // --runs on the command line overrides the file.
    let (status, log, r) = bench(dir.path(), &["--experiment", &exp_arg, "--runs", "1"]);
    assert!(status.success(), "{log}");
    assert_eq!(r["settings"]["runs"], 1);
    assert_eq!(r["model"]["tensors"], 12, "1 layer: {log}");
    assert_eq!(r["model"]["dtypes"], "BF16");
    assert!(r["save_tool"].as_str().unwrap_or("").starts_with("cmd:"));
    assert!(r["experiment_toml"].as_str().unwrap_or("").contains("tiny"));
    for name in ["plain", "passthrough"] {
        let s = strategy(&r, name);
        assert_eq!(s["status"], "ok", "{s}");
        assert_eq!(s["runs"][0]["verification"]["passed"], true);
    }
}

/// Whether Python can import `module` (the peers' packages).
fn python_has(module: &str) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import numpy, safetensors, {module}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn compare_runs_each_direct_peer_beside_its_mount_strategy() {
    let dir = scratch();
    let (status, log, r) = bench(
        dir.path(),
        &[
            "--preset",
            "tiny",
            "--strategies",
            "plain,t5x,ts-float16",
            "--compare",
            "tensorstore,torch,safetensors",
            "--runs",
            "2",
        ],
    );
    assert!(status.success(), "bench failed:\n{log}");
    let peers = r["peers"].as_array().expect("peers in results.json");
    let names: Vec<(&str, &str)> = peers
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or(""),
                p["pairs_with"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("tensorstore:t5x", "t5x"),
            ("tensorstore:ts-float16", "ts-float16"),
            ("torch", "plain"),
            ("safetensors", "plain")
        ]
    );
    for p in peers {
        let name = p["name"].as_str().unwrap_or("");
        let module = match name {
            "torch" => "torch",
            "safetensors" => "safetensors",
            _ => "tensorstore",
        };
        if !python_has(module) {
            assert_eq!(p["status"], "unavailable", "{name} without {module}: {p}");
            continue;
        }
        assert_eq!(p["status"], "ok", "{name}: {p}\n{log}");
        let runs = p["runs"].as_array().expect("runs");
        assert_eq!(runs.len(), 2, "{name}");
        let mean = |key: &str, runs: &[Value]| {
            runs.iter()
                .map(|r| r[key].as_f64().unwrap_or(-1.0))
                .sum::<f64>()
                / runs.len() as f64
        };
        for r in runs {
            assert!(r["save_s"].as_f64().unwrap_or(0.0) > 0.0, "{name}: {r}");
            assert!(r["load_s"].as_f64().unwrap_or(0.0) > 0.0, "{name}: {r}");
            assert!(r["bytes"].as_u64().unwrap_or(0) > 0, "{name}: {r}");
        }
        // float16 storage rounds; every other peer reads back exactly.
        let lossy = name.ends_with("ts-float16");
        assert_eq!(
            runs.iter()
                .all(|r| r["max_abs_error"].as_f64() == Some(0.0)),
            !lossy,
            "{name}: {p}"
        );
        // The ratios come from this run's own figures.
        let mount = strategy(&r, p["pairs_with"].as_str().unwrap_or(""));
        let mount_runs = mount["runs"].as_array().expect("mount runs");
        for (key, speedup) in [("save_s", "save_speedup"), ("load_s", "load_speedup")] {
            let want = mean(key, runs) / mean(key, mount_runs);
            let got = p[speedup].as_f64().expect("speedup");
            assert!(
                (got - want).abs() < 1e-9 * want.max(1.0),
                "{name} {speedup}: {got} vs {want}"
            );
        }
    }
    assert!(log.contains("| t5x | tensorstore:t5x |"), "{log}");
    // The bench says where its own time went: the timed parts are the runs'
    // own figures, and the parts fit inside the total.
    let wall = &r["wall"];
    let f = |key: &str| wall[key].as_f64().unwrap_or(-1.0);
    let sum_runs = |list: &Value| -> f64 {
        list.as_array()
            .into_iter()
            .flatten()
            .flat_map(|x| x["runs"].as_array().into_iter().flatten())
            .map(|run| {
                run["save_s"].as_f64().unwrap_or(0.0) + run["load_s"].as_f64().unwrap_or(0.0)
            })
            .sum()
    };
    let near = |a: f64, b: f64| (a - b).abs() < 1e-6 * b.max(1.0);
    assert!(
        near(f("strategies_timed_s"), sum_runs(&r["strategies"])),
        "{wall}"
    );
    assert!(near(f("peers_timed_s"), sum_runs(&r["peers"])), "{wall}");
    let parts: f64 = [
        "model_s",
        "setup_s",
        "strategies_timed_s",
        "strategies_other_s",
        "peers_timed_s",
        "peers_other_s",
    ]
    .iter()
    .map(|k| {
        assert!(f(k) >= 0.0, "{k}: {wall}");
        f(k)
    })
    .sum();
    assert!(f("peers_other_s") > 0.0 && parts <= f("total_s"), "{wall}");
    assert!(log.contains("bench took "), "{log}");
    let md = std::fs::read_to_string(dir.path().join("out/results.md")).expect("results.md");
    assert!(md.contains("Direct peers on plain disk"), "{md}");
    assert!(md.contains("- bench took "), "{md}");
    // The figure gains a row of speedup panels (PNG height: IHDR bytes 20..24).
    let png = std::fs::read(dir.path().join("out/results.png")).expect("results.png");
    let height = u32::from_be_bytes([png[20], png[21], png[22], png[23]]);
    assert!(height > 2000, "figure height {height}: no speedup panels");
}

#[test]
fn compare_refuses_tensorstore_without_a_seed_layout() {
    let dir = scratch();
    let o = Command::new(BIN)
        .args([
            "bench",
            "--preset",
            "tiny",
            "--strategies",
            "plain",
            "--compare",
            "tensorstore",
        ])
        .arg("--out")
        .arg(dir.path().join("out"))
        .output()
        .expect("run ckptfs bench");
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("seed layouts"), "{err}");
}

#[test]
fn builtin_loads_split_read_from_device_time_and_a_named_gpu_is_never_a_silent_cpu() {
    let dir = scratch();
    let (status, log, r) = bench(
        dir.path(),
        &[
            "--preset",
            "tiny",
            "--strategies",
            "plain,default",
            "--runs",
            "1",
            "--device",
            "cpu",
        ],
    );
    assert!(status.success(), "{log}");
    assert_eq!(r["settings"]["device"], "cpu");
    for name in ["plain", "default"] {
        let run = &strategy(&r, name)["runs"][0];
        let read_s = run["load_phases"]["read_s"].as_f64().expect("read_s");
        let split = &run["load_phases"]["split"];
        let file = split["file_read_s"].as_f64().expect("file_read_s");
        let dev = split["to_device_s"].as_f64().expect("to_device_s");
        assert!(file > 0.0 && dev >= 0.0, "{name}: {split}");
        assert!(
            file + dev <= read_s + 1e-6,
            "{name}: {file} + {dev} > {read_s}"
        );
    }
    assert!(log.contains("where the load went"), "{log}");
    let md = std::fs::read_to_string(dir.path().join("out/results.md")).expect("results.md");
    assert!(md.contains("| strategy | load s | remount s | file read s | to cpu s |"));

    if !cfg!(feature = "cuda") {
        let o = Command::new(BIN)
            .args([
                "bench", "--preset", "tiny", "--runs", "1", "--device", "cuda:0",
            ])
            .arg("--out")
            .arg(dir.path().join("gpu"))
            .output()
            .expect("run");
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("built without CUDA"), "{err}");
        assert!(!dir.path().join("gpu/results.json").exists());
    }
}

#[test]
fn save_pretrained_shards_and_dcp_saves_through_mounts_load_back_equal() {
    // (save tool, load tool, strategies, what results.json names the loader)
    let cases: [(&str, Option<&str>, &str, &str); 3] = [
        ("save-pretrained", None, "default,ts-ocdbt", "builtin"),
        (
            "save-pretrained",
            Some("safetensors-mmap"),
            "default",
            "safe_open",
        ),
        (
            "dcp",
            None,
            "default,ts-ocdbt",
            "torch.distributed.checkpoint.load",
        ),
    ];
    for (tool, load, strategies, loader) in cases {
        let dir = scratch();
        let mut args = vec![
            "--preset",
            "tiny",
            "--dtype",
            "bf16",
            "--strategies",
            strategies,
            "--runs",
            "1",
            "--save-tool",
            tool,
        ];
        if let Some(l) = load {
            args.extend(["--load-tool", l]);
        }
        let (status, log, r) = bench(dir.path(), &args);
        assert!(status.success(), "{tool}: {log}");
        let recorded = r["load_tool"].as_str().unwrap_or_default();
        assert!(recorded.contains(loader), "{tool}: load tool {recorded}");
        let model_bytes = r["model"]["bytes"].as_u64().expect("model bytes");
        for name in strategies.split(',') {
            let s = strategy(&r, name);
            assert_eq!(s["status"], "ok", "{tool} {name}: {log}");
            let run = &s["runs"][0];
            assert_eq!(run["verification"]["passed"], true, "{tool} {name}");
            assert_eq!(run["verification"]["exact"], true, "{tool} {name}");
            assert!(run["save_s"].as_f64().unwrap_or(0.0) > 0.0);
            assert!(run["load_s"].as_f64().unwrap_or(0.0) > 0.0);
            assert!(run["save_phases"]["write_s"].as_f64().unwrap_or(0.0) > 0.0);
            // Every tensor's bytes, plus the tool's own metadata files.
            let ck = run["checkpoint_bytes"].as_u64().expect("checkpoint bytes");
            assert!(ck > model_bytes, "{tool} {name}: {ck} <= {model_bytes}");
        }
    }
}

#[test]
fn save_pretrained_shards_and_index_and_a_dcp_folder_survive_a_remount() {
    let dir = scratch();
    let model = ckptfs::bench::model::Model::from_preset(
        &ckptfs::bench::preset::TINY,
        ckptfs::bench::model::ModelDtype::Bf16,
        7,
        false,
        &candle_core::Device::Cpu,
    )
    .expect("model");
    let src = dir.path().join("src.safetensors");
    candle_core::safetensors::save(&model.on_device, &src).expect("source");
    let mut m = common::Mount::new(Some(common::repo_config("ts-ocdbt")));
    for (script, dst) in [("save_pretrained.py", "hf"), ("save_dcp.py", "dcp")] {
        let out = Command::new("python3")
            .arg(repo("scripts").join(script))
            .arg(&src)
            .arg(m.path(dst))
            .output()
            .expect("run the save script");
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    m.remount();
    let dcp: Vec<String> = std::fs::read_dir(m.path("dcp"))
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(dcp.iter().any(|n| n == ".metadata"), "{dcp:?}");
    assert!(dcp.iter().any(|n| n.ends_with(".distcp")), "{dcp:?}");
    let names: Vec<String> = std::fs::read_dir(m.path("hf"))
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    let shards = names
        .iter()
        .filter(|n| n.starts_with("model-") && n.ends_with(".safetensors"))
        .count();
    assert!(shards >= 2, "{names:?}");
    assert!(names.iter().any(|n| n == "model.safetensors.index.json"));
    assert!(names.iter().any(|n| n == "config.json"));
    let loaded = ckptfs::bench::model::read_checkpoint(&m.path("hf"), &candle_core::Device::Cpu)
        .expect("read the shards");
    assert_eq!(loaded.len(), model.cpu.len());
    let bytes = |t: &candle_core::Tensor| {
        t.flatten_all()
            .and_then(|t| t.to_dtype(candle_core::DType::F32))
            .and_then(|t| t.to_vec1::<f32>())
            .expect("values")
    };
    for (name, t) in &loaded {
        let (_, src_t) = model
            .cpu
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("{name} not in the source"));
        assert_eq!(t.dims(), src_t.dims(), "{name}");
        assert_eq!(bytes(t), bytes(src_t), "{name}");
    }
    m.unmount();
}
