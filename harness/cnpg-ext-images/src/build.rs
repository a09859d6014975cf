//! Reproducible image build (FROM scratch, one gzip layer) and export to
//! OCI archive and docker-archive.
//!
//! Reproducibility rules: entries sorted by name (walk order with sorted
//! siblings); every entry owned by `0:0` with empty user/group names and
//! mtime 0; directories mode 0755, files 0755 when any exec bit is set else
//! 0644; source hardlinks are stored as separate regular files; gzip level 6
//! with zlib-rs, header with mtime 0, no file name, OS byte 255; config and
//! history `created` = 1970-01-01T00:00:00Z; JSON written compactly with a
//! fixed key order. Same tree and options → same manifest digest.

use crate::digest::{sha256_digest, sha256_hex, HashingReader, HashingWriter};
use crate::error::ImageError;
use crate::extract::check_symlink_target;
use crate::layout::Resolved;
use crate::platform::{host_arch, normalize_arch};
use crate::spec::{self, Descriptor, Index, Manifest};
use crate::{Platform, UnpackOptions};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Fixed creation time written to the config.
pub const CREATED: &str = "1970-01-01T00:00:00Z";
/// Fixed gzip level of built layers.
pub const GZIP_LEVEL: u32 = 6;

/// Options of [`build_layout`].
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Image reference, e.g. `ghcr.io/org/pgvector:0.8.1-18-trixie`.
    pub reference: String,
    /// Config labels (e.g. `io.cloudnativepg.image.base.pgmajor`).
    pub labels: BTreeMap<String, String>,
    /// Config `User`; default `65532:65532`.
    pub user: String,
    /// Architecture (OCI spelling); default the host's.
    pub arch: String,
    /// Operating system; default `linux`.
    pub os: String,
    /// Config `Entrypoint` (empty: none written). Images a runtime starts without a
    /// command, e.g. a pod sandbox image, need it.
    pub entrypoint: Vec<String>,
    /// Config `Env` (`NAME=value`; empty: none written), e.g. the `PATH` of an operand image.
    pub env: Vec<String>,
}

impl BuildOptions {
    /// Defaults: no labels, user `65532:65532`, host arch, `linux`.
    pub fn new(reference: impl Into<String>) -> Self {
        BuildOptions {
            reference: reference.into(),
            labels: BTreeMap::new(),
            user: "65532:65532".into(),
            arch: host_arch(),
            os: "linux".into(),
            entrypoint: Vec::new(),
            env: Vec::new(),
        }
    }
}

/// Result of [`build_layout`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltImage {
    pub reference: String,
    /// `sha256:<hex>` of the image manifest.
    pub manifest_digest: String,
    pub layout_dir: PathBuf,
}

/// Check an image reference (`[registry/]path[:tag][@digest]`).
pub fn validate_reference(r: &str) -> Result<(), ImageError> {
    let bad = |reason: &str| ImageError::InvalidReference { reference: r.into(), reason: reason.into() };
    if r.is_empty() {
        return Err(bad("empty"));
    }
    if !r.bytes().all(|b| b.is_ascii_alphanumeric() || b"._/:@+-".contains(&b)) {
        return Err(bad("only letters, digits and . _ / : @ + - are allowed"));
    }
    let name = r.split('@').next().unwrap_or("");
    if name.is_empty() || name.starts_with('/') || name.ends_with('/') || name.contains("//") {
        return Err(bad("malformed repository path"));
    }
    if let Some((_, tag)) = split_tag(name) {
        let ok = !tag.is_empty()
            && tag.len() <= 128
            && !tag.starts_with(['.', '-'])
            && tag.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if !ok {
            return Err(bad("malformed tag"));
        }
    }
    Ok(())
}

/// `(repository, tag)` when the name has a tag (a `:` after the last `/`).
fn split_tag(name: &str) -> Option<(&str, &str)> {
    let slash = name.rfind('/').map_or(0, |i| i + 1);
    name[slash..].rfind(':').map(|i| (&name[..slash + i], &name[slash + i + 1..]))
}

#[derive(Serialize)]
struct OutConfig<'a> {
    created: &'a str,
    architecture: &'a str,
    os: &'a str,
    config: OutContainerConfig<'a>,
    rootfs: OutRootFs<'a>,
    history: [OutHistory<'a>; 1],
}

#[derive(Serialize)]
struct OutContainerConfig<'a> {
    #[serde(rename = "User")]
    user: &'a str,
    #[serde(rename = "Labels")]
    labels: &'a BTreeMap<String, String>,
    #[serde(rename = "Env", skip_serializing_if = "<[String]>::is_empty")]
    env: &'a [String],
    #[serde(rename = "Entrypoint", skip_serializing_if = "<[String]>::is_empty")]
    entrypoint: &'a [String],
}

#[derive(Serialize)]
struct OutRootFs<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    diff_ids: [&'a str; 1],
}

#[derive(Serialize)]
struct OutHistory<'a> {
    created: &'a str,
    created_by: &'a str,
}

/// Reads exactly `size` bytes or fails (the file changed while reading).
struct Exact<R> {
    inner: R,
    left: u64,
    path: PathBuf,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let max = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..max])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{} shrank while being read", self.path.display()),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn io_at(path: &Path) -> impl Fn(io::Error) -> ImageError + '_ {
    move |e| ImageError::io(path, e)
}

/// Write the layer tar of `tree` through `w`.
fn write_layer_tar<W: Write>(tree: &Path, w: W) -> Result<W, ImageError> {
    let mut b = tar::Builder::new(w);
    b.follow_symlinks(false);
    let walk = walkdir::WalkDir::new(tree)
        .min_depth(1)
        .follow_links(false)
        .sort_by(|a, b| a.file_name().as_bytes().cmp(b.file_name().as_bytes()));
    for ent in walk {
        let ent =
            ent.map_err(|e| ImageError::Build { path: e.path().unwrap_or(tree).to_path_buf(), reason: e.to_string() })?;
        let path = ent.path();
        let rel = path.strip_prefix(tree).expect("walk stays below tree");
        let meta = path.symlink_metadata().map_err(io_at(path))?;
        let ft = meta.file_type();
        let mut h = tar::Header::new_gnu();
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        let err = |e: io::Error| ImageError::Build { path: path.to_path_buf(), reason: e.to_string() };
        if ft.is_dir() {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            let mut name = rel.as_os_str().as_bytes().to_vec();
            name.push(b'/');
            b.append_data(&mut h, Path::new(std::ffi::OsStr::from_bytes(&name)), io::empty()).map_err(err)?;
        } else if ft.is_file() {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(if meta.permissions().mode() & 0o111 != 0 { 0o755 } else { 0o644 });
            h.set_size(meta.len());
            let f = File::open(path).map_err(io_at(path))?;
            let r = Exact { inner: f, left: meta.len(), path: path.to_path_buf() };
            b.append_data(&mut h, rel, r).map_err(err)?;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(path).map_err(io_at(path))?;
            let depth = rel.components().count() - 1;
            check_symlink_target(target.as_os_str().as_bytes(), depth)
                .map_err(|reason| ImageError::Build { path: path.to_path_buf(), reason })?;
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_mode(0o777);
            h.set_size(0);
            b.append_link(&mut h, rel, &target).map_err(err)?;
        } else {
            return Err(ImageError::Build {
                path: path.to_path_buf(),
                reason: "only directories, regular files and symlinks can be put in an image".into(),
            });
        }
    }
    b.into_inner().map_err(io_at(tree))
}

fn write_blob(blobs: &Path, bytes: &[u8]) -> Result<Descriptor, ImageError> {
    let digest = sha256_digest(bytes);
    let p = blobs.join(digest.trim_start_matches("sha256:"));
    std::fs::write(&p, bytes).map_err(io_at(&p))?;
    Ok(Descriptor { media_type: String::new(), digest, size: bytes.len() as u64, platform: None, annotations: None })
}

/// Build a reproducible single-layer OCI image layout of `tree` at
/// `out_layout_dir` (replaced atomically if it exists; parents created).
///
/// Entries are stored sorted, owned by `0:0`, mtime 0, modes normalized
/// (dirs 0755, files 0644/0755); gzip level 6 with a fixed header; config
/// `created` is the epoch. Same tree and options → same manifest digest.
/// `index.json` names the image with `org.opencontainers.image.ref.name`
/// and `io.containerd.image.name` = `opts.reference`. Symlinks escaping the
/// tree and special files are refused.
pub fn build_layout(tree: &Path, opts: &BuildOptions, out_layout_dir: &Path) -> Result<BuiltImage, ImageError> {
    validate_reference(&opts.reference)?;
    if !tree.is_dir() {
        return Err(ImageError::Build { path: tree.into(), reason: "not a directory".into() });
    }
    let arch = normalize_arch(&opts.arch);
    let (parent, name) = split_out(out_layout_dir)?;
    std::fs::create_dir_all(&parent).map_err(io_at(&parent))?;
    let staging =
        tempfile::Builder::new().prefix(&format!(".{name}.building-")).tempdir_in(&parent).map_err(io_at(&parent))?;
    let root = staging.path();
    let blobs = root.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).map_err(io_at(&blobs))?;

    // Layer: tar → (diff_id hash) → gzip → (digest hash) → file.
    let tmp_layer = blobs.join("layer.tmp");
    let f = BufWriter::with_capacity(256 * 1024, File::create(&tmp_layer).map_err(io_at(&tmp_layer))?);
    let gz = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(HashingWriter::new(f), flate2::Compression::new(GZIP_LEVEL));
    let tarw = write_layer_tar(tree, HashingWriter::new(gz))?;
    let (gz, diff_id, _) = tarw.finish();
    let (f, layer_digest, layer_size) = gz.finish().map_err(io_at(&tmp_layer))?.finish();
    f.into_inner().map_err(|e| ImageError::io(&tmp_layer, e.into_error()))?.sync_all().map_err(io_at(&tmp_layer))?;
    let layer_path = blobs.join(layer_digest.trim_start_matches("sha256:"));
    std::fs::rename(&tmp_layer, &layer_path).map_err(io_at(&layer_path))?;

    let config = OutConfig {
        created: CREATED,
        architecture: &arch,
        os: &opts.os,
        config: OutContainerConfig {
            user: &opts.user,
            labels: &opts.labels,
            env: &opts.env,
            entrypoint: &opts.entrypoint,
        },
        rootfs: OutRootFs { kind: "layers", diff_ids: [&diff_id] },
        history: [OutHistory { created: CREATED, created_by: "cnpg-ext-images build (FROM scratch)" }],
    };
    let config_bytes = serde_json::to_vec(&config).expect("config serializes");
    let mut config_desc = write_blob(&blobs, &config_bytes)?;
    config_desc.media_type = spec::OCI_CONFIG.into();
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(spec::OCI_MANIFEST.into()),
        config: config_desc,
        layers: vec![Descriptor {
            media_type: spec::OCI_LAYER_GZIP.into(),
            digest: layer_digest,
            size: layer_size,
            platform: None,
            annotations: None,
        }],
        annotations: None,
    };
    let manifest_bytes = serde_json::to_vec(&manifest).expect("manifest serializes");
    let mut manifest_desc = write_blob(&blobs, &manifest_bytes)?;
    manifest_desc.media_type = spec::OCI_MANIFEST.into();
    manifest_desc.platform = Some(Platform { architecture: arch.clone(), os: opts.os.clone(), variant: None });
    let mut ann = BTreeMap::new();
    ann.insert(spec::ANNOTATION_CONTAINERD_NAME.to_string(), opts.reference.clone());
    ann.insert(spec::ANNOTATION_REF_NAME.to_string(), opts.reference.clone());
    manifest_desc.annotations = Some(ann);
    let manifest_digest = manifest_desc.digest.clone();
    let index = Index {
        schema_version: 2,
        media_type: Some(spec::OCI_INDEX.into()),
        manifests: vec![manifest_desc],
        annotations: None,
    };
    let p = root.join("index.json");
    std::fs::write(&p, serde_json::to_vec(&index).expect("index serializes")).map_err(io_at(&p))?;
    let p = root.join("oci-layout");
    std::fs::write(&p, format!("{{\"imageLayoutVersion\":\"{}\"}}", spec::OCI_LAYOUT_VERSION)).map_err(io_at(&p))?;
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).map_err(io_at(root))?;
    publish(staging, out_layout_dir)?;
    Ok(BuiltImage { reference: opts.reference.clone(), manifest_digest, layout_dir: out_layout_dir.to_path_buf() })
}

fn split_out(out: &Path) -> Result<(PathBuf, String), ImageError> {
    let name = out
        .file_name()
        .ok_or_else(|| ImageError::InvalidArgument(format!("output {} has no file name", out.display())))?
        .to_string_lossy()
        .into_owned();
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((parent, name))
}

/// Move a finished staging dir to `out`, atomically replacing what is there.
fn publish(staging: tempfile::TempDir, out: &Path) -> Result<(), ImageError> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    let from = staging.path().to_path_buf();
    match renameat_with(CWD, &from, CWD, out, RenameFlags::NOREPLACE) {
        Ok(()) => {
            let _ = staging.keep();
            Ok(())
        }
        Err(rustix::io::Errno::EXIST) => {
            renameat_with(CWD, &from, CWD, out, RenameFlags::EXCHANGE).map_err(|e| ImageError::io(out, e.into()))?;
            // `from` now holds the previous output.
            let _ = staging.keep();
            let old = from.symlink_metadata().map_err(io_at(&from))?;
            if old.is_dir() {
                std::fs::remove_dir_all(&from).map_err(io_at(&from))?;
            } else {
                std::fs::remove_file(&from).map_err(io_at(&from))?;
            }
            Ok(())
        }
        Err(e) => Err(ImageError::io(out, e.into())),
    }
}

/// Deterministic tar header for archive members.
fn member_header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

/// Write a tar file atomically: built in a temp file next to `out`.
fn write_tar_atomic(
    out: &Path,
    fill: impl FnOnce(&mut tar::Builder<BufWriter<File>>) -> Result<(), ImageError>,
) -> Result<(), ImageError> {
    let (parent, name) = split_out(out)?;
    let tmp =
        tempfile::Builder::new().prefix(&format!(".{name}.writing-")).tempfile_in(&parent).map_err(io_at(&parent))?;
    let f = tmp.reopen().map_err(io_at(tmp.path()))?;
    let mut b = tar::Builder::new(BufWriter::with_capacity(256 * 1024, f));
    fill(&mut b)?;
    let w = b.into_inner().map_err(io_at(out))?;
    let f = w.into_inner().map_err(|e| ImageError::io(out, e.into_error()))?;
    f.sync_all().map_err(io_at(out))?;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644)).map_err(io_at(out))?;
    tmp.persist(out).map_err(|e| ImageError::io(out, e.error))?;
    Ok(())
}

fn append_bytes(b: &mut tar::Builder<BufWriter<File>>, path: &str, bytes: &[u8], out: &Path) -> Result<(), ImageError> {
    let mut h = member_header(tar::EntryType::Regular, 0o644, bytes.len() as u64);
    b.append_data(&mut h, path, bytes).map_err(io_at(out))
}

fn append_dir(b: &mut tar::Builder<BufWriter<File>>, path: &str, out: &Path) -> Result<(), ImageError> {
    let mut h = member_header(tar::EntryType::Directory, 0o755, 0);
    b.append_data(&mut h, path, io::empty()).map_err(io_at(out))
}

/// Tar an OCI layout into an OCI archive (`oci-layout`, `index.json`,
/// `blobs/sha256/*` in sorted order, deterministic headers). Each blob is
/// checked against its file name while copied.
pub fn write_oci_archive(layout_dir: &Path, out_tar: &Path) -> Result<(), ImageError> {
    let index_path = layout_dir.join("index.json");
    let index_bytes = std::fs::read(&index_path).map_err(io_at(&index_path))?;
    crate::layout::parse_index(layout_dir, &index_bytes)?;
    let layout_path = layout_dir.join("oci-layout");
    let layout_bytes = std::fs::read(&layout_path).map_err(io_at(&layout_path))?;
    let blobs_dir = layout_dir.join("blobs/sha256");
    let mut blobs: Vec<String> = Vec::new();
    for e in std::fs::read_dir(&blobs_dir).map_err(io_at(&blobs_dir))? {
        let e = e.map_err(io_at(&blobs_dir))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if sha256_hex(&format!("sha256:{name}")).is_some() && e.file_type().map_err(io_at(&blobs_dir))?.is_file() {
            blobs.push(name);
        }
    }
    blobs.sort();
    write_tar_atomic(out_tar, |b| {
        append_bytes(b, "oci-layout", &layout_bytes, out_tar)?;
        append_bytes(b, "index.json", &index_bytes, out_tar)?;
        append_dir(b, "blobs/", out_tar)?;
        append_dir(b, "blobs/sha256/", out_tar)?;
        for hex in &blobs {
            let p = blobs_dir.join(hex);
            let f = File::open(&p).map_err(io_at(&p))?;
            let len = f.metadata().map_err(io_at(&p))?.len();
            let mut r = HashingReader::new(Exact { inner: f, left: len, path: p.clone() });
            let mut h = member_header(tar::EntryType::Regular, 0o644, len);
            b.append_data(&mut h, format!("blobs/sha256/{hex}"), &mut r).map_err(io_at(&p))?;
            let (actual, _) = r.finish();
            if actual != format!("sha256:{hex}") {
                return Err(ImageError::DigestMismatch {
                    image: layout_dir.into(),
                    digest: format!("sha256:{hex}"),
                    what: "blob file".into(),
                    actual: actual.trim_start_matches("sha256:").into(),
                });
            }
        }
        Ok(())
    })
}

/// Write a classic `docker save` archive (`manifest.json` with `RepoTags`
/// = `[reference]` (`:latest` added when untagged), `repositories`,
/// `<config hex>.json`, `<diff_id hex>/layer.tar` uncompressed) of the image
/// in `layout_dir` (or any image [`unpack`](crate::unpack) reads).
pub fn write_docker_archive(layout_dir: &Path, reference: &str, out_tar: &Path) -> Result<(), ImageError> {
    validate_reference(reference)?;
    if reference.contains('@') {
        return Err(ImageError::InvalidReference {
            reference: reference.into(),
            reason: "a docker-archive needs a tag, not a digest".into(),
        });
    }
    let tagged = match split_tag(reference) {
        Some(_) => reference.to_string(),
        None => format!("{reference}:latest"),
    };
    let (repo, tag) = split_tag(&tagged).expect("tagged");
    let opts = UnpackOptions::default();
    let r = Resolved::open(layout_dir, None, opts.max_total_bytes)?;
    let config_hex = sha256_digest(&r.config_bytes).trim_start_matches("sha256:").to_string();
    let (parent, _) = split_out(out_tar)?;
    write_tar_atomic(out_tar, |b| {
        let mut layer_paths = Vec::new();
        for layer in &r.layers {
            r.verify_layer_blob(layer)?;
            let diff_id = layer.diff_id.clone().unwrap_or_default();
            let dir = diff_id.trim_start_matches("sha256:").to_string();
            let member = format!("{dir}/layer.tar");
            if layer_paths.contains(&member) {
                continue;
            }
            // Decompress to a temp file (size needed for the tar header),
            // checking the diff_id on the way.
            let mut tmp = tempfile::tempfile_in(&parent).map_err(io_at(&parent))?;
            let raw = r.container.open_member(&layer.rel).map_err(io_at(layout_dir))?;
            let mut br = io::BufReader::with_capacity(256 * 1024, raw);
            let gz = {
                use io::BufRead;
                br.fill_buf().map_err(io_at(layout_dir))?.starts_with(&[0x1f, 0x8b])
            };
            let dec: Box<dyn Read> = if gz { Box::new(flate2::bufread::MultiGzDecoder::new(br)) } else { Box::new(br) };
            let mut hr = HashingReader::new(dec);
            io::copy(&mut hr, &mut tmp).map_err(|source| ImageError::CorruptLayer {
                image: layout_dir.into(),
                layer: layer.label.clone(),
                source,
            })?;
            let (actual, len) = hr.finish();
            if actual != diff_id {
                return Err(ImageError::DigestMismatch {
                    image: layout_dir.into(),
                    digest: diff_id,
                    what: format!("uncompressed content (diff_id) of layer {}", layer.label),
                    actual: actual.trim_start_matches("sha256:").into(),
                });
            }
            use io::Seek;
            tmp.seek(io::SeekFrom::Start(0)).map_err(io_at(&parent))?;
            append_dir(b, &format!("{dir}/"), out_tar)?;
            let mut h = member_header(tar::EntryType::Regular, 0o644, len);
            b.append_data(&mut h, &member, tmp).map_err(io_at(out_tar))?;
            layer_paths.push(member);
        }
        let all_layers: Vec<String> = r
            .layers
            .iter()
            .map(|l| format!("{}/layer.tar", l.diff_id.as_deref().unwrap_or("").trim_start_matches("sha256:")))
            .collect();
        append_bytes(b, &format!("{config_hex}.json"), &r.config_bytes, out_tar)?;
        let manifest = serde_json::json!([{
            "Config": format!("{config_hex}.json"),
            "RepoTags": [tagged],
            "Layers": all_layers,
        }]);
        append_bytes(b, "manifest.json", &serde_json::to_vec(&manifest).expect("json"), out_tar)?;
        let repos = serde_json::json!({ repo: { tag: config_hex } });
        append_bytes(b, "repositories", &serde_json::to_vec(&repos).expect("json"), out_tar)?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        assert!(validate_reference("ghcr.io/cloudnative-pg/pgvector:0.8.1-18-trixie").is_ok());
        assert!(validate_reference("localhost:5000/x").is_ok());
        assert!(validate_reference("x:bad tag").is_err());
        assert!(validate_reference("").is_err());
        assert!(validate_reference("a//b").is_err());
        assert_eq!(split_tag("localhost:5000/x"), None);
        assert_eq!(split_tag("r/x:1"), Some(("r/x", "1")));
    }
}
