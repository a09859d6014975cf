//! Prints figures, asserts nothing about time (a run whose scenarios failed ends the bench
//! with exit 1 and no figure): the seed suite's wall time on the container backend and on
//! the local backend, measured in the same process, alternating, after one warm-up run of each
//! (the warm-up builds or finds the operand image and fills the fixture cache); medians of N
//! runs and their ratio (issue 13's goal: container ≤ 2× local).
//!
//!     cargo bench -p cnpg-ext-harness --bench container [-- RUNS]
//!
//! The engine and its flags come from the environment, as for the binary
//! (`CNPG_EXT_HARNESS_ENGINE_FLAGS`, `CNPG_EXT_HARNESS_RUN_FLAGS`, …).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use cnpg_ext_harness::run::{self as app, BackendKind, RunOptions};
use cnpg_ext_harness::EngineOptions;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn options(backend: BackendKind) -> RunOptions {
    RunOptions {
        paths: vec![PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../scenarios"))],
        backend,
        jobs: 2,
        engine: EngineOptions::from_env(),
        ..RunOptions::default()
    }
}

/// One suite run; exits with the harness's code if the run itself cannot happen.
async fn suite(backend: BackendKind) -> Duration {
    let t = Instant::now();
    match app::run(options(backend)).await {
        Ok(out) => {
            let failed =
                out.report.scenarios.iter().filter(|s| s.status != cnpg_ext_harness::run::Status::Passed).count();
            if failed > 0 {
                // A run whose scenarios failed did not do the work being timed: no figure.
                eprintln!("{failed} scenario(s) did not pass on {backend:?}: {}", out.report.failures());
                std::process::exit(1);
            }
        }
        Err(e) => {
            eprintln!("{backend:?} suite could not run: {e}");
            std::process::exit(e.exit_code().code());
        }
    }
    t.elapsed()
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let runs: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(3).max(1);
    let warm_local = suite(BackendKind::Local).await;
    let warm_container = suite(BackendKind::Container).await;
    println!("warm-up: local {:.2} s, container {:.2} s", warm_local.as_secs_f64(), warm_container.as_secs_f64());
    let (mut local, mut container) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        local.push(suite(BackendKind::Local).await);
        container.push(suite(BackendKind::Container).await);
    }
    let fmt = |v: &[Duration]| v.iter().map(|d| format!("{:.2}", d.as_secs_f64())).collect::<Vec<_>>().join(" ");
    println!("local runs (s):     {}", fmt(&local));
    println!("container runs (s): {}", fmt(&container));
    let (l, c) = (median(local), median(container));
    println!(
        "seed suite, jobs 2, median of {runs}: local {:.2} s, container {:.2} s, ratio {:.2}× (goal ≤ 2×)",
        l.as_secs_f64(),
        c.as_secs_f64(),
        c.as_secs_f64() / l.as_secs_f64()
    );
}
