//! Certify an extension image nobody here wrote: lint it, infer how CloudNativePG must mount
//! it, generate a scenario, run it, and read the verdict — what `cnpg-ext-harness certify`
//! does, from a program.
//!
//!     cargo run -p cnpg-ext-harness --example certify_image -- <image> [--report-dir DIR] [--backend local]
//!
//! `<image>` is an OCI layout directory, an OCI or docker archive, or a registry reference
//! (pulled first). Every `certify` flag is accepted.

use clap::Parser;
use cnpg_ext_harness::certify::{certify, CertifyArgs};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    certify: CertifyArgs,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let cli = Cli::parse();
    let outcome = match certify(&cli.certify, std::env::args().collect()).await {
        Ok(o) => o,
        Err(e) => {
            eprintln!("cannot certify: {e}");
            std::process::exit(e.exit_code().code());
        }
    };
    let c = &outcome.certification;
    println!("{}: {:?}", c.image, c.verdict);
    for reason in &c.reasons {
        println!("  {reason}");
    }
    for file in &outcome.files {
        println!("record: {}", file.display());
    }
    std::process::exit(c.verdict.exit_code().code());
}
