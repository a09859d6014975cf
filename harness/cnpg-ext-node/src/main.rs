//! `cnpg-ext-node k8s build|up|status|down` (the harness routes `cnpg-ext-harness k8s ...`
//! to the same [`cnpg_ext_node::cli::run`]).

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cnpg-ext-node", version, about = "A single-node Kubernetes with the real CloudNativePG operator")]
struct Cli {
    #[command(subcommand)]
    command: Top,
}

#[derive(Subcommand)]
enum Top {
    /// Build, start, inspect and stop the single-node Kubernetes.
    K8s(cnpg_ext_node::cli::K8sArgs),
}

fn main() {
    let Top::K8s(args) = Cli::parse().command;
    std::process::exit(cnpg_ext_node::cli::run(args));
}
