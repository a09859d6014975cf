//! Uniform read access to the files of an image container: a directory
//! (OCI layout) or a tar file (OCI archive / docker-archive), possibly gzip
//! compressed as a whole. Tar members are read in place by offset.

use crate::error::ImageError;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Where the image files live.
pub(crate) enum Container {
    Dir(PathBuf),
    Tar {
        file: PathBuf,
        members: HashMap<String, (u64, u64)>,
        /// Decompressed copy of a gzip-compressed archive, removed on drop.
        _tmp: Option<tempfile::NamedTempFile>,
    },
}

/// Lexically normalize a relative path inside a container (`./a//b` → `a/b`).
/// `None` for absolute paths and `..` components.
pub(crate) fn normalize_rel(p: &str) -> Option<String> {
    if p.starts_with('/') {
        return None;
    }
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => return None,
            c => out.push(c),
        }
    }
    (!out.is_empty()).then(|| out.join("/"))
}

impl Container {
    /// Open `image` (directory or tar file). `max_decompressed` caps the
    /// size of a gzip-compressed archive once decompressed.
    pub(crate) fn open(image: &Path, max_decompressed: u64) -> Result<Self, ImageError> {
        let meta = std::fs::metadata(image).map_err(|e| ImageError::io(image, e))?;
        if meta.is_dir() {
            return Ok(Container::Dir(image.to_path_buf()));
        }
        if !meta.is_file() {
            return Err(ImageError::NotAnImage {
                path: image.into(),
                reason: "neither a directory nor a regular file".into(),
            });
        }
        let mut f = File::open(image).map_err(|e| ImageError::io(image, e))?;
        let mut magic = [0u8; 2];
        let n = f.read(&mut magic).map_err(|e| ImageError::io(image, e))?;
        if n == 2 && magic == [0x1f, 0x8b] {
            f.seek(SeekFrom::Start(0)).map_err(|e| ImageError::io(image, e))?;
            let mut tmp = tempfile::NamedTempFile::new().map_err(|e| ImageError::io(image, e))?;
            let dec = flate2::read::MultiGzDecoder::new(io::BufReader::new(f));
            let copied = io::copy(&mut dec.take(max_decompressed + 1), tmp.as_file_mut());
            match copied {
                Ok(n) if n > max_decompressed => {
                    return Err(ImageError::NotAnImage {
                        path: image.into(),
                        reason: format!("gzip-compressed archive is larger than {max_decompressed} bytes decompressed"),
                    })
                }
                Ok(_) => {}
                Err(e) => {
                    return Err(ImageError::NotAnImage {
                        path: image.into(),
                        reason: format!("corrupt gzip-compressed archive: {e}"),
                    })
                }
            }
            let members = index_tar(tmp.path(), image)?;
            return Ok(Container::Tar { file: tmp.path().to_path_buf(), members, _tmp: Some(tmp) });
        }
        let members = index_tar(image, image)?;
        Ok(Container::Tar { file: image.to_path_buf(), members, _tmp: None })
    }

    /// Size of a member, `None` when absent (or not a regular file).
    pub(crate) fn size(&self, rel: &str) -> Option<u64> {
        let rel = normalize_rel(rel)?;
        match self {
            Container::Dir(d) => {
                let m = std::fs::metadata(d.join(&rel)).ok()?;
                m.is_file().then_some(m.len())
            }
            Container::Tar { members, .. } => members.get(&rel).map(|&(_, s)| s),
        }
    }

    pub(crate) fn exists(&self, rel: &str) -> bool {
        self.size(rel).is_some()
    }

    /// Open a member for reading; `NotFound` when absent.
    pub(crate) fn open_member(&self, rel: &str) -> io::Result<Box<dyn Read + Send>> {
        let not_found = || io::Error::new(io::ErrorKind::NotFound, format!("{rel} not found"));
        let norm = normalize_rel(rel).ok_or_else(not_found)?;
        match self {
            Container::Dir(d) => {
                let p = d.join(&norm);
                if !std::fs::metadata(&p)?.is_file() {
                    return Err(not_found());
                }
                Ok(Box::new(File::open(p)?))
            }
            Container::Tar { file, members, .. } => {
                let &(off, size) = members.get(&norm).ok_or_else(not_found)?;
                let mut f = File::open(file)?;
                f.seek(SeekFrom::Start(off))?;
                Ok(Box::new(f.take(size)))
            }
        }
    }
}

/// Map member path → (data offset, size) of a tar file. Symlink members
/// (old `docker save` dedupes layers that way) resolve to their target.
fn index_tar(file: &Path, image: &Path) -> Result<HashMap<String, (u64, u64)>, ImageError> {
    let bad = |e: io::Error| ImageError::NotAnImage {
        path: image.into(),
        reason: format!("not a readable tar archive: {e}"),
    };
    let f = File::open(file).map_err(|e| ImageError::io(image, e))?;
    let mut ar = tar::Archive::new(io::BufReader::new(f));
    let mut members = HashMap::new();
    let mut links: Vec<(String, String)> = Vec::new();
    for entry in ar.entries().map_err(bad)? {
        let entry = entry.map_err(bad)?;
        let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let Some(norm) = normalize_rel(&path) else {
            continue;
        };
        let kind = entry.header().entry_type();
        if kind.is_file() {
            members.insert(norm, (entry.raw_file_position(), entry.size()));
        } else if kind.is_symlink() || kind.is_hard_link() {
            if let Some(target) = entry.link_name_bytes() {
                let target = String::from_utf8_lossy(&target).into_owned();
                let joined = if kind.is_symlink() {
                    match norm.rsplit_once('/') {
                        Some((dir, _)) => format!("{dir}/{target}"),
                        None => target,
                    }
                } else {
                    target
                };
                if let Some(t) = normalize_dotdot(&joined) {
                    links.push((norm, t));
                }
            }
        }
    }
    for (name, target) in links {
        if let Some(&v) = members.get(&target) {
            members.entry(name).or_insert(v);
        }
    }
    if members.is_empty() {
        return Err(ImageError::NotAnImage { path: image.into(), reason: "empty tar archive".into() });
    }
    Ok(members)
}

/// Normalize with `..` resolved lexically; `None` if it leaves the root.
fn normalize_dotdot(p: &str) -> Option<String> {
    if p.starts_with('/') {
        return None;
    }
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop()?;
            }
            c => out.push(c),
        }
    }
    Some(out.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes() {
        assert_eq!(normalize_rel("./blobs//sha256/x").as_deref(), Some("blobs/sha256/x"));
        assert_eq!(normalize_rel("/etc"), None);
        assert_eq!(normalize_rel("a/../b"), None);
        assert_eq!(normalize_rel("./lib").as_deref(), Some("lib"));
        assert_eq!(normalize_rel("share/extension").as_deref(), Some("share/extension"));
        assert_eq!(normalize_rel("../x"), None);
        assert_eq!(normalize_rel(""), None);
        assert_eq!(normalize_rel("."), None);
        assert_eq!(normalize_dotdot("a/../b").as_deref(), Some("b"));
        assert_eq!(normalize_dotdot("../b"), None);
    }
}
