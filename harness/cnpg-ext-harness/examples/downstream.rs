//! How another crate uses the harness in its own tests: point it at scenario directories,
//! get the report back, fail with the harness's own expected-vs-actual text.
//!
//! In a downstream crate this body is a `#[tokio::test]`; here it is a program so that it can
//! be run as it is:
//!
//!     cargo run -p cnpg-ext-harness --example downstream -- scenarios/single-extension
//!
//! (`Harness::container()` instead of `local()` runs the same scenarios in podman/docker.)

use cnpg_ext_harness::Harness;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let paths: Vec<String> = std::env::args().skip(1).collect();
    let paths = if paths.is_empty() { vec!["scenarios/single-extension".to_string()] } else { paths };
    let report = match Harness::local().jobs(2).run(paths).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot run: {e}");
            std::process::exit(e.exit_code().code());
        }
    };
    for s in &report.scenarios {
        println!("{:?} {}", s.status, s.id);
    }
    if !report.passed() {
        eprintln!("{}", report.failures());
        std::process::exit(1);
    }
}
