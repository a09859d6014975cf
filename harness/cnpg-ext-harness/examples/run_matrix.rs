//! Run a compatibility matrix (backend × PostgreSQL × CNPG release × scenario set) and read
//! the aggregate: what `cnpg-ext-harness matrix <file>` does, from a program.
//!
//!     cargo build -p cnpg-ext-harness   # the cells run the harness binary
//!     cargo run -p cnpg-ext-harness --example run_matrix -- matrix/example.yaml
//!
//! Each cell is a child harness process with its own report directory; the aggregate
//! (`report.json`, `junit.xml`, `summary.md`, `index.html`) lands in the report directory.

use cnpg_ext_harness::matrix::{run_matrix, CellStatus, MatrixArgs};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let file = std::env::args().nth(1).unwrap_or_else(|| "matrix/example.yaml".into());
    let report_dir = std::env::temp_dir().join(format!("cnpg-ext-matrix-example-{}", std::process::id()));
    let args = MatrixArgs {
        file: file.into(),
        jobs: 2,
        report_dir: report_dir.clone(),
        rerun_failed: None,
        no_progress: true,
        retries: 0,
        bundle: None,
        cell_timeout: None,
        harness_bin: None,
        registries: Default::default(),
    };
    let outcome = match run_matrix(&args, std::env::args().collect()).await {
        Ok(o) => o,
        Err(e) => {
            eprintln!("cannot run the matrix: {e}");
            std::process::exit(e.exit_code().code());
        }
    };
    for cell in &outcome.report.cells {
        let mark = if cell.status == CellStatus::Passed { "ok " } else { "NOT" };
        println!("{mark} {} ({:?})", cell.spec.id, cell.status);
    }
    println!("aggregate report in {}", report_dir.display());
    std::process::exit(outcome.report.exit_code().code());
}
