//! The supervisor process itself (`__supervise`): reads the harness's pipe, notes its
//! descendants, and cleans up when the pipe ends.

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

use super::owner::{Owner, SUPERVISE_ARG};
use super::procscan::{all_processes, descendants, marked_processes};
use super::records::{restore_images, upsert_image, EngineImage, EngineTarget};
use super::shm::SharedMemory;
use super::sweep::{engine_command, remove_run_objects};

#[derive(Default)]
pub(super) struct Watched {
    pub(super) groups: BTreeMap<i32, u64>,
    pub(super) dirs: BTreeSet<PathBuf>,
    pub(super) engines: Vec<EngineTarget>,
    pub(super) images: Vec<EngineImage>,
    /// Descendants of the harness seen while it ran.
    pub(super) seen: BTreeSet<Owner>,
    pub(super) keep: bool,
    pub(super) done: bool,
}

impl Watched {
    pub(super) fn apply(&mut self, line: &str) {
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

pub(super) fn cleanup(owner: Owner, w: &mut Watched) {
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
