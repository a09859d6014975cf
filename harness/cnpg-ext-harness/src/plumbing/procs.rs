//! Every process the harness starts is registered here, so that Ctrl-C (and a panic in
//! another task) can stop them all. Handles remove themselves when they stop normally.
//! Registrations are also passed to the cleanup supervisor ([`crate::plumbing::supervisor`]), which
//! acts on them if this process dies without cleaning up.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

static LIVE: Mutex<BTreeMap<i32, String>> = Mutex::new(BTreeMap::new());
static DIRS: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

/// Something [`stop_all`] runs before removing directories (e.g. removing the containers,
/// volumes and images of a run); given `keep`.
pub(crate) type CleanupHook = Box<dyn Fn(bool) + Send>;
static HOOKS: Mutex<BTreeMap<u64, CleanupHook>> = Mutex::new(BTreeMap::new());
static NEXT_HOOK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Registers a cleanup hook; returns the id to unregister it with.
pub(crate) fn register_cleanup(hook: CleanupHook) -> u64 {
    let id = NEXT_HOOK.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    HOOKS.lock().unwrap().insert(id, hook);
    id
}

pub(crate) fn unregister_cleanup(id: u64) {
    HOOKS.lock().unwrap().remove(&id);
}

static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Marks the run interrupted (first thing on Ctrl-C / SIGTERM, before any future is dropped).
pub(crate) fn mark_interrupted() {
    INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Whether the run was interrupted: nothing new may be started.
pub(crate) fn interrupted() -> bool {
    INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst)
}

/// Registers a started process group; one started after an interruption is killed at once.
pub(crate) fn register(pid: u32, what: &str) {
    if interrupted() {
        let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
        return;
    }
    crate::plumbing::supervisor::watch_group(pid);
    LIVE.lock().unwrap().insert(pid as i32, what.to_string());
}

pub(crate) fn unregister(pid: u32) {
    LIVE.lock().unwrap().remove(&(pid as i32));
    crate::plumbing::supervisor::unwatch_group(pid);
}

/// A directory removed by [`stop_all`] unless the run keeps its files.
pub(crate) fn register_dir(dir: PathBuf) {
    crate::plumbing::supervisor::watch_dir(&dir);
    DIRS.lock().unwrap().insert(dir);
}

/// Makes `dir` this process's work directory: registered for removal (by [`stop_all`], and by
/// the supervisor if the harness dies) and marked with an owner record for later sweeps.
pub(crate) fn claim_dir(dir: &std::path::Path) -> std::io::Result<()> {
    register_dir(dir.to_path_buf());
    crate::plumbing::supervisor::write_owner_record(dir)
}

pub(crate) fn unregister_dir(dir: &PathBuf) {
    DIRS.lock().unwrap().remove(dir);
    crate::plumbing::supervisor::unwatch_dir(dir);
}

/// Stops every registered process (fast shutdown, then kill after `grace`) and removes the
/// registered directories unless `keep`. Used on Ctrl-C and SIGTERM; marks the run
/// interrupted, and can be called again once tasks still running have ended.
pub(crate) fn stop_all(grace: Duration, keep: bool) -> usize {
    mark_interrupted();
    let pids: Vec<i32> = LIVE.lock().unwrap().keys().copied().collect();
    for pid in &pids {
        // Each postmaster leads its own process group: signal the group.
        let _ = killpg(Pid::from_raw(*pid), Signal::SIGINT);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && pids.iter().any(|p| alive(*p)) {
        std::thread::sleep(Duration::from_millis(20));
    }
    for pid in &pids {
        if alive(*pid) {
            let _ = killpg(Pid::from_raw(*pid), Signal::SIGKILL);
        }
    }
    LIVE.lock().unwrap().clear();
    let hooks: Vec<CleanupHook> = std::mem::take(&mut *HOOKS.lock().unwrap()).into_values().collect();
    for hook in hooks {
        hook(keep);
    }
    if !keep {
        // Kept registered: a second call removes what a task still running wrote meanwhile.
        let dirs: Vec<PathBuf> = DIRS.lock().unwrap().iter().cloned().collect();
        for d in dirs {
            if let Err(e) = crate::plumbing::fsutil::remove_tree(&d) {
                eprintln!("could not remove {}: {e}", d.display());
            }
        }
    }
    pids.len()
}

pub(crate) fn alive(pid: i32) -> bool {
    // A zombie still answers signal 0; check /proc for a state other than Z.
    if kill(Pid::from_raw(pid), None).is_err() {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'),
        Err(_) => false,
    }
}
