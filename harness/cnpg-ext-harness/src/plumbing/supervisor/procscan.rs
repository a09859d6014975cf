//! Reading `/proc`: every process, the descendants of one, processes marked with an owner,
//! and podman container monitors that outlived their containers.

use std::collections::BTreeMap;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::owner::{stat, Owner, Stat, DIR_PREFIX, ENV_OWNERS, SUPERVISE_ARG};

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
pub(super) fn monitors_named(procs: &BTreeMap<i32, Stat>, prefix: &str) -> Vec<(i32, String, String, Option<String>)> {
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
pub(super) fn harness_monitors() -> Vec<(i32, String, Option<String>)> {
    monitors_named(&all_processes(), DIR_PREFIX).into_iter().map(|(pid, _, id, store)| (pid, id, store)).collect()
}

/// SIGKILL to a monitor and to what it watches (its children).
pub(super) fn kill_monitor(pid: i32, procs: &BTreeMap<i32, Stat>) {
    for (child, st) in procs {
        if st.ppid == pid {
            let _ = kill(Pid::from_raw(*child), Signal::SIGKILL);
        }
    }
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
}

pub(super) fn is_supervisor(pid: i32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| c.split(|b| *b == 0).nth(1) == Some(SUPERVISE_ARG.as_bytes()))
        .unwrap_or(false)
}

/// Every live process: pid → stat.
pub(super) fn all_processes() -> BTreeMap<i32, Stat> {
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
pub(super) fn descendants(root: i32, procs: &BTreeMap<i32, Stat>) -> Vec<Owner> {
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
pub(super) fn marked_processes(owner: Owner, procs: &BTreeMap<i32, Stat>) -> Vec<Owner> {
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
