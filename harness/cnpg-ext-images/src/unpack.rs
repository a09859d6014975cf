//! `unpack` and `inspect`: verified, hardened extraction of an image's
//! root filesystem.

use crate::error::ImageError;
use crate::extract::{Extractor, LayerCtx, Limits};
use crate::layout::{ImageFormat, Resolved};
use crate::platform::Platform;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Default cap on the total uncompressed size of regular files: 4 GiB.
pub const DEFAULT_MAX_TOTAL_BYTES: u64 = 4 << 30;
/// Default cap on the number of layer entries (all layers): 200 000.
pub const DEFAULT_MAX_ENTRIES: u64 = 200_000;

/// Options of [`unpack`].
#[derive(Debug, Clone)]
pub struct UnpackOptions {
    /// Platform to select from a multi-platform index; `None` takes the only
    /// image if there is just one, else the host platform.
    pub platform: Option<Platform>,
    /// Cap on the total size of regular files written (all layers).
    pub max_total_bytes: u64,
    /// Cap on the number of tar entries (all layers).
    pub max_entries: u64,
}

impl Default for UnpackOptions {
    fn default() -> Self {
        UnpackOptions { platform: None, max_total_bytes: DEFAULT_MAX_TOTAL_BYTES, max_entries: DEFAULT_MAX_ENTRIES }
    }
}

/// The parts of an image config callers care about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfigSummary {
    pub labels: BTreeMap<String, String>,
    pub user: Option<String>,
    pub architecture: String,
    pub os: String,
}

/// Result of [`unpack`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UnpackedImage {
    /// `sha256:<hex>` of the selected manifest (the config digest for a
    /// classic docker-archive, which has no manifest).
    pub manifest_digest: String,
    /// `sha256:<hex>` of the config document (an engine's image id for it).
    #[serde(default)]
    pub config_digest: String,
    pub config: ImageConfigSummary,
    /// Tar entries processed (all layers).
    pub entries: u64,
    /// Regular-file bytes written.
    pub bytes: u64,
    /// Owner and mode of each file and directory as the layers recorded
    /// them (the unpacked copy belongs to the unpacking user).
    #[serde(skip)]
    pub ownership: crate::compat::Ownership,
}

/// Result of [`inspect`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageSummary {
    pub manifest_digest: String,
    pub config: ImageConfigSummary,
    /// Reference names recorded in the image (OCI `ref.name` /
    /// containerd name annotations, docker `RepoTags`).
    pub reference_names: Vec<String>,
    /// `oci-layout`, `oci-archive` or `docker-archive`.
    pub format: String,
    pub layers: usize,
}

pub(crate) fn summary(r: &Resolved) -> ImageConfigSummary {
    let cc = r.config.config.clone().unwrap_or_default();
    ImageConfigSummary {
        labels: cc.labels.unwrap_or_default(),
        user: cc.user,
        architecture: r.config.architecture.clone(),
        os: r.config.os.clone(),
    }
}

fn outer_cap(opts: &UnpackOptions) -> u64 {
    opts.max_total_bytes.saturating_mul(2).saturating_add(1 << 30)
}

/// Read an image's metadata (verified) without extracting it.
pub fn inspect(image: &Path, platform: Option<&Platform>) -> Result<ImageSummary, ImageError> {
    let r = Resolved::open(image, platform, outer_cap(&UnpackOptions::default()))?;
    Ok(ImageSummary {
        manifest_digest: r.manifest_digest.clone(),
        config: summary(&r),
        reference_names: r.ref_names.clone(),
        format: match r.format {
            ImageFormat::OciLayout => "oci-layout",
            ImageFormat::OciArchive => "oci-archive",
            ImageFormat::DockerArchive => "docker-archive",
        }
        .into(),
        layers: r.layers.len(),
    })
}

/// Unpack the root filesystem of `image` (OCI layout dir, OCI archive or
/// docker-archive, auto-detected) into `dest`, which must not exist.
///
/// Every blob is checked against its descriptor's size and digest before
/// use, and each layer's uncompressed content against the config's
/// `diff_ids`. Layers are applied in order (with whiteouts) into a staging
/// directory next to `dest`, renamed into place only when everything
/// succeeded; on error nothing is left behind. See the `extract` module docs
/// for the rules on unsafe entries.
pub fn unpack(image: &Path, dest: &Path, opts: &UnpackOptions) -> Result<UnpackedImage, ImageError> {
    unpack_with_names(image, dest, opts).map(|(u, _)| u)
}

/// [`unpack`], also returning the reference names found in the image.
pub(crate) fn unpack_with_names(
    image: &Path,
    dest: &Path,
    opts: &UnpackOptions,
) -> Result<(UnpackedImage, Vec<String>), ImageError> {
    if dest.symlink_metadata().is_ok() {
        return Err(ImageError::DestExists { path: dest.into() });
    }
    let name = dest
        .file_name()
        .ok_or_else(|| ImageError::InvalidArgument(format!("destination {} has no file name", dest.display())))?;
    let parent: PathBuf = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.into(),
        _ => ".".into(),
    };
    let r = Resolved::open(image, opts.platform.as_ref(), outer_cap(opts))?;
    let staging = tempfile::Builder::new()
        .prefix(&format!(".{}.staging-", name.to_string_lossy()))
        .tempdir_in(&parent)
        .map_err(|e| ImageError::io(&parent, e))?;
    let limits = Limits { max_bytes: opts.max_total_bytes, max_entries: opts.max_entries };
    let mut ex = Extractor::new(staging.path(), limits).map_err(|e| ImageError::io(staging.path(), e))?;
    for layer in &r.layers {
        r.verify_layer_blob(layer)?;
        let what = format!("layer {}", layer.rel);
        let reader = r.container.open_member(&layer.rel).map_err(|_| ImageError::BlobMissing {
            image: image.into(),
            digest: layer.digest.clone().unwrap_or_else(|| layer.label.clone()),
            what,
        })?;
        let ctx = LayerCtx { image, layer: &layer.label };
        ex.apply_layer(reader, layer.diff_id.as_deref(), &ctx)?;
    }
    ex.finish().map_err(|e| ImageError::io(staging.path(), e))?;
    rustix::fs::renameat_with(
        rustix::fs::CWD,
        staging.path(),
        rustix::fs::CWD,
        dest,
        rustix::fs::RenameFlags::NOREPLACE,
    )
    .map_err(|e| match e {
        rustix::io::Errno::EXIST | rustix::io::Errno::NOTEMPTY => ImageError::DestExists { path: dest.into() },
        e => ImageError::io(dest, e.into()),
    })?;
    // Renamed: nothing left for the guard to remove.
    let _ = staging.keep();
    let u = UnpackedImage {
        manifest_digest: r.manifest_digest.clone(),
        config_digest: crate::sha256_digest(&r.config_bytes),
        config: summary(&r),
        entries: ex.entries,
        bytes: ex.bytes,
        ownership: std::mem::take(&mut ex.ownership),
    };
    Ok((u, r.ref_names.clone()))
}
