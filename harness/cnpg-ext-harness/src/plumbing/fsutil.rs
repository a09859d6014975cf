//! Small filesystem helpers: read-only trees and their removal.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Copies a tree, hardlinking files where possible (same filesystem) and copying otherwise.
pub(crate) fn link_or_copy_tree(src: &Path, dst: &Path) -> std::io::Result<()> {
    for entry in walkdir::WalkDir::new(src).follow_links(false) {
        let entry = entry.map_err(std::io::Error::other)?;
        let rel = entry.path().strip_prefix(src).map_err(std::io::Error::other)?;
        let target = dst.join(rel);
        let ft = entry.file_type();
        if ft.is_dir() {
            fs::create_dir_all(&target)?;
        } else if ft.is_symlink() {
            let to = fs::read_link(entry.path())?;
            std::os::unix::fs::symlink(to, &target)?;
        } else if fs::hard_link(entry.path(), &target).is_err() {
            fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Removes write permission everywhere below `root` (directories last-visited first).
pub(crate) fn make_read_only(root: &Path) -> std::io::Result<()> {
    let entries: Vec<_> = walkdir::WalkDir::new(root).contents_first(true).into_iter().collect();
    for entry in entries {
        let entry = entry.map_err(std::io::Error::other)?;
        if entry.file_type().is_symlink() {
            continue;
        }
        let mut perm = entry.metadata().map_err(std::io::Error::other)?.permissions();
        perm.set_mode(perm.mode() & !0o222);
        fs::set_permissions(entry.path(), perm)?;
    }
    Ok(())
}

/// Removes a tree even where directories were made read-only.
pub fn remove_tree(root: &Path) -> std::io::Result<()> {
    if !root.exists() {
        return Ok(());
    }
    for entry in walkdir::WalkDir::new(root).into_iter().flatten() {
        if entry.file_type().is_dir() {
            if let Ok(meta) = entry.metadata() {
                let mut perm = meta.permissions();
                if perm.mode() & 0o200 == 0 {
                    perm.set_mode(perm.mode() | 0o700);
                    let _ = fs::set_permissions(entry.path(), perm);
                }
            }
        }
    }
    fs::remove_dir_all(root)
}

/// Sorted relative paths of the regular files below `root` (empty when it does not exist).
pub(crate) fn list_files(root: &Path) -> Vec<String> {
    let mut out: Vec<String> = walkdir::WalkDir::new(root)
        .follow_links(false)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| e.path().strip_prefix(root).ok().map(|p| p.to_string_lossy().into_owned()))
        .collect();
    out.sort();
    out
}

/// Whether nothing below `root` has a write permission bit, for anyone: what
/// [`make_read_only`] leaves. Root-owned files with `0755` are writable by their owner, so
/// "this uid cannot write" would not tell a read-only tree from a writable one.
pub(crate) fn no_write_permission(root: &Path) -> bool {
    walkdir::WalkDir::new(root).into_iter().all(|e| {
        let Ok(e) = e else { return false };
        if e.file_type().is_symlink() {
            return true; // a link's own mode means nothing; its target is checked on its own
        }
        e.metadata().is_ok_and(|m| m.permissions().mode() & 0o222 == 0)
    })
}

#[cfg(test)]
mod write_permission_tests {
    use super::*;

    #[test]
    fn any_write_bit_anywhere_is_writable() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("m");
        fs::create_dir_all(root.join("lib")).unwrap();
        fs::write(root.join("lib/a.so"), b"x").unwrap();
        std::os::unix::fs::symlink("a.so", root.join("lib/b.so")).unwrap();
        make_read_only(&root).unwrap();
        assert!(no_write_permission(&root));
        for (path, mode) in [("lib/a.so", 0o644), ("lib", 0o755), ("", 0o575), ("lib/a.so", 0o442)] {
            let p = root.join(path);
            let old = fs::metadata(&p).unwrap().permissions();
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
            assert!(!no_write_permission(&root), "{path} {mode:o}");
            fs::set_permissions(&p, old).unwrap();
            assert!(no_write_permission(&root));
        }
        assert!(!no_write_permission(&d.path().join("missing")));
        remove_tree(&root).unwrap();
    }
}
