//! Images the node needs, built with our image tooling (`cnpg-ext-images`), and a minimal
//! registry push (OCI distribution API, monolithic upload) to the node's registry.
//!
//! * pause — our `pause` binary as `/pause` (Entrypoint), user 65535: containerd's sandbox
//!   image, imported into containerd before the kubelet starts.
//! * operator — the CloudNativePG `manager` binary at `/manager` (the Deployment's command)
//!   and at `/operator/manager_amd64` (where the operator copies the instance manager from
//!   into every PostgreSQL pod), user 10001, under the reference the release manifest names.

use crate::util;
use crate::{NodeError, Result};
use cnpg_ext_images::spec::{Index, Manifest};
use cnpg_ext_images::{build_layout, write_oci_archive, BuildOptions};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The reference the CloudNativePG release manifest uses for the operator image.
pub fn operator_reference(cnpg_version: &str) -> String {
    format!("ghcr.io/cloudnative-pg/cloudnative-pg:{cnpg_version}")
}

/// An image as an OCI layout (and OCI archive next to it), built once per `key`.
#[derive(Debug, Clone)]
pub struct NodeImage {
    pub reference: String,
    pub layout: PathBuf,
    pub archive: PathBuf,
}

/// Builds (unless cached) a FROM-scratch image of `files` (path in image, source file).
fn image(
    dir: &Path,
    stem: &str,
    reference: &str,
    user: &str,
    entrypoint: &[&str],
    files: &[(&str, &Path)],
) -> Result<NodeImage> {
    let layout = dir.join(format!("{stem}.oci"));
    let archive = dir.join(format!("{stem}.oci.tar"));
    let out = NodeImage { reference: reference.into(), layout: layout.clone(), archive: archive.clone() };
    if layout.join("index.json").is_file() && archive.is_file() {
        return Ok(out);
    }
    util::mkdir(dir)?;
    let tree = tempfile::Builder::new()
        .prefix(&format!(".{stem}-tree-"))
        .tempdir_in(dir)
        .map_err(|e| NodeError::io("create a temporary directory in", dir, e))?;
    for (inside, src) in files {
        let dest = tree.path().join(inside);
        util::mkdir(dest.parent().expect("image paths have a parent"))?;
        std::fs::copy(src, &dest).map_err(|e| NodeError::io("copy into the image tree", src, e))?;
    }
    util::mkdir(&tree.path().join("tmp"))?;
    let mut o = BuildOptions::new(reference);
    o.user = user.into();
    o.entrypoint = entrypoint.iter().map(|s| s.to_string()).collect();
    build_layout(tree.path(), &o, &layout).map_err(|e| NodeError::failed(format!("building {reference}: {e}")))?;
    let tmp_archive = archive.with_extension("tar.tmp");
    write_oci_archive(&layout, &tmp_archive)
        .map_err(|e| NodeError::failed(format!("writing the archive of {reference}: {e}")))?;
    std::fs::rename(&tmp_archive, &archive).map_err(|e| NodeError::io("move into place", &archive, e))?;
    Ok(out)
}

pub fn pause_image(dir: &Path, key: &str, pause_bin: &Path) -> Result<NodeImage> {
    image(dir, &format!("pause-{key}"), crate::config::PAUSE_IMAGE, "65535:65535", &["/pause"], &[("pause", pause_bin)])
}

pub fn operator_image(dir: &Path, key: &str, cnpg_version: &str, manager: &Path) -> Result<NodeImage> {
    image(
        dir,
        &format!("operator-{key}"),
        &operator_reference(cnpg_version),
        "10001:10001",
        &["/manager"],
        &[("manager", manager), ("operator/manager_amd64", manager)],
    )
}

/// `(repository, tag)` of `reference`, the repository keeping its registry host as the
/// first path element (the mirror's `override_path` layout): `ghcr.io/a/b:1` →
/// (`ghcr.io/a/b`, `1`).
pub fn registry_path(reference: &str) -> Result<(String, String)> {
    let slash = reference.rfind('/').unwrap_or(0);
    match reference[slash..].rfind(':') {
        Some(i) if !reference.contains('@') => {
            Ok((reference[..slash + i].to_string(), reference[slash + i + 1..].to_string()))
        }
        _ => Err(NodeError::input(format!("image reference {reference} needs a tag (and no digest) to be pushed"))),
    }
}

/// One HTTP/1.1 exchange with the registry at `addr` (plain HTTP on the node's registry).
fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Result<(u16, String, Vec<u8>)> {
    let fail = |e: std::io::Error| NodeError::failed(format!("registry {addr}: {method} {path}: {e}"));
    let mut s = TcpStream::connect(addr).map_err(fail)?;
    s.set_read_timeout(Some(Duration::from_secs(120))).map_err(fail)?;
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).map_err(fail)?;
    s.write_all(body).map_err(fail)?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).map_err(fail)?;
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| NodeError::failed(format!("registry {addr}: {method} {path}: malformed response")))?;
    let head = String::from_utf8_lossy(&resp[..split]).into_owned();
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Ok((status, head, resp[split + 4..].to_vec()))
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then_some(v.trim())
    })
}

fn blob(layout: &Path, digest: &str) -> Result<Vec<u8>> {
    let p = layout.join("blobs/sha256").join(digest.trim_start_matches("sha256:"));
    std::fs::read(&p).map_err(|e| NodeError::io("read blob", &p, e))
}

/// The extension images of the scenario in `dir` as OCI layouts: fixtures built (against
/// the pinned PostgreSQL, as the harness builds them) into temporary directories kept alive
/// by the returned guards; OCI layouts as they are. Images to pull from elsewhere and archives
/// are refused (the node has no way out; push their layouts instead).
pub fn scenario_images(dir: &Path) -> Result<Vec<(String, PathBuf, Option<tempfile::TempDir>)>> {
    use cnpg_ext_model::scenario::{ImageOrigin, Scenario};
    let version = cnpg_ext_model::CnpgVersion::new(1, 30, 0);
    let scenario = Scenario::load(dir, version).map_err(|e| NodeError::input(format!("{}: {e}", dir.display())))?;
    let mut out = Vec::new();
    let mut pg = None;
    for image in &scenario.images {
        match &image.origin {
            ImageOrigin::Fixture(recipe) => {
                if pg.is_none() {
                    pg = Some(crate::wheel::pinned_wheel()?);
                }
                let target = pg.as_ref().expect("set above").fixture_target();
                let tmp = tempfile::tempdir().map_err(|e| NodeError::failed(format!("temporary directory: {e}")))?;
                let tree = cnpg_ext_images::fixture::build_fixture(recipe, &target, &tmp.path().join("tree"))
                    .map_err(|e| NodeError::input(format!("fixture {}: {e}", recipe.display())))?;
                let mut o = BuildOptions::new(&image.reference);
                o.labels = tree.labels.clone();
                let layout = tmp.path().join("layout");
                build_layout(&tree.root, &o, &layout)
                    .map_err(|e| NodeError::failed(format!("building {}: {e}", image.reference)))?;
                out.push((image.reference.clone(), layout, Some(tmp)));
            }
            ImageOrigin::Oci(p) if p.join("index.json").is_file() => {
                out.push((image.reference.clone(), p.clone(), None))
            }
            other => {
                return Err(NodeError::input(format!(
                    "{}: image {} comes from {other:?}; only fixtures and OCI layout directories can be pushed",
                    dir.display(),
                    image.reference
                )))
            }
        }
    }
    Ok(out)
}

/// The reference an OCI layout's `index.json` names for its (first) image.
pub fn layout_reference(layout: &Path) -> Result<String> {
    let p = layout.join("index.json");
    let index: Index = serde_json::from_slice(&std::fs::read(&p).map_err(|e| NodeError::io("read", &p, e))?)
        .map_err(|e| NodeError::input(format!("{}: not an OCI index: {e}", p.display())))?;
    index
        .manifests
        .first()
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get(cnpg_ext_images::spec::ANNOTATION_REF_NAME))
        .filter(|r| r.contains('/') && r.contains(':'))
        .cloned()
        .ok_or_else(|| {
            NodeError::input(format!(
                "{}: the image names no full reference (org.opencontainers.image.ref.name); give --reference",
                p.display()
            ))
        })
}

/// Pushes the single image of the OCI `layout` to the registry at `addr` as `reference`.
pub fn push(addr: &str, layout: &Path, reference: &str) -> Result<()> {
    let (repo, tag) = registry_path(reference)?;
    let index_path = layout.join("index.json");
    let index: Index =
        serde_json::from_slice(&std::fs::read(&index_path).map_err(|e| NodeError::io("read", &index_path, e))?)
            .map_err(|e| NodeError::failed(format!("{}: {e}", index_path.display())))?;
    let mdesc =
        index.manifests.first().ok_or_else(|| NodeError::failed(format!("{}: no manifest", index_path.display())))?;
    let mbytes = blob(layout, &mdesc.digest)?;
    let manifest: Manifest =
        serde_json::from_slice(&mbytes).map_err(|e| NodeError::failed(format!("manifest of {reference}: {e}")))?;
    for d in manifest.layers.iter().chain(std::iter::once(&manifest.config)) {
        let (status, _, _) = http(addr, "HEAD", &format!("/v2/{repo}/blobs/{}", d.digest), &[], &[])?;
        if status == 200 {
            continue;
        }
        let (status, head, body) = http(addr, "POST", &format!("/v2/{repo}/blobs/uploads/"), &[], &[])?;
        let location = header(&head, "Location").filter(|_| status == 202).ok_or_else(|| {
            NodeError::failed(format!(
                "registry {addr}: starting an upload to {repo} answered {status}: {}",
                String::from_utf8_lossy(&body)
            ))
        })?;
        // The Location may be absolute; the path (and query) is what we send.
        let path = match location.find("://") {
            Some(i) => location[i + 3..].find('/').map(|j| &location[i + 3 + j..]).unwrap_or("/"),
            None => location,
        };
        let sep = if path.contains('?') { '&' } else { '?' };
        let bytes = blob(layout, &d.digest)?;
        let (status, _, body) = http(
            addr,
            "PUT",
            &format!("{path}{sep}digest={}", d.digest),
            &[("Content-Type", "application/octet-stream")],
            &bytes,
        )?;
        if status != 201 {
            return Err(NodeError::failed(format!(
                "registry {addr}: uploading {} to {repo} answered {status}: {}",
                d.digest,
                String::from_utf8_lossy(&body)
            )));
        }
    }
    let media_type = manifest.media_type.clone().unwrap_or_else(|| mdesc.media_type.clone());
    let (status, _, body) =
        http(addr, "PUT", &format!("/v2/{repo}/manifests/{tag}"), &[("Content-Type", &media_type)], &mbytes)?;
    if status != 201 {
        return Err(NodeError::failed(format!(
            "registry {addr}: putting the manifest of {reference} answered {status}: {}",
            String::from_utf8_lossy(&body)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_path_keeps_the_host() {
        assert_eq!(
            registry_path("ghcr.io/cloudnative-pg/cloudnative-pg:1.30.0").unwrap(),
            ("ghcr.io/cloudnative-pg/cloudnative-pg".into(), "1.30.0".into())
        );
        assert_eq!(registry_path("localhost:5000/x:1").unwrap(), ("localhost:5000/x".into(), "1".into()));
        assert!(registry_path("localhost:5000/x").is_err());
        assert!(registry_path("a/b:1@sha256:00").is_err());
    }
}
