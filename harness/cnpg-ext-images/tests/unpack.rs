//! Hardened unpack: hostile layers are rejected, with nothing written
//! outside the destination and nothing left behind.

mod common;
use cnpg_ext_images::{unpack, ImageError, Platform, UnpackOptions};
use common::*;
use std::os::unix::fs::PermissionsExt;
use tar::EntryType;

fn unpack_layers(
    layers: &[Layer],
    opts: &UnpackOptions,
) -> (Sandbox, Result<cnpg_ext_images::UnpackedImage, ImageError>) {
    let sb = Sandbox::new();
    make_layout(&sb.layout(), layers);
    let r = unpack(&sb.layout(), &sb.dest, opts);
    (sb, r)
}

/// Expect an `UnsafeEntry` naming `entry` with `reason_part` in the reason.
fn expect_rejected(layers: &[Layer], entry: &str, reason_part: &str) {
    let (sb, r) = unpack_layers(layers, &UnpackOptions::default());
    match r {
        Err(ImageError::UnsafeEntry { entry: e, reason, .. }) => {
            assert_eq!(e, entry);
            assert!(reason.contains(reason_part), "reason {reason:?} lacks {reason_part:?}");
        }
        other => panic!("expected rejection of {entry}, got {other:?}"),
    }
    sb.assert_clean();
}

#[test]
fn rejects_absolute_path() {
    expect_rejected(&[Layer::gz(&[file("ok", b"1"), file("/tmp/evil", b"x")])], "/tmp/evil", "absolute");
}

#[test]
fn rejects_dotdot() {
    expect_rejected(&[Layer::gz(&[dir("a/"), file("a/../../outside/evil", b"x")])], "a/../../outside/evil", "'..'");
}

#[test]
fn rejects_symlink_escape() {
    expect_rejected(&[Layer::gz(&[symlink("esc", "../outside")])], "esc", "escapes");
    expect_rejected(&[Layer::gz(&[dir("lib/"), symlink("lib/esc", "../../outside/sentinel")])], "lib/esc", "escapes");
    expect_rejected(&[Layer::gz(&[symlink("abs", "/etc/passwd")])], "abs", "absolute");
    expect_rejected(&[Layer::gz(&[symlink("tricky", "a/../../x")])], "tricky", "'..' after a name");
}

#[test]
fn rejects_write_through_symlink_same_layer() {
    expect_rejected(
        &[Layer::gz(&[dir("sub/"), symlink("link", "sub"), file("link/payload", b"x")])],
        "link/payload",
        "symlink",
    );
}

#[test]
fn rejects_write_through_symlink_across_layers() {
    let l1 = Layer::gz(&[dir("sub/"), symlink("link", "sub")]);
    let l2 = Layer::gz(&[file("link/payload", b"x")]);
    expect_rejected(&[l1, l2], "link/payload", "symlink");
    // A directory entry through a symlink is refused too.
    let l1 = Layer::gz(&[dir("sub/"), symlink("link", "sub")]);
    let l2 = Layer::plain(&[dir("link/deeper/")]);
    expect_rejected(&[l1, l2], "link/deeper/", "symlink");
}

#[test]
fn rejects_hardlinks_outside_or_missing() {
    expect_rejected(&[Layer::gz(&[hardlink("h", "../outside/sentinel")])], "h", "outside");
    expect_rejected(&[Layer::gz(&[hardlink("h", "/etc/passwd")])], "h", "outside");
    expect_rejected(&[Layer::gz(&[hardlink("h", "nothere")])], "h", "does not exist");
    // Through a symlink to a real file inside: still refused.
    expect_rejected(
        &[Layer::gz(&[dir("d/"), file("d/f", b"1"), symlink("s", "d"), hardlink("h", "s/f")])],
        "h",
        "symlink",
    );
}

#[test]
fn hardlink_inside_works() {
    let (sb, r) = unpack_layers(&[Layer::gz(&[file("a", b"data"), hardlink("b", "a")])], &UnpackOptions::default());
    r.unwrap();
    assert_eq!(std::fs::read(sb.dest.join("b")).unwrap(), b"data");
}

#[test]
fn rejects_device_and_fifo_nodes() {
    expect_rejected(&[Layer::gz(&[special("dev/null", EntryType::Char)])], "dev/null", "device");
    expect_rejected(&[Layer::gz(&[special("dev/sda", EntryType::Block)])], "dev/sda", "device");
    expect_rejected(&[Layer::gz(&[special("pipe", EntryType::Fifo)])], "pipe", "fifo");
}

#[test]
fn strips_setuid_setgid_sticky() {
    let mut f = file("bin/su", b"#!");
    f.mode = 0o6755;
    let mut d = dir("tmp/");
    d.mode = 0o1777;
    let (sb, r) = unpack_layers(&[Layer::gz(&[dir("bin/"), f, d])], &UnpackOptions::default());
    r.unwrap();
    let m = std::fs::metadata(sb.dest.join("bin/su")).unwrap().permissions().mode();
    assert_eq!(m & 0o7777, 0o755);
    let m = std::fs::metadata(sb.dest.join("tmp")).unwrap().permissions().mode();
    assert_eq!(m & 0o7777, 0o777);
}

#[test]
fn rejects_size_bomb_over_cap() {
    let zeros = vec![0u8; 2 << 20];
    let layer = Layer::gz(&[file("a", &zeros[..1 << 20]), file("bomb", &zeros)]);
    assert!(layer.stored.len() < 64 << 10, "the layer compresses well");
    let opts = UnpackOptions { max_total_bytes: 2 << 20, ..Default::default() };
    let (sb, r) = unpack_layers(&[layer], &opts);
    match r {
        Err(ImageError::LimitExceeded { entry, limit, .. }) => {
            assert_eq!(entry, "bomb");
            assert_eq!(limit, 2 << 20);
        }
        other => panic!("expected LimitExceeded, got {other:?}"),
    }
    sb.assert_clean();
}

#[test]
fn rejects_entry_count_over_cap() {
    let entries: Vec<E> = (0..50).map(|i| file(&format!("f{i}"), b"")).collect();
    let opts = UnpackOptions { max_entries: 10, ..Default::default() };
    let (sb, r) = unpack_layers(&[Layer::gz(&entries)], &opts);
    assert!(matches!(r, Err(ImageError::LimitExceeded { ref what, .. }) if what == "entry count"), "{r:?}");
    sb.assert_clean();
}

#[test]
fn rejects_oversized_tar_metadata() {
    // A 2 MiB PAX header: the tar reader would buffer it all.
    let mut e = special("pax", EntryType::XHeader);
    e.data = vec![b'a'; 2 << 20];
    let (sb, r) = unpack_layers(&[Layer::gz(&[e, file("x", b"1")])], &UnpackOptions::default());
    assert!(matches!(r, Err(ImageError::LimitExceeded { ref what, .. }) if what.contains("metadata")), "{r:?}");
    sb.assert_clean();
}

/// A layer whose stored bytes are a truncated gzip stream, with a
/// descriptor matching the truncated bytes.
fn truncated_layer(cut: usize) -> Layer {
    let data: Vec<u8> = (0..200_000u32).flat_map(|i| (i.wrapping_mul(2654435761)).to_le_bytes()).collect();
    let full = Layer::gz(&[file("big", &data)]);
    let keep = full.stored.len() - cut;
    Layer { stored: full.stored[..keep].to_vec(), ..full }
}

#[test]
fn rejects_truncated_gzip() {
    for cut in [4, 8, 5000] {
        let (sb, r) = unpack_layers(&[truncated_layer(cut)], &UnpackOptions::default());
        match r {
            Err(e @ ImageError::CorruptLayer { .. }) => {
                assert!(e.to_string().contains("sha256:"), "{e}")
            }
            other => panic!("cut {cut}: expected CorruptLayer, got {other:?}"),
        }
        sb.assert_clean();
    }
}

#[test]
fn rejects_corrupt_gzip() {
    let mut l = Layer::gz(&[file("a", &[7u8; 10000])]);
    let n = l.stored.len();
    for b in &mut l.stored[12..n - 10] {
        *b ^= 0x5a;
    }
    let (sb, r) = unpack_layers(&[l], &UnpackOptions::default());
    assert!(matches!(r, Err(ImageError::CorruptLayer { .. }) | Err(ImageError::DigestMismatch { .. })), "{r:?}");
    sb.assert_clean();
}

#[test]
fn digest_mismatch_names_the_blob() {
    let sb = Sandbox::new();
    let layer = Layer::gz(&[file("a", b"hello")]);
    make_layout(&sb.layout(), &[layer]);
    let layer_digest = sha(&Layer::gz(&[file("a", b"hello")]).stored);
    let blob = sb.layout().join("blobs/sha256").join(layer_digest.trim_start_matches("sha256:"));
    let mut bytes = std::fs::read(&blob).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1; // same size, other content
    std::fs::write(&blob, &bytes).unwrap();
    match unpack(&sb.layout(), &sb.dest, &UnpackOptions::default()) {
        Err(e @ ImageError::DigestMismatch { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(&layer_digest) && msg.contains("layer"), "{msg}");
        }
        other => panic!("expected DigestMismatch, got {other:?}"),
    }
    sb.assert_clean();
}

#[test]
fn size_mismatch_names_the_blob() {
    let sb = Sandbox::new();
    let layer = Layer::gz(&[file("a", b"hello")]);
    let digest = sha(&layer.stored);
    make_layout(&sb.layout(), &[layer]);
    let blob = sb.layout().join("blobs/sha256").join(digest.trim_start_matches("sha256:"));
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes.extend_from_slice(b"junk");
    std::fs::write(&blob, &bytes).unwrap();
    match unpack(&sb.layout(), &sb.dest, &UnpackOptions::default()) {
        Err(e @ ImageError::SizeMismatch { .. }) => assert!(e.to_string().contains(&digest), "{e}"),
        other => panic!("expected SizeMismatch, got {other:?}"),
    }
    sb.assert_clean();
}

#[test]
fn manifest_digest_mismatch_is_rejected() {
    let sb = Sandbox::new();
    let d = make_layout(&sb.layout(), &[Layer::gz(&[file("a", b"1")])]);
    let p = sb.layout().join("blobs/sha256").join(d.trim_start_matches("sha256:"));
    let mut m = std::fs::read(&p).unwrap();
    m[0] = b' '; // '{' → ' ': same size, still JSON-ish
    std::fs::write(&p, m).unwrap();
    let r = unpack(&sb.layout(), &sb.dest, &UnpackOptions::default());
    assert!(
        matches!(r, Err(ImageError::DigestMismatch { ref digest, ref what, .. }) if *digest == d && what.contains("manifest")),
        "{r:?}"
    );
    sb.assert_clean();
}

#[test]
fn diff_id_mismatch_is_rejected() {
    let mut l = Layer::gz(&[file("a", b"1")]);
    l.diff_id = sha(b"something else");
    let (sb, r) = unpack_layers(&[l], &UnpackOptions::default());
    assert!(matches!(r, Err(ImageError::DigestMismatch { ref what, .. }) if what.contains("diff_id")), "{r:?}");
    sb.assert_clean();
}

#[test]
fn dest_must_not_exist() {
    let sb = Sandbox::new();
    make_layout(&sb.layout(), &[Layer::gz(&[file("a", b"1")])]);
    std::fs::create_dir(&sb.dest).unwrap();
    let r = unpack(&sb.layout(), &sb.dest, &UnpackOptions::default());
    assert!(matches!(r, Err(ImageError::DestExists { .. })), "{r:?}");
    assert_eq!(std::fs::read_dir(&sb.dest).unwrap().count(), 0);
}

#[test]
fn whiteouts_and_opaque_dirs() {
    let l1 = Layer::gz(&[
        dir("a/"),
        file("a/x", b"x"),
        file("a/y", b"y"),
        dir("b/"),
        file("b/z", b"z"),
        dir("c/"),
        file("c/k", b"k"),
        dir("c/sub/"),
        file("c/sub/deep", b"d"),
        file("keep", b"1"),
    ]);
    // Opaque marker deliberately after c/new: same-layer content survives.
    let l2 = Layer::plain(&[
        file("a/.wh.x", b""),
        file(".wh.b", b""),
        dir("c/"),
        file("c/new", b"n"),
        file("c/.wh..wh..opq", b""),
        file(".wh.nothing", b""),
        file("keep", b"2"),
    ]);
    let (sb, r) = unpack_layers(&[l1, l2], &UnpackOptions::default());
    r.unwrap();
    let d = &sb.dest;
    assert!(!d.join("a/x").exists());
    assert_eq!(std::fs::read(d.join("a/y")).unwrap(), b"y");
    assert!(!d.join("b").exists());
    assert!(!d.join("c/k").exists());
    assert!(!d.join("c/sub").exists());
    assert_eq!(std::fs::read(d.join("c/new")).unwrap(), b"n");
    assert_eq!(std::fs::read(d.join("keep")).unwrap(), b"2");
    assert!(!d.join("a/.wh.x").exists() && !d.join("c/.wh..wh..opq").exists());
}

#[test]
fn later_layer_replaces_symlink_and_dir() {
    let l1 = Layer::gz(&[dir("d/"), file("d/f", b"1"), dir("t/"), symlink("s", "t")]);
    let l2 = Layer::gz(&[file("d", b"now a file"), dir("s/"), file("s/inner", b"i")]);
    let (sb, r) = unpack_layers(&[l1, l2], &UnpackOptions::default());
    r.unwrap();
    assert_eq!(std::fs::read(sb.dest.join("d")).unwrap(), b"now a file");
    assert!(sb.dest.join("s").symlink_metadata().unwrap().is_dir());
    assert!(!sb.dest.join("t/inner").exists());
}

fn multi_platform_layout(layout: &std::path::Path) {
    let (amd, amd_size) = write_manifest(layout, "amd64", &[Layer::gz(&[file("arch", b"amd64")])]);
    let (arm, arm_size) = write_manifest(layout, "arm64", &[Layer::gz(&[file("arch", b"arm64")])]);
    let nested = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": amd, "size": amd_size,
             "platform": {"architecture": "amd64", "os": "linux"}},
            // No platform in the descriptor: taken from the config.
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": arm, "size": arm_size},
        ]
    }))
    .unwrap();
    let nd = write_blob(layout, &nested);
    write_index(
        layout,
        serde_json::json!([{"mediaType": "application/vnd.oci.image.index.v1+json", "digest": nd, "size": nested.len(),
            "annotations": {"org.opencontainers.image.ref.name": "example.org/multi:1"}}]),
    );
}

#[test]
fn selects_platform_from_nested_index() {
    let sb = Sandbox::new();
    multi_platform_layout(&sb.layout());
    for (plat, want) in [("linux/arm64", "arm64"), ("linux/amd64", "amd64"), ("linux/arm64/v8", "arm64")] {
        let dest = sb.work.join(want.to_string() + plat.len().to_string().as_str());
        let opts = UnpackOptions { platform: Some(plat.parse().unwrap()), ..Default::default() };
        let u = unpack(&sb.layout(), &dest, &opts).unwrap();
        assert_eq!(std::fs::read_to_string(dest.join("arch")).unwrap(), want);
        assert_eq!(u.config.architecture, want);
    }
    // Default: the host platform.
    let dest = sb.work.join("host");
    unpack(&sb.layout(), &dest, &UnpackOptions::default()).unwrap();
    assert_eq!(std::fs::read_to_string(dest.join("arch")).unwrap(), cnpg_ext_images::host_arch());
    let s = cnpg_ext_images::inspect(&sb.layout(), Some(&Platform::linux("arm64"))).unwrap();
    assert_eq!(s.reference_names, vec!["example.org/multi:1".to_string()]);
}

#[test]
fn absent_platform_is_a_clear_error() {
    let sb = Sandbox::new();
    multi_platform_layout(&sb.layout());
    let opts = UnpackOptions { platform: Some("linux/s390x".parse().unwrap()), ..Default::default() };
    let r = unpack(&sb.layout(), &sb.dest, &opts);
    match r {
        Err(e @ ImageError::PlatformNotFound { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("linux/s390x") && msg.contains("linux/amd64") && msg.contains("linux/arm64"), "{msg}");
        }
        other => panic!("{other:?}"),
    }
    sb.assert_clean();
}

#[test]
fn not_an_image_is_a_clear_error() {
    let sb = Sandbox::new();
    std::fs::create_dir_all(sb.layout()).unwrap();
    let r = unpack(&sb.layout(), &sb.dest, &UnpackOptions::default());
    assert!(matches!(r, Err(ImageError::NotAnImage { .. })), "{r:?}");
    let r = unpack(&sb.tmp.path().join("missing"), &sb.dest, &UnpackOptions::default());
    assert!(matches!(r, Err(ImageError::Io { .. })), "{r:?}");
    sb.assert_clean();
}

/// A classic docker-archive with two images (amd64, arm64), gzip layers.
fn docker_archive(path: &std::path::Path, tamper_config: bool) {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, data).unwrap();
    };
    let mut manifest = Vec::new();
    for arch in ["amd64", "arm64"] {
        let layer = Layer::gz(&[file("arch", arch.as_bytes())]);
        let cfg = config_json(arch, "65532:65532", std::slice::from_ref(&layer.diff_id));
        let cfg_name = format!("{}.json", sha(&cfg).trim_start_matches("sha256:"));
        let mut stored_cfg = cfg.clone();
        if tamper_config && arch == "arm64" {
            stored_cfg[0] = b' ';
        }
        add(&cfg_name, &stored_cfg);
        let layer_name = format!("{arch}/layer.tar");
        add(&layer_name, &layer.stored);
        manifest.push(serde_json::json!({"Config": cfg_name, "RepoTags": [format!("example/multi:{arch}")], "Layers": [layer_name]}));
    }
    add("manifest.json", &serde_json::to_vec(&manifest).unwrap());
    std::fs::write(path, b.into_inner().unwrap()).unwrap();
}

#[test]
fn docker_archive_gzip_layers_and_platforms() {
    let sb = Sandbox::new();
    let img = sb.tmp.path().join("image.tar");
    docker_archive(&img, false);
    let opts = UnpackOptions { platform: Some("linux/arm64".parse().unwrap()), ..Default::default() };
    let u = unpack(&img, &sb.dest, &opts).unwrap();
    assert_eq!(std::fs::read_to_string(sb.dest.join("arch")).unwrap(), "arm64");
    assert_eq!(u.config.architecture, "arm64");
    let s = cnpg_ext_images::inspect(&img, Some(&Platform::linux("arm64"))).unwrap();
    assert_eq!(s.reference_names, vec!["example/multi:arm64".to_string()]);
    assert_eq!(s.format, "docker-archive");

    // A config that does not hash to its file name is rejected.
    let sb = Sandbox::new();
    let img = sb.tmp.path().join("image.tar");
    docker_archive(&img, true);
    let r = unpack(&img, &sb.dest, &opts);
    assert!(matches!(r, Err(ImageError::DigestMismatch { ref what, .. }) if what.starts_with("config")), "{r:?}");
    sb.assert_clean();
}
