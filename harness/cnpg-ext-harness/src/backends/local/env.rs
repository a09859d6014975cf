//! What every local cluster of a run shares: a minimal PostgreSQL install (the base image,
//! without the extensions under test) and a data directory template made once by initdb.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use cnpg_ext_pg::{Exclusions, PgInstall};

use crate::backends::standin;
use crate::plumbing::run_as::RunAs;

/// Appended to the template's postgresql.conf; the operator's settings go in `cnpg-ext.conf`.
fn base_conf() -> String {
    format!(
        "\n# --- cnpg-ext-harness: local backend defaults ---\n{}include_if_exists = 'cnpg-ext.conf'\n",
        standin::INSTANCE_CONF
    )
}

/// Everything initdb's result depends on.
fn template_key(full: &PgInstall, run_as: &RunAs) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for part in [
        "template-v1",
        &full.version.text,
        &full.bindir.display().to_string(),
        &base_conf(),
        BOOTSTRAP_SQL,
        &INITDB_ARGS.join(" "),
        &run_as.uid.to_string(),
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    hex::encode(h.finalize())
}

// 1 MB WAL segments: every instance copies the template; 16 MB of empty WAL each is waste.
const INITDB_ARGS: &[&str] =
    &["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions", "--wal-segsize=1"];

/// Like CNPG's initdb bootstrap: an `app` owner and database (single-user mode, `-j` syntax).
const BOOTSTRAP_SQL: &str = "CREATE ROLE app LOGIN;\n\nCREATE DATABASE app OWNER app;\n\n";

pub(crate) struct LocalEnv {
    /// The install instances run from: no extension under test is in its default dirs.
    pub pg: PgInstall,
    /// initdb'd data directory with the `app` role and database, as CNPG bootstraps them.
    pub template: PathBuf,
    pub run_as: RunAs,
}

impl LocalEnv {
    /// Prepares `root` (which the unprivileged user must be able to traverse).
    pub(crate) fn prepare(
        full: &PgInstall,
        without: &Exclusions,
        root: &Path,
        run_as: RunAs,
    ) -> Result<LocalEnv, String> {
        let pg = full
            .minimal_copy(&root.join("pg"), without)
            .map_err(|e| format!("cannot make the minimal PostgreSQL install: {e}"))?;
        let template = root.join("template");
        let env = LocalEnv { pg, template, run_as };
        // initdb's output depends only on the binaries, the options and the bootstrap SQL:
        // a warm run copies it from the cache instead of running initdb again.
        let cached = cnpg_ext_pg::ProvisionOptions::from_env()
            .cache_dir
            .map(|c| c.join("templates").join(template_key(full, &env.run_as)));
        match &cached {
            Some(c) if c.join("PG_VERSION").is_file() => env.copy_tree(c, &env.template)?,
            _ => {
                env.init_template()?;
                if let Some(c) = &cached {
                    env.store_template(c);
                }
            }
        }
        Ok(env)
    }

    /// `cp -a`, as root when we are root (the cache may not be readable by the unprivileged
    /// user); ownership is preserved, so the copy belongs to the unprivileged user.
    fn copy_tree(&self, from: &Path, to: &Path) -> Result<(), String> {
        let out = Command::new("cp").arg("-a").arg(from).arg(to).output().map_err(|e| format!("cannot run cp: {e}"))?;
        if !out.status.success() {
            return Err(format!("copying {} failed: {}", from.display(), String::from_utf8_lossy(&out.stderr)));
        }
        Ok(())
    }

    /// Best effort: a cache that cannot be written only costs time next run.
    fn store_template(&self, dest: &Path) {
        let Some(parent) = dest.parent() else { return };
        let staging = parent.join(format!(".staging-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&staging);
        if std::fs::create_dir_all(parent).is_ok()
            && self.copy_tree(&self.template, &staging).is_ok()
            && std::fs::rename(&staging, dest).is_err()
        {
            let _ = std::fs::remove_dir_all(&staging);
        }
    }

    fn init_template(&self) -> Result<(), String> {
        let t = &self.template;
        std::fs::create_dir_all(t).map_err(|e| format!("{}: {e}", t.display()))?;
        self.run_as.own(t).map_err(|e| format!("{}: {e}", t.display()))?;
        let mut initdb = Command::new(self.pg.bin("initdb"));
        initdb.args(["-D"]).arg(t).args(INITDB_ARGS).env_clear().env("PATH", "/usr/bin:/bin").env("LANG", "C");
        self.run_as.apply(&mut initdb);
        let out = initdb.output().map_err(|e| format!("cannot run initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let conf = t.join("postgresql.conf");
        let mut f =
            std::fs::OpenOptions::new().append(true).open(&conf).map_err(|e| format!("{}: {e}", conf.display()))?;
        f.write_all(base_conf().as_bytes()).map_err(|e| e.to_string())?;
        self.single_user(BOOTSTRAP_SQL)
    }

    /// Runs SQL in single-user mode against the template (no server, no socket).
    fn single_user(&self, sql: &str) -> Result<(), String> {
        let mut cmd = Command::new(self.pg.bin("postgres"));
        cmd.arg("--single")
            .arg("-j")
            .arg("-D")
            .arg(&self.template)
            .arg("postgres")
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        self.run_as.apply(&mut cmd);
        let mut child = cmd.spawn().map_err(|e| format!("cannot run postgres --single: {e}"))?;
        child.stdin.take().unwrap().write_all(sql.as_bytes()).map_err(|e| e.to_string())?;
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() || stderr.contains("ERROR") {
            return Err(format!("bootstrap SQL failed: {}{stderr}", String::from_utf8_lossy(&out.stdout)));
        }
        Ok(())
    }

    /// A fresh data directory for a new primary, copied from the template as the unprivileged user.
    pub(crate) fn new_data_dir(&self, dest: &Path) -> Result<(), String> {
        let mut cp = Command::new("cp");
        cp.arg("-a").arg(&self.template).arg(dest);
        self.run_as.apply(&mut cp);
        let out = cp.output().map_err(|e| format!("cannot run cp: {e}"))?;
        if !out.status.success() {
            return Err(format!("copying the data template failed: {}", String::from_utf8_lossy(&out.stderr)));
        }
        Ok(())
    }
}
