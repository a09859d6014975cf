//! Prints figures, no timed assertion: how long after a SIGKILL of `run` (seed suite, local
//! backend, default work directory) every postgres of the run, its work directory and the
//! shared memory its postmasters held (`/dev/shm/PostgreSQL.*`, System V segments) are gone
//! (goal ≤ 5 s), and how long the start-of-run sweep takes over 200 stale directories.
//! Medians of N runs. A cleanup that has not finished after 120 s is no figure: the bench
//! says what was left and exits 1.
//!
//!     cargo build --release -p cnpg-ext-harness
//!     cargo bench -p cnpg-ext-harness --bench cleanup [-- RUNS]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cnpg_ext_harness::testing::{sweep_stale, Owner, OwnerRecord, OWNER_FILE};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn harness() -> PathBuf {
    // Built by cargo for every bench of the package.
    PathBuf::from(env!("CARGO_BIN_EXE_cnpg-ext-harness"))
}

/// pids of live processes whose command line mentions `needle`.
fn pids_mentioning(needle: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok().map(|pid| (pid, e)))
        .filter(|(_, e)| {
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let state = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            !state.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z')
                && String::from_utf8_lossy(&cmd).replace('\0', " ").contains(needle)
        })
        .map(|(pid, _)| pid)
        .collect()
}

fn mentioning(needle: &str) -> usize {
    pids_mentioning(needle).len()
}

/// The shared memory `pids` hold: POSIX segments they map, System V segments they created.
fn shared_memory_of(pids: &[u32]) -> (Vec<PathBuf>, Vec<String>) {
    let mut files: Vec<PathBuf> = Vec::new();
    for p in pids {
        for line in std::fs::read_to_string(format!("/proc/{p}/maps")).unwrap_or_default().lines() {
            if let Some(at) = line.find("/dev/shm/PostgreSQL.") {
                let f = PathBuf::from(line[at..].trim_end_matches(" (deleted)").trim());
                if !files.contains(&f) {
                    files.push(f);
                }
            }
        }
    }
    let ids = sysv_table().into_iter().filter(|(_, cpid)| pids.contains(cpid)).map(|(id, _)| id).collect();
    (files, ids)
}

/// `(shmid, creator pid)` of every System V segment.
fn sysv_table() -> Vec<(String, u32)> {
    std::fs::read_to_string("/proc/sysvipc/shm")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| {
            let c: Vec<&str> = l.split_whitespace().collect();
            Some((c.get(1)?.to_string(), c.get(4)?.parse().ok()?))
        })
        .collect()
}

const DEADLINE: Duration = Duration::from_secs(120);

/// One SIGKILL `delay` after start; the time until nothing of the run is left.
fn kill_once(bin: &Path, repo: &Path, delay: Duration) -> Option<Duration> {
    let parent = if Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
    let before: Vec<PathBuf> = list_work_dirs(&parent);
    let mut child = Command::new(bin)
        .current_dir(repo)
        .args(["run", "scenarios", "--backend", "local", "--no-progress"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(delay);
    // Other runs may share the parent: only the directory whose owner record names this child.
    let ours: Vec<PathBuf> = list_work_dirs(&parent)
        .into_iter()
        .filter(|d| !before.contains(d))
        .filter(|d| cnpg_ext_harness::testing::read_record(d).is_some_and(|r| r.owner.pid == child.id() as i32))
        .collect();
    let pids: Vec<u32> = ours.iter().flat_map(|d| pids_mentioning(&d.display().to_string())).collect();
    let (shm, sysv) = shared_memory_of(&pids);
    let _ = child.kill();
    let t0 = Instant::now();
    let _ = child.wait();
    if ours.is_empty() || pids.is_empty() {
        eprintln!("  (no postgres running yet after {delay:?}; not counted)");
        return None;
    }
    let left = || -> Vec<String> {
        let mut left: Vec<String> = Vec::new();
        for d in &ours {
            if d.exists() {
                left.push(format!("work directory {}", d.display()));
            }
            let n = mentioning(&d.display().to_string());
            if n > 0 {
                left.push(format!("{n} processes of {}", d.display()));
            }
        }
        left.extend(shm.iter().filter(|f| f.exists()).map(|f| format!("shared memory {}", f.display())));
        let table = sysv_table();
        left.extend(
            sysv.iter().filter(|id| table.iter().any(|(t, _)| t == *id)).map(|id| format!("System V segment {id}")),
        );
        left
    };
    while t0.elapsed() < DEADLINE {
        if left().is_empty() {
            return Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!("cleanup after a SIGKILL {delay:?} into the run did not finish in {DEADLINE:?}; left: {:?}", left());
    std::process::exit(1);
}

fn list_work_dirs(parent: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(parent)
        .unwrap()
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with("cnpg-ext-") && !n.starts_with("cnpg-ext-cell-")
        })
        .map(|e| e.path())
        .collect()
}

fn main() {
    let runs: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(5);
    let bin = harness();
    let repo = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).canonicalize().unwrap();
    // Warm the caches (wheel, initdb template, fixture images).
    let _ = Command::new(&bin).current_dir(&repo).args(["run", "scenarios", "--no-progress"]).output();

    let mut gone = Vec::new();
    for i in 0..runs {
        // Spread the kill over the run: setup, first instances, rollouts.
        let delay = Duration::from_millis(900 + 300 * (i as u64 % 4));
        if let Some(d) = kill_once(&bin, &repo, delay) {
            println!("  SIGKILL after {delay:?}: everything gone in {d:?}");
            gone.push(d);
        }
    }
    if !gone.is_empty() {
        println!(
            "SIGKILL → nothing left: median {:?}, max {:?} over {} runs (goal ≤ 5 s)",
            median(gone.clone()),
            gone.iter().max().unwrap(),
            gone.len()
        );
    }

    // The sweep at the start of every run: 200 stale directories of dead owners, 5 files each.
    let mut sweeps = Vec::new();
    for _ in 0..runs {
        let scratch = tempfile::Builder::new()
            .prefix("cleanup-bench-")
            .tempdir_in("/dev/shm")
            .unwrap_or_else(|_| tempfile::tempdir().unwrap());
        let dead = {
            let mut c = Command::new("true").spawn().unwrap();
            let o = Owner::of(c.id() as i32).unwrap_or(Owner { pid: c.id() as i32, start: 1 });
            c.wait().unwrap();
            o
        };
        for n in 0..200 {
            let d = scratch.path().join(format!("cnpg-ext-stale{n}"));
            std::fs::create_dir_all(d.join("s")).unwrap();
            for f in 0..5 {
                std::fs::write(d.join("s").join(f.to_string()), [0u8; 1024]).unwrap();
            }
            let r = OwnerRecord { owner: dead, supervisor: None, engine: None, images: Vec::new() };
            std::fs::write(d.join(OWNER_FILE), serde_json::to_vec(&r).unwrap()).unwrap();
        }
        let t0 = Instant::now();
        let swept = sweep_stale(&[scratch.path().to_path_buf()]);
        sweeps.push(t0.elapsed());
        assert_eq!(swept.dirs.len(), 200);
    }
    println!("sweep of 200 stale work directories: median {:?} over {runs} runs", median(sweeps));
}
