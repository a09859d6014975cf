//! zstd-compressed layers (`application/vnd.oci.image.layer.v1.tar+zstd`, what
//! buildx writes with `compression=zstd`): unpacked like gzip ones, with the
//! same limits and the same refusals. Layers are compressed at test time.

mod common;
use cnpg_ext_images::{unpack, ImageError, UnpackOptions};
use common::*;
use std::io::Write;
use std::process::Command;

const ZSTD_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

fn zstd_layer(entries: &[E], level: i32) -> Layer {
    let t = tar_bytes(entries);
    Layer {
        diff_id: sha(&t),
        stored: zstd::encode_all(t.as_slice(), level).unwrap(),
        media_type: ZSTD_MEDIA_TYPE.into(),
    }
}

fn unpack_layers(
    layers: &[Layer],
    opts: &UnpackOptions,
) -> (Sandbox, Result<cnpg_ext_images::UnpackedImage, ImageError>) {
    let sb = Sandbox::new();
    make_layout(&sb.layout(), layers);
    let r = unpack(&sb.layout(), &sb.dest, opts);
    (sb, r)
}

fn sample() -> Vec<E> {
    vec![
        dir("lib/"),
        file("lib/vector.so", &[0x5a; 70_000]),
        dir("share/"),
        dir("share/extension/"),
        file("share/extension/vector.control", b"default_version = '0.8.1'\n"),
        symlink("lib/vector.so.0", "vector.so"),
    ]
}

#[test]
fn zstd_layer_unpacks_like_gzip() {
    let (sz, rz) = unpack_layers(&[zstd_layer(&sample(), 3)], &UnpackOptions::default());
    let (sg, rg) = unpack_layers(&[Layer::gz(&sample())], &UnpackOptions::default());
    let (uz, ug) = (rz.unwrap(), rg.unwrap());
    assert_eq!((uz.entries, uz.bytes), (ug.entries, ug.bytes));
    for f in ["lib/vector.so", "share/extension/vector.control"] {
        assert_eq!(std::fs::read(sz.dest.join(f)).unwrap(), std::fs::read(sg.dest.join(f)).unwrap(), "{f}");
    }
    assert_eq!(std::fs::read_link(sz.dest.join("lib/vector.so.0")).unwrap(), std::path::PathBuf::from("vector.so"));
}

#[test]
fn zstd_and_gzip_layers_mix_and_several_frames_are_read() {
    // Two zstd frames back to back form one valid stream (like `cat a.zst b.zst`).
    let t = tar_bytes(&sample());
    let (a, b) = t.split_at(1536);
    let mut stored = zstd::encode_all(a, 1).unwrap();
    stored.extend(zstd::encode_all(b, 19).unwrap());
    let two_frames = Layer { diff_id: sha(&t), stored, media_type: ZSTD_MEDIA_TYPE.into() };
    let top = Layer::gz(&[file("licenses/LICENSE", b"PostgreSQL")]);
    let (sb, r) = unpack_layers(&[two_frames, top], &UnpackOptions::default());
    r.unwrap();
    assert!(sb.dest.join("lib/vector.so").is_file());
    assert!(sb.dest.join("licenses/LICENSE").is_file());
}

#[test]
fn zstd_size_bomb_is_refused_with_nothing_left() {
    let zeros = vec![0u8; 4 << 20];
    let layer = zstd_layer(&[file("a", &zeros[..1 << 20]), file("bomb", &zeros)], 19);
    assert!(layer.stored.len() < 16 << 10, "the layer compresses well");
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
fn zstd_hostile_entries_are_refused() {
    let (sb, r) =
        unpack_layers(&[zstd_layer(&[dir("a/"), file("a/../../outside/evil", b"x")], 3)], &UnpackOptions::default());
    assert!(matches!(r, Err(ImageError::UnsafeEntry { ref entry, .. }) if entry == "a/../../outside/evil"), "{r:?}");
    sb.assert_clean();
}

#[test]
fn truncated_or_corrupt_zstd_is_a_corrupt_layer() {
    let data: Vec<u8> = (0..100_000u32).flat_map(|i| i.wrapping_mul(2654435761).to_le_bytes()).collect();
    let full = zstd_layer(&[file("big", &data)], 3);
    for cut in [3, 100, full.stored.len() / 2] {
        let l = Layer {
            stored: full.stored[..full.stored.len() - cut].to_vec(),
            diff_id: full.diff_id.clone(),
            media_type: ZSTD_MEDIA_TYPE.into(),
        };
        let (sb, r) = unpack_layers(&[l], &UnpackOptions::default());
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
fn zstd_window_over_the_cap_is_refused() {
    // A frame that asks for a 1 GiB window (the frame header says so even for
    // little data when the size is not known in advance).
    let t = tar_bytes(&[file("a", &[1u8; 4096])]);
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    enc.long_distance_matching(true).unwrap();
    enc.window_log(30).unwrap();
    enc.write_all(&t).unwrap();
    let stored = enc.finish().unwrap();
    let l = Layer { diff_id: sha(&t), stored, media_type: ZSTD_MEDIA_TYPE.into() };
    let (sb, r) = unpack_layers(&[l], &UnpackOptions::default());
    assert!(matches!(r, Err(ImageError::CorruptLayer { .. })), "{r:?}");
    sb.assert_clean();
}

/// `skopeo copy --dest-compress-format zstd` of an image built here, then
/// unpacked. Without skopeo: `cnpg_ext_testutil::cannot_run` (a failure under `CI=true`).
#[test]
fn skopeo_zstd_copy_unpacks() {
    if Command::new("skopeo").arg("--version").output().is_err() {
        cnpg_ext_testutil::cannot_run(
            "skopeo is not installed (apt-get install skopeo)",
            Some(cnpg_ext_testutil::REQUIRE_REGISTRY),
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    std::fs::create_dir_all(tree.join("lib")).unwrap();
    std::fs::create_dir_all(tree.join("share/extension")).unwrap();
    std::fs::write(tree.join("lib/x.so"), vec![9u8; 50_000]).unwrap();
    std::fs::write(tree.join("share/extension/x.control"), "default_version = '1'\n").unwrap();
    let src = tmp.path().join("src");
    let opts = cnpg_ext_images::BuildOptions::new("example.com/x:1-18-trixie");
    cnpg_ext_images::build_layout(&tree, &opts, &src).unwrap();
    let dst = tmp.path().join("dst");
    let out = Command::new("skopeo")
        .args(["--insecure-policy", "copy", "--dest-compress-format", "zstd"])
        .arg(format!("oci:{}", src.display()))
        .arg(format!("oci:{}:x", dst.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "skopeo failed: {}", String::from_utf8_lossy(&out.stderr));
    // The copy really has a zstd layer.
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(dst.join("index.json")).unwrap()).unwrap();
    let m = index["manifests"][0]["digest"].as_str().unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dst.join("blobs/sha256").join(m.trim_start_matches("sha256:"))).unwrap())
            .unwrap();
    assert_eq!(manifest["layers"][0]["mediaType"], ZSTD_MEDIA_TYPE);
    let dest = tmp.path().join("rootfs");
    unpack(&dst, &dest, &UnpackOptions::default()).unwrap();
    assert_eq!(std::fs::read(dest.join("lib/x.so")).unwrap(), vec![9u8; 50_000]);
}
