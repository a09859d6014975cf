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

mod fault;
mod main_loop;
mod owner;
mod procscan;
mod records;
mod shm;
mod sweep;

pub use fault::ENV_FAULT;
pub(crate) use fault::{
    container_create_refused, fault_after_postmaster_start, image_fault, mounts_by_exec, rollout_primary_first,
    rollout_restarts_of, ImageFault,
};
pub(crate) use main_loop::supervise_main;
pub(crate) use owner::SUPERVISE_ARG;
pub use owner::{Owner, LABEL_OWNER, OWNER_FILE};
// Used by the container backend (cargo feature `container`).
#[cfg_attr(not(feature = "container"), allow(unused_imports))]
pub(crate) use procscan::kill_orphaned_monitors;
pub use records::{read_record, EngineImage, EngineTarget, OwnerRecord};
#[cfg_attr(not(feature = "container"), allow(unused_imports))]
pub(crate) use records::{restore_images, run_id_of};
pub(crate) use sweep::Swept;
pub use sweep::{sweep_stale, sweep_stale_engine};

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use owner::ENV_OWNERS;
use records::{upsert_image, write_record};

// The harness side: the pipe to the supervisor, the owner record, what is watched. The
// supervisor side is `main_loop` (over `procscan`, `shm`, `sweep`); records and owners are
// shared by both.

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
    crate::plumbing::exe::harness_binary(None).ok().filter(|p| p.is_file())
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

#[cfg(test)]
mod tests {
    use super::main_loop::Watched;
    use super::owner::Stat;
    use super::procscan::descendants;
    use super::shm::dsm_control_handles;
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
