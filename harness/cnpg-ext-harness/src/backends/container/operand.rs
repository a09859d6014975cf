//! The PostgreSQL operand image: built without any pull from a minimal copy of the provisioned
//! PostgreSQL (no extension under test in it) plus the system libraries it needs, or taken
//! from `--pg-image`; then a data directory template is baked in (initdb in a container), so
//! that a new instance volume is filled by the engine's copy-up of the image's data directory.
//!
//! The result is tagged by a content hash and kept in the engine as a cache across runs
//! (label `io.cnpg-ext-harness.operand`).

use std::path::{Path, PathBuf};
use std::process::Command;

use cnpg_ext_pg::{Exclusions, PgInstall};

use super::argv::{self, program, LABEL_OPERAND, LABEL_RUN, PGDATA, PG_UID, STANDBY_MOUNT};
use super::engine::{strings, Engine};

/// Bump when the image recipe changes (invalidates cached operand images).
const RECIPE: &str = "cnpg-ext-harness operand v1";
pub(crate) const OPERAND_REPO: &str = "localhost/cnpg-ext-harness/postgres";

/// The image instances run from.
#[derive(Debug, Clone)]
pub(crate) struct Operand {
    pub image: String,
    /// Directory of the PostgreSQL programs in the image; empty: found through the image's PATH.
    pub bindir: String,
    /// Whether this run built (rather than reused) it.
    pub built: bool,
}

impl Operand {
    pub(crate) fn program(&self, name: &str) -> String {
        program(&self.bindir, name)
    }
}

/// The operand image for this run: cached, else built (or derived from `pg_image`).
pub(crate) fn ensure(
    engine: &Engine,
    pg: &PgInstall,
    without: &Exclusions,
    work: &Path,
    run_id: &str,
    pg_image: Option<&str>,
    pg_bindir: Option<&str>,
) -> Result<Operand, String> {
    match pg_image {
        Some(user_image) => from_user_image(engine, user_image, pg_bindir.unwrap_or(""), run_id),
        None => build(engine, pg, without, work, run_id),
    }
}

fn from_user_image(engine: &Engine, user_image: &str, bindir: &str, run_id: &str) -> Result<Operand, String> {
    let id = match engine.image_id(user_image) {
        Some(id) => id,
        None => {
            engine
                .run_sync(&strings(&["pull", user_image]))
                .map_err(|e| format!("the PostgreSQL image {user_image} is not present and cannot be pulled: {e}"))?;
            engine.image_id(user_image).ok_or_else(|| format!("{user_image}: pulled but not found"))?
        }
    };
    let key = hash_hex(&format!("{RECIPE}\nimage {id}\nbindir {bindir}\n"));
    let tag = format!("{OPERAND_REPO}:from-{}", &key[..16]);
    if engine.image_id(&tag).is_some() {
        return Ok(Operand { image: tag, bindir: bindir.into(), built: false });
    }
    // The directories a copy-up needs, owned by the postgres uid (CNPG images ship coreutils).
    let base = format!("{OPERAND_REPO}:stage0-{}", &key[..16]);
    let dirs = strings(&["mkdir", "-p", argv::DATA_MOUNT, STANDBY_MOUNT]);
    step(engine, run_id, user_image, &dirs, None, &base, "preparing the data directories")?;
    let out = bake_template(engine, &base, bindir, &tag, run_id);
    engine.run_quiet(&strings(&["rmi", &base]));
    out?;
    Ok(Operand { image: tag, bindir: bindir.into(), built: true })
}

fn build(engine: &Engine, pg: &PgInstall, without: &Exclusions, work: &Path, run_id: &str) -> Result<Operand, String> {
    let key = cache_key(pg, without)?;
    let tag = format!("{OPERAND_REPO}:{}.{}-{}", pg.version.major, pg.version.minor, &key[..16]);
    if engine.image_id(&tag).is_some() {
        return Ok(Operand { image: tag, bindir: String::new(), built: false });
    }
    let stage = work.join("operand");
    let rootfs = stage.join("rootfs");
    let bindir = make_rootfs(pg, without, &rootfs)?;
    let tar = stage.join("rootfs.tar");
    make_tar(&rootfs, &tar)?;
    let base = format!("{OPERAND_REPO}:base-{}", &key[..16]);
    let mut import = strings(&["import"]);
    for change in [
        format!("ENV PATH={bindir}:/usr/local/bin:/usr/bin:/bin"),
        "ENV LANG=C".to_string(),
        format!("USER {PG_UID}:{PG_UID}"),
        "WORKDIR /var/lib/postgresql".to_string(),
        format!("LABEL {LABEL_OPERAND}=base"),
    ] {
        import.push("--change".into());
        import.push(change);
    }
    import.push(tar.display().to_string());
    import.push(base.clone());
    engine.run_sync(&import).map_err(|e| format!("importing the PostgreSQL image: {e}"))?;
    let _ = crate::plumbing::fsutil::remove_tree(&stage);
    let out = bake_template(engine, &base, "", &tag, run_id);
    engine.run_quiet(&strings(&["rmi", &base]));
    out?;
    Ok(Operand { image: tag, bindir: String::new(), built: true })
}

/// initdb (in a container, as the postgres uid) and CNPG's bootstrap objects (`app` role and
/// database), committed into `tag`.
fn bake_template(engine: &Engine, base: &str, bindir: &str, tag: &str, run_id: &str) -> Result<(), String> {
    let stage1 = format!("{tag}-stage1");
    let initdb: Vec<String> = vec![program(bindir, "initdb"), "-D".into(), PGDATA.into()]
        .into_iter()
        .chain(strings(&[
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
            "--no-instructions",
        ]))
        .collect();
    step(engine, run_id, base, &initdb, None, &stage1, "initdb")?;
    let single: Vec<String> = vec![
        program(bindir, "postgres"),
        "--single".into(),
        "-j".into(),
        "-D".into(),
        PGDATA.into(),
        "postgres".into(),
    ];
    let sql = b"CREATE ROLE app LOGIN;\n\nCREATE DATABASE app OWNER app;\n\n";
    let out = step(engine, run_id, &stage1, &single, Some(sql), tag, "bootstrap SQL (app role and database)");
    engine.run_quiet(&strings(&["rmi", &stage1]));
    out
}

/// Runs `command` in a container of `image` and commits the result as `tag`.
fn step(
    engine: &Engine,
    run_id: &str,
    image: &str,
    command: &[String],
    stdin: Option<&[u8]>,
    tag: &str,
    what: &str,
) -> Result<(), String> {
    let name = argv::sanitize(&format!("{run_id}-operand-{}", std::process::id()));
    let labels = vec![(LABEL_RUN.to_string(), run_id.to_string())];
    let args = argv::oneoff_run_args(engine.kind, &engine.run_flags, &name, &labels, stdin.is_some(), image, command);
    engine.run_quiet(&strings(&["rm", "-f", &name]));
    let run = match stdin {
        Some(input) => engine.run_sync_stdin(&args, input).and_then(|out| {
            if out.contains("ERROR") {
                Err(format!("{what} failed:\n{out}"))
            } else {
                Ok(out)
            }
        }),
        None => engine.run_sync(&args),
    };
    let result = run.map_err(|e| format!("{what} in a container failed: {e}")).and_then(|_| {
        engine
            .run_sync(&[
                "commit".to_string(),
                "--change".into(),
                format!("LABEL {LABEL_OPERAND}=template"),
                name.clone(),
                tag.to_string(),
            ])
            .map(|_| ())
            .map_err(|e| format!("committing the {what} container: {e}"))
    });
    engine.run_quiet(&strings(&["rm", "-f", &name]));
    result
}

/// Hash of everything the built image depends on (not of its bytes: initdb output varies).
fn cache_key(pg: &PgInstall, without: &Exclusions) -> Result<String, String> {
    use std::fmt::Write;
    use std::os::unix::fs::MetadataExt;
    let mut text = format!("{RECIPE}\n{}\nexclude {:?} {:?}\n", pg.version.text, without.extensions, without.modules);
    let mut roots: Vec<PathBuf> = Vec::new();
    for d in [&pg.bindir, &pg.sharedir, &pg.pkglibdir] {
        let c = std::fs::canonicalize(d).map_err(|e| format!("{}: {e}", d.display()))?;
        roots.push(c);
    }
    roots.sort();
    roots.dedup();
    for root in &roots {
        let _ = writeln!(text, "root {}", root.display());
        let mut entries: Vec<(String, u64, i64)> = walkdir::WalkDir::new(root)
            .into_iter()
            .flatten()
            .filter_map(|e| {
                let m = e.path().symlink_metadata().ok()?;
                Some((e.path().strip_prefix(root).ok()?.display().to_string(), m.size(), m.mtime()))
            })
            .collect();
        entries.sort();
        for (p, s, t) in entries {
            let _ = writeln!(text, "{p} {s} {t}");
        }
    }
    for host in [
        "/bin/sh",
        "/usr/bin/find",
        "/usr/bin/cat",
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/lib/aarch64-linux-gnu/libc.so.6",
    ] {
        if let Ok(m) = std::fs::metadata(host) {
            let _ = writeln!(text, "host {host} {} {}", m.size(), m.mtime());
        }
    }
    Ok(hash_hex(&text))
}

fn hash_hex(text: &str) -> String {
    cnpg_ext_images::sha256_digest(text.as_bytes()).trim_start_matches("sha256:").to_string()
}

/// Lays out the image root: PostgreSQL under /usr/lib/postgresql/<major>, the system
/// libraries its programs and modules load (at the paths the host's loader resolves), `/bin/sh`
/// (initdb's popen), `find` and `cat` for inspection, users and the directories PostgreSQL
/// needs. Returns the bindir.
fn make_rootfs(pg: &PgInstall, without: &Exclusions, rootfs: &Path) -> Result<String, String> {
    if rootfs.exists() {
        crate::plumbing::fsutil::remove_tree(rootfs).map_err(|e| format!("{}: {e}", rootfs.display()))?;
    }
    let prefix = rootfs.join(format!("usr/lib/postgresql/{}", pg.version.major));
    let minimal =
        pg.minimal_copy(&prefix, without).map_err(|e| format!("cannot copy PostgreSQL into the image: {e}"))?;
    let rootfs_c = std::fs::canonicalize(rootfs).map_err(|e| format!("{}: {e}", rootfs.display()))?;
    let in_image = |p: &Path| -> Result<String, String> {
        let c = std::fs::canonicalize(p).map_err(|e| format!("{}: {e}", p.display()))?;
        let rel = c.strip_prefix(&rootfs_c).map_err(|_| format!("{} is outside the image root", c.display()))?;
        Ok(format!("/{}", rel.display()))
    };
    let bindir = in_image(&minimal.bindir)?;

    // Programs and modules whose libraries must be present.
    let mut elves: Vec<PathBuf> = ["postgres", "initdb", "pg_basebackup", "pg_ctl"]
        .iter()
        .map(|p| minimal.bindir.join(p))
        .filter(|p| p.exists())
        .collect();
    if let Ok(rd) = std::fs::read_dir(&minimal.pkglibdir) {
        let mut mods: Vec<PathBuf> =
            rd.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "so")).collect();
        mods.sort();
        elves.extend(mods);
    }
    for tool in ["find", "cat"] {
        match which(tool) {
            Some(p) => {
                let dest = rootfs.join("usr/bin").join(tool);
                copy_file(&p, &dest)?;
                elves.push(dest);
            }
            None => tracing::warn!("`{tool}` not found on this host; inspection inside containers will fall back"),
        }
    }
    // initdb runs `postgres -V` through popen(), i.e. /bin/sh: a POSIX shell is required.
    let sh =
        std::fs::canonicalize("/bin/sh").map_err(|e| format!("/bin/sh (initdb needs a shell in the image): {e}"))?;
    let dest = rootfs.join("bin/sh");
    copy_file(&sh, &dest)?;
    elves.push(dest);
    let libs = cnpg_ext_pg::operand::host_libraries(&elves, &rootfs_c)?;
    for lib in &libs {
        let dest = rootfs.join(lib.strip_prefix("/").unwrap_or(lib));
        if !dest.exists() {
            copy_file(lib, &dest)?;
        }
    }

    let write = |rel: &str, text: &str| -> Result<(), String> {
        let p = rootfs.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).map_err(|e| format!("{}: {e}", p.display()))?;
        std::fs::write(&p, text).map_err(|e| format!("{}: {e}", p.display()))
    };
    write("etc/passwd", &format!("root:x:0:0:root:/root:/usr/sbin/nologin\npostgres:x:{PG_UID}:{PG_UID}:PostgreSQL:/var/lib/postgresql:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"))?;
    write("etc/group", &format!("root:x:0:\npostgres:x:{PG_UID}:\nnogroup:x:65534:\n"))?;
    write("etc/nsswitch.conf", "passwd: files\ngroup: files\nhosts: files\n")?;
    use std::os::unix::fs::PermissionsExt;
    for (dir, mode) in [
        ("tmp", 0o1777),
        ("var/lib/postgresql", 0o755),
        ("var/lib/postgresql/data", 0o700),
        ("var/lib/postgresql/standby", 0o700),
        ("var/run", 0o755),
    ] {
        let p = rootfs.join(dir);
        std::fs::create_dir_all(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
            .map_err(|e| format!("{}: {e}", p.display()))?;
    }
    Ok(bindir)
}

fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path).map(|d| d.join(tool)).find(|p| p.is_file())
}

fn copy_file(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::create_dir_all(to.parent().expect("parent")).map_err(|e| format!("{}: {e}", to.display()))?;
    std::fs::copy(from, to).map_err(|e| format!("copying {} to {}: {e}", from.display(), to.display()))?;
    Ok(())
}

/// The rootfs as a tar: everything owned by root, /var/lib/postgresql by the postgres uid.
fn make_tar(rootfs: &Path, out: &Path) -> Result<(), String> {
    let run = |args: &[&str]| -> Result<(), String> {
        let o = Command::new("tar")
            .args(args)
            .output()
            .map_err(|e| format!("cannot run tar (needed to build the PostgreSQL image): {e}"))?;
        if o.status.success() {
            Ok(())
        } else {
            Err(format!("tar {} failed: {}", args.join(" "), String::from_utf8_lossy(&o.stderr).trim()))
        }
    };
    let root = rootfs.display().to_string();
    let out = out.display().to_string();
    let uid = PG_UID.to_string();
    run(&[
        "--numeric-owner",
        "--owner=0",
        "--group=0",
        "--exclude=./var/lib/postgresql",
        "-C",
        &root,
        "-cf",
        &out,
        ".",
    ])?;
    run(&[
        "--numeric-owner",
        &format!("--owner={uid}"),
        &format!("--group={uid}"),
        "-C",
        &root,
        "-rf",
        &out,
        "./var/lib/postgresql",
    ])
}
