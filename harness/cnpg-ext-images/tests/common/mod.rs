//! Test helpers: raw (possibly hostile) tar layers, hand-made OCI layouts,
//! and a sandbox with a sibling "outside" directory that must stay untouched.
#![allow(dead_code)]

use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};

pub fn sha(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// One raw tar entry, name and link written verbatim (no validation).
pub struct E {
    pub name: Vec<u8>,
    pub kind: tar::EntryType,
    pub mode: u32,
    pub data: Vec<u8>,
    pub link: Option<Vec<u8>>,
}

pub fn file(name: &str, data: &[u8]) -> E {
    E { name: name.into(), kind: tar::EntryType::Regular, mode: 0o644, data: data.to_vec(), link: None }
}
pub fn dir(name: &str) -> E {
    E { name: name.into(), kind: tar::EntryType::Directory, mode: 0o755, data: vec![], link: None }
}
pub fn symlink(name: &str, target: &str) -> E {
    E { name: name.into(), kind: tar::EntryType::Symlink, mode: 0o777, data: vec![], link: Some(target.into()) }
}
pub fn hardlink(name: &str, target: &str) -> E {
    E { name: name.into(), kind: tar::EntryType::Link, mode: 0o644, data: vec![], link: Some(target.into()) }
}
pub fn special(name: &str, kind: tar::EntryType) -> E {
    E { name: name.into(), kind, mode: 0o644, data: vec![], link: None }
}

/// Plain tar bytes of `entries`.
pub fn tar_bytes(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        {
            let old = h.as_old_mut();
            assert!(e.name.len() < 100, "test names must fit the header");
            old.name[..e.name.len()].copy_from_slice(&e.name);
            if let Some(l) = &e.link {
                old.linkname[..l.len()].copy_from_slice(l);
            }
        }
        h.set_entry_type(e.kind);
        h.set_mode(e.mode);
        h.set_size(e.data.len() as u64);
        h.set_mtime(0);
        h.set_cksum();
        b.append(&h, e.data.as_slice()).unwrap();
    }
    b.into_inner().unwrap()
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut g = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    g.write_all(bytes).unwrap();
    g.finish().unwrap()
}

/// A layer as stored: `(stored bytes, media type, diff_id)`.
pub struct Layer {
    pub stored: Vec<u8>,
    pub media_type: String,
    pub diff_id: String,
}

impl Layer {
    pub fn gz(entries: &[E]) -> Layer {
        let t = tar_bytes(entries);
        Layer { diff_id: sha(&t), stored: gzip(&t), media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into() }
    }
    pub fn plain(entries: &[E]) -> Layer {
        let t = tar_bytes(entries);
        Layer { diff_id: sha(&t), stored: t, media_type: "application/vnd.oci.image.layer.v1.tar".into() }
    }
}

pub fn write_blob(layout: &Path, bytes: &[u8]) -> String {
    let d = sha(bytes);
    let dir = layout.join("blobs/sha256");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(d.trim_start_matches("sha256:")), bytes).unwrap();
    d
}

pub fn config_json(arch: &str, user: &str, diff_ids: &[String]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "architecture": arch, "os": "linux",
        "config": {"User": user, "Labels": {"test": "yes"}},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap()
}

/// Write an image manifest (and its config and layers) into `layout`;
/// returns `(manifest digest, manifest size)`.
pub fn write_manifest(layout: &Path, arch: &str, layers: &[Layer]) -> (String, u64) {
    let diff_ids: Vec<String> = layers.iter().map(|l| l.diff_id.clone()).collect();
    let cfg = config_json(arch, "65532:65532", &diff_ids);
    let cfg_d = write_blob(layout, &cfg);
    let ls: Vec<serde_json::Value> = layers
        .iter()
        .map(|l| serde_json::json!({"mediaType": l.media_type, "digest": write_blob(layout, &l.stored), "size": l.stored.len()}))
        .collect();
    let m = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg_d, "size": cfg.len()},
        "layers": ls,
    }))
    .unwrap();
    (write_blob(layout, &m), m.len() as u64)
}

pub fn write_index(layout: &Path, manifests: serde_json::Value) {
    std::fs::create_dir_all(layout).unwrap();
    std::fs::write(layout.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let idx = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests});
    std::fs::write(layout.join("index.json"), serde_json::to_vec(&idx).unwrap()).unwrap();
}

/// A single-platform (host) OCI layout of `layers` at `layout`.
pub fn make_layout(layout: &Path, layers: &[Layer]) -> String {
    let (d, size) = write_manifest(layout, &cnpg_ext_images::host_arch(), layers);
    write_index(
        layout,
        serde_json::json!([{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d, "size": size}]),
    );
    d
}

/// A temp dir with `outside/sentinel`, and `dest` (not created) beside it.
pub struct Sandbox {
    pub tmp: tempfile::TempDir,
    pub outside: PathBuf,
    pub work: PathBuf,
    pub dest: PathBuf,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("sentinel"), b"untouched").unwrap();
        let work = tmp.path().join("work");
        std::fs::create_dir(&work).unwrap();
        let dest = work.join("dest");
        Sandbox { tmp, outside, work, dest }
    }

    pub fn layout(&self) -> PathBuf {
        self.tmp.path().join("image")
    }

    /// Nothing written outside, no destination and no staging left.
    pub fn assert_clean(&self) {
        let names: Vec<_> = std::fs::read_dir(&self.outside).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("sentinel")], "outside dir changed");
        assert_eq!(std::fs::read(self.outside.join("sentinel")).unwrap(), b"untouched");
        let left: Vec<_> = std::fs::read_dir(&self.work).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(left.is_empty(), "left behind in the destination's parent: {left:?}");
        let top: Vec<String> = std::fs::read_dir(self.tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        for t in top {
            assert!(["outside", "work", "image", "image.tar"].contains(&t.as_str()), "unexpected {t} in sandbox");
        }
    }
}
