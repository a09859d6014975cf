//! `k8s build|up|status|down` and the hidden `k8s __node` / `k8s __inner` the supervisor
//! re-executes itself with. A host binary embedding [`K8sArgs`] must route those two hidden
//! subcommands to [`run`] too: the supervisor runs `<current exe> k8s __node ...`.

pub use crate::args::{PushArgs, UpArgs};
use crate::{components, node, paths::Paths, supervisor, NodeError};
use clap::{Args, Subcommand};

#[derive(Debug, Args)]
pub struct K8sArgs {
    #[command(subcommand)]
    pub command: K8sCommand,
}

#[derive(Debug, Subcommand)]
pub enum K8sCommand {
    /// Build (or find cached) every component from its Go module: kube-*, etcd, containerd,
    /// CoreDNS, crictl, the CloudNativePG manager, pause.
    Build,
    /// Start the node and the operator. Prints the kubeconfig path as the last line of
    /// standard output; exits 0 only when the node is Ready and the operator answers.
    Up(UpArgs),
    /// Whether the node runs, is Ready and the operator answers (exit 0), or not (exit 1).
    Status,
    /// Push OCI image layouts into the node's registry under the reference each names
    /// (`org.opencontainers.image.ref.name`), or `--reference`: pulls of that reference on
    /// the node are then served locally (containerd mirrors ghcr.io, docker.io, quay.io,
    /// registry.k8s.io to it).
    Push(PushArgs),
    /// Stop the node and remove everything it made (processes, mounts, veth, cgroups, state).
    Down,
    #[command(name = "__node", hide = true)]
    Node(supervisor::NodeArgs),
    #[command(name = "__inner", hide = true)]
    Inner(supervisor::NodeArgs),
}

/// Runs one `k8s` subcommand; returns the process exit code.
pub fn run(args: K8sArgs) -> i32 {
    let result = match args.command {
        K8sCommand::Build => build(),
        K8sCommand::Up(a) => node::up(&a),
        K8sCommand::Status => node::status(),
        K8sCommand::Down => node::down(),
        K8sCommand::Push(a) => node::push(&a),
        K8sCommand::Node(a) => supervisor::outer(&a),
        K8sCommand::Inner(a) => supervisor::inner(&a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            e.code
        }
    }
}

fn build() -> Result<i32, NodeError> {
    let paths = Paths::from_env()?;
    for b in components::build_all(&paths)? {
        let how = if b.cached { "cached" } else { "built" };
        println!("{:<11} {how:<6} {:>8.2} s  {}", b.name, b.seconds, b.dir.display());
    }
    Ok(0)
}
