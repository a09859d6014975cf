//! Small helpers: PATH lookup, running commands, hashing, path arithmetic, hardlink copies.
//! (Rendering a command line and the absent-or-empty check are the images crate's, shared with
//! its fixture builder.)

use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Output};

use crate::PgError;

/// First executable file called `name` in the `PATH`-style list.
pub(crate) fn find_in_path(name: &str, path: Option<&OsStr>) -> Option<PathBuf> {
    std::env::split_paths(path?)
        .filter(|d| !d.as_os_str().is_empty())
        .map(|d| d.join(name))
        .find(|p| fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false))
}

pub(crate) use cnpg_ext_images::util::describe;

/// Runs `cmd` capturing its output; a missing program becomes [`PgError::NotFound`] with `hint`,
/// a non-zero exit [`PgError::Command`].
pub(crate) fn run(cmd: &mut Command, hint: &str) -> Result<Output, PgError> {
    let out = cmd.output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            PgError::NotFound(format!("{} ({hint})", cmd.get_program().to_string_lossy()))
        } else {
            PgError::Io { path: PathBuf::from(cmd.get_program()), op: "running", source: e }
        }
    })?;
    if !out.status.success() {
        return Err(PgError::Command {
            command: describe(cmd),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(out)
}

/// Lower-case hex SHA-256 of a file.
pub(crate) fn sha256_file(path: &Path) -> Result<String, PgError> {
    use sha2::Digest;
    let mut f = fs::File::open(path).map_err(PgError::io("opening", path))?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(PgError::io("reading", path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Removes `.` and resolves `..` lexically (no file system access).
pub(crate) fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Longest common ancestor of absolute paths.
pub(crate) fn common_ancestor<'a>(paths: impl IntoIterator<Item = &'a Path>) -> Option<PathBuf> {
    let mut it = paths.into_iter();
    let mut acc: PathBuf = it.next()?.to_path_buf();
    for p in it {
        while !p.starts_with(&acc) {
            if !acc.pop() {
                return None;
            }
        }
    }
    Some(acc)
}

/// Hardlinks `src` to `dst`, copying (with permissions) when linking is impossible
/// (other file system, or not permitted).
pub(crate) fn link_or_copy(src: &Path, dst: &Path) -> Result<(), PgError> {
    match fs::hard_link(src, dst) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Err(PgError::Io { path: dst.to_path_buf(), op: "creating", source: e })
        }
        Err(_) => fs::copy(src, dst).map(|_| ()).map_err(PgError::io("copying to", dst)),
    }
}

/// Sets mode bits of `path`.
pub(crate) fn chmod(path: &Path, mode: u32) -> Result<(), PgError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(PgError::io("changing permissions of", path))
}

pub(crate) fn create_dir_all(path: &Path) -> Result<(), PgError> {
    fs::create_dir_all(path).map_err(PgError::io("creating directory", path))
}

/// True when `dir` is missing or an empty directory.
pub(crate) fn absent_or_empty(dir: &Path) -> Result<bool, PgError> {
    cnpg_ext_images::util::absent_or_empty(dir).map_err(PgError::io("reading directory", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_helpers() {
        assert_eq!(normalize(Path::new("/a/b/../../c/./d")), PathBuf::from("/c/d"));
        let a = PathBuf::from("/usr/lib/postgresql/18/bin");
        let b = PathBuf::from("/usr/share/postgresql/18");
        assert_eq!(common_ancestor([a.as_path(), b.as_path()]), Some(PathBuf::from("/usr")));
        assert_eq!(common_ancestor([a.as_path()]), Some(a.clone()));
    }
}
