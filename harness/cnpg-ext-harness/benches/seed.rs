//! Prints figures, asserts nothing: the seed suite's warm wall time on the local backend and
//! one bare PostgreSQL lifecycle (initdb + start + CREATE EXTENSION + stop) on the same install,
//! medians of N runs, and their ratio.
//!
//!     cargo bench -p cnpg-ext-harness --bench seed [-- RUNS]

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use cnpg_ext_harness::run::{self as app, BackendKind, RunOptions};
use cnpg_ext_harness::testing::RunAs;
use std::collections::BTreeMap;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn options() -> RunOptions {
    RunOptions {
        paths: vec![PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../scenarios"))],
        backend: BackendKind::Local,
        ..RunOptions::default()
    }
}

/// initdb + start + CREATE EXTENSION vector + stop, straight on the provisioned install.
async fn bare_lifecycle(pg: &cnpg_ext_pg::PgInstall, run_as: &RunAs) -> Duration {
    let parent = if PathBuf::from("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
    let dir = tempfile::Builder::new().prefix("cnpg-ext-bare-").tempdir_in(parent).unwrap();
    // The install must be readable by the unprivileged user: use a copy under the temp dir.
    let install = dir.path().join("pg");
    let pg = pg.minimal_copy(&install, &Default::default()).unwrap();
    run_as.own(dir.path()).unwrap();
    let data = dir.path().join("data");
    let t = Instant::now();
    let mut initdb = Command::new(pg.bin("initdb"));
    initdb.arg("-D").arg(&data).args(["-U", "postgres", "-A", "trust", "--no-sync", "--no-instructions", "--locale=C"]);
    run_as.apply(&mut initdb);
    assert!(initdb.output().unwrap().status.success());
    let mut postgres = Command::new(pg.bin("postgres"));
    postgres.arg("-D").arg(&data).arg("-k").arg(dir.path()).args(["-c", "listen_addresses=", "-c", "fsync=off"]);
    run_as.apply(&mut postgres);
    let mut child = postgres.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
    let mut cfg = tokio_postgres::Config::new();
    cfg.host_path(dir.path()).port(5432).user("postgres").dbname("postgres");
    let client = loop {
        if let Ok((c, conn)) = cfg.connect(tokio_postgres::NoTls).await {
            tokio::spawn(conn);
            break c;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    client.batch_execute("CREATE EXTENSION vector").await.unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    child.wait().unwrap();
    let took = t.elapsed();
    run_as.own(dir.path()).ok();
    took
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let runs: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(5);
    let pg = app::locate_postgres(None).expect("PostgreSQL 18");
    let run_as = RunAs::resolve(None).expect("run-as user");
    // Warm-up: provisions, fills the fixture cache.
    app::run(options()).await.expect("warm-up run");
    let mut suite = Vec::new();
    let mut bare = Vec::new();
    let mut per_scenario: BTreeMap<String, Vec<Duration>> = BTreeMap::new();
    let mut count = 0;
    for _ in 0..runs {
        let t = Instant::now();
        let out = app::run(options()).await.expect("suite run");
        suite.push(t.elapsed());
        assert_eq!(out.report.totals.failed, 0, "the suite failed during the benchmark");
        count = out.report.scenarios.len();
        for sc in &out.report.scenarios {
            per_scenario.entry(sc.id.clone()).or_default().push(Duration::from_millis(sc.duration_ms));
        }
        bare.push(bare_lifecycle(&pg, &run_as).await);
    }
    let (s, b) = (median(suite.clone()), median(bare.clone()));
    println!("every scenario in scenarios/ ({count}, warm, local, origin checks on, {runs} runs): median {:.2} s (min {:.2}, max {:.2})",
        s.as_secs_f64(), suite.iter().min().unwrap().as_secs_f64(), suite.iter().max().unwrap().as_secs_f64());
    println!("bare PostgreSQL lifecycle (initdb + start + CREATE EXTENSION + stop): median {:.3} s", b.as_secs_f64());
    println!("ratio suite / bare lifecycle: {:.2}x (goal <= 2x)", s.as_secs_f64() / b.as_secs_f64());
    println!("per scenario (median of its own duration, scenarios run {} at once):", options().jobs);
    for (id, d) in per_scenario {
        println!("  {id:<24} {:.3} s", median(d).as_secs_f64());
    }
}
