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

/// Whether nothing below `root` can be written by `uid` (not the owner, or no write bits).
pub(crate) fn read_only_for(root: &Path, uid: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    walkdir::WalkDir::new(root).into_iter().all(|e| {
        let Ok(e) = e else { return false };
        if e.file_type().is_symlink() {
            return true; // a link's own mode means nothing; its target is checked on its own
        }
        match e.metadata() {
            Ok(m) if m.uid() == uid => m.mode() & 0o200 == 0,
            Ok(m) => m.mode() & 0o002 == 0,
            Err(_) => false,
        }
    })
}
