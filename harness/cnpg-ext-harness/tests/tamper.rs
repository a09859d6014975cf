//! Every check of the verification layer is made to fail, by a backend wrapper that tampers
//! with the instances the real backend runs (their files, mounts, settings, environment) —
//! on the local backend and on the container backend — and each tampering must fail exactly
//! the check it targets, nothing else. A check that no test can make fail proves nothing.
//!
//! The container cases need a usable engine (`common::cannot_run` decides when its absence
//! is a failure); they reach an instance's files through `/proc/<postmaster>/root` and its
//! mounts by entering its mount namespace, so they run as root.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;
use cnpg_ext_backend::Backend;
use cnpg_ext_harness::error::HarnessError;
use cnpg_ext_harness::reports::run::RunReport;
use cnpg_ext_harness::run::Status;
use cnpg_ext_harness::Harness;
use cnpg_ext_model::backend::{ApplyOutcome, BackendError, InstanceObservation, InstanceRef, Role, RolloutRecord};
use cnpg_ext_model::{Cluster, ClusterDoc, ClusterPlan, DatabaseDoc};
use cnpg_ext_pg::OperandFlavor;

/// Where the instances run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum On {
    Local,
    Container,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tampering {
    /// After creation: a file disappears from one instance's mount (local).
    RemoveMountFile,
    /// After creation: one instance's mount becomes writable by everyone (local).
    WritableMount,
    /// After creation: one instance's mount becomes writable, by its owner (root) only — a
    /// write probe as the postgres uid is refused all the same. Local: the files get their
    /// owner's write bit back; container: a writable mount of the same files replaces the
    /// image's read-only one.
    OwnerWritableMount,
    /// Every postmaster really starts with an `LD_LIBRARY_PATH` the Cluster does not ask for.
    WrongLdLibraryPath,
    /// After creation: one instance's `dynamic_library_path` is changed and reloaded.
    WrongGuc,
    /// After creation: one instance's `extension_control_path` is changed and reloaded.
    WrongControlPath,
    /// While the plan is verified: a copy of the image's control and script files is put in a
    /// directory that one instance's `extension_control_path` then searches first.
    ControlEarlierOnPath,
    /// After creation: one instance's image mount is gone (local: its tree removed).
    MountGone,
    /// After creation: a directory nobody mounted appears under one instance's mount root.
    StrayMountDir,
    /// After the rolling update: the rows written before it are gone.
    TruncateSentinel,
    /// After creation: the operand gets its own copy of the module ($libdir is searched first).
    ModuleInOperand,
    /// After the rolling update: one replica loads libraries from the primary's mount (local).
    ReplicaLoadsFromElsewhere,
    /// After the rolling update: some of the extension's C functions name a library nobody
    /// ships (their `probin` changed on the primary, replayed by the replicas): loading it fails.
    ModuleLoadFails,
    /// After creation: one instance's image mount is unmounted inside its container; the
    /// empty directory stays (container).
    Unmounted,
    /// After creation: a writable copy of one instance's `lib/` is mounted over it, inside
    /// the image mount (container): same files, a mount nobody asked for.
    NestedMount,
    /// Preload scenario, after creation: the preloaded module is copied into the operand's
    /// `$libdir` (searched first) and the instance restarted, so the postmaster loads that copy.
    PreloadFromOperand,
    /// Preload scenario, after creation: `shared_preload_libraries` names the module by its
    /// absolute path in the mount (`ALTER SYSTEM` + restart): the same file is loaded, but the
    /// setting is not the one CNPG writes.
    PreloadListWrong,
    /// Environment scenario: every postmaster really starts with the image's `share/`
    /// appended to its `PATH` instead of the `bin_path` the Cluster asks for.
    WrongBinPath,
    /// Environment scenario: every postmaster really starts with another value of one `env`
    /// variable than the Cluster asks for.
    WrongEnv,
    /// After the rolling update: each replica refuses its first session to `app` (still
    /// starting, say), then answers: the check of the row written before polls, and passes.
    ReplicaAnswersLate,
}

/// Sessions refused by `ReplicaAnswersLate` (only its test uses it).
static REFUSED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

struct Tamper {
    inner: Box<dyn Backend>,
    how: Tampering,
    cluster: Mutex<Option<Cluster>>,
    /// The module copied into the operand (`ModuleInOperand`).
    module: PathBuf,
    /// Scratch space of the tampering (a writable copy of a mount), removed with the test.
    scratch: PathBuf,
    /// Whether the tampering during `inspect` happened already.
    inspected: Mutex<bool>,
    /// Instances whose next session to `app` is refused (`ReplicaAnswersLate`).
    refuse_once: Mutex<Vec<String>>,
}

impl Tamper {
    fn plan(&self, instance: &str) -> ClusterPlan {
        let c = self.cluster.lock().unwrap().clone().expect("a cluster was applied");
        self.inner.plan_for(&c, instance)
    }

    async fn instances_with(&self, role: Role) -> Vec<String> {
        self.inner.instances().await.unwrap().into_iter().filter(|i| i.role == role).map(|i| i.name).collect()
    }

    async fn sql(&self, instance: &str, db: &str, q: &str) -> String {
        let c = self.inner.connect(instance, db, "postgres").await.unwrap();
        let rows = c.simple_query(q).await.unwrap_or_else(|e| panic!("{q}: {e}"));
        rows.iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
                _ => None,
            })
            .unwrap_or_default()
    }

    fn on(&self) -> On {
        if self.inner.name() == "container" {
            On::Container
        } else {
            On::Local
        }
    }

    /// pid (on this host) of the instance's postmaster: local, its `postmaster.pid`; in a
    /// container, the container's first process, found by the container's host name.
    async fn postmaster_pid(&self, instance: &str) -> u32 {
        if self.on() == On::Local {
            let pid =
                self.sql(instance, "postgres", "SELECT split_part(pg_read_file('postmaster.pid'), E'\\n', 1)").await;
            return pid.trim().parse().unwrap();
        }
        let host = self.sql(instance, "postgres", "SELECT pg_read_file('/etc/hostname')").await.trim().to_string();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
            let Ok(status) = std::fs::read_to_string(e.path().join("status")) else { continue };
            let pid_one = status
                .lines()
                .find_map(|l| l.strip_prefix("NSpid:"))
                .is_some_and(|p| p.split_whitespace().count() > 1 && p.split_whitespace().last() == Some("1"));
            if pid_one && std::fs::read_to_string(e.path().join("root/etc/hostname")).is_ok_and(|h| h.trim() == host) {
                return pid;
            }
        }
        panic!("no container process with host name {host}");
    }

    /// A path of the instance's own filesystem, as this host reaches it.
    async fn host_path(&self, instance: &str, path: &str) -> PathBuf {
        match self.on() {
            On::Local => PathBuf::from(path),
            On::Container => {
                let pid = self.postmaster_pid(instance).await;
                PathBuf::from(format!("/proc/{pid}/root")).join(path.trim_start_matches('/'))
            }
        }
    }

    async fn after_create(&self) {
        let primary = self.instances_with(Role::Primary).await.remove(0);
        let plan = self.plan(&primary);
        let mount = self.host_path(&primary, &plan.extensions[0].mount_path).await;
        match (self.how, self.on()) {
            (Tampering::RemoveMountFile, On::Local) => std::fs::remove_file(mount.join("licenses/README.txt")).unwrap(),
            (Tampering::WritableMount, On::Local) => chmod(&mount, 0o777),
            (Tampering::OwnerWritableMount, On::Local) => chmod(&mount, 0o755),
            (Tampering::OwnerWritableMount, On::Container) => {
                let pid = self.postmaster_pid(&primary).await;
                let copy = self.scratch.join("writable-mount");
                copy_tree(&mount, &copy);
                mount_over(pid, &copy, &plan.extensions[0].mount_path);
            }
            (Tampering::WrongGuc, _) => self.set_and_reload(&primary, "dynamic_library_path", "$libdir").await,
            (Tampering::WrongControlPath, _) => {
                self.set_and_reload(&primary, "extension_control_path", "$system").await
            }
            (Tampering::MountGone, On::Local) => cnpg_ext_harness::testing::remove_tree(&mount).unwrap(),
            (Tampering::Unmounted, On::Container) => {
                let pid = self.postmaster_pid(&primary).await;
                unmount_in(pid, &plan.extensions[0].mount_path);
            }
            (Tampering::NestedMount, On::Container) => {
                let pid = self.postmaster_pid(&primary).await;
                let copy = self.scratch.join("nested-lib");
                copy_tree(&mount.join("lib"), &copy);
                mount_over(pid, &copy, &format!("{}/lib", plan.extensions[0].mount_path));
            }
            (Tampering::PreloadFromOperand, on) => {
                let libdir =
                    self.sql(&primary, "postgres", "SELECT setting FROM pg_config WHERE name = 'PKGLIBDIR'").await;
                let libdir = self.host_path(&primary, &libdir).await;
                std::fs::copy(mount.join("lib/preloadprobe.so"), libdir.join("preloadprobe.so")).unwrap();
                if on == On::Container {
                    // The copy is in this container's own filesystem: the same container
                    // restarts (a replacement would start from the image again).
                    let host = self.sql(&primary, "postgres", "SELECT pg_read_file('/etc/hostname')").await;
                    let o = engine_cli().args(["restart", host.trim()]).output().unwrap();
                    assert!(o.status.success(), "restart: {}", String::from_utf8_lossy(&o.stderr));
                    let up =
                        poll(|| async { self.inner.connect(&primary, "postgres", "postgres").await.is_ok() }).await;
                    assert!(up, "{primary} did not come back after its restart");
                }
            }
            (Tampering::PreloadListWrong, _) => {
                let path = format!("{}/lib/preloadprobe", plan.extensions[0].mount_path);
                self.sql(&primary, "postgres", &format!("ALTER SYSTEM SET shared_preload_libraries = '{path}'")).await;
            }
            (Tampering::StrayMountDir, _) => {
                let root = self.host_path(&primary, &plan.mount_root).await;
                std::fs::create_dir(root.join("stray")).unwrap();
            }
            (Tampering::ModuleInOperand, _) => {
                let libdir =
                    self.sql(&primary, "postgres", "SELECT setting FROM pg_config WHERE name = 'PKGLIBDIR'").await;
                let libdir = self.host_path(&primary, &libdir).await;
                std::fs::copy(&self.module, libdir.join("vector.so")).unwrap();
            }
            _ => {}
        }
    }

    /// `ALTER SYSTEM SET guc = value`, a reload, and until a new session shows it.
    async fn set_and_reload(&self, instance: &str, guc: &str, value: &str) {
        self.sql(instance, "postgres", &format!("ALTER SYSTEM SET {guc} = '{value}'")).await;
        self.sql(instance, "postgres", "SELECT pg_reload_conf()").await;
        let applied = poll(|| async { self.sql(instance, "postgres", &format!("SHOW {guc}")).await == value }).await;
        assert!(applied, "the reload did not apply");
    }

    /// During the verification of the primary (its search paths were read already).
    async fn while_inspected(&self, instance: &str) {
        if self.how != Tampering::ControlEarlierOnPath || instance != "tamper-1" {
            return;
        }
        if std::mem::replace(&mut *self.inspected.lock().unwrap(), true) {
            return;
        }
        let plan = self.plan(instance);
        let share = self.host_path(instance, &format!("{}/share/extension", plan.extensions[0].mount_path)).await;
        // A directory the postgres uid can read, in the instance's own filesystem.
        let earlier = format!("/tmp/cnpg-ext-tamper-{}", std::process::id());
        let host = self.host_path(instance, &earlier).await;
        copy_tree(&share, &host.join("extension"));
        chmod(&host, 0o755);
        let search = self.sql(instance, "postgres", "SHOW extension_control_path").await;
        self.set_and_reload(instance, "extension_control_path", &format!("{earlier}:{search}")).await;
    }

    async fn after_rollout(&self) {
        match self.how {
            Tampering::TruncateSentinel => {
                let primary = self.instances_with(Role::Primary).await.remove(0);
                self.sql(&primary, "app", "TRUNCATE cnpg_ext_harness_sentinel").await;
            }
            Tampering::ModuleLoadFails => {
                let primary = self.instances_with(Role::Primary).await.remove(0);
                let q = "UPDATE pg_proc SET probin = '$libdir/vector_gone' WHERE proname = 'vector_dims' AND probin IS NOT NULL";
                self.sql(&primary, "app", q).await;
            }
            Tampering::ReplicaAnswersLate => {
                *self.refuse_once.lock().unwrap() = self.instances_with(Role::Replica).await;
            }
            Tampering::ReplicaLoadsFromElsewhere => {
                let primary = self.instances_with(Role::Primary).await.remove(0);
                let replica = self.instances_with(Role::Replica).await.remove(0);
                let elsewhere = &self.plan(&primary).extensions[0].library_dirs[0];
                let q = format!("ALTER SYSTEM SET dynamic_library_path = '$libdir:{elsewhere}'");
                self.sql(&replica, "postgres", &q).await;
                self.sql(&replica, "postgres", "SELECT pg_reload_conf()").await;
                let want = format!("$libdir:{elsewhere}");
                let applied =
                    poll(|| async { self.sql(&replica, "postgres", "SHOW dynamic_library_path").await == want }).await;
                assert!(applied, "the reload did not apply");
            }
            _ => {}
        }
    }
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
}

/// Until `cond` holds, at most 30 s (a loaded machine), printing how long it took.
async fn poll<F, Fut>(cond: F) -> bool
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while start.elapsed() < std::time::Duration::from_secs(30) {
        if cond().await {
            eprintln!("condition met after {:?}", start.elapsed());
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    false
}

/// A copy of `src` owned by root, directories 0755 and files 0644: what an image built here
/// looks like, but on a writable filesystem.
fn copy_tree(src: &Path, dst: &Path) {
    for e in walkdir::WalkDir::new(src) {
        let e = e.unwrap();
        let to = dst.join(e.path().strip_prefix(src).unwrap());
        if e.file_type().is_dir() {
            std::fs::create_dir_all(&to).unwrap();
            chmod(&to, 0o755);
        } else if e.file_type().is_file() {
            std::fs::copy(e.path(), &to).unwrap();
            chmod(&to, 0o644);
        }
    }
}

/// The container engine's command line, with the global flags the harness gets.
fn engine_cli() -> std::process::Command {
    let opts = cnpg_ext_harness::EngineOptions::from_env();
    let on_path =
        |p: &str| std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).any(|d| d.join(p).is_file());
    let program =
        opts.engine.clone().unwrap_or_else(|| if on_path("podman") { "podman".into() } else { "docker".into() });
    let mut c = std::process::Command::new(program);
    c.args(cnpg_ext_harness::testing::split_flags(opts.engine_flags.as_deref().unwrap_or("")).unwrap());
    c
}

/// Unmounts `target` inside the mount namespace of process `pid` (a child enters it).
fn unmount_in(pid: u32, target: &str) {
    use nix::libc;
    use std::os::fd::AsRawFd;
    let target_c = std::ffi::CString::new(target).unwrap();
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/mnt")).unwrap();
    // SAFETY: plain system calls on a valid C string; the child only makes system calls.
    unsafe {
        let child = libc::fork();
        assert!(child >= 0, "fork: {}", std::io::Error::last_os_error());
        if child == 0 {
            if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNS) != 0 {
                libc::_exit(2);
            }
            libc::_exit(if libc::umount2(target_c.as_ptr(), libc::MNT_DETACH) == 0 { 0 } else { 3 });
        }
        let mut status = 0;
        libc::waitpid(child, &mut status, 0);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "unmounting {target} in the namespace of {pid} failed (status {status})"
        );
    }
}

/// Mounts `src` (a directory of this host) writable at `target` inside the mount namespace of
/// process `pid`: a detached copy of the mount is made here (`open_tree`), then attached
/// there (`move_mount`) by a child that entered the namespace.
fn mount_over(pid: u32, src: &Path, target: &str) {
    use nix::libc;
    use std::ffi::CString;
    use std::os::fd::AsRawFd;
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;
    let src_c = CString::new(src.as_os_str().to_str().unwrap()).unwrap();
    let target_c = CString::new(target).unwrap();
    let empty = CString::new("").unwrap();
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/mnt")).unwrap();
    // SAFETY: plain system calls on valid C strings; the child only makes system calls.
    unsafe {
        let tree = libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            src_c.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        );
        assert!(tree >= 0, "open_tree {}: {}", src.display(), std::io::Error::last_os_error());
        let child = libc::fork();
        assert!(child >= 0, "fork: {}", std::io::Error::last_os_error());
        if child == 0 {
            if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNS) != 0 {
                libc::_exit(2);
            }
            let moved = libc::syscall(
                libc::SYS_move_mount,
                tree as libc::c_int,
                empty.as_ptr(),
                libc::AT_FDCWD,
                target_c.as_ptr(),
                MOVE_MOUNT_F_EMPTY_PATH,
            );
            libc::_exit(if moved == 0 { 0 } else { 3 });
        }
        let mut status = 0;
        libc::waitpid(child, &mut status, 0);
        libc::close(tree as libc::c_int);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "mounting {} at {target} in the namespace of {pid} failed (status {status})",
            src.display()
        );
    }
}

#[async_trait]
impl Backend for Tamper {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn plan_for(&self, cluster: &Cluster, instance: &str) -> ClusterPlan {
        self.inner.plan_for(cluster, instance)
    }
    async fn apply_cluster(&mut self, doc: &ClusterDoc) -> Result<ApplyOutcome, BackendError> {
        *self.cluster.lock().unwrap() = Some(doc.cluster.clone());
        let mut doc = doc.clone();
        // What the instances run with; the plan the verifier derives comes from the
        // scenario's own Cluster (`plan_for`).
        for ext in &mut doc.cluster.spec.postgresql.extensions {
            match self.how {
                Tampering::WrongLdLibraryPath => ext.ld_library_path = Some(vec!["lib".into()]),
                Tampering::WrongBinPath => ext.bin_path = Some(vec!["share".into()]),
                Tampering::WrongEnv => {
                    for var in ext.env.iter_mut().flatten().filter(|v| v.name == "ENVPROBE_HOME") {
                        var.value = "/elsewhere".into();
                    }
                }
                _ => {}
            }
        }
        let outcome = self.inner.apply_cluster(&doc).await?;
        match &outcome {
            ApplyOutcome::Created => {
                self.after_create().await;
                // A real restart of every instance (the stand-in's own rolling restart), so
                // that the postmasters start with what was tampered.
                if self.how == Tampering::PreloadListWrong
                    || (self.how == Tampering::PreloadFromOperand && self.on() == On::Local)
                {
                    self.inner.restart().await?;
                }
            }
            ApplyOutcome::RolledOut { .. } => self.after_rollout().await,
            _ => {}
        }
        Ok(outcome)
    }
    async fn apply_database(&mut self, doc: &DatabaseDoc) -> Result<Vec<String>, BackendError> {
        self.inner.apply_database(doc).await
    }
    async fn restart(&mut self) -> Result<RolloutRecord, BackendError> {
        self.inner.restart().await
    }
    async fn instances(&self) -> Result<Vec<InstanceRef>, BackendError> {
        self.inner.instances().await
    }
    async fn connect(
        &self,
        instance: &str,
        database: &str,
        user: &str,
    ) -> Result<tokio_postgres::Client, BackendError> {
        if database == "app" {
            let mut refused = self.refuse_once.lock().unwrap();
            if let Some(i) = refused.iter().position(|r| r == instance) {
                refused.remove(i);
                REFUSED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                return Err(BackendError::Failed(format!("{instance}: refused once by the tampering")));
            }
        }
        self.inner.connect(instance, database, user).await
    }
    async fn inspect(&self, instance: &str, plan: &ClusterPlan) -> Result<InstanceObservation, BackendError> {
        let obs = self.inner.inspect(instance, plan).await;
        self.while_inspected(instance).await;
        obs
    }
    async fn server_log(&self, instance: &str) -> Option<String> {
        self.inner.server_log(instance).await
    }
    async fn teardown(&mut self, keep: bool) -> Result<(), BackendError> {
        if self.how == Tampering::ControlEarlierOnPath && self.on() == On::Local {
            let _ = cnpg_ext_harness::testing::remove_tree(Path::new(&format!(
                "/tmp/cnpg-ext-tamper-{}",
                std::process::id()
            )));
        }
        self.inner.teardown(keep).await
    }
}

const SCENARIO: &str = r#"description: target of the tampering tests
images:
  - reference: ghcr.io/cloudnative-pg/pgvector:0.8.6-18-trixie
    fixture: FIXTURE
  - reference: ghcr.io/cloudnative-pg/pgvector:0.8.6-18-trixie-b
    fixture: FIXTURE
steps:
  - apply: {file: cluster-a.yaml}
  - verify: {}
  - sql: {query: CREATE EXTENSION vector}
  - apply: {file: cluster-b.yaml, rollout: expected}
  - sql:
      on: replicas
      query: SELECT '[1,2,3]'::vector <#> '[4,5,6]'
      rows: [["-32"]]
"#;

fn cluster(tag: &str) -> String {
    format!(
        "apiVersion: postgresql.cnpg.io/v1\nkind: Cluster\nmetadata:\n  name: tamper\nspec:\n  instances: 3\n  postgresql:\n    extensions:\n      - name: pgvector\n        image:\n          reference: ghcr.io/cloudnative-pg/pgvector:0.8.6-18-trixie{tag}\n"
    )
}

/// A scenario directory with the pgvector fixture (its recipe changed by `edit`).
fn scenario(edit: impl Fn(&str) -> String) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let fixture = dir.path().join("fixture");
    std::fs::create_dir_all(fixture.join("licenses")).unwrap();
    let src = common::repo().join("fixtures/pgvector");
    let recipe = std::fs::read_to_string(src.join("fixture.yaml")).unwrap();
    std::fs::write(fixture.join("fixture.yaml"), edit(&recipe)).unwrap();
    std::fs::copy(src.join("licenses/README.txt"), fixture.join("licenses/README.txt")).unwrap();
    let s = dir.path().join("s");
    std::fs::create_dir_all(&s).unwrap();
    std::fs::write(s.join("scenario.yaml"), SCENARIO.replace("FIXTURE", fixture.to_str().unwrap())).unwrap();
    std::fs::write(s.join("cluster-a.yaml"), cluster("")).unwrap();
    std::fs::write(s.join("cluster-b.yaml"), cluster("-b")).unwrap();
    dir
}

/// The full install's pgvector module (what a careless operand would ship).
fn install_module() -> PathBuf {
    let pg = cnpg_ext_harness::run::locate_postgres(None).unwrap();
    pg.pkglibdir.join("vector.so")
}

/// The run's report; `None` when the container engine is not usable here (and that may be
/// skipped: `common::cannot_run`).
async fn run(on: On, how: Option<Tampering>, dir: &Path, operand: OperandFlavor) -> Option<RunReport> {
    let module = install_module();
    let mut h = match on {
        On::Local => Harness::local(),
        On::Container => Harness::container(),
    }
    .jobs(1)
    .operand(operand);
    if let Some(how) = how {
        let module = module.clone();
        let scratch = dir.join("scratch");
        std::fs::create_dir_all(&scratch).unwrap();
        h = h.wrap_backend(move |_, inner| {
            Box::new(Tamper {
                inner,
                how,
                cluster: Mutex::new(None),
                module: module.clone(),
                scratch: scratch.clone(),
                inspected: Mutex::new(false),
                refuse_once: Mutex::new(Vec::new()),
            }) as Box<dyn Backend>
        });
    }
    match h.run([dir.join("s")]).await {
        Ok(r) => Some(r),
        Err(HarnessError::Environment(msg)) if on == On::Container => {
            common::cannot_run(&format!("no usable container engine ({msg})"), Some("CNPG_EXT_HARNESS_REQUIRE_ENGINE"));
            None
        }
        Err(e) => panic!("the run could not start: {e}"),
    }
}

/// The failing step (1-based index) and the `what` of each failing check, on which instance.
fn failures(r: &RunReport) -> (usize, Vec<(String, Option<String>)>) {
    let s = &r.scenarios[0];
    let step =
        s.steps.iter().find(|st| st.status == Status::Failed).unwrap_or_else(|| panic!("no step failed: {s:#?}"));
    let bad = step.checks.iter().filter(|c| !c.ok).map(|c| (c.what.clone(), c.instance.clone())).collect();
    (step.index, bad)
}

#[rstest::rstest]
#[case::local(On::Local)]
#[case::container(On::Container)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untampered_it_passes_with_origin_proven_on_every_instance_it_ran_on(#[case] on: On) {
    let dir = scenario(|r| r.to_string());
    let Some(r) = run(on, None, dir.path(), OperandFlavor::Minimal).await else { return };
    assert!(r.passed(), "{}", r.failures());
    let origin: Vec<_> = r.scenarios[0]
        .steps
        .iter()
        .flat_map(|s| &s.checks)
        .filter(|c| c.what.starts_with("origin of vector"))
        .collect();
    // CREATE EXTENSION on the primary, then the replicas' query: 3 instances × (control + module).
    assert_eq!(origin.len(), 6, "{origin:#?}");
    assert!(origin.iter().all(|c| c.ok));
    assert!(origin.iter().any(|c| c.actual.contains("vector.so")), "{origin:#?}");
    // The report's environment is what was measured: the server's version as the instances
    // answered it; the container engine as its probe answered.
    let env = &r.environment;
    assert!(env.postgresql.starts_with("PostgreSQL 18.") && !env.postgresql.contains("not measured"), "{env:?}");
    match on {
        On::Local => assert_eq!(env.runtime, None),
        On::Container => assert!(
            env.runtime.as_deref().is_some_and(|r| r.starts_with("podman ") || r.starts_with("docker ")),
            "{env:?}"
        ),
    }
    assert_eq!(env.kubernetes, None);
}

#[rstest::rstest]
#[case::mount_file_removed(On::Local, Tampering::RemoveMountFile, 2, "files in ")]
#[case::mount_writable(On::Local, Tampering::WritableMount, 2, " read-only")]
#[case::mount_writable_by_its_owner(On::Local, Tampering::OwnerWritableMount, 2, " read-only")]
#[case::mount_writable_by_its_owner_container(On::Container, Tampering::OwnerWritableMount, 2, " read-only")]
#[case::ld_library_path(On::Local, Tampering::WrongLdLibraryPath, 2, "postmaster LD_LIBRARY_PATH")]
#[case::ld_library_path_container(On::Container, Tampering::WrongLdLibraryPath, 2, "postmaster LD_LIBRARY_PATH")]
#[case::guc(On::Local, Tampering::WrongGuc, 2, "SHOW dynamic_library_path")]
#[case::guc_container(On::Container, Tampering::WrongGuc, 2, "SHOW dynamic_library_path")]
#[case::control_path(On::Local, Tampering::WrongControlPath, 2, "SHOW extension_control_path")]
#[case::control_path_container(On::Container, Tampering::WrongControlPath, 2, "SHOW extension_control_path")]
#[case::control_earlier_on_the_path(On::Local, Tampering::ControlEarlierOnPath, 3, "origin of vector: control file")]
#[case::control_earlier_on_the_path_container(
    On::Container,
    Tampering::ControlEarlierOnPath,
    3,
    "origin of vector: control file"
)]
#[case::mount_gone(On::Local, Tampering::MountGone, 2, "")]
#[case::stray_mount_dir(On::Local, Tampering::StrayMountDir, 2, "mounts under ")]
#[case::stray_mount_dir_container(On::Container, Tampering::StrayMountDir, 2, "mounts under ")]
#[case::rows_lost(On::Local, Tampering::TruncateSentinel, 4, "row written before the update")]
#[case::rows_lost_container(On::Container, Tampering::TruncateSentinel, 4, "row written before the update")]
#[case::module_from_the_operand(On::Local, Tampering::ModuleInOperand, 3, "origin of vector: module vector.so")]
#[case::module_from_the_operand_container(
    On::Container,
    Tampering::ModuleInOperand,
    3,
    "origin of vector: module vector.so"
)]
#[case::module_load_fails(On::Local, Tampering::ModuleLoadFails, 5, "origin of vector: module vector_gone.so")]
#[case::module_load_fails_container(
    On::Container,
    Tampering::ModuleLoadFails,
    5,
    "origin of vector: module vector_gone.so"
)]
#[case::unmounted_container(On::Container, Tampering::Unmounted, 2, "")]
#[case::nested_mount_container(On::Container, Tampering::NestedMount, 2, "mount points under /extensions")]
#[case::replica_loads_from_elsewhere(
    On::Local,
    Tampering::ReplicaLoadsFromElsewhere,
    5,
    "origin of vector: module vector.so"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tampering_fails_exactly_its_check(
    #[case] on: On,
    #[case] how: Tampering,
    #[case] step: usize,
    #[case] check: &str,
) {
    let dir = scenario(|r| r.to_string());
    let Some(r) = run(on, Some(how), dir.path(), OperandFlavor::Minimal).await else { return };
    let (index, bad) = failures(&r);
    assert_eq!(index, step, "{how:?}: {}", r.failures());
    assert!(!bad.is_empty(), "{how:?}: the step failed without a failing check: {}", r.failures());
    assert!(bad.iter().all(|(what, _)| what.contains(check)), "{how:?}: other checks failed too: {bad:#?}");
    match how {
        // Only the tampered replica: the other replica's origin still holds.
        Tampering::ReplicaLoadsFromElsewhere => {
            assert_eq!(bad.len(), 1, "{bad:#?}");
            assert!(bad[0].1.as_deref().is_some_and(|i| i != "tamper-1"), "{bad:#?}");
        }
        // Replayed by both replicas, where the scenario's query runs.
        Tampering::ModuleLoadFails => {
            assert_eq!(bad.len(), 2, "{bad:#?}");
            assert!(bad.iter().all(|(_, i)| i.as_deref() != Some("tamper-1")), "{bad:#?}");
            assert!(r.failures().contains("loading $libdir/vector_gone failed"), "{}", r.failures());
        }
        // Presence and the set of mount points see it (the directory stays); its files are
        // gone, and whether it is read-only nobody can tell any more.
        Tampering::Unmounted => {
            let what: std::collections::BTreeSet<&str> = bad.iter().map(|(w, _)| w.as_str()).collect();
            for must in
                ["mount /extensions/pgvector", "mount points under /extensions", "files in /extensions/pgvector"]
            {
                assert!(what.contains(must), "{must}: {bad:#?}");
            }
            let may = ["/extensions/pgvector read-only"];
            assert!(
                what.len() <= 4
                    && what.iter().all(|w| w.starts_with("mount") || w.starts_with("files") || may.contains(w)),
                "{bad:#?}"
            );
            assert!(bad.iter().all(|(_, i)| i.as_deref() == Some("tamper-1")), "{bad:#?}");
        }
        // Tampered on the primary alone.
        Tampering::NestedMount
        | Tampering::OwnerWritableMount
        | Tampering::WrongGuc
        | Tampering::WrongControlPath
        | Tampering::StrayMountDir
        | Tampering::ControlEarlierOnPath => {
            assert_eq!(bad.len(), 1, "{bad:#?}");
            assert_eq!(bad[0].1.as_deref(), Some("tamper-1"), "{bad:#?}");
            if how == Tampering::ControlEarlierOnPath {
                assert!(
                    r.failures().contains("another location earlier on extension_control_path"),
                    "{}",
                    r.failures()
                );
            }
        }
        // The mount, its files and the mount root's listing: the checks that see it.
        Tampering::MountGone => {
            let mut what: Vec<&str> = bad.iter().map(|(w, _)| w.split(' ').next().unwrap()).collect();
            what.sort();
            assert_eq!(what, ["files", "mount", "mounts"], "{bad:#?}");
            assert!(bad.iter().all(|(_, i)| i.as_deref() == Some("tamper-1")), "{bad:#?}");
        }
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_the_image_lacks_is_not_taken_from_the_operand() {
    // The image's control file names $libdir/vector, but the image has no vector.so; the
    // operand has one: CREATE EXTENSION works — and must not pass.
    let dir = scenario(|r| r.lines().filter(|l| !l.contains("vector.so")).collect::<Vec<_>>().join("\n"));
    let r = run(On::Local, Some(Tampering::ModuleInOperand), dir.path(), OperandFlavor::Minimal).await.unwrap();
    let (index, bad) = failures(&r);
    assert_eq!(index, 3, "{}", r.failures());
    assert_eq!(bad.len(), 1, "{bad:#?}");
    let summary = r.failures();
    assert!(summary.contains("the image does not ship vector.so"), "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_file_only_the_operand_has_is_reported() {
    // An image with the module only, on the standard operand (which ships pgvector).
    let dir = scenario(|r| {
        r.lines()
            .filter(|l| !l.contains("vector.control"))
            .map(|l| l.replace("\"${control:vector}\"", "\"0.8.6\""))
            .collect::<Vec<_>>()
            .join("\n")
    });
    let r = run(On::Local, None, dir.path(), OperandFlavor::Standard).await.unwrap();
    let (index, bad) = failures(&r);
    assert_eq!(index, 3, "{}", r.failures());
    assert!(bad.iter().any(|(w, _)| w == "origin of vector: control file"), "{bad:#?}");
    assert!(r.failures().contains("only the operand ships vector.control"), "{}", r.failures());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standard_operand_shadows_the_pgvector_image() {
    let dir = scenario(|r| r.to_string());
    let r = run(On::Local, None, dir.path(), OperandFlavor::Standard).await.unwrap();
    let (index, bad) = failures(&r);
    assert_eq!(index, 3, "{}", r.failures());
    assert!(bad.iter().all(|(w, _)| w.starts_with("origin of vector")), "{bad:#?}");
    assert!(r.failures().contains("shadowed"), "{}", r.failures());
    let operand = r.environment.operand.as_ref().unwrap();
    assert_eq!(operand.flavor, "standard");
    assert!(operand.extensions.iter().any(|e| e == "vector") && operand.extensions.iter().any(|e| e == "cube"));
}

/// The checks of the one step that failed in a run of the tampering scenario by the binary
/// on `backend` under `CNPG_EXT_HARNESS_FAULT=fault` (so that the fault stays in its
/// process): the rolling update (step 4), with the run's output; `None` when the container
/// engine is not usable here (and that may be skipped: `common::cannot_run`).
fn faulted_rollout(backend: &str, fault: &str) -> Option<(Vec<serde_json::Value>, String)> {
    let dir = scenario(|r| r.to_string());
    let reports = dir.path().join("reports");
    let parent = common::workdir_parent("tamper-order");
    let o = common::bin()
        .args(["run", "--backend", backend, "--jobs", "1", "--no-progress"])
        .arg("--report-dir")
        .arg(&reports)
        .arg("--workdir")
        .arg(parent.path())
        .arg(dir.path().join("s"))
        .env(cnpg_ext_harness::testing::ENV_FAULT, fault)
        .output()
        .unwrap();
    let out = common::text(&o);
    if backend == "container" && o.status.code() == Some(3) {
        common::cannot_run(&format!("no usable container engine: {out}"), Some("CNPG_EXT_HARNESS_REQUIRE_ENGINE"));
        return None;
    }
    assert_eq!(o.status.code(), Some(1), "{out}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(reports.join("report.json")).unwrap()).unwrap();
    let steps = report["scenarios"][0]["steps"].as_array().unwrap();
    let failed: Vec<&serde_json::Value> = steps.iter().filter(|s| s["status"] == "failed").collect();
    assert_eq!(failed.len(), 1, "{out}");
    assert_eq!(failed[0]["index"], 4, "{out}");
    Some((failed[0]["checks"].as_array().unwrap().clone(), out))
}

/// A stand-in that replaces the primary first but records the replicas first (a lying
/// record, `CNPG_EXT_HARNESS_FAULT=rollout-primary-first`): the start times measured on the
/// instances must fail it.
#[rstest::rstest]
#[case::local("local")]
#[case::container("container")]
#[test]
fn a_primary_replaced_first_fails_the_measured_order_whatever_the_record_says(#[case] backend: &str) {
    let Some((checks, _)) = faulted_rollout(backend, "rollout-primary-first") else { return };
    let bad: Vec<&serde_json::Value> = checks.iter().filter(|c| c["ok"] == false).collect();
    assert_eq!(bad.len(), 1, "{bad:#?}");
    assert_eq!(bad[0]["what"], "replicas restarted before the primary (measured start times)");
    // The record itself claims the planned order.
    let record_order = checks.iter().find(|c| c["what"] == "replicas restarted before the primary");
    assert_eq!(record_order.unwrap()["ok"], true, "{checks:#?}");
}

/// A stand-in whose record lists each instance once while it restarted replica `tamper-2`
/// twice (`CNPG_EXT_HARNESS_FAULT=rollout-restart-twice=tamper-2`) or not at all
/// (`rollout-not-restarted=tamper-2`): the postmaster starts `tamper-2`'s server log shows
/// must fail "restarted exactly once", the record notwithstanding.
#[rstest::rstest]
#[case::twice_local("local", "rollout-restart-twice=tamper-2")]
#[case::twice_container("container", "rollout-restart-twice=tamper-2")]
#[case::never_local("local", "rollout-not-restarted=tamper-2")]
#[case::never_container("container", "rollout-not-restarted=tamper-2")]
#[test]
fn a_restart_the_record_miscounts_fails_restarted_exactly_once(#[case] backend: &str, #[case] fault: &str) {
    let Some((checks, out)) = faulted_rollout(backend, fault) else { return };
    let bad: Vec<(&str, &str, &str, &str)> = checks
        .iter()
        .filter(|c| c["ok"] == false)
        .map(|c| {
            let field = |k: &str| c[k].as_str().unwrap_or_default();
            (field("what"), field("instance"), field("expected"), field("actual"))
        })
        .collect();
    let (what, instance, expected, actual) = bad[0];
    assert_eq!((what, instance, expected), ("restarted exactly once", "tamper-2", "1"), "{bad:#?}\n{out}");
    if fault.starts_with("rollout-restart-twice") {
        assert_eq!(bad.len(), 1, "{bad:#?}");
        assert!(actual.starts_with("2 (logged: ") && actual.ends_with("); the backend's record lists 1"), "{actual}");
    } else {
        assert_eq!(actual, "0; the backend's record lists 1");
        // Its start time did not move either (measured before this change too).
        assert_eq!(bad.len(), 2, "{bad:#?}");
        assert_eq!((bad[1].0, bad[1].1), ("pg_postmaster_start_time() moved forward", "tamper-2"));
    }
    // Every other instance: one start logged, as recorded.
    let others: Vec<&serde_json::Value> =
        checks.iter().filter(|c| c["what"] == "restarted exactly once" && c["instance"] != "tamper-2").collect();
    assert_eq!(others.len(), 2, "{checks:#?}");
    assert!(others.iter().all(|c| c["ok"] == true && c["actual"].as_str().unwrap().starts_with("1 (logged: ")));
}

/// Two mounts of one instance ship `lib/vector.so`. Where the kernel names a mapped file by
/// its path inside the image (overlay-backed image mounts: the container backend), that name
/// cannot say which mount it came from, and the origin must not pass; where it names the
/// mount's path (local), it can.
#[rstest::rstest]
#[case::local(On::Local)]
#[case::container(On::Container)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_mounts_shipping_the_same_path(#[case] on: On) {
    let dir = scenario(|r| r.to_string());
    let s = dir.path().join("s");
    let scenario = std::fs::read_to_string(s.join("scenario.yaml")).unwrap();
    let head = &scenario[..scenario.find("steps:").unwrap()];
    std::fs::write(
        s.join("scenario.yaml"),
        format!("{head}steps:\n  - apply: {{file: cluster-a.yaml}}\n  - sql: {{query: CREATE EXTENSION vector}}\n"),
    )
    .unwrap();
    let mut both = cluster("");
    both += "      - name: pgvector2\n        image:\n          reference: ghcr.io/cloudnative-pg/pgvector:0.8.6-18-trixie-b\n";
    std::fs::write(s.join("cluster-a.yaml"), both).unwrap();
    let Some(r) = run(on, None, dir.path(), OperandFlavor::Minimal).await else { return };
    if on == On::Local {
        assert!(r.passed(), "{}", r.failures());
        return;
    }
    let (index, bad) = failures(&r);
    assert_eq!(index, 2, "{}", r.failures());
    assert_eq!(bad.len(), 1, "{bad:#?}");
    assert!(bad[0].0.starts_with("origin of vector: module vector.so"), "{bad:#?}");
    assert!(r.failures().contains("2 mounts of this instance ship /lib/vector.so"), "{}", r.failures());
}

/// A scenario directory of one repository scenario's `cluster.yaml` with its Cluster renamed
/// `tamper` (`cluster` names it; `marker` must be in the manifest) and one fixture image:
/// created and verified.
fn scenario_of(
    what: &str,
    reference: &str,
    fixture: &str,
    from: &str,
    cluster: &str,
    marker: &str,
) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let s = dir.path().join("s");
    std::fs::create_dir_all(&s).unwrap();
    let fixture = common::repo().join(fixture);
    std::fs::write(
        s.join("scenario.yaml"),
        format!(
            "description: target of the {what} tampering tests\nimages:\n  - reference: {reference}\n    fixture: {}\nsteps:\n  - apply: {{file: cluster.yaml}}\n  - verify: {{}}\n",
            fixture.display()
        ),
    )
    .unwrap();
    let manifest = std::fs::read_to_string(common::repo().join(from)).unwrap();
    assert!(manifest.contains(&format!("name: {cluster}")) && manifest.contains(marker), "{from}");
    std::fs::write(s.join("cluster.yaml"), manifest.replace(&format!("name: {cluster}"), "name: tamper")).unwrap();
    dir
}

/// A scenario directory with the preload fixture: two instances that preload its module.
fn preload_scenario() -> tempfile::TempDir {
    scenario_of(
        "preload",
        "ghcr.io/example/preloadprobe:1.0-18-trixie",
        "fixtures/preload",
        "scenarios/preload-library/cluster.yaml",
        "cluster-preload",
        "shared_preload_libraries",
    )
}

/// The preloaded module's checks, tampered on the instances: the postmaster really loads
/// another copy, or really starts with another `shared_preload_libraries`.
#[rstest::rstest]
#[case::preloaded_from_the_operand(On::Local, Tampering::PreloadFromOperand)]
#[case::preloaded_from_the_operand_container(On::Container, Tampering::PreloadFromOperand)]
#[case::preload_setting(On::Local, Tampering::PreloadListWrong)]
#[case::preload_setting_container(On::Container, Tampering::PreloadListWrong)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_preload_tampering_fails_exactly_its_check(#[case] on: On, #[case] how: Tampering) {
    let dir = preload_scenario();
    let Some(r) = run(on, Some(how), dir.path(), OperandFlavor::Minimal).await else { return };
    let (index, bad) = failures(&r);
    assert_eq!(index, 2, "{how:?}: {}", r.failures());
    let (check, tampered): (&str, &[&str]) = match (how, on) {
        // Local instances share one operand install: every one of them loads the copy.
        (Tampering::PreloadFromOperand, On::Local) => {
            ("origin of preloaded preloadprobe.so", &["tamper-1", "tamper-2"])
        }
        (Tampering::PreloadFromOperand, On::Container) => ("origin of preloaded preloadprobe.so", &["tamper-1"]),
        _ => ("SHOW shared_preload_libraries", &["tamper-1"]),
    };
    assert!(bad.iter().all(|(what, _)| what.starts_with(check)), "{how:?}: other checks failed too: {bad:#?}");
    let mut instances: Vec<&str> = bad.iter().filter_map(|(_, i)| i.as_deref()).collect();
    instances.sort();
    assert_eq!(instances, tampered, "{bad:#?}");
    if how == Tampering::PreloadFromOperand {
        assert!(r.failures().contains("shadowed by the operand's $libdir"), "{}", r.failures());
    }
}

/// A scenario directory with the envprobe fixture (CloudNativePG 1.29+ `bin_path` and `env`):
/// two instances, created and verified.
fn env_scenario() -> tempfile::TempDir {
    scenario_of(
        "environment",
        "ghcr.io/example/envprobe:1.0-18-trixie",
        "fixtures/envprobe",
        "scenarios/bin-path-and-env/cluster.yaml",
        "cluster-env",
        "bin_path: [bin]",
    )
}

/// `bin_path` and `env` (1.29+), tampered in what the postmasters really start with: the
/// check of each fails on every instance, and nothing else does.
#[rstest::rstest]
#[case::bin_path(On::Local, Tampering::WrongBinPath, "postmaster PATH (bin_path appended)")]
#[case::bin_path_container(On::Container, Tampering::WrongBinPath, "postmaster PATH (bin_path appended)")]
#[case::env(On::Local, Tampering::WrongEnv, "postmaster environment ENVPROBE_HOME")]
#[case::env_container(On::Container, Tampering::WrongEnv, "postmaster environment ENVPROBE_HOME")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_environment_tampering_fails_exactly_its_check(
    #[case] on: On,
    #[case] how: Tampering,
    #[case] check: &str,
) {
    let dir = env_scenario();
    let Some(r) = run(on, Some(how), dir.path(), OperandFlavor::Minimal).await else { return };
    let (index, bad) = failures(&r);
    assert_eq!(index, 2, "{how:?}: {}", r.failures());
    assert!(bad.iter().all(|(what, _)| what == check), "{how:?}: other checks failed too: {bad:#?}");
    let mut instances: Vec<&str> = bad.iter().filter_map(|(_, i)| i.as_deref()).collect();
    instances.sort();
    assert_eq!(instances, ["tamper-1", "tamper-2"], "{bad:#?}");
}

/// A replica that refuses its first session after the rolling update is asked again: the row
/// written before the update is found there, and the run passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_answers_late_is_asked_again() {
    let dir = scenario(|r| r.to_string());
    let r = run(On::Local, Some(Tampering::ReplicaAnswersLate), dir.path(), OperandFlavor::Minimal).await.unwrap();
    assert!(r.passed(), "{}", r.failures());
    assert_eq!(REFUSED.load(std::sync::atomic::Ordering::SeqCst), 2, "each replica refused one session");
}

/// Without the host view of a container's mounts (no root, a remote engine: here
/// `CNPG_EXT_HARNESS_FAULT=mounts-by-exec`, through the binary so that the fault stays in its
/// process), the files of every mount are listed by `find` in the container, and the
/// untampered scenario passes with the same checks.
#[test]
fn mounts_listed_inside_the_container_pass_the_same_checks() {
    let dir = scenario(|r| r.to_string());
    let reports = dir.path().join("reports");
    let parent = common::workdir_parent("tamper-exec");
    let o = common::bin()
        .args(["run", "--backend", "container", "--jobs", "1", "--no-progress"])
        .arg("--report-dir")
        .arg(&reports)
        .arg("--workdir")
        .arg(parent.path())
        .arg(dir.path().join("s"))
        .env(cnpg_ext_harness::testing::ENV_FAULT, "mounts-by-exec")
        .output()
        .unwrap();
    let out = common::text(&o);
    if o.status.code() == Some(3) {
        common::cannot_run(&format!("no usable container engine: {out}"), Some("CNPG_EXT_HARNESS_REQUIRE_ENGINE"));
        return;
    }
    assert_eq!(o.status.code(), Some(0), "{out}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(reports.join("report.json")).unwrap()).unwrap();
    let verify = &report["scenarios"][0]["steps"][1];
    let files: Vec<&serde_json::Value> =
        verify["checks"].as_array().unwrap().iter().filter(|c| c["what"] == "files in /extensions/pgvector").collect();
    assert_eq!(files.len(), 3, "{verify:#}");
    assert!(files.iter().all(|c| c["ok"] == true && c["actual"] == c["expected"]), "{files:#?}");
}
