//! The content cache: blobs keyed by digest, written only after their hash was checked, and
//! one OCI image layout per pulled manifest whose blobs are hard links into the store.
//!
//! ```text
//! <cache>/registry/blobs/sha256/<hex>        verified blobs (indexes, manifests, configs, layers)
//! <cache>/registry/layouts/<manifest hex>/   oci-layout, index.json, blobs/sha256/<hex> (links)
//! ```
//! Writers go through a temporary file and `rename`, so concurrent pulls and interrupted
//! ones never leave a partial blob under its digest.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::PullError;

static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

fn io(path: &Path, source: std::io::Error) -> PullError {
    PullError::Cache { path: path.to_path_buf(), source }
}

/// `sha256:<64 lowercase hex>` → the hex, else `None`.
pub fn digest_hex(digest: &str) -> Option<&str> {
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))).then_some(hex)
}

impl Cache {
    /// A cache under `dir` (the harness cache directory); created on first write.
    pub fn new(dir: &Path) -> Self {
        Cache { root: dir.join("registry") }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Path of a blob in the store (it may not exist). `digest` must be a valid sha256 digest.
    pub fn blob_path(&self, digest: &str) -> Option<PathBuf> {
        Some(self.root.join("blobs").join("sha256").join(digest_hex(digest)?))
    }

    /// The stored blob when present with the expected size.
    pub fn blob(&self, digest: &str, size: Option<u64>) -> Option<PathBuf> {
        let p = self.blob_path(digest)?;
        let meta = std::fs::metadata(&p).ok()?;
        (meta.is_file() && size.is_none_or(|s| s == meta.len())).then_some(p)
    }

    pub fn read_blob(&self, digest: &str) -> Option<Vec<u8>> {
        std::fs::read(self.blob(digest, None)?).ok()
    }

    /// A temporary file inside the store, renamed into place by [`Cache::commit`].
    pub fn temp_blob(&self) -> Result<(PathBuf, std::fs::File), PullError> {
        let dir = self.root.join("blobs").join("sha256");
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        let p = dir.join(format!(".tmp-{}-{}", std::process::id(), TMP_SEQ.fetch_add(1, Ordering::Relaxed)));
        let f = std::fs::File::create(&p).map_err(|e| io(&p, e))?;
        Ok((p, f))
    }

    /// Moves a verified temporary file under its digest.
    pub fn commit(&self, tmp: &Path, digest: &str) -> Result<PathBuf, PullError> {
        let dest = self.blob_path(digest).expect("verified digest");
        std::fs::rename(tmp, &dest).map_err(|e| io(&dest, e))?;
        Ok(dest)
    }

    /// Stores small verified content (manifests, indexes).
    pub fn put(&self, digest: &str, bytes: &[u8]) -> Result<PathBuf, PullError> {
        if let Some(p) = self.blob(digest, Some(bytes.len() as u64)) {
            return Ok(p);
        }
        let (tmp, mut f) = self.temp_blob()?;
        let written = f.write_all(bytes).and_then(|_| f.sync_all());
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(io(&tmp, e));
        }
        self.commit(&tmp, digest)
    }

    /// The layout directory of a manifest (it may not exist yet).
    pub fn layout_path(&self, manifest_digest: &str) -> Option<PathBuf> {
        Some(self.root.join("layouts").join(digest_hex(manifest_digest)?))
    }

    /// The layout of `manifest_digest` when it is complete.
    pub fn layout(&self, manifest_digest: &str) -> Option<PathBuf> {
        let p = self.layout_path(manifest_digest)?;
        p.join("index.json").is_file().then_some(p)
    }

    /// Writes the OCI layout of one image manifest from stored blobs: `index.json` points at
    /// the manifest (with its platform, when it came from an index); blobs are hard links.
    pub fn write_layout(
        &self,
        manifest_digest: &str,
        manifest_media_type: &str,
        manifest_size: u64,
        platform: Option<&serde_json::Value>,
        blobs: &[String],
    ) -> Result<PathBuf, PullError> {
        let dest = self.layout_path(manifest_digest).expect("verified digest");
        if dest.join("index.json").is_file() {
            return Ok(dest);
        }
        let parent = self.root.join("layouts");
        let staging = parent.join(format!(".tmp-{}-{}", std::process::id(), TMP_SEQ.fetch_add(1, Ordering::Relaxed)));
        let result = (|| {
            let bdir = staging.join("blobs").join("sha256");
            std::fs::create_dir_all(&bdir).map_err(|e| io(&bdir, e))?;
            for d in blobs.iter().map(String::as_str).chain([manifest_digest]) {
                let src = self
                    .blob(d, None)
                    .ok_or_else(|| io(&self.blob_path(d).unwrap_or_default(), std::io::ErrorKind::NotFound.into()))?;
                let to = bdir.join(digest_hex(d).expect("verified digest"));
                if to.exists() {
                    continue;
                }
                if std::fs::hard_link(&src, &to).is_err() {
                    std::fs::copy(&src, &to).map_err(|e| io(&to, e))?;
                }
            }
            let mut desc = serde_json::json!({
                "mediaType": manifest_media_type,
                "digest": manifest_digest,
                "size": manifest_size,
            });
            if let Some(p) = platform {
                desc["platform"] = p.clone();
            }
            let index = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": [desc],
            });
            let write = |name: &str, v: &serde_json::Value| {
                let p = staging.join(name);
                std::fs::write(&p, serde_json::to_vec(v).expect("json")).map_err(|e| io(&p, e))
            };
            write("oci-layout", &serde_json::json!({"imageLayoutVersion": "1.0.0"}))?;
            write("index.json", &index)
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
        match std::fs::rename(&staging, &dest) {
            Ok(()) => Ok(dest),
            // Another pull wrote the same layout first: identical content.
            Err(_) if dest.join("index.json").is_file() => {
                let _ = std::fs::remove_dir_all(&staging);
                Ok(dest)
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&staging);
                Err(io(&dest, e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_validated_before_becoming_paths() {
        assert!(digest_hex("sha256:../../etc/passwd").is_none());
        assert!(digest_hex(&format!("sha256:{}", "A".repeat(64))).is_none());
        assert!(digest_hex(&format!("sha512:{}", "a".repeat(64))).is_none());
        assert_eq!(digest_hex(&format!("sha256:{}", "a".repeat(64))), Some("a".repeat(64).as_str()));
    }

    #[test]
    fn put_then_layout_links_blobs() {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::new(d.path());
        let manifest = br#"{"schemaVersion":2}"#;
        let md = format!("sha256:{}", "1".repeat(64));
        let cd = format!("sha256:{}", "2".repeat(64));
        c.put(&md, manifest).unwrap();
        c.put(&cd, b"{}").unwrap();
        assert!(c.blob(&md, Some(manifest.len() as u64)).is_some());
        assert!(c.blob(&md, Some(1)).is_none(), "a size mismatch is a miss");
        let l = c
            .write_layout(&md, "application/vnd.oci.image.manifest.v1+json", 19, None, std::slice::from_ref(&cd))
            .unwrap();
        assert!(l.join("blobs/sha256").join("2".repeat(64)).is_file());
        let index: serde_json::Value = serde_json::from_slice(&std::fs::read(l.join("index.json")).unwrap()).unwrap();
        assert_eq!(index["manifests"][0]["digest"], md);
        assert_eq!(c.layout(&md), Some(l));
    }
}
