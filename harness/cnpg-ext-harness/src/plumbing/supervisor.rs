//! Cleanup that survives the harness.
//!
//! A harness process that registers something to clean up (a process group, a work
//! directory, containers of a run) first starts a *supervisor*: the same binary re-executed
//! as `cnpg-ext-harness __supervise <pid>:<start>`, in its own process group, reading a pipe
//! whose only writer is the harness. The harness tells it, line by line, what exists; the
//! supervisor also notes every descendant process of the harness every 100 ms. When the pipe
//! ends without a `done` line — the harness was SIGKILLed, aborted, panicked on its main
//! thread — the supervisor kills those processes, removes the containers and volumes of the
//! run and the registered directories, then exits. After `done` (a normal exit) it only stops
//! the processes still there, which are leaks by definition, and keeps containers to the run.
//!
//! Runs also leave an owner record (`.cnpg-ext-owner`: pid and start time of the harness and
//! of its supervisor, and the engine of a container run) in their work directory, so that the
//! next run can remove what a run whose owner and supervisor are both dead left behind
//! ([`sweep_stale`]); a directory whose owner is alive, or that has no record, is never touched.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::engine::EngineKind;

/// First argument of the hidden supervisor mode.
pub(crate) const SUPERVISE_ARG: &str = "__supervise";
/// `pid:start,pid:start,…` of every harness process above (and including) this one; children
/// inherit it, which is how a supervisor finds processes started a moment before its harness died.
pub(crate) const ENV_OWNERS: &str = "CNPG_EXT_HARNESS_OWNERS";
/// The owner record in a work directory.
pub const OWNER_FILE: &str = ".cnpg-ext-owner";
/// Container/volume label carrying the owner (`pid:start`) of the run that created it.
pub const LABEL_OWNER: &str = "io.cnpg-ext-harness.owner";
/// Test-only fault injection: `panic-after-postmasters=N` panics right after the Nth
/// postmaster of this process started (before its handle exists).
pub const ENV_FAULT: &str = "CNPG_EXT_HARNESS_FAULT";
/// Label holding the run id on every container and volume (same as the container backend's).
/// Work directories the sweep looks at: `cnpg-ext-<random>` (runs), `cnpg-ext-cell-<random>` (matrix cells).
const DIR_PREFIX: &str = "cnpg-ext-";

/// A process, identified across pid reuse by its start time (clock ticks since boot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Owner {
    pub pid: i32,
    pub start: u64,
}

/// What `/proc/<pid>/stat` says about a process.
#[derive(Debug, Clone)]
struct Stat {
    comm: String,
    state: char,
    ppid: i32,
    start: u64,
}

fn stat(pid: i32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    // rest[0] is field 3 (state); starttime is field 22.
    Some(Stat {
        comm,
        state: rest.first()?.chars().next()?,
        ppid: rest.get(1)?.parse().ok()?,
        start: rest.get(19)?.parse().ok()?,
    })
}

impl Owner {
    pub fn me() -> Owner {
        let pid = std::process::id() as i32;
        Owner { pid, start: stat(pid).map(|s| s.start).unwrap_or(0) }
    }

    /// The process now running as `pid`, if any.
    pub fn of(pid: i32) -> Option<Owner> {
        stat(pid).map(|s| Owner { pid, start: s.start })
    }

    /// Whether this very process (same pid *and* start time) still runs (a zombie does not).
    pub fn alive(&self) -> bool {
        matches!(stat(self.pid), Some(s) if s.start == self.start && s.state != 'Z' && s.state != 'X')
    }

    pub fn token(&self) -> String {
        format!("{}:{}", self.pid, self.start)
    }

    pub fn parse(s: &str) -> Option<Owner> {
        let (pid, start) = s.trim().split_once(':')?;
        Some(Owner { pid: pid.parse().ok()?, start: start.parse().ok()? })
    }
}

/// An engine and the run whose containers and volumes it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineTarget {
    pub program: PathBuf,
    pub global: Vec<String>,
    pub run_id: String,
}

/// An image a run put into an engine under `reference`: if the run dies, removed — or, when
/// the reference named another image before the run, given back to that image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineImage {
    pub run_id: String,
    pub reference: String,
    /// The image id the reference pointed to before the run (never deleted).
    #[serde(default)]
    pub previous: Option<String>,
    /// The image id the run loaded under the reference (known once loaded).
    #[serde(default)]
    pub loaded: Option<String>,
}

/// Undoes what a run did to the engine's images, running each engine command through `run`
/// (arguments after the program and its global flags; `false` when it failed): one `rmi` of
/// every reference that named nothing before (one by one if the batch fails: an interrupted
/// load leaves one missing), then each borrowed reference tagged back and the run's image
/// removed. Used by the container backend at the end of a run and by the cleanup after a
/// dead one.
pub(crate) fn restore_images(images: &[EngineImage], mut run: impl FnMut(&[String]) -> bool) {
    let ours: Vec<String> = images.iter().filter(|i| i.previous.is_none()).map(|i| i.reference.clone()).collect();
    if !ours.is_empty() {
        let batch: Vec<String> = std::iter::once("rmi".to_string()).chain(ours.iter().cloned()).collect();
        if !run(&batch) {
            for r in &ours {
                run(&["rmi".to_string(), r.clone()]);
            }
        }
    }
    for img in images {
        if let (Some(prev), Some(loaded)) = (&img.previous, &img.loaded) {
            if prev != loaded {
                run(&["tag".to_string(), prev.clone(), img.reference.clone()]);
                run(&["rmi".to_string(), loaded.clone()]);
            }
        }
    }
}

/// The record written to `<work dir>/.cnpg-ext-owner`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OwnerRecord {
    pub owner: Owner,
    #[serde(default)]
    pub supervisor: Option<Owner>,
    #[serde(default)]
    pub engine: Option<EngineTarget>,
    /// Images the run put into `engine`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<EngineImage>,
}

impl OwnerRecord {
    /// Whether the run may still clean up by itself (its harness or its supervisor runs).
    pub fn anyone_alive(&self) -> bool {
        self.owner.alive() || self.supervisor.is_some_and(|s| s.alive())
    }
}

// ---------------------------------------------------------------------------------------
// The harness side.

struct Link {
    pipe: std::fs::File,
    supervisor: Owner,
}

/// `None`: not started yet; `Some(None)`: could not be started (cleanup is in-process only).
static LINK: Mutex<Option<Option<Link>>> = Mutex::new(None);

/// Adds this process to [`ENV_OWNERS`] so that every child inherits it. Call first thing in
/// `main`, before any thread exists.
pub(crate) fn mark_environment() {
    let me = Owner::me().token();
    let value = match std::env::var(ENV_OWNERS) {
        Ok(v) if !v.is_empty() => format!("{v},{me}"),
        _ => me,
    };
    std::env::set_var(ENV_OWNERS, value);
}

/// The harness binary to re-execute: this one, or the one next to a test binary.
fn harness_binary() -> Option<PathBuf> {
    super::exe::harness_binary(None).ok().filter(|p| p.is_file())
}

fn start_supervisor() -> Option<Link> {
    let bin = harness_binary()?;
    // Close-on-exec: no other child may hold the write end (the pipe would never end).
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).ok()?;
    let me = Owner::me();
    let mut cmd = Command::new(&bin);
    cmd.arg(SUPERVISE_ARG)
        .arg(me.token())
        .env_remove(ENV_OWNERS)
        .stdin(Stdio::from(read))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        // Not in the harness's group: a Ctrl-C on the terminal is for the harness, which
        // cleans up by itself; the supervisor then sees `done` or the end of the pipe.
        .process_group(0);
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("cannot start the cleanup supervisor {}: {e}", bin.display());
            return None;
        }
    };
    let pid = child.id() as i32;
    // Reaped by nobody while the harness runs: it is a zombie only after the harness died,
    // when init reaps it. Forget the handle without waiting.
    std::mem::forget(child);
    let supervisor = Owner::of(pid).unwrap_or(Owner { pid, start: 0 });
    tracing::debug!(pid, "cleanup supervisor started");
    Some(Link { pipe: std::fs::File::from(write), supervisor })
}

/// Sends one line to the supervisor, starting it first if needed.
fn send(line: &str) {
    let mut guard = LINK.lock().unwrap_or_else(|e| e.into_inner());
    if guard.is_none() {
        *guard = Some(start_supervisor());
    }
    if let Some(Some(link)) = guard.as_mut() {
        if let Err(e) = writeln!(link.pipe, "{line}") {
            tracing::warn!("the cleanup supervisor is gone ({e}); cleanup after a crash is not guaranteed");
            *guard = Some(None);
        }
    }
}

/// The supervisor of this process, starting it if needed (None when it cannot run).
pub fn supervisor() -> Option<Owner> {
    send("hello");
    LINK.lock().unwrap_or_else(|e| e.into_inner()).as_ref().and_then(|l| l.as_ref().map(|l| l.supervisor))
}

/// A process group to kill if the harness dies (called by `procs::register`).
pub(crate) fn watch_group(pid: u32) {
    if let Some(o) = Owner::of(pid as i32) {
        send(&format!("group {}", o.token()));
    }
}

pub(crate) fn unwatch_group(pid: u32) {
    if LINK.lock().unwrap_or_else(|e| e.into_inner()).is_some() {
        send(&format!("ungroup {pid}"));
    }
}

/// A directory to remove if the harness dies (called by `procs::register_dir`).
pub(crate) fn watch_dir(dir: &Path) {
    send(&format!("dir {}", dir.display()));
}

pub(crate) fn unwatch_dir(dir: &Path) {
    if LINK.lock().unwrap_or_else(|e| e.into_inner()).is_some() {
        send(&format!("undir {}", dir.display()));
    }
}

/// The run keeps its files (`--keep`): if the harness dies, its processes are stopped but its
/// directories, containers and volumes stay.
pub(crate) fn keep_files() {
    send("keep");
}

/// Writes the owner record of `dir` (this process, and its supervisor, started now), by which
/// a later run's sweep tells a dead run's directory from a live one's
/// ([`crate::plumbing::procs::claim_dir`] registers the directory too).
pub(crate) fn write_owner_record(dir: &Path) -> std::io::Result<()> {
    let record = OwnerRecord { owner: Owner::me(), supervisor: supervisor(), engine: None, images: Vec::new() };
    write_record(dir, &record)
}

/// The containers and volumes labelled with `run_id` in `engine` belong to this run: removed
/// by the supervisor if the harness dies, and by the next run's sweep if both are dead.
pub(crate) fn watch_engine(dir: &Path, engine: EngineTarget) -> std::io::Result<()> {
    send(&format!("engine {}", serde_json::to_string(&engine).expect("engine target serializes")));
    let _guard = RECORD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    ENGINE_RECORD_DIRS.lock().unwrap_or_else(|e| e.into_inner()).insert(engine.run_id.clone(), dir.to_path_buf());
    let mut record = read_record(dir).unwrap_or(OwnerRecord {
        owner: Owner::me(),
        supervisor: supervisor(),
        engine: None,
        images: Vec::new(),
    });
    record.engine = Some(engine);
    write_record(dir, &record)
}

/// Serializes read-modify-write of an owner record (images are loaded several at once).
static RECORD_LOCK: Mutex<()> = Mutex::new(());
/// By run id, the work directory whose owner record names the run's engine ([`watch_engine`]);
/// a process may hold several runs (library use).
static ENGINE_RECORD_DIRS: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());

/// An image the run is putting (or has put) into its engine: undone by the supervisor if the
/// harness dies, and by the next run's sweep if both are dead. Called before the load (so an
/// interrupted one is undone too) and again once the loaded id is known.
pub(crate) fn watch_image(image: &EngineImage) {
    send(&format!("image {}", serde_json::to_string(image).expect("engine image serializes")));
    let _guard = RECORD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let Some(dir) = ENGINE_RECORD_DIRS.lock().unwrap_or_else(|e| e.into_inner()).get(&image.run_id).cloned() else {
        return;
    };
    if let Some(mut record) = read_record(&dir) {
        upsert_image(&mut record.images, image);
        let _ = write_record(&dir, &record);
    }
}

fn upsert_image(images: &mut Vec<EngineImage>, image: &EngineImage) {
    match images.iter_mut().find(|i| i.run_id == image.run_id && i.reference == image.reference) {
        Some(i) => *i = image.clone(),
        None => images.push(image.clone()),
    }
}

/// Label arguments that mark a container or volume as created by this process
/// (`--label io.cnpg-ext-harness.owner=<pid>:<start>`), for [`sweep_stale_engine`].
pub(crate) fn owner_label() -> (String, String) {
    (LABEL_OWNER.to_string(), Owner::me().token())
}

/// A normal exit: the supervisor stops only what is still registered and exits.
pub(crate) fn finish() {
    let mut guard = LINK.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(Some(link)) = guard.as_mut() {
        let _ = writeln!(link.pipe, "done");
    }
    // Dropping the pipe ends it now rather than at exit.
    *guard = Some(None);
}

/// The run id the container backend derives from a work directory's name.
pub(crate) fn run_id_of(workdir: &Path) -> String {
    let name = workdir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut out: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') { c } else { '-' }).collect();
    if !out.chars().next().is_some_and(|c| c.is_ascii_alphanumeric()) {
        out.insert(0, 'x');
    }
    out
}

fn write_record(dir: &Path, record: &OwnerRecord) -> std::io::Result<()> {
    let tmp = dir.join(format!("{OWNER_FILE}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?)?;
    std::fs::rename(tmp, dir.join(OWNER_FILE))
}

pub fn read_record(dir: &Path) -> Option<OwnerRecord> {
    serde_json::from_slice(&std::fs::read(dir.join(OWNER_FILE)).ok()?).ok()
}

/// Test-only fault injection in the spawn path of a postmaster (see [`ENV_FAULT`]).
pub(crate) fn fault_after_postmaster_start() {
    static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let Ok(spec) = std::env::var(ENV_FAULT) else { return };
    let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
    if let Some(at) = spec.strip_prefix("panic-after-postmasters=").and_then(|v| v.parse::<usize>().ok()) {
        if n == at {
            panic!("{ENV_FAULT}: injected panic after postmaster #{n} started");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Sweeping what dead runs left.

/// What a sweep removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Swept {
    pub dirs: Vec<PathBuf>,
    pub containers: usize,
    pub volumes: usize,
}

/// The directories a sweep looks in: `extra`, `/dev/shm` and the temp dir.
fn sweep_parents(extra: &[PathBuf]) -> Vec<PathBuf> {
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
fn engine_command<S: AsRef<std::ffi::OsStr>>(t: &EngineTarget, args: &[S]) -> Option<String> {
    run_engine(&t.program, &t.global, args)
}

/// `<program> <global flags> <args>` with no input and errors discarded; its standard output
/// when it succeeded.
fn run_engine<S: AsRef<std::ffi::OsStr>>(program: &Path, global: &[String], args: &[S]) -> Option<String> {
    let out = Command::new(program).args(global).args(args).stdin(Stdio::null()).stderr(Stdio::null()).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Removes the run's containers and volumes ([`super::engine::remove_run_objects`]), then the
/// container monitors that outlived them.
fn remove_run_objects(t: &EngineTarget, budget: Duration) -> (usize, usize) {
    let removed =
        super::engine::remove_run_objects(&|args| engine_command(t, args), engine_kind(&t.program), &t.run_id, budget);
    kill_orphaned_monitors(&t.run_id);
    removed
}

/// A program that cannot tell is treated as docker (`rm -f` works on both).
fn engine_kind(program: &Path) -> EngineKind {
    EngineKind::of(program).unwrap_or(EngineKind::Docker)
}

/// Kills the container monitors (podman's `conmon -n <run id>-…`) of the run that outlived
/// their containers, and what they watch. A harness killed between an engine's `create` and
/// `start` leaves a `runc init` waiting for a start that never comes; removing the container
/// does not end it (podman 4.3).
pub(crate) fn kill_orphaned_monitors(run_id: &str) {
    let prefix = format!("{run_id}-");
    let procs = all_processes();
    for (pid, name, _, _) in monitors_named(&procs, DIR_PREFIX) {
        if name.starts_with(&prefix) {
            kill_monitor(pid, &procs);
        }
    }
}

/// `conmon` processes whose container name starts with `prefix`: (pid, name, container id,
/// the store's graph root).
fn monitors_named(procs: &BTreeMap<i32, Stat>, prefix: &str) -> Vec<(i32, String, String, Option<String>)> {
    let mut out = Vec::new();
    for (pid, st) in procs {
        if st.comm != "conmon" {
            continue;
        }
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else { continue };
        let args: Vec<String> = cmd.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        let value = |flag: &str| args.windows(2).find(|w| w[0] == flag).map(|w| w[1].clone());
        // The store, from the exit command podman gives it: `--exit-command-arg --root
        // --exit-command-arg <graph root>`.
        let store = args.windows(3).find(|w| w[0] == "--root" && w[1] == "--exit-command-arg").map(|w| w[2].clone());
        if let (Some(name), Some(id)) = (value("-n"), value("-c")) {
            if name.starts_with(prefix) {
                out.push((*pid, name, id, store));
            }
        }
    }
    out
}

/// Every monitor of a harness container: (pid, container id, store).
fn harness_monitors() -> Vec<(i32, String, Option<String>)> {
    monitors_named(&all_processes(), DIR_PREFIX).into_iter().map(|(pid, _, id, store)| (pid, id, store)).collect()
}

/// SIGKILL to a monitor and to what it watches (its children).
fn kill_monitor(pid: i32, procs: &BTreeMap<i32, Stat>) {
    for (child, st) in procs {
        if st.ppid == pid {
            let _ = kill(Pid::from_raw(*child), Signal::SIGKILL);
        }
    }
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
}

// ---------------------------------------------------------------------------------------
// The supervisor side.

#[derive(Default)]
struct Watched {
    groups: BTreeMap<i32, u64>,
    dirs: BTreeSet<PathBuf>,
    engines: Vec<EngineTarget>,
    images: Vec<EngineImage>,
    /// Descendants of the harness seen while it ran.
    seen: BTreeSet<Owner>,
    keep: bool,
    done: bool,
}

impl Watched {
    fn apply(&mut self, line: &str) {
        let (verb, arg) = line.split_once(' ').unwrap_or((line, ""));
        match verb {
            "group" => {
                if let Some(o) = Owner::parse(arg) {
                    self.groups.insert(o.pid, o.start);
                }
            }
            "ungroup" => {
                if let Ok(pid) = arg.trim().parse::<i32>() {
                    self.groups.remove(&pid);
                }
            }
            "dir" => {
                self.dirs.insert(PathBuf::from(arg));
            }
            "undir" => {
                self.dirs.remove(Path::new(arg));
            }
            "engine" => {
                if let Ok(t) = serde_json::from_str::<EngineTarget>(arg) {
                    if !self.engines.contains(&t) {
                        self.engines.push(t);
                    }
                }
            }
            "image" => {
                if let Ok(i) = serde_json::from_str::<EngineImage>(arg) {
                    upsert_image(&mut self.images, &i);
                }
            }
            "keep" => self.keep = true,
            "done" => self.done = true,
            _ => {}
        }
    }
}

fn is_supervisor(pid: i32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| c.split(|b| *b == 0).nth(1) == Some(SUPERVISE_ARG.as_bytes()))
        .unwrap_or(false)
}

/// Every live process: pid → stat.
fn all_processes() -> BTreeMap<i32, Stat> {
    let mut out = BTreeMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            if let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() {
                if let Some(s) = stat(pid) {
                    out.insert(pid, s);
                }
            }
        }
    }
    out
}

/// Descendants of `root`, not descending into supervisors (they clean up for their own
/// harness) nor into conmon (a container's monitor: the container is removed by label).
fn descendants(root: i32, procs: &BTreeMap<i32, Stat>) -> Vec<Owner> {
    let mut children: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for (pid, s) in procs {
        children.entry(s.ppid).or_default().push(*pid);
    }
    let mut out = Vec::new();
    let mut todo = vec![root];
    while let Some(p) = todo.pop() {
        for c in children.get(&p).into_iter().flatten() {
            let s = &procs[c];
            if s.comm == "conmon" || is_supervisor(*c) {
                continue;
            }
            out.push(Owner { pid: *c, start: s.start });
            todo.push(*c);
        }
    }
    out
}

/// Processes whose environment names `owner` in [`ENV_OWNERS`].
fn marked_processes(owner: Owner, procs: &BTreeMap<i32, Stat>) -> Vec<Owner> {
    let token = owner.token();
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    for (pid, s) in procs {
        if *pid == me || s.comm == "conmon" {
            continue;
        }
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else { continue };
        let hit = env.split(|b| *b == 0).any(|var| {
            let var = String::from_utf8_lossy(var);
            var.strip_prefix(ENV_OWNERS)
                .and_then(|v| v.strip_prefix('='))
                .is_some_and(|v| v.split(',').any(|t| t == token))
        });
        if hit && !is_supervisor(*pid) {
            out.push(Owner { pid: *pid, start: s.start });
        }
    }
    out
}

/// The shared memory of PostgreSQL processes about to be killed: the POSIX segments they map
/// (`/dev/shm/PostgreSQL.<n>`, dynamic shared memory) and the System V segments they created.
/// PostgreSQL removes both on a clean shutdown; after SIGKILL nobody would.
#[derive(Default)]
struct SharedMemory {
    files: BTreeSet<PathBuf>,
    creators: BTreeSet<i32>,
}

impl SharedMemory {
    fn note(&mut self, pid: i32) {
        let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else { return };
        if !std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "postgres") {
            return;
        }
        self.creators.insert(pid);
        for line in maps.lines() {
            if let Some(at) = line.find("/dev/shm/PostgreSQL.") {
                let path = PathBuf::from(line[at..].trim_end_matches(" (deleted)").trim());
                // The control segment lists every segment of the cluster, mapped or not.
                if let Ok(bytes) = std::fs::read(&path) {
                    for handle in dsm_control_handles(&bytes) {
                        self.files.insert(PathBuf::from(format!("/dev/shm/PostgreSQL.{handle}")));
                    }
                }
                self.files.insert(path);
            }
        }
    }

    /// Once the processes are gone: unlinks the files, removes the System V segments they
    /// created that nothing has attached any more. Returns how many went.
    fn remove(&self) -> usize {
        let mut n = 0;
        for f in &self.files {
            if std::fs::remove_file(f).is_ok() {
                n += 1;
            }
        }
        // /proc/sysvipc/shm: key shmid perms size cpid lpid nattch …
        let table = std::fs::read_to_string("/proc/sysvipc/shm").unwrap_or_default();
        for line in table.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (Some(id), Some(cpid), Some(nattch)) = (cols.get(1), cols.get(4), cols.get(6)) else { continue };
            let (Ok(id), Ok(cpid)) = (id.parse::<i32>(), cpid.parse::<i32>()) else { continue };
            if self.creators.contains(&cpid) && *nattch == "0" {
                // SAFETY: IPC_RMID with a null buffer only marks the segment for removal.
                if unsafe { nix::libc::shmctl(id, nix::libc::IPC_RMID, std::ptr::null_mut()) } == 0 {
                    n += 1;
                }
            }
        }
        n
    }
}

/// The segment handles listed in a PostgreSQL dynamic shared memory control segment
/// (`dsm_control_header`: magic, nitems, maxitems, then 40-byte items starting with the
/// handle and its reference count, on 64-bit Linux); empty when `bytes` is not one.
fn dsm_control_handles(bytes: &[u8]) -> Vec<u32> {
    const MAGIC: u32 = 0x9a50_3d32;
    const ITEMS_AT: usize = 16;
    const ITEM_SIZE: usize = 40;
    let word = |at: usize| bytes.get(at..at + 4).map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
    if word(0) != Some(MAGIC) {
        return Vec::new();
    }
    let (Some(n), Some(max)) = (word(4), word(8)) else { return Vec::new() };
    if n > max || ITEMS_AT + max as usize * ITEM_SIZE != bytes.len() {
        return Vec::new();
    }
    (0..n as usize)
        .filter_map(|i| {
            let at = ITEMS_AT + i * ITEM_SIZE;
            let (handle, refcnt) = (word(at)?, word(at + 4)?);
            (refcnt > 0).then_some(handle)
        })
        .collect()
}

/// `cnpg-ext-harness __supervise <pid>:<start>`: returns the exit code.
pub(crate) fn supervise_main(args: &[String]) -> i32 {
    let Some(owner) = args.first().and_then(|a| Owner::parse(a)) else {
        eprintln!("{SUPERVISE_ARG}: expected <pid>:<start> of the harness to watch");
        return crate::error::Exit::Invalid.code();
    };
    // Signals meant for a terminal's foreground group or a service stop do not end it early:
    // it ends by itself once the harness is gone and everything is cleaned up.
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGPIPE] {
        // SAFETY: setting a signal to be ignored runs no handler code.
        unsafe {
            let _ = nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigIgn);
        }
    }
    let (tx, rx) = std::sync::mpsc::channel::<Option<String>>();
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            match line {
                Ok(l) => {
                    if tx.send(Some(l)).is_err() {
                        return;
                    }
                }
                Err(_) => break,
            }
        }
        let _ = tx.send(None);
    });
    let mut w = Watched::default();
    let mut next_scan = Instant::now();
    loop {
        let wait = next_scan.saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok(Some(line)) => w.apply(&line),
            Ok(None) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
        if Instant::now() >= next_scan && !w.done {
            if owner.alive() {
                let procs = all_processes();
                w.seen.extend(descendants(owner.pid, &procs));
            }
            // Forget the ones gone (their pids may be reused).
            w.seen.retain(|o| o.alive());
            next_scan = Instant::now() + Duration::from_millis(100);
        }
    }
    cleanup(owner, &mut w);
    0
}

fn cleanup(owner: Owner, w: &mut Watched) {
    let t0 = Instant::now();
    // Processes of the run still alive are leftovers even after a normal exit (e.g. a hung
    // helper a stopped task never reaped).
    let mut targets: BTreeSet<Owner> = w.seen.iter().copied().collect();
    targets.extend(marked_processes(owner, &all_processes()));
    // Frozen first: nothing new is started or mapped between the survey and the kill.
    for (pid, start) in &w.groups {
        if Owner::of(*pid).is_none_or(|o| o.start == *start) {
            let _ = killpg(Pid::from_raw(*pid), Signal::SIGSTOP);
        }
    }
    for t in &targets {
        if t.alive() {
            let _ = kill(Pid::from_raw(t.pid), Signal::SIGSTOP);
        }
    }
    // Shared memory a killed postgres cannot remove: noted while the processes exist.
    let mut shm = SharedMemory::default();
    for t in targets
        .iter()
        .chain(w.groups.iter().map(|(pid, start)| Owner { pid: *pid, start: *start }).collect::<Vec<_>>().iter())
    {
        if t.alive() {
            shm.note(t.pid);
        }
    }
    let mut killed = 0;
    for (pid, start) in &w.groups {
        let leader = Owner { pid: *pid, start: *start };
        // The leader gone, its group may still hold its children; a pid reused by another
        // process means the group id may be someone else's now: leave it.
        let reused = Owner::of(*pid).is_some_and(|o| o.start != *start);
        if !reused && killpg(Pid::from_raw(*pid), Signal::SIGKILL).is_ok() {
            killed += 1;
        }
        targets.remove(&leader);
    }
    for t in &targets {
        if t.alive() && kill(Pid::from_raw(t.pid), Signal::SIGKILL).is_ok() {
            killed += 1;
        }
    }
    // Wait (bounded) for them (and the group leaders) to be gone before removing what they
    // were writing and the shared memory they had attached.
    targets.extend(w.groups.iter().map(|(pid, start)| Owner { pid: *pid, start: *start }));
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline && targets.iter().any(|t| t.alive()) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let segments = shm.remove();
    let (mut containers, mut volumes) = (0, 0);
    if !w.done && !w.keep {
        for e in &w.engines {
            let (c, v) = remove_run_objects(e, Duration::from_secs(3));
            containers += c;
            volumes += v;
            let images: Vec<EngineImage> = w.images.iter().filter(|i| i.run_id == e.run_id).cloned().collect();
            restore_images(&images, |args| engine_command(e, args).is_some());
        }
    }
    let mut dirs = 0;
    if !w.keep {
        for d in &w.dirs {
            if d.exists() {
                match crate::plumbing::fsutil::remove_tree(d) {
                    Ok(()) => dirs += 1,
                    Err(e) => eprintln!("cnpg-ext-harness supervisor: cannot remove {}: {e}", d.display()),
                }
            }
        }
    }
    if killed + containers + volumes + dirs > 0 {
        eprintln!(
            "cnpg-ext-harness supervisor: {} (pid {}) {}; stopped {killed} process(es), removed {segments} shared memory segment(s), {containers} container(s), {volumes} volume(s), {dirs} directory(ies) in {} ms",
            if w.done { "the harness" } else { "the harness died" },
            owner.pid,
            if w.done { "exited leaving processes registered" } else { "without cleaning up" },
            t0.elapsed().as_millis()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_tokens_round_trip_and_name_this_process() {
        let me = Owner::me();
        assert!(me.start > 0);
        assert_eq!(Owner::parse(&me.token()), Some(me));
        assert!(me.alive());
        assert!(!Owner { start: me.start + 1, ..me }.alive(), "another start time is another process");
        assert_eq!(Owner::parse("12"), None);
        assert_eq!(Owner::parse("x:1"), None);
    }

    #[test]
    fn descendants_skip_conmon_subtrees() {
        let mut procs = BTreeMap::new();
        let s = |ppid, comm: &str| Stat { comm: comm.into(), state: 'S', ppid, start: 7 };
        procs.insert(10, s(1, "harness"));
        procs.insert(11, s(10, "postgres"));
        procs.insert(12, s(11, "postgres"));
        procs.insert(13, s(10, "conmon"));
        procs.insert(14, s(13, "postgres"));
        procs.insert(20, s(1, "other"));
        let mut d: Vec<i32> = descendants(10, &procs).into_iter().map(|o| o.pid).collect();
        d.sort();
        assert_eq!(d, vec![11, 12]);
    }

    #[test]
    fn messages_update_what_is_watched() {
        let mut w = Watched::default();
        w.apply("group 5:9");
        w.apply("dir /x/cnpg-ext-a");
        w.apply("dir /x/cnpg-ext-b");
        w.apply("undir /x/cnpg-ext-a");
        w.apply(r#"engine {"program":"podman","global":[],"run_id":"cnpg-ext-b"}"#);
        w.apply("nonsense here");
        assert_eq!(w.groups.get(&5), Some(&9));
        assert_eq!(w.dirs.iter().collect::<Vec<_>>(), vec![Path::new("/x/cnpg-ext-b")]);
        assert_eq!(w.engines.len(), 1);
        w.apply("ungroup 5");
        w.apply("keep");
        assert!(w.groups.is_empty() && w.keep && !w.done);
        // An image is announced before its load, then again with the loaded id: one entry.
        w.apply(r#"image {"run_id":"cnpg-ext-b","reference":"r/x:1","previous":"p1"}"#);
        w.apply(r#"image {"run_id":"cnpg-ext-b","reference":"r/x:1","previous":"p1","loaded":"l1"}"#);
        w.apply(r#"image {"run_id":"cnpg-ext-b","reference":"r/y:1"}"#);
        assert_eq!(w.images.len(), 2);
        assert_eq!(w.images[0].loaded.as_deref(), Some("l1"));
    }

    fn image(reference: &str, previous: Option<&str>, loaded: Option<&str>) -> EngineImage {
        EngineImage {
            run_id: "cnpg-ext-r".into(),
            reference: reference.into(),
            previous: previous.map(str::to_string),
            loaded: loaded.map(str::to_string),
        }
    }

    #[test]
    fn images_are_removed_or_given_back() {
        let images = [
            image("r/new:1", None, None),
            image("r/also-new:1", None, Some("l0")),
            image("r/borrowed:1", Some("p1"), Some("l1")),
            image("r/same:1", Some("p2"), Some("p2")),
            image("r/unknown-load:1", Some("p3"), None),
        ];
        let mut ran: Vec<String> = Vec::new();
        restore_images(&images, |a| {
            ran.push(a.join(" "));
            true
        });
        // Ours in one batch; a borrowed reference goes back to the user's image and ours goes;
        // an identical image, or one whose load never finished, is left alone.
        assert_eq!(ran, ["rmi r/new:1 r/also-new:1", "tag p1 r/borrowed:1", "rmi l1"]);

        // A failed batch (one reference never loaded) is retried one by one.
        let mut ran: Vec<String> = Vec::new();
        restore_images(&images[..2], |a| {
            ran.push(a.join(" "));
            a.len() == 2
        });
        assert_eq!(ran, ["rmi r/new:1 r/also-new:1", "rmi r/new:1", "rmi r/also-new:1"]);
    }

    #[test]
    fn dsm_control_segments_list_their_handles() {
        let mut seg = vec![0u8; 16 + 40 * 4];
        seg[0..4].copy_from_slice(&0x9a50_3d32u32.to_ne_bytes());
        seg[4..8].copy_from_slice(&3u32.to_ne_bytes());
        seg[8..12].copy_from_slice(&4u32.to_ne_bytes());
        for (i, (h, r)) in [(111u32, 2u32), (222, 0), (333, 1)].into_iter().enumerate() {
            let at = 16 + i * 40;
            seg[at..at + 4].copy_from_slice(&h.to_ne_bytes());
            seg[at + 4..at + 8].copy_from_slice(&r.to_ne_bytes());
        }
        assert_eq!(dsm_control_handles(&seg), vec![111, 333], "released items (refcnt 0) are gone already");
        assert!(dsm_control_handles(&seg[..seg.len() - 1]).is_empty(), "a size that does not fit maxitems");
        seg[0] ^= 1;
        assert!(dsm_control_handles(&seg).is_empty(), "not the magic");
    }

    #[test]
    fn run_ids_follow_the_work_directory_name() {
        assert_eq!(run_id_of(Path::new("/dev/shm/cnpg-ext-AbC123")), "cnpg-ext-AbC123");
        assert_eq!(run_id_of(Path::new("/tmp/.odd name")), "x.odd-name");
    }
}
