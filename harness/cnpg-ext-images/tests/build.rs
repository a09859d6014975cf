//! Reproducible build and round trips through the three formats.

mod common;
use cnpg_ext_images::{
    build_layout, inspect, unpack, write_docker_archive, write_oci_archive, BuildOptions, ImageError, UnpackOptions,
};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

const REF: &str = "ghcr.io/example/greet:1.0-18-trixie";

fn sample_tree(root: &Path) {
    for d in ["lib", "share/extension", "system", "licenses"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("lib/greet.so"), b"\x7fELF not really").unwrap();
    std::fs::set_permissions(root.join("lib/greet.so"), std::fs::Permissions::from_mode(0o750)).unwrap();
    std::fs::write(root.join("share/extension/greet.control"), "default_version = '1.0'\n").unwrap();
    std::fs::write(root.join("share/extension/greet--1.0.sql"), "SELECT 1;\n").unwrap();
    std::fs::write(root.join("system/libgreet.so.1.0.0"), vec![42u8; 100_000]).unwrap();
    std::os::unix::fs::symlink("libgreet.so.1.0.0", root.join("system/libgreet.so.1")).unwrap();
    std::fs::write(root.join("licenses/LICENSE"), "Apache-2.0\n").unwrap();
    let long = "share/extension/".to_string() + &"x".repeat(150) + ".sql";
    std::fs::write(root.join(long), "-- long name\n").unwrap();
}

fn opts() -> BuildOptions {
    let mut o = BuildOptions::new(REF);
    o.labels.insert(cnpg_ext_images::LABEL_BASE_PGMAJOR.into(), "18".into());
    o
}

/// Relative path → (kind+mode, content or link target) of a tree.
fn snapshot(root: &Path) -> Vec<(String, String, Vec<u8>)> {
    let mut v = Vec::new();
    for e in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(root).unwrap().display().to_string();
        let m = e.path().symlink_metadata().unwrap();
        let (kind, data) = if m.file_type().is_symlink() {
            ("l".to_string(), std::fs::read_link(e.path()).unwrap().display().to_string().into_bytes())
        } else if m.is_dir() {
            (format!("d{:o}", m.permissions().mode() & 0o7777), vec![])
        } else {
            (format!("f{:o}", m.permissions().mode() & 0o7777), std::fs::read(e.path()).unwrap())
        };
        v.push((rel, kind, data));
    }
    v
}

#[test]
fn same_tree_same_digest() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    sample_tree(&tree);
    let a = build_layout(&tree, &opts(), &tmp.path().join("a")).unwrap();
    // Different mtimes, permissions noise and output dir: same bytes.
    std::fs::write(tree.join("licenses/LICENSE"), "Apache-2.0\n").unwrap();
    std::fs::set_permissions(tree.join("lib/greet.so"), std::fs::Permissions::from_mode(0o700)).unwrap();
    let b = build_layout(&tree, &opts(), &tmp.path().join("nested/b")).unwrap();
    assert_eq!(a.manifest_digest, b.manifest_digest);
    assert!(a.manifest_digest.starts_with("sha256:") && a.manifest_digest.len() == 71);
    let ia = std::fs::read(tmp.path().join("a/index.json")).unwrap();
    let ib = std::fs::read(tmp.path().join("nested/b/index.json")).unwrap();
    assert_eq!(ia, ib);
    // Different content → different digest.
    std::fs::write(tree.join("licenses/LICENSE"), "MIT\n").unwrap();
    let c = build_layout(&tree, &opts(), &tmp.path().join("c")).unwrap();
    assert_ne!(a.manifest_digest, c.manifest_digest);
}

#[test]
fn layout_follows_image_spec() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    sample_tree(&tree);
    let out = tmp.path().join("out");
    let built = build_layout(&tree, &opts(), &out).unwrap();
    assert_eq!(std::fs::read_to_string(out.join("oci-layout")).unwrap(), r#"{"imageLayoutVersion":"1.0.0"}"#);
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
    let m = &index["manifests"][0];
    assert_eq!(m["digest"], built.manifest_digest);
    assert_eq!(m["annotations"]["org.opencontainers.image.ref.name"], REF);
    assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    let blob = |d: &str| std::fs::read(out.join("blobs/sha256").join(d.trim_start_matches("sha256:"))).unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&blob(&built.manifest_digest)).unwrap();
    assert_eq!(manifest["layers"].as_array().unwrap().len(), 1);
    assert_eq!(manifest["layers"][0]["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip");
    let config: serde_json::Value =
        serde_json::from_slice(&blob(manifest["config"]["digest"].as_str().unwrap())).unwrap();
    assert_eq!(config["config"]["User"], "65532:65532");
    assert_eq!(config["created"], "1970-01-01T00:00:00Z");
    assert_eq!(config["config"]["Labels"][cnpg_ext_images::LABEL_BASE_PGMAJOR], "18");
    let layer = blob(manifest["layers"][0]["digest"].as_str().unwrap());
    assert_eq!(&layer[..2], &[0x1f, 0x8b]);
    assert_eq!(&layer[4..8], &[0, 0, 0, 0], "gzip mtime is zero");
    assert_eq!(layer[3] & 0x08, 0, "no file name in the gzip header");
    assert_eq!(layer[9], 255, "gzip OS byte fixed");
    // diff_id is the uncompressed tar digest; entries owned by 0:0 with mtime 0, sorted.
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&layer[..]), &mut raw).unwrap();
    assert_eq!(config["rootfs"]["diff_ids"][0], common::sha(&raw));
    let mut ar = tar::Archive::new(&raw[..]);
    let mut names = Vec::new();
    for e in ar.entries().unwrap() {
        let e = e.unwrap();
        assert_eq!(e.header().mtime().unwrap(), 0);
        assert_eq!((e.header().uid().unwrap(), e.header().gid().unwrap()), (0, 0));
        names.push(e.path().unwrap().display().to_string());
    }
    assert_eq!(names[0], "lib/");
    assert!(names.contains(&"system/libgreet.so.1".to_string()));
}

#[test]
fn round_trip_all_formats() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    sample_tree(&tree);
    let layout = tmp.path().join("layout");
    let built = build_layout(&tree, &opts(), &layout).unwrap();
    let oci_tar = tmp.path().join("img.oci.tar");
    let docker_tar = tmp.path().join("img.docker.tar");
    write_oci_archive(&layout, &oci_tar).unwrap();
    write_docker_archive(&layout, REF, &docker_tar).unwrap();
    let want = snapshot(&tree)
        .into_iter()
        .map(|(p, k, d)| {
            // Normalized modes: files 0644/0755, dirs 0755.
            let k = match k.as_str() {
                "f750" => "f755".to_string(),
                k if k.starts_with('f') => "f644".to_string(),
                k if k.starts_with('d') => "d755".to_string(),
                k => k.to_string(),
            };
            (p, k, d)
        })
        .collect::<Vec<_>>();
    for (i, img) in [&layout, &oci_tar, &docker_tar].into_iter().enumerate() {
        let dest = tmp.path().join(format!("dest{i}"));
        let u = unpack(img, &dest, &UnpackOptions::default()).unwrap();
        assert_eq!(snapshot(&dest), want, "round trip through {}", img.display());
        assert_eq!(u.config.user.as_deref(), Some("65532:65532"));
        assert_eq!(u.config.labels.get(cnpg_ext_images::LABEL_BASE_PGMAJOR).map(String::as_str), Some("18"));
        let s = inspect(img, None).unwrap();
        assert!(s.reference_names.iter().any(|n| n == REF), "{:?}", s.reference_names);
        if i < 2 {
            assert_eq!(u.manifest_digest, built.manifest_digest);
        }
    }
    assert_eq!(inspect(&oci_tar, None).unwrap().format, "oci-archive");
    assert_eq!(inspect(&docker_tar, None).unwrap().format, "docker-archive");
    // Archives are reproducible too.
    let oci_tar2 = tmp.path().join("img2.oci.tar");
    write_oci_archive(&layout, &oci_tar2).unwrap();
    assert_eq!(std::fs::read(&oci_tar).unwrap(), std::fs::read(&oci_tar2).unwrap());
    // docker-archive manifest.json carries RepoTags.
    let mut ar = tar::Archive::new(std::fs::File::open(&docker_tar).unwrap());
    let mut found = false;
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_str() == Some("manifest.json") {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut e, &mut s).unwrap();
            let v: serde_json::Value = serde_json::from_str(&s).unwrap();
            assert_eq!(v[0]["RepoTags"][0], REF);
            found = true;
        }
    }
    assert!(found);
}

#[test]
fn gzip_compressed_docker_archive_is_read() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    sample_tree(&tree);
    let layout = tmp.path().join("layout");
    build_layout(&tree, &opts(), &layout).unwrap();
    let docker_tar = tmp.path().join("img.tar");
    write_docker_archive(&layout, "example/untagged", &docker_tar).unwrap();
    let gz = tmp.path().join("img.tar.gz");
    std::fs::write(&gz, common::gzip(&std::fs::read(&docker_tar).unwrap())).unwrap();
    let s = inspect(&gz, None).unwrap();
    assert_eq!(s.reference_names, vec!["example/untagged:latest".to_string()]);
    unpack(&gz, &tmp.path().join("dest"), &UnpackOptions::default()).unwrap();
    assert!(tmp.path().join("dest/system/libgreet.so.1").symlink_metadata().unwrap().file_type().is_symlink());
}

#[test]
fn build_replaces_existing_output() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    sample_tree(&tree);
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("stale"), b"old").unwrap();
    build_layout(&tree, &opts(), &out).unwrap();
    assert!(!out.join("stale").exists());
    assert!(out.join("index.json").exists());
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left.len(), 2, "only tree and out remain: {left:?}");
}

#[test]
fn build_rejects_unsafe_trees_and_references() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    std::fs::create_dir_all(tree.join("lib")).unwrap();
    std::os::unix::fs::symlink("../../etc/passwd", tree.join("lib/esc")).unwrap();
    let r = build_layout(&tree, &opts(), &tmp.path().join("out"));
    assert!(matches!(r, Err(ImageError::Build { ref reason, .. }) if reason.contains("escapes")), "{r:?}");
    assert!(!tmp.path().join("out").exists());
    std::fs::remove_file(tree.join("lib/esc")).unwrap();
    let r = build_layout(&tree, &BuildOptions::new("Bad Ref"), &tmp.path().join("out"));
    assert!(matches!(r, Err(ImageError::InvalidReference { .. })), "{r:?}");
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left.len(), 1, "no staging left: {left:?}");
}

/// The config blob of the single image in a layout.
fn config_json(layout: &Path) -> serde_json::Value {
    let blob = |d: &str| std::fs::read(layout.join("blobs/sha256").join(d.trim_start_matches("sha256:"))).unwrap();
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap();
    serde_json::from_slice(&blob(manifest["config"]["digest"].as_str().unwrap())).unwrap()
}

#[test]
fn entrypoint_and_env_are_written_only_when_given() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    sample_tree(&tree);
    let plain = build_layout(&tree, &opts(), &tmp.path().join("plain")).unwrap();
    let c = config_json(&tmp.path().join("plain"));
    assert!(c["config"].get("Entrypoint").is_none() && c["config"].get("Env").is_none(), "{c}");

    let mut o = opts();
    o.entrypoint = vec!["/pause".into()];
    o.env = vec!["PATH=/usr/lib/postgresql/18/bin:/usr/bin".into()];
    let with = build_layout(&tree, &o, &tmp.path().join("with")).unwrap();
    let c = config_json(&tmp.path().join("with"));
    assert_eq!(c["config"]["Entrypoint"], serde_json::json!(["/pause"]));
    assert_eq!(c["config"]["Env"], serde_json::json!(["PATH=/usr/lib/postgresql/18/bin:/usr/bin"]));
    assert_ne!(plain.manifest_digest, with.manifest_digest);
    // The reader accepts the new fields.
    inspect(&tmp.path().join("with"), None).unwrap();
}
