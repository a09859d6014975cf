//! Every process the harness starts is registered here, so that Ctrl-C (and a panic in
//! another task) can stop them all. Handles remove themselves when they stop normally.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

static LIVE: Mutex<BTreeMap<i32, String>> = Mutex::new(BTreeMap::new());
static DIRS: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

pub fn register(pid: u32, what: &str) {
    LIVE.lock().unwrap().insert(pid as i32, what.to_string());
}

pub fn unregister(pid: u32) {
    LIVE.lock().unwrap().remove(&(pid as i32));
}

/// A directory removed by [`stop_all`] unless the run keeps its files.
pub fn register_dir(dir: PathBuf) {
    DIRS.lock().unwrap().insert(dir);
}

pub fn unregister_dir(dir: &PathBuf) {
    DIRS.lock().unwrap().remove(dir);
}

/// Stops every registered process (fast shutdown, then kill after `grace`) and removes the
/// registered directories unless `keep`. Used on Ctrl-C.
pub fn stop_all(grace: Duration, keep: bool) -> usize {
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
    if !keep {
        let dirs: Vec<PathBuf> = std::mem::take(&mut *DIRS.lock().unwrap()).into_iter().collect();
        for d in dirs {
            let _ = crate::fsutil::remove_tree(&d);
        }
    }
    pids.len()
}

pub fn alive(pid: i32) -> bool {
    // A zombie still answers signal 0; check /proc for a state other than Z.
    if kill(Pid::from_raw(pid), None).is_err() {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'),
        Err(_) => false,
    }
}
