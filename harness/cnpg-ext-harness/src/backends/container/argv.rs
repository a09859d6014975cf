//! Command lines and files the container backend produces, as pure functions (snapshotted).

use std::path::Path;

use cnpg_ext_model::ClusterPlan;

use super::engine::EngineKind;

/// `<bindir>/<name>`, or just `name` (found on the image's PATH) when `bindir` is empty.
pub(crate) fn program(bindir: &str, name: &str) -> String {
    if bindir.is_empty() {
        name.to_string()
    } else {
        format!("{}/{name}", bindir.trim_end_matches('/'))
    }
}
use super::hostflags::HostFlags;
use testcontainers::bollard::models::{Mount, MountType};

/// Every container, volume and image a run creates carries this label with the run id.
pub use crate::plumbing::engine::LABEL_RUN;
pub(crate) const LABEL_SCENARIO: &str = "io.cnpg-ext-harness.scenario";
pub(crate) const LABEL_INSTANCE: &str = "io.cnpg-ext-harness.instance";
/// Operand images the harness built (kept across runs as a cache).
pub(crate) const LABEL_OPERAND: &str = "io.cnpg-ext-harness.operand";

/// uid/gid PostgreSQL runs as in the container (CloudNativePG's operand images use 26).
pub(crate) const PG_UID: u32 = 26;
/// Where the instance volume is mounted; PGDATA is `pgdata` below it (as in CNPG pods).
pub(crate) const DATA_MOUNT: &str = "/var/lib/postgresql/data";
pub(crate) const PGDATA: &str = "/var/lib/postgresql/data/pgdata";
/// An empty directory owned by the postgres uid in the operand image: a new replica volume
/// is first mounted here so that it gets that owner, then filled by `pg_basebackup`.
pub(crate) const STANDBY_MOUNT: &str = "/var/lib/postgresql/standby";
/// Host directories bind-mounted into each instance: its unix socket and its configuration.
pub(crate) const SOCKET_DIR: &str = "/controller/run";
pub(crate) const CONF_DIR: &str = "/controller/conf";
/// The primary's socket directory, seen from replicas (streaming replication, base backups).
pub(crate) const PRIMARY_SOCKET_DIR: &str = "/controller/primary";
/// Where extension images are mounted (what the operator does in the pod).
pub(crate) const MOUNT_ROOT: &str = "/extensions";

/// One image volume of an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ImageMount {
    pub reference: String,
    pub destination: String,
}

/// `--mount` value for an image volume, read-only.
pub(crate) fn image_mount_arg(kind: EngineKind, m: &ImageMount) -> String {
    match kind {
        // podman: image mounts are read-only unless rw=true; say so explicitly.
        EngineKind::Podman => format!("type=image,source={},destination={},rw=false", m.reference, m.destination),
        EngineKind::Docker => format!("type=image,source={},destination={},readonly", m.reference, m.destination),
    }
}

pub(crate) fn label_args(labels: &[(String, String)]) -> Vec<String> {
    labels.iter().flat_map(|(k, v)| ["--label".to_string(), format!("{k}={v}")]).collect()
}

/// Everything that differs between two instance containers.
#[derive(Debug, Clone)]
pub(crate) struct InstanceRun<'a> {
    pub container: &'a str,
    pub labels: &'a [(String, String)],
    pub image: &'a str,
    /// Directory of the PostgreSQL programs inside `image`.
    pub bindir: &'a str,
    pub volume: &'a str,
    pub socket_dir: &'a Path,
    pub conf_dir: &'a Path,
    /// Replicas: the primary's socket directory on the host.
    pub primary_socket_dir: Option<&'a Path>,
    pub mounts: &'a [ImageMount],
    pub ld_library_path: Option<&'a str>,
    /// Directories the operator appends to the postmaster's `PATH` (1.29+ `bin_path`): the
    /// image's own `PATH` is kept in front of them.
    pub bin_path: Option<&'a str>,
    /// The extensions' `env` (1.29+), set in the postmaster's environment.
    pub env: &'a std::collections::BTreeMap<String, String>,
    /// A new replica: this command (the base backup) runs first, in the same container,
    /// then postgres replaces the shell (`sh -c '… && exec postgres …'`).
    pub bootstrap: Option<&'a [String]>,
}

/// Options every container of the backend gets: non-root, no network, fast shutdown on stop.
fn common_run(kind: EngineKind, run_flags: &[String], name: &str, labels: &[(String, String)]) -> Vec<String> {
    let _ = kind;
    let mut a: Vec<String> = vec!["run".into()];
    a.extend(["--name".into(), name.to_string()]);
    a.extend(label_args(labels));
    a.extend(["--user".into(), format!("{PG_UID}:{PG_UID}")]);
    // No network, unless the engine-run flags name one (engines refuse two).
    let network = |f: &String| ["--network", "--net"].iter().any(|n| f == n || f.starts_with(&format!("{n}=")));
    if !run_flags.iter().any(network) {
        a.extend(["--network".into(), "none".into()]);
    }
    a.extend(run_flags.iter().cloned());
    a
}

/// One PostgreSQL instance container as the Engine API creates it (`POST /containers/create`):
/// everything `run --detach` used to say, in the API's terms.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct InstanceSpec {
    pub name: String,
    pub image: String,
    pub user: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub env: Vec<(String, String)>,
    pub cmd: Vec<String>,
    pub network_mode: String,
    /// Data volume, socket and configuration directories, the primary's socket directory
    /// (replicas), then one image mount per extension.
    pub mounts: Vec<Mount>,
    /// The engine-run flags' host settings (ulimits, capabilities, …).
    #[serde(flatten)]
    pub host: HostFlags,
}

fn bind(source: &Path, target: &str, read_only: bool) -> Mount {
    Mount {
        typ: Some(MountType::BIND),
        source: Some(source.display().to_string()),
        target: Some(target.into()),
        read_only: read_only.then_some(true),
        ..Mount::default()
    }
}

/// An image mount. No `ReadOnly`: image mounts are read-only by default and podman 4.3's API
/// refuses the option ("ro: invalid mount option"); the observation checks the mount really
/// is read-only.
pub(crate) fn image_mount(m: &ImageMount) -> Mount {
    Mount {
        typ: Some(MountType::IMAGE),
        source: Some(m.reference.clone()),
        target: Some(m.destination.clone()),
        ..Mount::default()
    }
}

/// The container of one PostgreSQL instance: non-root, no network (unless the engine-run
/// flags name one), its volume and host directories, one image mount per extension, the
/// operator's `LD_LIBRARY_PATH`, and the engine-run flags' host settings.
pub(crate) fn instance_spec(r: &InstanceRun<'_>, host: &HostFlags) -> InstanceSpec {
    let mut mounts = vec![
        Mount {
            typ: Some(MountType::VOLUME),
            source: Some(r.volume.to_string()),
            target: Some(DATA_MOUNT.into()),
            ..Mount::default()
        },
        bind(r.socket_dir, SOCKET_DIR, false),
        bind(r.conf_dir, CONF_DIR, true),
    ];
    if let Some(p) = r.primary_socket_dir {
        mounts.push(bind(p, PRIMARY_SOCKET_DIR, false));
    }
    mounts.extend(r.mounts.iter().map(image_mount));
    let mut env = vec![("LANG".to_string(), "C".to_string())];
    if let Some(ld) = r.ld_library_path {
        env.push(("LD_LIBRARY_PATH".into(), ld.to_string()));
    }
    env.extend(r.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    let postgres = vec![
        program(r.bindir, "postgres"),
        "-D".into(),
        PGDATA.into(),
        "-c".into(),
        format!("config_file={CONF_DIR}/postgresql.conf"),
    ];
    let quote = |v: &[String]| v.iter().map(|w| crate::plumbing::shell::shell_quote(w)).collect::<Vec<_>>().join(" ");
    // `bin_path`: appended to the PATH the image gives its first process, as the instance
    // manager appends to the PATH it inherits.
    let path_prefix = r
        .bin_path
        .map(|b| format!("export PATH=\"${{PATH:+$PATH:}}\"{}; ", crate::plumbing::shell::shell_quote(b)))
        .unwrap_or_default();
    let cmd = match r.bootstrap {
        None if path_prefix.is_empty() => postgres,
        None => vec!["sh".into(), "-c".into(), format!("{path_prefix}exec {}", quote(&postgres))],
        Some(first) => {
            vec!["sh".into(), "-c".into(), format!("{path_prefix}{} && exec {}", quote(first), quote(&postgres))]
        }
    };
    InstanceSpec {
        name: r.container.to_string(),
        image: r.image.to_string(),
        user: format!("{PG_UID}:{PG_UID}"),
        labels: r.labels.iter().cloned().collect(),
        env,
        cmd,
        network_mode: host.network.clone().unwrap_or_else(|| "none".into()),
        mounts,
        host: host.clone(),
    }
}

/// `pg_basebackup -R` from the primary's socket directory into `<mount_at>/pgdata`.
pub(crate) fn base_backup_command(bindir: &str, mount_at: &str) -> Vec<String> {
    let mut a = vec![program(bindir, "pg_basebackup")];
    a.extend(["-D".into(), format!("{mount_at}/pgdata")]);
    a.extend(["-h".into(), PRIMARY_SOCKET_DIR.into()]);
    a.extend(
        ["-p", "5432", "-U", "postgres", "-R", "-X", "stream", "-c", "fast", "--no-sync"].iter().map(|s| s.to_string()),
    );
    a
}

#[allow(clippy::too_many_arguments)]
/// `run --rm …` that fills a new replica volume with `pg_basebackup -R` from the primary.
pub(crate) fn base_backup_args(
    kind: EngineKind,
    run_flags: &[String],
    container: &str,
    labels: &[(String, String)],
    image: &str,
    bindir: &str,
    volume: &str,
    mount_at: &str,
    primary_socket_dir: &Path,
) -> Vec<String> {
    let mut a = common_run(kind, run_flags, container, labels);
    a.insert(1, "--rm".into());
    a.extend(["--volume".into(), format!("{volume}:{mount_at}")]);
    a.extend(["--volume".into(), format!("{}:{PRIMARY_SOCKET_DIR}", primary_socket_dir.display())]);
    a.push(image.to_string());
    a.extend(base_backup_command(bindir, mount_at));
    a
}

/// `run` of a one-off step while deriving the operand image (initdb, bootstrap SQL).
pub(crate) fn oneoff_run_args(
    kind: EngineKind,
    run_flags: &[String],
    container: &str,
    labels: &[(String, String)],
    interactive: bool,
    image: &str,
    command: &[String],
) -> Vec<String> {
    let mut a = common_run(kind, run_flags, container, labels);
    if interactive {
        a.insert(1, "--interactive".into());
    }
    a.push(image.to_string());
    a.extend(command.iter().cloned());
    a
}

/// The instance's `postgresql.conf` (bind-mounted read-only, named by `-c config_file`):
/// base settings plus what the operator derives. Rewritten and reloaded on a search-path change.
pub(crate) fn postgresql_conf(plan: &ClusterPlan) -> String {
    format!(
        "# written by cnpg-ext-harness (container backend)\n{}unix_socket_directories = '/controller/run'\n\n{}",
        crate::backends::standin::INSTANCE_CONF,
        crate::backends::standin::operator_conf(plan),
    )
}

/// A name the engines accept for containers and volumes.
pub(crate) fn sanitize(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-' { c } else { '-' })
        .collect();
    if !out.chars().next().is_some_and(|c| c.is_ascii_alphanumeric()) {
        out.insert(0, 'x');
    }
    out
}

#[cfg(test)]
mod tests {
    static NO_ENV: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();

    use super::*;

    #[test]
    fn programs_in_the_image() {
        assert_eq!(program("", "postgres"), "postgres");
        assert_eq!(program("/usr/lib/postgresql/18/bin/", "initdb"), "/usr/lib/postgresql/18/bin/initdb");
    }
    use cnpg_ext_model::cluster::Manifest;
    use cnpg_ext_model::{Cluster, PlanOptions};

    fn cluster() -> Cluster {
        let yaml = r#"
apiVersion: postgresql.cnpg.io/v1
kind: Cluster
metadata: {name: c}
spec:
  instances: 2
  postgresql:
    extensions:
      - name: pgvector
        image: {reference: "ghcr.io/cloudnative-pg/pgvector:0.8.6-18-trixie"}
      - name: greet
        image: {reference: "ghcr.io/example/greet:1.0-18-trixie"}
        ld_library_path: [system]
"#;
        match Manifest::parse(Path::new("c.yaml"), yaml).unwrap().remove(0) {
            Manifest::Cluster(d) => d.cluster,
            other => panic!("{other:?}"),
        }
    }

    fn labels() -> Vec<(String, String)> {
        vec![
            (LABEL_RUN.into(), "cnpg-ext-AbC123".into()),
            (LABEL_SCENARIO.into(), "system-library".into()),
            (LABEL_INSTANCE.into(), "c-2".into()),
        ]
    }

    fn mounts(plan: &ClusterPlan) -> Vec<ImageMount> {
        plan.extensions
            .iter()
            .map(|e| ImageMount { reference: e.image.clone(), destination: e.mount_path.clone() })
            .collect()
    }

    fn run_flags() -> Vec<String> {
        super::super::engine::split_flags("--ulimit nofile=20000:20000 --ulimit nproc=1024:1024").unwrap()
    }

    /// A primary with no extensions, labels or library path.
    fn bare_primary() -> InstanceRun<'static> {
        InstanceRun {
            container: "n",
            labels: &[],
            image: "img",
            bindir: "/b",
            volume: "v",
            socket_dir: Path::new("/s"),
            conf_dir: Path::new("/c"),
            primary_socket_dir: None,
            mounts: &[],
            ld_library_path: None,
            bin_path: None,
            env: &NO_ENV,
            bootstrap: None,
        }
    }

    macro_rules! snap {
        ($name:expr, $value:expr) => {
            insta::with_settings!({snapshot_path => concat!(env!("CARGO_MANIFEST_DIR"), "/../../snapshots/container"), prepend_module_to_snapshot => false}, {
                insta::assert_yaml_snapshot!($name, $value);
            })
        };
    }

    #[test]
    fn replica_run_command() {
        let plan = ClusterPlan::derive(&cluster(), &PlanOptions::default());
        let m = mounts(&plan);
        let labels = labels();
        let r = InstanceRun {
            container: "cnpg-ext-AbC123-system-library-c-2",
            labels: &labels,
            image: "localhost/cnpg-ext-harness/postgres:18.6-0123456789ab",
            bindir: "/usr/lib/postgresql/18/bin",
            volume: "cnpg-ext-AbC123-system-library-c-2",
            socket_dir: Path::new("/tmp/cnpg-ext-AbC123/c/system-library/2/run"),
            conf_dir: Path::new("/tmp/cnpg-ext-AbC123/c/system-library/2/conf"),
            primary_socket_dir: Some(Path::new("/tmp/cnpg-ext-AbC123/c/system-library/1/run")),
            mounts: &m,
            ld_library_path: plan.ld_library_path.as_deref(),
            bin_path: plan.bin_path.as_deref(),
            env: &plan.env,
            bootstrap: None,
        };
        let host = HostFlags::parse(&run_flags()).unwrap();
        snap!("replica_spec", instance_spec(&r, &host));
        let bb = base_backup_command(r.bindir, DATA_MOUNT);
        let first = InstanceRun { bootstrap: Some(&bb), ..r.clone() };
        let spec = instance_spec(&first, &HostFlags::default());
        snap!("new_replica_command", &spec.cmd);
        // The shell command gives back the words it was built from.
        let script = spec.cmd.last().unwrap();
        let words = super::super::engine::split_flags(&script.replace(" && exec ", " ")).unwrap();
        assert_eq!(words.len(), bb.len() + 5);
        assert_eq!(&words[..bb.len()], &bb[..]);
    }

    #[test]
    fn primary_without_extensions_has_no_image_mounts_or_ld_path() {
        let r = bare_primary();
        let spec = instance_spec(&r, &HostFlags::default());
        assert!(spec.mounts.iter().all(|m| m.typ != Some(MountType::IMAGE)), "{:?}", spec.mounts);
        assert!(spec.mounts.iter().all(|m| m.target.as_deref() != Some(PRIMARY_SOCKET_DIR)));
        assert!(spec.env.iter().all(|(k, _)| k != "LD_LIBRARY_PATH"));
        assert_eq!(spec.network_mode, "none");
        assert_eq!(spec.user, "26:26");
        // Only the configuration directory is asked read-only; image mounts are by default.
        let ro: Vec<_> =
            spec.mounts.iter().filter(|m| m.read_only == Some(true)).filter_map(|m| m.target.clone()).collect();
        assert_eq!(ro, [CONF_DIR]);
    }

    #[test]
    fn a_network_in_the_run_flags_replaces_none() {
        let flags = |s: &str| super::super::engine::split_flags(s).unwrap();
        let r = bare_primary();
        for (run_flags, mode) in [("", "none"), ("--network host", "host"), ("--net=slirp4netns", "slirp4netns")] {
            let host = HostFlags::parse(&flags(run_flags)).unwrap();
            assert_eq!(instance_spec(&r, &host).network_mode, mode, "{run_flags}");
            let cli = oneoff_run_args(EngineKind::Podman, &flags(run_flags), "n", &[], false, "img", &[]);
            // One network flag, never `none` beside another.
            let networks = cli.iter().filter(|a| a.as_str() == "--network" || a.starts_with("--net=")).count();
            assert_eq!(networks, 1, "{cli:?}");
            assert_eq!(cli.iter().any(|a| a == "none"), mode == "none", "{cli:?}");
        }
    }

    #[test]
    fn base_backup_container() {
        snap!(
            "podman_base_backup",
            base_backup_args(
                EngineKind::Podman,
                &run_flags(),
                "cnpg-ext-AbC123-system-library-c-2-basebackup",
                &labels(),
                "localhost/cnpg-ext-harness/postgres:18.6-0123456789ab",
                "/usr/lib/postgresql/18/bin",
                "cnpg-ext-AbC123-system-library-c-2",
                STANDBY_MOUNT,
                Path::new("/tmp/cnpg-ext-AbC123/c/system-library/1/run"),
            )
        );
    }

    #[test]
    fn conf_has_the_operator_gucs() {
        let plan = ClusterPlan::derive(&cluster(), &PlanOptions::default());
        snap!("postgresql_conf", postgresql_conf(&plan));
    }

    #[test]
    fn image_mounts_are_read_only() {
        let m = ImageMount { reference: "r:1".into(), destination: "/extensions/x".into() };
        assert_eq!(image_mount_arg(EngineKind::Podman, &m), "type=image,source=r:1,destination=/extensions/x,rw=false");
        assert!(image_mount_arg(EngineKind::Docker, &m).ends_with(",readonly"));
        let api = serde_json::to_value(image_mount(&m)).unwrap();
        assert_eq!(api["Type"], "image");
        assert_eq!(api["Source"], "r:1");
        assert_eq!(api["Target"], "/extensions/x");
        assert!(api.get("ReadOnly").is_none_or(|v| v.is_null()), "{api}");
    }

    #[test]
    fn names_are_sanitized() {
        assert_eq!(sanitize("cnpg-ext-Ab_1/x y"), "cnpg-ext-Ab_1-x-y");
        assert_eq!(sanitize("-x"), "x-x");
    }
}
