//! Prints figures, asserts nothing:
//! 1. report generation for 1,000 synthetic scenario results: a run record (report.json +
//!    junit.xml + summary.md + index.html) and a matrix record of 100 cells × 10 scenarios
//!    (aggregate report.json + junit.xml + summary.md + index.html); medians of N rounds;
//! 2. the 12-cell local matrix `matrix/bench-12.yaml` with `--jobs 2`: wall time against the
//!    sum of cell times / 2 (needs the release binary next to this example).
//!
//! ```sh
//! cargo build --release -p cnpg-ext-harness
//! cargo bench -p cnpg-ext-harness --bench report [-- ROUNDS] [--no-matrix]
//! ```

use std::path::PathBuf;
use std::time::{Duration, Instant};

use cnpg_ext_harness::matrix::{
    self, CellResult, CellScenario, CellSpec, CellStatus, CellTotals, MatrixArgs, MatrixReport, Named, ScenarioSet,
};
use cnpg_ext_harness::reports::run::{Environment, RunReport, ScenarioResult};
use cnpg_ext_harness::reports::view::{Failure, RunView};
use cnpg_ext_harness::run::{Status, StepResult};

fn step(i: usize, failed: bool) -> StepResult {
    StepResult {
        index: i,
        line: 10 + i as u64 * 3,
        kind: "sql".into(),
        title: format!("sql SELECT '[1,2,3]'::vector <-> '[4,5,6]' #{i}"),
        status: if failed { Status::Failed } else { Status::Passed },
        duration_ms: 12,
        expected: failed.then(|| "rows on cluster-pgvector-1: [5.2]".into()),
        actual: failed.then(|| "rows on cluster-pgvector-1: [5.196152422706632]".into()),
        message: None,
        // As a real run records them: a few comparisons per step, the failing one last.
        checks: (1..=4)
            .map(|c| {
                let bad = failed && c == 4;
                cnpg_ext_model::judge::Check::that(
                    format!("origin of vector: module vector.so (/proc/self/maps) #{c}"),
                    Some("cluster-pgvector-1"),
                    "/extensions/pgvector/lib/vector.so",
                    if bad {
                        "/usr/lib/postgresql/18/lib/vector.so — shadowed"
                    } else {
                        "/extensions/pgvector/lib/vector.so"
                    },
                    !bad,
                )
            })
            .collect(),
        category: failed.then_some(cnpg_ext_harness::reports::category::Category::Assertion),
        evidence: Vec::new(),
    }
}

fn scenarios(n: usize) -> Vec<ScenarioResult> {
    (0..n)
        .map(|i| {
            let failed = i % 10 == 7;
            ScenarioResult {
                id: format!("scenario-{i:04}"),
                file: format!("scenarios/scenario-{i:04}/scenario.yaml"),
                description: Some("synthetic scenario for the report benchmark".into()),
                status: if failed { Status::Failed } else { Status::Passed },
                duration_ms: 300 + i as u64,
                error: None,
                steps: (1..=8).map(|s| step(s, failed && s == 5)).collect(),
                category: failed.then_some(cnpg_ext_harness::reports::category::Category::Assertion),
                attempts: Vec::new(),
            }
        })
        .collect()
}

fn run_report(n: usize) -> RunReport {
    let scenarios = scenarios(n);
    RunReport {
        schema_version: cnpg_ext_harness::reports::run::REPORT_SCHEMA_VERSION,
        harness_version: "bench".into(),
        git_revision: None,
        started_at: "2026-01-01T00:00:00Z".into(),
        duration_ms: 1,
        command: vec!["cnpg-ext-harness".into(), "run".into()],
        environment: Environment {
            backend: "local".into(),
            postgresql: "PostgreSQL 18.6".into(),
            postgresql_source: "bench".into(),
            cnpg_modelled: "1.28.2".into(),
            kubernetes: None,
            runtime: None,
            operand: None,
        },
        images: Vec::new(),
        totals: RunReport::totals_of(&scenarios),
        scenarios,
    }
}

fn matrix_report(cells: usize, per_cell: usize) -> MatrixReport {
    let results: Vec<CellResult> = (0..cells)
        .map(|c| {
            let backend = ["local", "container", "kind"][c % 3].to_string();
            let scen: Vec<CellScenario> = (0..per_cell)
                .map(|i| {
                    let failed = (c * per_cell + i) % 10 == 7;
                    CellScenario {
                        id: format!("scenario-{i:02}"),
                        status: if failed { "failed" } else { "passed" }.into(),
                        duration_ms: 300,
                        category: failed.then_some(cnpg_ext_harness::reports::category::Category::Assertion),
                        failure: failed.then(|| Failure {
                            locator: "scenarios/x/scenario.yaml:16 step 5 (L2 distance)".into(),
                            expected: Some("rows on cluster-pgvector-1: [5.2]".into()),
                            actual: Some("rows on cluster-pgvector-1: [5.196152422706632]".into()),
                            message: None,
                            category: Some(cnpg_ext_harness::reports::category::Category::Assertion),
                            evidence: Vec::new(),
                        }),
                    }
                })
                .collect();
            let failed = scen.iter().filter(|s| s.status == "failed").count();
            let id = format!("{backend}_pg{}_cnpg-1.28.{}_set{}", c % 4, c % 5, c / 15);
            CellResult {
                spec: CellSpec {
                    id: id.clone(),
                    backend,
                    postgres: Named { name: format!("pg{}", c % 4), value: "wheel".into() },
                    cnpg: format!("1.28.{}", c % 5),
                    kubernetes: None,
                    image: None,
                    scenarios: ScenarioSet { name: format!("set{}", c / 15), paths: vec!["scenarios".into()] },
                },
                status: if failed > 0 { CellStatus::Failed } else { CellStatus::Passed },
                reason: None,
                exit_code: Some(if failed > 0 { 1 } else { 0 }),
                started_at: "2026-01-01T00:00:00Z".into(),
                duration_ms: 3000,
                dir: format!("cells/{id}"),
                files: ["report.json", "junit.xml", "summary.md", "output.log", "index.html"]
                    .iter()
                    .map(|f| format!("cells/{id}/{f}"))
                    .collect(),
                command: vec!["cnpg-ext-harness".into(), "run".into()],
                postgresql: Some("PostgreSQL 18.6".into()),
                totals: CellTotals { passed: per_cell - failed, failed, skipped: 0, flaky: 0 },
                scenarios: scen,
                carried_over_from: None,
            }
        })
        .collect();
    MatrixReport {
        kind: matrix::MATRIX_REPORT_KIND.into(),
        schema_version: matrix::MATRIX_SCHEMA_VERSION,
        harness_version: "bench".into(),
        git_revision: None,
        matrix_file: "bench.yaml".into(),
        description: None,
        started_at: "2026-01-01T00:00:00Z".into(),
        duration_ms: 1,
        jobs: 2,
        cell_time_ms: 1,
        command: vec![],
        rerun_of: None,
        totals: MatrixReport::totals_of(&results),
        cells: results,
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rounds: usize = args.iter().find_map(|a| a.parse().ok()).unwrap_or(7);
    let out = tempfile::tempdir().unwrap();

    let report = run_report(1000);
    let mut run_times = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        let dir = out.path().join("run");
        report.write(&dir).unwrap();
        let html = cnpg_ext_harness::reports::html::run_page(&RunView::of(&report), "bench");
        std::fs::write(dir.join("index.html"), html).unwrap();
        run_times.push(t.elapsed());
    }
    let size = |p: PathBuf| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0) / 1024;
    println!(
        "run record, 1,000 scenarios (json + junit + summary.md + html): median {:.1} ms over {rounds} rounds (json {} KiB, junit {} KiB, html {} KiB)",
        median(run_times).as_secs_f64() * 1e3,
        size(out.path().join("run/report.json")),
        size(out.path().join("run/junit.xml")),
        size(out.path().join("run/index.html")),
    );

    let m = matrix_report(100, 10);
    let mut matrix_times = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        matrix::write_report(&m, &out.path().join("matrix")).unwrap();
        matrix_times.push(t.elapsed());
    }
    println!(
        "matrix record, 100 cells x 10 scenarios (json + junit + summary.md + html): median {:.1} ms over {rounds} rounds (html {} KiB)",
        median(matrix_times).as_secs_f64() * 1e3,
        size(out.path().join("matrix/index.html")),
    );

    if args.iter().any(|a| a == "--no-matrix") {
        return;
    }
    let file = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../matrix/bench-12.yaml"));
    let bin = match cnpg_ext_harness::testing::harness_binary(None) {
        Ok(b) => b,
        Err(e) => {
            println!("12-cell matrix skipped: {e} (cargo build --release -p cnpg-ext-harness)");
            return;
        }
    };
    // Warm-up: provisions PostgreSQL and fills the fixture cache.
    let warm = MatrixArgs {
        file: file.clone(),
        jobs: 2,
        report_dir: out.path().join("warm"),
        rerun_failed: None,
        no_progress: true,
        retries: 0,
        bundle: None,
        cell_timeout: None,
        harness_bin: Some(bin.clone()),
        registries: Default::default(),
    };
    matrix::run_matrix(&warm, vec![]).await.expect("warm-up matrix");
    let args = MatrixArgs { report_dir: out.path().join("bench-12"), ..warm };
    let r = matrix::run_matrix(&args, vec![]).await.expect("12-cell matrix").report;
    let ideal = r.cell_time_ms as f64 / 2.0;
    println!(
        "12-cell local matrix, --jobs 2: wall {} ms, sum of cell times {} ms, sum/2 {:.0} ms, wall / (sum/2) = {:.2} ({} passed, {} failed, {} error)",
        r.duration_ms,
        r.cell_time_ms,
        ideal,
        r.duration_ms as f64 / ideal,
        r.totals.passed,
        r.totals.failed,
        r.totals.error
    );
}
