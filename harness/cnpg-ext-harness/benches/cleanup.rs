//! Prints figures, no timed assertion: how long after a SIGKILL of `run` (seed suite, local
//! backend, default work directory) every postgres of the run and its work directory are
//! gone (goal ≤ 5 s), and how long the start-of-run sweep takes over 200 stale directories.
//! Medians of N runs.
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
fn mentioning(needle: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter(|e| {
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let state = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            !state.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z')
                && String::from_utf8_lossy(&cmd).replace('\0', " ").contains(needle)
        })
        .count()
}

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
    let running = ours.iter().map(|d| mentioning(&d.display().to_string())).sum::<usize>();
    let _ = child.kill();
    let t0 = Instant::now();
    let _ = child.wait();
    if ours.is_empty() || running == 0 {
        eprintln!("  (no postgres running yet after {delay:?}; not counted)");
        return None;
    }
    while t0.elapsed() < Duration::from_secs(30) {
        let left = ours.iter().filter(|d| d.exists() || mentioning(&d.display().to_string()) > 0).count();
        if left == 0 {
            return Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Some(t0.elapsed())
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
