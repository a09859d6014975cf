//! Images for the registry tests, built with `cnpg-ext-images`; the registry itself is
//! `cnpg_ext_registry::testing`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use cnpg_ext_registry::testing::*;

/// A small extension tree: `share/extension/<name>.control` plus `payload` bytes in `lib/`.
pub fn tree(dir: &Path, name: &str, payload: &[u8]) -> PathBuf {
    let t = dir.join(format!("tree-{name}"));
    std::fs::create_dir_all(t.join("share/extension")).unwrap();
    std::fs::create_dir_all(t.join("lib")).unwrap();
    std::fs::write(
        t.join(format!("share/extension/{name}.control")),
        format!("default_version = '1.0'\ncomment = '{name}'\n"),
    )
    .unwrap();
    std::fs::write(t.join(format!("lib/{name}.data")), payload).unwrap();
    t
}

/// A single-platform OCI layout for `arch`.
pub fn layout(dir: &Path, name: &str, arch: &str, payload: &[u8]) -> (PathBuf, String) {
    let t = tree(dir, &format!("{name}-{arch}"), payload);
    let mut opts = cnpg_ext_images::BuildOptions::new(format!("example.org/{name}:1"));
    opts.arch = arch.to_string();
    let out = dir.join(format!("layout-{name}-{arch}"));
    let built = cnpg_ext_images::build_layout(&t, &opts, &out).unwrap();
    (out, built.manifest_digest)
}

/// An OCI layout whose `index.json` names one image index over one image per arch.
pub fn multi_arch_layout(dir: &Path, name: &str, arches: &[&str]) -> PathBuf {
    let out = dir.join(format!("multi-{name}"));
    let blobs = out.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let mut entries = Vec::new();
    for arch in arches {
        let (l, digest) = layout(dir, name, arch, arch.as_bytes());
        for e in std::fs::read_dir(l.join("blobs/sha256")).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), blobs.join(e.file_name())).unwrap();
        }
        let size = std::fs::metadata(blobs.join(digest.trim_start_matches("sha256:"))).unwrap().len();
        entries.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest, "size": size,
            "platform": {"os": "linux", "architecture": arch},
        }));
    }
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": entries,
    }))
    .unwrap();
    let index_digest = cnpg_ext_images::sha256_digest(&index);
    std::fs::write(blobs.join(index_digest.trim_start_matches("sha256:")), &index).unwrap();
    let top = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": index_digest, "size": index.len(),
        }],
    });
    std::fs::write(out.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();
    std::fs::write(out.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    out
}

/// Pull options for tests: a private cache, the registry insecure, no credentials files.
pub fn options(cache: &Path, insecure: &[&str]) -> cnpg_ext_registry::PullOptions {
    let mut o = cnpg_ext_registry::PullOptions::new(cache.to_path_buf());
    o.insecure = insecure.iter().map(|s| s.to_string()).collect();
    o.auth = cnpg_ext_registry::auth::AuthFiles::default();
    o.progress = false;
    o.timeout = Duration::from_secs(10);
    o.connect_timeout = Duration::from_secs(5);
    o
}

/// A credentials file in the containers auth.json format.
pub fn auth_file(dir: &Path, registry: &str, user: &str, pass: &str) -> PathBuf {
    use base64::Engine as _;
    let f = dir.join(format!("auth-{user}.json"));
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    std::fs::write(&f, serde_json::json!({"auths": {registry: {"auth": auth}}}).to_string()).unwrap();
    f
}
