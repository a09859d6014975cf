//! Reading images: format detection (OCI layout, OCI archive,
//! docker-archive), verified blob access, index walking and platform
//! selection.

use crate::digest::{hash_reader, sha256_digest, sha256_hex};
use crate::error::ImageError;
use crate::platform::Platform;
use crate::source::{normalize_rel, Container};
use crate::spec::{self, Descriptor, DockerArchiveEntry, ImageConfig, Index, Manifest};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Largest JSON document (index, manifest, config) read into memory.
const MAX_JSON: u64 = 16 << 20;
/// Deepest index nesting followed.
const MAX_INDEX_DEPTH: usize = 8;

/// Which container format an image was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    OciLayout,
    OciArchive,
    DockerArchive,
}

/// One layer of a resolved image.
#[derive(Debug, Clone)]
pub(crate) struct LayerRef {
    /// Member path inside the container.
    pub rel: String,
    /// Digest of the stored bytes, when known (always for OCI).
    pub digest: Option<String>,
    pub size: Option<u64>,
    /// Expected digest of the uncompressed tar (config `rootfs.diff_ids`).
    pub diff_id: Option<String>,
    /// Not needed to decode (gzip and zstd are told apart by their magic
    /// bytes); kept for callers that report it.
    #[allow(dead_code)]
    pub media_type: String,
    /// Name used in messages: the digest, or the member path.
    pub label: String,
}

/// An image with one manifest selected and its metadata verified.
pub(crate) struct Resolved {
    pub image: PathBuf,
    pub container: Container,
    pub format: ImageFormat,
    /// Manifest digest; for a classic docker-archive (no manifest), the
    /// config digest (docker's image ID).
    pub manifest_digest: String,
    pub config: ImageConfig,
    /// The config document as stored (verified).
    pub config_bytes: Vec<u8>,
    pub layers: Vec<LayerRef>,
    /// Reference names found (`org.opencontainers.image.ref.name`,
    /// `io.containerd.image.name`, docker `RepoTags`).
    pub ref_names: Vec<String>,
}

struct Candidate {
    desc: Descriptor,
    names: Vec<String>,
    loaded: Option<(Manifest, ImageConfig, Vec<u8>)>,
}

impl Resolved {
    /// Open an image and select the manifest for `platform` (host default).
    pub(crate) fn open(image: &Path, platform: Option<&Platform>, max_decompressed: u64) -> Result<Self, ImageError> {
        let container = Container::open(image, max_decompressed)?;
        let is_dir = matches!(container, Container::Dir(_));
        if container.exists("index.json") {
            let format = if is_dir { ImageFormat::OciLayout } else { ImageFormat::OciArchive };
            resolve_oci(image, container, format, platform)
        } else if container.exists("manifest.json") {
            resolve_docker(image, container, platform)
        } else {
            Err(ImageError::NotAnImage {
                path: image.into(),
                reason: "no index.json (OCI layout/archive) or manifest.json (docker-archive) found".into(),
            })
        }
    }

    /// Check a layer's stored size and digest (when its descriptor has them)
    /// before the layer is used.
    pub(crate) fn verify_layer_blob(&self, layer: &LayerRef) -> Result<(), ImageError> {
        let (Some(digest), Some(size)) = (&layer.digest, layer.size) else {
            return Ok(());
        };
        let what = format!("layer {}", layer.rel);
        let r = self.container.open_member(&layer.rel).map_err(|_| missing(&self.image, digest, &what))?;
        let (actual, n) = hash_reader(r).map_err(|e| ImageError::io(&self.image, e))?;
        check_blob(&self.image, digest, &what, size, n, &actual)
    }
}

fn missing(image: &Path, digest: &str, what: &str) -> ImageError {
    ImageError::BlobMissing { image: image.into(), digest: digest.into(), what: what.into() }
}

fn check_blob(image: &Path, digest: &str, what: &str, size: u64, n: u64, actual: &str) -> Result<(), ImageError> {
    if n != size {
        return Err(ImageError::SizeMismatch {
            image: image.into(),
            digest: digest.into(),
            what: what.into(),
            expected: size,
            actual: n,
        });
    }
    if actual != digest {
        return Err(ImageError::DigestMismatch {
            image: image.into(),
            digest: digest.into(),
            what: what.into(),
            actual: actual.trim_start_matches("sha256:").into(),
        });
    }
    Ok(())
}

/// Member path of a blob, validating the digest.
pub(crate) fn blob_path(image: &Path, digest: &str, what: &str) -> Result<String, ImageError> {
    let hex = sha256_hex(digest).ok_or_else(|| ImageError::BadDigest {
        image: image.into(),
        digest: digest.into(),
        what: what.into(),
    })?;
    Ok(format!("blobs/sha256/{hex}"))
}

/// Read a small blob fully, checking size (before reading) and digest.
fn read_blob(c: &Container, image: &Path, desc: &Descriptor, what: &str) -> Result<Vec<u8>, ImageError> {
    let rel = blob_path(image, &desc.digest, what)?;
    let stored = c.size(&rel).ok_or_else(|| missing(image, &desc.digest, what))?;
    if stored != desc.size {
        return Err(ImageError::SizeMismatch {
            image: image.into(),
            digest: desc.digest.clone(),
            what: what.into(),
            expected: desc.size,
            actual: stored,
        });
    }
    if desc.size > MAX_JSON {
        return Err(ImageError::Invalid {
            image: image.into(),
            what: format!("blob {} ({what})", desc.digest),
            reason: format!("{} bytes is too large for a JSON document", desc.size),
        });
    }
    let bytes = read_member(c, image, &rel)?;
    let actual = sha256_digest(&bytes);
    check_blob(image, &desc.digest, what, desc.size, bytes.len() as u64, &actual)?;
    Ok(bytes)
}

fn read_member(c: &Container, image: &Path, rel: &str) -> Result<Vec<u8>, ImageError> {
    let mut r = c.open_member(rel).map_err(|e| ImageError::io(image.join(rel), e))?;
    let mut buf = Vec::new();
    r.by_ref().take(MAX_JSON + 1).read_to_end(&mut buf).map_err(|e| ImageError::io(image.join(rel), e))?;
    if buf.len() as u64 > MAX_JSON {
        return Err(ImageError::Invalid {
            image: image.into(),
            what: rel.into(),
            reason: "too large for a JSON document".into(),
        });
    }
    Ok(buf)
}

fn parse<T: serde::de::DeserializeOwned>(image: &Path, what: &str, bytes: &[u8]) -> Result<T, ImageError> {
    serde_json::from_slice(bytes).map_err(|source| ImageError::Json { image: image.into(), what: what.into(), source })
}

fn ref_names(desc: &Descriptor) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(a) = &desc.annotations {
        for key in [spec::ANNOTATION_CONTAINERD_NAME, spec::ANNOTATION_REF_NAME] {
            if let Some(v) = a.get(key) {
                if !out.contains(v) {
                    out.push(v.clone());
                }
            }
        }
    }
    out
}

/// Parse the top-level `index.json` of an OCI layout.
pub(crate) fn parse_index(image: &Path, bytes: &[u8]) -> Result<Index, ImageError> {
    let index: Index = parse(image, "index.json", bytes)?;
    if index.schema_version != 2 {
        return Err(ImageError::Invalid {
            image: image.into(),
            what: "index.json".into(),
            reason: format!("schemaVersion {} (expected 2)", index.schema_version),
        });
    }
    Ok(index)
}

fn collect(
    c: &Container,
    image: &Path,
    index: &Index,
    inherited: &[String],
    depth: usize,
    out: &mut Vec<Candidate>,
) -> Result<(), ImageError> {
    if depth > MAX_INDEX_DEPTH {
        return Err(ImageError::Invalid {
            image: image.into(),
            what: "index".into(),
            reason: format!("indexes nested deeper than {MAX_INDEX_DEPTH}"),
        });
    }
    for desc in &index.manifests {
        let mut names = ref_names(desc);
        if names.is_empty() {
            names = inherited.to_vec();
        }
        if spec::is_index(&desc.media_type) {
            let what = format!("index {}", desc.digest);
            let bytes = read_blob(c, image, desc, &what)?;
            let nested: Index = parse(image, &what, &bytes)?;
            collect(c, image, &nested, &names, depth + 1, out)?;
        } else if spec::is_manifest(&desc.media_type) {
            out.push(Candidate { desc: desc.clone(), names, loaded: None });
        }
        // Other media types (artifacts, signatures) are not images: skipped.
    }
    Ok(())
}

fn load_manifest(
    c: &Container,
    image: &Path,
    desc: &Descriptor,
) -> Result<(Manifest, ImageConfig, Vec<u8>), ImageError> {
    let what = format!("manifest {}", desc.digest);
    let bytes = read_blob(c, image, desc, &what)?;
    let manifest: Manifest = parse(image, &what, &bytes)?;
    if manifest.schema_version != 2 {
        return Err(ImageError::Invalid {
            image: image.into(),
            what,
            reason: format!("schemaVersion {} (expected 2)", manifest.schema_version),
        });
    }
    let cmt = &manifest.config.media_type;
    if cmt != spec::OCI_CONFIG && cmt != spec::DOCKER_CONFIG {
        return Err(ImageError::UnsupportedMediaType {
            image: image.into(),
            media_type: cmt.clone(),
            what: format!("config of manifest {}", desc.digest),
        });
    }
    let cwhat = format!("config of manifest {}", desc.digest);
    let cbytes = read_blob(c, image, &manifest.config, &cwhat)?;
    let config: ImageConfig = parse(image, &cwhat, &cbytes)?;
    Ok((manifest, config, cbytes))
}

fn select<'a>(
    image: &Path,
    cands: &'a mut [Candidate],
    platform: Option<&Platform>,
    c: &Container,
) -> Result<&'a mut Candidate, ImageError> {
    // Platform of each candidate: from its descriptor, else from its config.
    let mut plats = Vec::with_capacity(cands.len());
    for cand in cands.iter_mut() {
        let p = match &cand.desc.platform {
            Some(p) => p.clone(),
            None => {
                let loaded = load_manifest(c, image, &cand.desc)?;
                let p = loaded.1.platform();
                cand.loaded = Some(loaded);
                p
            }
        };
        plats.push(p);
    }
    let real: Vec<usize> = (0..cands.len()).filter(|&i| plats[i].os != "unknown").collect();
    let chosen = match platform {
        None if real.len() == 1 => Some(real[0]),
        _ => {
            let want = platform.cloned().unwrap_or_else(Platform::host);
            real.iter().copied().find(|&i| want.accepts(&plats[i]))
        }
    };
    match chosen {
        Some(i) => Ok(&mut cands[i]),
        None => Err(ImageError::PlatformNotFound {
            image: image.into(),
            wanted: platform.cloned().unwrap_or_else(Platform::host).to_string(),
            available: real.iter().map(|&i| plats[i].to_string()).collect(),
        }),
    }
}

fn resolve_oci(
    image: &Path,
    c: Container,
    format: ImageFormat,
    platform: Option<&Platform>,
) -> Result<Resolved, ImageError> {
    let index = parse_index(image, &read_member(&c, image, "index.json")?)?;
    let mut cands = Vec::new();
    collect(&c, image, &index, &[], 0, &mut cands)?;
    if cands.is_empty() {
        return Err(ImageError::NotAnImage { path: image.into(), reason: "index.json lists no image manifest".into() });
    }
    let cand = select(image, &mut cands, platform, &c)?;
    let (manifest, config, config_bytes) = match cand.loaded.take() {
        Some(l) => l,
        None => load_manifest(&c, image, &cand.desc)?,
    };
    let diff_ids = config.rootfs.as_ref().map(|r| r.diff_ids.clone()).unwrap_or_default();
    if diff_ids.len() != manifest.layers.len() {
        return Err(ImageError::Invalid {
            image: image.into(),
            what: format!("config of manifest {}", cand.desc.digest),
            reason: format!(
                "rootfs.diff_ids has {} entries but the manifest has {} layers",
                diff_ids.len(),
                manifest.layers.len()
            ),
        });
    }
    let mut layers = Vec::new();
    for (i, l) in manifest.layers.iter().enumerate() {
        if !spec::is_layer(&l.media_type) {
            return Err(ImageError::UnsupportedMediaType {
                image: image.into(),
                media_type: l.media_type.clone(),
                what: format!("layer {} of manifest {}", l.digest, cand.desc.digest),
            });
        }
        let rel = blob_path(image, &l.digest, "layer")?;
        layers.push(LayerRef {
            rel,
            digest: Some(l.digest.clone()),
            size: Some(l.size),
            diff_id: Some(diff_ids[i].clone()),
            media_type: l.media_type.clone(),
            label: l.digest.clone(),
        });
    }
    Ok(Resolved {
        image: image.into(),
        manifest_digest: cand.desc.digest.clone(),
        ref_names: cand.names.clone(),
        container: c,
        format,
        config,
        config_bytes,
        layers,
    })
}

/// Digest implied by a docker-archive member name (`<hex>.json`,
/// `blobs/sha256/<hex>`), if any.
fn implied_digest(rel: &str) -> Option<String> {
    let base = rel.strip_prefix("blobs/sha256/").or_else(|| rel.strip_suffix(".json"))?;
    let d = format!("sha256:{base}");
    sha256_hex(&d).is_some().then_some(d)
}

fn resolve_docker(image: &Path, c: Container, platform: Option<&Platform>) -> Result<Resolved, ImageError> {
    let entries: Vec<DockerArchiveEntry> = parse(image, "manifest.json", &read_member(&c, image, "manifest.json")?)?;
    if entries.is_empty() {
        return Err(ImageError::NotAnImage { path: image.into(), reason: "manifest.json lists no image".into() });
    }
    let mut loaded = Vec::new();
    for e in &entries {
        let rel = normalize_rel(&e.config).ok_or_else(|| ImageError::Invalid {
            image: image.into(),
            what: "manifest.json".into(),
            reason: format!("config path {:?} is not a relative path inside the archive", e.config),
        })?;
        let bytes = read_member(&c, image, &rel)?;
        let digest = sha256_digest(&bytes);
        if let Some(expected) = implied_digest(&rel) {
            if expected != digest {
                return Err(ImageError::DigestMismatch {
                    image: image.into(),
                    digest: expected,
                    what: format!("config {rel}"),
                    actual: digest.trim_start_matches("sha256:").into(),
                });
            }
        }
        let config: ImageConfig = parse(image, &format!("config {rel}"), &bytes)?;
        loaded.push((digest, config, bytes));
    }
    let plats: Vec<Platform> = loaded.iter().map(|(_, c, _)| c.platform()).collect();
    let chosen = match platform {
        None if entries.len() == 1 => Some(0),
        _ => {
            let want = platform.cloned().unwrap_or_else(Platform::host);
            (0..entries.len()).find(|&i| want.accepts(&plats[i]))
        }
    };
    let Some(i) = chosen else {
        return Err(ImageError::PlatformNotFound {
            image: image.into(),
            wanted: platform.cloned().unwrap_or_else(Platform::host).to_string(),
            available: plats.iter().map(|p| p.to_string()).collect(),
        });
    };
    let entry = &entries[i];
    let (config_digest, config, config_bytes) = loaded.swap_remove(i);
    let diff_ids = config.rootfs.as_ref().map(|r| r.diff_ids.clone()).unwrap_or_default();
    if diff_ids.len() != entry.layers.len() {
        return Err(ImageError::Invalid {
            image: image.into(),
            what: format!("config {}", entry.config),
            reason: format!(
                "rootfs.diff_ids has {} entries but manifest.json lists {} layers",
                diff_ids.len(),
                entry.layers.len()
            ),
        });
    }
    let mut layers = Vec::new();
    for (l, diff_id) in entry.layers.iter().zip(diff_ids) {
        let rel = normalize_rel(l).ok_or_else(|| ImageError::Invalid {
            image: image.into(),
            what: "manifest.json".into(),
            reason: format!("layer path {l:?} is not a relative path inside the archive"),
        })?;
        let size = c.size(&rel).ok_or_else(|| missing(image, &diff_id, &format!("layer {rel}")))?;
        let digest = implied_digest(&rel);
        layers.push(LayerRef {
            label: rel.clone(),
            size: digest.as_ref().map(|_| size),
            digest,
            rel,
            diff_id: Some(diff_id),
            media_type: spec::DOCKER_LAYER_TAR.into(),
        });
    }
    Ok(Resolved {
        image: image.into(),
        manifest_digest: config_digest,
        ref_names: entry.repo_tags.clone().unwrap_or_default(),
        container: c,
        format: ImageFormat::DockerArchive,
        config,
        config_bytes,
        layers,
    })
}
