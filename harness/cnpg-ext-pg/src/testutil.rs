//! Test helpers: temp dirs under /tmp readable by `nobody`, the provisioned PostgreSQL, running
//! commands as `nobody`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::{locate, PgInstall, ProvisionOptions, ENV_CACHE};

/// A temp dir under /tmp (not /root, which is 0700) with mode 0755.
pub fn tmpdir() -> tempfile::TempDir {
    let t = tempfile::Builder::new().prefix("cnpg-ext-pg-test-").tempdir_in("/tmp").unwrap();
    fs::set_permissions(t.path(), fs::Permissions::from_mode(0o755)).unwrap();
    t
}

/// The PostgreSQL used by tests: `locate(from_env())`, with the cache under /tmp unless
/// `CNPG_EXT_HARNESS_CACHE` is set. Provisioned once per test binary.
pub fn pg() -> &'static PgInstall {
    static PG: OnceLock<PgInstall> = OnceLock::new();
    PG.get_or_init(|| {
        let mut opts = ProvisionOptions::from_env();
        if std::env::var_os(ENV_CACHE).is_none() {
            opts.cache_dir = Some(PathBuf::from("/tmp/cnpg_ext_harness_test_cache"));
        }
        let started = std::time::Instant::now();
        let pg = locate(&opts).unwrap_or_else(|e| panic!("cannot provision PostgreSQL for tests: {e}"));
        eprintln!("provisioned {} ({:?}) in {:?}", pg.version, pg.origin, started.elapsed());
        pg
    })
}

/// uid/gid of `nobody`.
pub fn nobody() -> (u32, u32) {
    let u = nix::unistd::User::from_name("nobody").unwrap().expect("user nobody");
    (u.uid.as_raw(), u.gid.as_raw())
}

/// Runs `cmd` as `nobody` (when we are root) with a neutral environment.
pub fn as_nobody(cmd: &mut Command) -> &mut Command {
    if nix::unistd::geteuid().is_root() {
        let (u, g) = nobody();
        cmd.uid(u).gid(g);
    }
    cmd.env("LC_ALL", "C").env("HOME", "/tmp").env_remove("PGDATA")
}

/// Runs `initdb` of `pg` as `nobody` into `data` (trust, superuser `postgres`, UTF8, C locale);
/// panics with its stderr when it fails.
pub fn initdb_as_nobody(pg: &PgInstall, data: &Path) {
    let out = as_nobody(Command::new(pg.bin("initdb")).arg("-D").arg(data).args([
        "--no-sync",
        "--auth=trust",
        "-U",
        "postgres",
        "-E",
        "UTF8",
        "--locale=C",
    ]))
    .output()
    .unwrap();
    assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// Creates `dir` owned by `nobody`, mode 0700.
pub fn nobody_dir(dir: &Path) -> PathBuf {
    fs::create_dir_all(dir).unwrap();
    if nix::unistd::geteuid().is_root() {
        let (u, g) = nobody();
        nix::unistd::chown(dir, Some(u.into()), Some(g.into())).unwrap();
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).unwrap();
    dir.to_path_buf()
}

/// A `pg_config` shell script printing dirs below `root_expr` (a shell expression).
pub fn fake_pg_config_script(version: &str, root_expr: &str) -> String {
    format!(
        "#!/bin/sh\nr={root_expr}\nfor a in \"$@\"; do case \"$a\" in\n\
         --bindir) echo \"$r/bin\";; --sharedir) echo \"$r/share\";; --pkglibdir) echo \"$r/lib\";;\n\
         --libdir) echo \"$r/lib\";; --includedir-server) echo \"$r/include/server\";;\n\
         --version) echo '{version}';; *) exit 1;; esac; done\n"
    )
}

/// Writes `<root>/bin/pg_config` (see [`fake_pg_config_script`]) and returns its path.
pub fn fake_pg_config(root: &Path, version: &str) -> PathBuf {
    let bin = root.join("bin");
    fs::create_dir_all(&bin).unwrap();
    let p = bin.join("pg_config");
    fs::write(&p, fake_pg_config_script(version, &format!("'{}'", root.display()))).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    p
}
