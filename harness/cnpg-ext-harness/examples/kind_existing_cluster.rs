//! Run scenarios against the real CloudNativePG operator on a Kubernetes cluster that
//! already exists (kind or any conformant cluster): the harness installs the pinned operator
//! release if needed, applies each scenario's manifests, and verifies through SQL what the
//! operator did.
//!
//!     cargo run -p cnpg-ext-harness --example kind_existing_cluster -- [CONTEXT] [SCENARIO_DIR...]
//!
//! With no kind cluster named, images are not loaded into nodes: the scenarios must use
//! images the nodes can pull (registry references). For a kind cluster the harness loads
//! them itself: set `kind_cluster: Some("<name>")`.

use cnpg_ext_harness::Harness;
use cnpg_ext_kind::KindOptions;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let context = args.next();
    let paths: Vec<String> = args.collect();
    let paths = if paths.is_empty() { vec!["scenarios/single-extension".to_string()] } else { paths };
    let options = KindOptions { kind_cluster: None, context, ..KindOptions::default() };
    let report = match Harness::kind(options).jobs(1).run(paths).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot run on the cluster: {e}");
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
