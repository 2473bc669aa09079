//! What the profiler costs per FUSE operation, measured in-process: the
//! throughput benchmarks on a shared disk vary by more than the overhead.
//!
//!   cargo run --release --example profiler_cost [PROFILE.json]
//!
//! With a profile (from a mount), the cost is also shown as a share of the
//! mean read and write latency recorded there.

use std::time::Instant;

use ckptfs::profile::{Level, Profiler};

fn per_op_ns(level: Level, n: u64) -> f64 {
    let p = Profiler::new(level);
    let start = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        p.op(
            if i % 2 == 0 { "write" } else { "read" },
            t,
            1 << 20,
            false,
            Some("model.safetensors"),
        );
        p.add_backend_write(1 << 20);
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

fn main() {
    let n = 2_000_000;
    // The loop's own cost (taking the clock) is what `off` measures.
    let off = per_op_ns(Level::Off, n);
    let counters = per_op_ns(Level::Counters, n);
    let full = per_op_ns(Level::Full, n);
    println!("profiler cost per operation: off {off:.0} ns, counters {counters:.0} ns, full {full:.0} ns");
    println!("added by full over off: {:.0} ns per operation", full - off);
    if let Some(path) = std::env::args().nth(1) {
        let doc: serde_json::Value = match std::fs::read(&path).map(|b| serde_json::from_slice(&b))
        {
            Ok(Ok(v)) => v,
            _ => {
                eprintln!("cannot read profile {path}");
                std::process::exit(1);
            }
        };
        let p = doc.get("profile").unwrap_or(&doc);
        for op in ["write", "read"] {
            let mean = p["ops"][op]["mean_s"].as_f64().unwrap_or(0.0);
            if mean > 0.0 {
                println!(
                    "{op}: mean latency {:.1} us; profiler share {:.3}%",
                    mean * 1e6,
                    (full - off) / (mean * 1e9) * 100.0
                );
            }
        }
    }
}
