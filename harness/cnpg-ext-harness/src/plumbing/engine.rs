//! The container engine as far as cleanup needs it, written once for the container backend
//! (a run's own cleanup) and the supervisor (a dead run's): which kind of engine a program is,
//! the label that names a run, the removal of a run's containers and volumes, and the lock
//! that keeps loads and removals of images apart.

use std::path::Path;
use std::time::{Duration, Instant};

/// The label every container (and labelled volume) of a run carries, valued with its run id.
pub const LABEL_RUN: &str = "io.cnpg-ext-harness.run";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    Podman,
    Docker,
}

impl EngineKind {
    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Podman => "podman",
            EngineKind::Docker => "docker",
        }
    }

    /// The kind of `program`: by its file name, else by what its `--version` says.
    pub fn of(program: &Path) -> std::io::Result<EngineKind> {
        let base = program.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if base.contains("docker") {
            return Ok(EngineKind::Docker);
        }
        if base.contains("podman") {
            return Ok(EngineKind::Podman);
        }
        let out = std::process::Command::new(program).arg("--version").output()?;
        Ok(if String::from_utf8_lossy(&out.stdout).to_lowercase().contains("podman") {
            EngineKind::Podman
        } else {
            EngineKind::Docker
        })
    }

    /// `rm` of containers whose data is thrown away: podman without a grace period.
    pub fn rm_force(self) -> &'static [&'static str] {
        match self {
            EngineKind::Podman => &["rm", "-f", "-t", "0"],
            EngineKind::Docker => &["rm", "-f"],
        }
    }
}

/// Removes every container labelled with the run and every volume named after it, until both
/// listings answer with nothing or `budget` ran out; returns how many of each were removed.
/// `engine` runs one engine command and gives its standard output when it succeeded.
///
/// Volumes by name, not by label: every volume of a run is named `<run id>-…` (its instance's
/// container name); a container created by a request still under way when the run ended makes
/// its named volume itself, without labels; and podman 4.3's label filter fails as a whole
/// when a volume goes while it lists. A listing that failed is asked again, never counted as
/// empty.
pub(crate) fn remove_run_objects(
    engine: &dyn Fn(&[&str]) -> Option<String>,
    kind: EngineKind,
    run_id: &str,
    budget: Duration,
) -> (usize, usize) {
    let filter = format!("label={LABEL_RUN}={run_id}");
    let prefix = format!("{run_id}-");
    let deadline = Instant::now() + budget;
    let (mut containers, mut volumes) = (0, 0);
    loop {
        let listed_ids = engine(&["ps", "-aq", "--filter", &filter]);
        let ids: Vec<&str> = listed_ids.as_deref().unwrap_or_default().split_whitespace().collect();
        if !ids.is_empty() {
            let mut rm: Vec<&str> = kind.rm_force().to_vec();
            rm.extend(ids.iter().copied());
            engine(&rm);
            containers += ids.len();
        }
        let listed_vols = engine(&["volume", "ls", "-q"]);
        let vols: Vec<&str> =
            listed_vols.as_deref().unwrap_or_default().split_whitespace().filter(|v| v.starts_with(&prefix)).collect();
        if !vols.is_empty() {
            let mut rm = vec!["volume", "rm", "-f"];
            rm.extend(vols.iter().copied());
            engine(&rm);
            volumes += vols.len();
        }
        // Done when both listings answered and found nothing: one more pass after removing
        // something (a container created meanwhile by an engine client that was still running
        // is caught by the next listing), and a listing that failed is asked again.
        let clean = listed_ids.is_some() && listed_vols.is_some() && ids.is_empty() && vols.is_empty();
        if clean || Instant::now() >= deadline {
            return (containers, volumes);
        }
        if listed_ids.is_none() || listed_vols.is_none() {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Held while a harness process loads images into an engine or removes a run's images from it.
///
/// podman commits a loaded image on layers it found in its store; another process removing an
/// image of the same layers at that moment (a run's cleanup: the same pgvector image loaded by
/// two tests under run-private names) leaves the load failing with "layer not known" (seen in
/// CI; reproduced with `podman load` of one name against `podman rmi` of another). Loads and
/// removals therefore take one lock: a lock file in the harness cache, shared by every harness
/// process and supervisor of the host, and a thread lock when no cache directory can hold it.
pub(crate) struct ImageStoreLock {
    _file: Option<std::fs::File>,
    _thread: std::sync::MutexGuard<'static, ()>,
}

/// Waits for and takes the [`ImageStoreLock`].
pub(crate) fn image_store_lock() -> ImageStoreLock {
    static IN_PROCESS: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let thread = IN_PROCESS.lock().unwrap_or_else(|e| e.into_inner());
    let file = (|| {
        let dir = cnpg_ext_pg::ProvisionOptions::from_env().cache_dir?;
        std::fs::create_dir_all(&dir).ok()?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("engine-images.lock"))
            .ok()?;
        file.lock().ok()?;
        Some(file)
    })();
    ImageStoreLock { _file: file, _thread: thread }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[test]
    fn the_image_lock_is_held_on_the_host_until_dropped() {
        let dir = cnpg_ext_pg::ProvisionOptions::from_env().cache_dir.expect("HOME or CNPG_EXT_HARNESS_CACHE");
        let held = image_store_lock();
        // Another process (here: another open file description) cannot take it meanwhile.
        let other = std::fs::OpenOptions::new().write(true).open(dir.join("engine-images.lock")).unwrap();
        assert!(matches!(other.try_lock(), Err(std::fs::TryLockError::WouldBlock)));
        drop(held);
        other.try_lock().expect("free once dropped");
    }

    /// A scripted engine: answers listings from its state, records removals.
    struct Fake {
        containers: RefCell<Vec<String>>,
        volumes: RefCell<Vec<String>>,
        failing_volume_listings: RefCell<usize>,
        calls: RefCell<Vec<String>>,
    }

    impl Fake {
        fn run(&self, args: &[&str]) -> Option<String> {
            self.calls.borrow_mut().push(args.join(" "));
            match args {
                ["ps", "-aq", "--filter", f] => {
                    assert_eq!(*f, "label=io.cnpg-ext-harness.run=r1");
                    Some(self.containers.borrow().join("\n"))
                }
                ["volume", "ls", "-q"] => {
                    let mut failing = self.failing_volume_listings.borrow_mut();
                    if *failing > 0 {
                        *failing -= 1;
                        return None;
                    }
                    Some(self.volumes.borrow().join("\n"))
                }
                ["volume", "rm", "-f", names @ ..] => {
                    self.volumes.borrow_mut().retain(|v| !names.contains(&v.as_str()));
                    Some(String::new())
                }
                ["rm", "-f", rest @ ..] => {
                    self.containers.borrow_mut().retain(|c| !rest.contains(&c.as_str()));
                    Some(String::new())
                }
                other => panic!("unexpected engine command {other:?}"),
            }
        }
    }

    #[test]
    fn removes_the_runs_containers_and_only_its_volumes_and_asks_again_after_a_failed_listing() {
        let fake = Fake {
            containers: RefCell::new(vec!["c1".into(), "c2".into()]),
            volumes: RefCell::new(vec!["r1-s-a".into(), "r10-s-a".into(), "other".into(), "r1-s-b".into()]),
            failing_volume_listings: RefCell::new(2),
            calls: RefCell::default(),
        };
        let (c, v) = remove_run_objects(&|a| fake.run(a), EngineKind::Podman, "r1", Duration::from_secs(5));
        assert_eq!((c, v), (2, 2));
        assert_eq!(*fake.volumes.borrow(), vec!["r10-s-a".to_string(), "other".to_string()]);
        assert!(fake.calls.borrow().iter().any(|c| c == "rm -f -t 0 c1 c2"), "{:?}", fake.calls.borrow());
    }

    #[test]
    fn gives_up_when_the_budget_runs_out() {
        let fake = Fake {
            containers: RefCell::default(),
            volumes: RefCell::default(),
            failing_volume_listings: RefCell::new(usize::MAX),
            calls: RefCell::default(),
        };
        let start = Instant::now();
        assert_eq!(remove_run_objects(&|a| fake.run(a), EngineKind::Docker, "r1", Duration::from_millis(200)), (0, 0));
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn kind_by_name() {
        assert_eq!(EngineKind::of(Path::new("/usr/bin/podman")).unwrap(), EngineKind::Podman);
        assert_eq!(EngineKind::of(Path::new("docker")).unwrap(), EngineKind::Docker);
        assert_eq!(EngineKind::Docker.rm_force(), ["rm", "-f"]);
    }
}
