//! Sweeping what dead runs left: work directories whose owner and supervisor are both dead,
//! with the containers, volumes and images of their runs, and engine objects labelled with a
//! dead owner.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::owner::{Owner, DIR_PREFIX, LABEL_OWNER};
use super::procscan::{all_processes, harness_monitors, kill_monitor, kill_orphaned_monitors};
use super::records::{read_record, restore_images, EngineTarget};
use crate::plumbing::engine::EngineKind;

/// What a sweep removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Swept {
    pub dirs: Vec<PathBuf>,
    pub containers: usize,
    pub volumes: usize,
}

/// The directories a sweep looks in: `extra`, `/dev/shm` and the temp dir.
pub(super) fn sweep_parents(extra: &[PathBuf]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for p in extra.iter().cloned().chain([PathBuf::from("/dev/shm"), std::env::temp_dir()]) {
        let p = p.canonicalize().unwrap_or(p);
        if p.is_dir() && !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

/// Removes the `cnpg-ext-*` work directories under `parents` (and `/dev/shm`, the temp dir)
/// whose owner record names a harness and a supervisor that are both dead, with the
/// containers and volumes of their run. Directories without a record are left alone.
pub fn sweep_stale(parents: &[PathBuf]) -> Swept {
    let mut swept = Swept::default();
    for parent in sweep_parents(parents) {
        let Ok(entries) = std::fs::read_dir(&parent) else { continue };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with(DIR_PREFIX) || !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let dir = e.path();
            let Some(record) = read_record(&dir) else { continue };
            if record.anyone_alive() {
                continue;
            }
            if let Some(engine) = &record.engine {
                let (c, v) = remove_run_objects(engine, Duration::from_secs(20));
                swept.containers += c;
                swept.volumes += v;
                restore_images(&record.images, |args| engine_command(engine, args).is_some());
            }
            match crate::plumbing::fsutil::remove_tree(&dir) {
                Ok(()) => swept.dirs.push(dir),
                Err(err) => {
                    tracing::warn!("cannot remove {} (left by dead run {}): {err}", dir.display(), record.owner.token())
                }
            }
        }
    }
    swept
}

/// Removes the containers and volumes whose [`LABEL_OWNER`] names a dead process.
pub fn sweep_stale_engine(program: &Path, global: &[String]) -> Swept {
    let mut swept = Swept::default();
    let engine = |args: &[&str]| run_engine(program, global, args);
    // Monitors of the harness's containers (`conmon -c <id> -n cnpg-ext-…`) whose container
    // the engine no longer knows: left by a run killed between create and start. Processes
    // first, containers second: a monitor seen before the listing whose container is live is
    // in the listing.
    // Only monitors of this engine's store (`--root` in their exit command): another store's
    // containers are not in this listing.
    let monitors = harness_monitors();
    if !monitors.is_empty() {
        let root = engine(&["info", "--format", "{{.Store.GraphRoot}}"]).map(|r| r.trim().to_string());
        if let (Some(root), Some(known)) = (root, engine(&["ps", "-aq", "--no-trunc"])) {
            let known: BTreeSet<&str> = known.split_whitespace().collect();
            let procs = all_processes();
            for (pid, id, store) in &monitors {
                if store.as_deref() == Some(root.as_str()) && !root.is_empty() && !known.contains(id.as_str()) {
                    kill_monitor(*pid, &procs);
                }
            }
        }
    }
    let filter = format!("label={LABEL_OWNER}");
    let dead = |text: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| {
                let (id, owner) = l.trim().split_once(' ')?;
                let owner = Owner::parse(owner)?;
                (!owner.alive()).then(|| id.to_string())
            })
            .collect()
    };
    let format = format!("{{{{.Id}}}} {{{{index .Config.Labels \"{LABEL_OWNER}\"}}}}");
    if let Some(ids) = engine(&["ps", "-aq", "--filter", &filter]) {
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let mut args = vec!["inspect", "--format", &format];
            args.extend(ids.iter().copied());
            let stale = dead(&engine(&args).unwrap_or_default());
            if !stale.is_empty() {
                let mut rm = engine_kind(program).rm_force().to_vec();
                rm.extend(stale.iter().map(String::as_str));
                engine(&rm);
                swept.containers += stale.len();
            }
        }
    }
    // Volumes a container creation made for itself after its run's cleanup (named like the
    // harness's, without any label: every volume the harness makes is labelled). One still in
    // use is refused by `volume rm` without `-f`.
    if let Some(all) = engine(&["volume", "ls", "-q"]) {
        let ours: Vec<&str> = all.split_whitespace().filter(|v| v.starts_with(DIR_PREFIX)).collect();
        if !ours.is_empty() {
            let mut args = vec!["volume", "inspect", "--format", "{{.Name}} {{len .Labels}}"];
            args.extend(ours.iter().copied());
            let unlabelled: Vec<String> = engine(&args)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.trim().split_once(' ').filter(|(_, n)| *n == "0").map(|(v, _)| v.to_string()))
                .collect();
            for v in unlabelled {
                if engine(&["volume", "rm", &v]).is_some() {
                    swept.volumes += 1;
                }
            }
        }
    }
    let vformat = format!("{{{{.Name}}}} {{{{index .Labels \"{LABEL_OWNER}\"}}}}");
    if let Some(names) = engine(&["volume", "ls", "-q", "--filter", &filter]) {
        let names: Vec<&str> = names.split_whitespace().collect();
        if !names.is_empty() {
            let mut args = vec!["volume", "inspect", "--format", &vformat];
            args.extend(names.iter().copied());
            let stale = dead(&engine(&args).unwrap_or_default());
            if !stale.is_empty() {
                let mut rm = vec!["volume", "rm", "-f"];
                rm.extend(stale.iter().map(String::as_str));
                engine(&rm);
                swept.volumes += stale.len();
            }
        }
    }
    swept
}

/// One engine command of a dead run's cleanup; its standard output when it succeeded.
pub(super) fn engine_command<S: AsRef<std::ffi::OsStr>>(t: &EngineTarget, args: &[S]) -> Option<String> {
    run_engine(&t.program, &t.global, args)
}

/// `<program> <global flags> <args>` with no input and errors discarded; its standard output
/// when it succeeded.
pub(super) fn run_engine<S: AsRef<std::ffi::OsStr>>(program: &Path, global: &[String], args: &[S]) -> Option<String> {
    let out = Command::new(program).args(global).args(args).stdin(Stdio::null()).stderr(Stdio::null()).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Removes the run's containers and volumes ([`crate::plumbing::engine::remove_run_objects`]), then the
/// container monitors that outlived them.
pub(super) fn remove_run_objects(t: &EngineTarget, budget: Duration) -> (usize, usize) {
    let removed = crate::plumbing::engine::remove_run_objects(
        &|args| engine_command(t, args),
        engine_kind(&t.program),
        &t.run_id,
        budget,
    );
    kill_orphaned_monitors(&t.run_id);
    removed
}

/// A program that cannot tell is treated as docker (`rm -f` works on both).
pub(super) fn engine_kind(program: &Path) -> EngineKind {
    EngineKind::of(program).unwrap_or(EngineKind::Docker)
}
