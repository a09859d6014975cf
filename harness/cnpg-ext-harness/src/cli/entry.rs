//! The `cnpg-ext-harness` process: the supervisor re-exec, the command line, the runtime,
//! Ctrl-C and SIGTERM.

use std::process::ExitCode;

use clap::Parser;

use super::{commands, Cli, Command};
use crate::error::Exit;
use crate::images::pull::Registries;
use crate::plumbing::{procs, supervisor};
use crate::run::app;

/// Everything `main` does; the binary only calls this.
pub fn main() -> ExitCode {
    if std::env::args_os().nth(1).is_some_and(|a| a == supervisor::SUPERVISE_ARG) {
        let args: Vec<String> = std::env::args_os().skip(2).map(|a| a.to_string_lossy().into_owned()).collect();
        return ExitCode::from(supervisor::supervise_main(&args) as u8);
    }
    let cli = Cli::parse();
    // The node outlives this command (`k8s up` returns with it running) and has its own
    // supervisor: it runs outside the harness's process tracking and runtime.
    #[cfg(feature = "kind")]
    let cli = match cli.command {
        Command::K8s(args) => return ExitCode::from(cnpg_ext_node::cli::run(args).clamp(0, 255) as u8),
        _ => cli,
    };
    // Before any thread exists: children inherit it (see `supervisor`).
    supervisor::mark_environment();
    init_tracing(cli.verbose);
    let registries = Registries::new(cli.insecure_registry.clone());
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let code = rt.block_on(async move {
        tokio::select! {
            code = dispatch(cli.command, registries) => code,
            _ = interrupted() => {
                let n = procs::stop_all(std::time::Duration::from_secs(10), false);
                eprintln!("interrupted: stopped {n} process(es) and removed the work directory");
                Exit::Interrupted
            }
        }
    });
    if code == Exit::Interrupted {
        // Tasks that were mid-step may have written into the work directory or started
        // something after the first sweep: let them end, then sweep again.
        rt.shutdown_timeout(std::time::Duration::from_secs(5));
        procs::stop_all(std::time::Duration::from_secs(5), false);
    }
    supervisor::finish();
    code.into()
}

async fn dispatch(cmd: Command, registries: Registries) -> Exit {
    match cmd {
        Command::Run(mut args) => {
            args.registries = registries;
            commands::run(args).await
        }
        Command::List { paths, cnpg_version } => match app::load_scenarios(&paths, cnpg_version) {
            Ok(list) => {
                for s in list {
                    println!("{}\t{}\t{}", s.id, s.file.display(), s.description.unwrap_or_default());
                }
                Exit::Passed
            }
            Err(e) => {
                eprintln!("error: {e}");
                e.exit_code()
            }
        },
        Command::Plan { paths, cnpg_version, format, inherited_env } => {
            commands::plan(&paths, cnpg_version, format == "json", &inherited_env)
        }
        #[cfg(feature = "kind")]
        Command::Kind(cmd) => cnpg_ext_kind::cli::run(cmd).await,
        #[cfg(not(feature = "kind"))]
        Command::Kind(_) | Command::K8s(_) => {
            eprintln!(
                "error: this cnpg-ext-harness was built without the kind backend and the node (cargo feature `kind`, \
                 on by default): build it with the default features"
            );
            Exit::Environment
        }
        Command::Matrix(mut args) => {
            args.registries = registries;
            let (bundle, dir, file) = (args.bundle.clone(), args.report_dir.clone(), args.file.clone());
            let exit = crate::matrix::command(args).await;
            match bundle {
                Some(out) if matches!(exit, Exit::Passed | Exit::Failed) => {
                    crate::cli::bundle::after_matrix(&out, &dir, &file, exit)
                }
                _ => exit,
            }
        }
        Command::Bundle(cmd) => crate::cli::bundle::command(cmd),
        Command::Diff(args) => crate::cli::diff::command(&args),
        Command::Certify(mut args) => {
            args.registries = registries;
            let (bundle, dir) = (args.bundle.clone(), args.report_dir.clone());
            let exit = crate::certify::command(args).await;
            match bundle {
                // Every verdict (pass, fail, inconclusive) has a record worth bundling.
                Some(out) if dir.join("report.json").is_file() => crate::cli::bundle::after_certify(&out, &dir, exit),
                _ => exit,
            }
        }
        // Routed in `main` before the runtime starts.
        #[cfg(feature = "kind")]
        Command::K8s(args) => Exit::from_code(cnpg_ext_node::cli::run(args)).unwrap_or(Exit::Failed),
        Command::Image(cmd) => {
            // `image unpack|lint <registry reference>`: pulled first, then read as a layout.
            let cmd = match registries.resolve_image_command(cmd).await {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return e.exit_code();
                }
            };
            match tokio::task::spawn_blocking(move || cnpg_ext_images::cli::run(cmd)).await {
                Ok(code) => code,
                Err(_) => Exit::Invalid,
            }
        }
    }
}

/// Ctrl-C, or SIGTERM (CI runners and `timeout` send it): both stop everything started.
async fn interrupted() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    // Before `select!` in main drops the run (and its work-directory guard).
    procs::mark_interrupted();
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}
