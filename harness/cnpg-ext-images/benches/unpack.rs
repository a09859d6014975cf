//! Benchmark: unpack throughput of a ~100 MB (uncompressed) single-layer
//! image, gzip and zstd, with full digest verification; lint time of a
//! pgvector-like image; the ELF scan (magic, symbol versions, architecture,
//! file access) of a 100 MB image of ELF files. Prints figures; asserts
//! nothing about time.
//!
//! `cargo bench -p cnpg-ext-images --bench unpack`
//! With `PG_CONFIG` set, the real `vector.so` of that install is used when
//! present; otherwise a module is compiled with `cc`.

use cnpg_ext_images::lint::{lint, lint_tree, lint_tree_full, LintOptions};
use cnpg_ext_images::{build_layout, inspect, unpack, BuildOptions, UnpackOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const MIB: f64 = 1024.0 * 1024.0;

/// ~`size` bytes that compress roughly like binaries (≈3:1).
fn payload(seed: u64, size: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(size);
    while v.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if x.is_multiple_of(3) {
            v.extend_from_slice(&x.to_le_bytes());
        } else {
            v.extend_from_slice(b"\0\0\0\0pg_ext\0");
        }
    }
    v.truncate(size);
    v
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn pgvector_like_tree(root: &Path) {
    let ext = root.join("share/extension");
    std::fs::create_dir_all(&ext).unwrap();
    std::fs::create_dir_all(root.join("lib")).unwrap();
    std::fs::create_dir_all(root.join("licenses")).unwrap();
    let real = std::env::var_os("PG_CONFIG").and_then(|pc| {
        let out = std::process::Command::new(pc).arg("--pkglibdir").output().ok()?;
        let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("vector.so");
        p.is_file().then_some(p)
    });
    match real {
        Some(p) => {
            println!("lint: using real {}", p.display());
            std::fs::copy(p, root.join("lib/vector.so")).unwrap();
        }
        None => {
            let c = root.join("vector.c");
            let mut src = String::from(
                "typedef struct { int a[6]; char b[32]; } M; static const M m = {{1,1800,100,32,64,1},\"PostgreSQL\"};\nconst M *Pg_magic_func(void) { return &m; }\n",
            );
            for i in 0..400 {
                src.push_str(&format!("double vec_fn{i}(double *a, double *b, int n) {{ double s = 0; for (int j = 0; j < n; j++) s += a[j] * b[j] + {i}; return s; }}\n"));
            }
            std::fs::write(&c, src).unwrap();
            let ok = std::process::Command::new("cc")
                .args(["-shared", "-fPIC", "-O2", "-o"])
                .arg(root.join("lib/vector.so"))
                .arg(&c)
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            std::fs::remove_file(c).unwrap();
            assert!(ok, "needs `cc` (or PG_CONFIG with pgvector installed)");
        }
    }
    std::fs::write(
        ext.join("vector.control"),
        "comment = 'vector data type and ivfflat and hnsw access methods'\ndefault_version = '0.8.1'\nmodule_pathname = '$libdir/vector'\nrelocatable = true\n",
    )
    .unwrap();
    let versions = [
        "0.1.0", "0.1.1", "0.1.2", "0.1.3", "0.1.4", "0.1.5", "0.1.6", "0.1.7", "0.1.8", "0.2.0", "0.2.1", "0.2.2",
        "0.2.3", "0.2.4", "0.2.5", "0.2.6", "0.2.7", "0.3.0", "0.3.1", "0.3.2", "0.4.0", "0.4.1", "0.4.2", "0.4.3",
        "0.4.4", "0.5.0", "0.5.1", "0.6.0", "0.6.1", "0.6.2", "0.7.0", "0.7.1", "0.7.2", "0.7.3", "0.7.4", "0.8.0",
        "0.8.1",
    ];
    for w in versions.windows(2) {
        std::fs::write(ext.join(format!("vector--{}--{}.sql", w[0], w[1])), "-- update\nSELECT 1;\n").unwrap();
    }
    let body = "CREATE FUNCTION vector_in(cstring, oid, integer) RETURNS vector AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;\n".repeat(300);
    std::fs::write(ext.join("vector--0.8.1.sql"), body).unwrap();
    std::fs::write(root.join("licenses/LICENSE"), "PostgreSQL License\n".repeat(20)).unwrap();
}

fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();

    // 1. ~100 MB tree: 100 files of 1 MiB.
    let tree = t.join("tree");
    std::fs::create_dir_all(tree.join("lib")).unwrap();
    for i in 0..100u64 {
        std::fs::write(tree.join(format!("lib/blob{i:03}.so")), payload(i + 1, 1 << 20)).unwrap();
    }
    let start = Instant::now();
    let built = build_layout(&tree, &BuildOptions::new("bench/unpack:1"), &t.join("layout")).unwrap();
    let build_time = start.elapsed();
    let s = inspect(&built.layout_dir, None).unwrap();
    let layer_bytes: u64 = walkdir::WalkDir::new(t.join("layout/blobs"))
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .map(|e| e.metadata().unwrap().len())
        .max()
        .unwrap();
    println!(
        "build: 100.0 MiB tree -> {:.1} MiB gzip layer in {:.2} s ({:.0} MB/s), digest {}",
        layer_bytes as f64 / MIB,
        build_time.as_secs_f64(),
        100.0 / build_time.as_secs_f64(),
        s.manifest_digest
    );

    // 2. Unpack (verify layer digest, gunzip, diff_id, hardened extract).
    let mut times = Vec::new();
    let mut bytes = 0;
    for i in 0..5 {
        let dest = t.join(format!("dest{i}"));
        let start = Instant::now();
        let u = unpack(&built.layout_dir, &dest, &UnpackOptions::default()).unwrap();
        times.push(start.elapsed());
        bytes = u.bytes;
        std::fs::remove_dir_all(&dest).unwrap();
    }
    let best = *times.iter().min().unwrap();
    let med = median(times);
    println!(
        "unpack: {:.1} MiB uncompressed; median {:.3} s = {:.0} MiB/s, best {:.3} s = {:.0} MiB/s (one thread, digests verified)",
        bytes as f64 / MIB,
        med.as_secs_f64(),
        bytes as f64 / MIB / med.as_secs_f64(),
        best.as_secs_f64(),
        bytes as f64 / MIB / best.as_secs_f64()
    );

    // 2b. The same layer as zstd (level 3, buildx's default), same checks.
    let zlayout = zstd_copy(&built.layout_dir, &t.join("zlayout"));
    let mut ztimes = Vec::new();
    for i in 0..5 {
        let dest = t.join(format!("zdest{i}"));
        let start = Instant::now();
        let u = unpack(&zlayout, &dest, &UnpackOptions::default()).unwrap();
        ztimes.push(start.elapsed());
        assert_eq!(u.bytes, bytes);
        std::fs::remove_dir_all(&dest).unwrap();
    }
    let zbest = *ztimes.iter().min().unwrap();
    let zmed = median(ztimes);
    println!(
        "unpack zstd: same {:.1} MiB; median {:.3} s = {:.0} MiB/s, best {:.3} s = {:.0} MiB/s ({:.2}× gzip's median time)",
        bytes as f64 / MIB,
        zmed.as_secs_f64(),
        bytes as f64 / MIB / zmed.as_secs_f64(),
        zbest.as_secs_f64(),
        bytes as f64 / MIB / zbest.as_secs_f64(),
        zmed.as_secs_f64() / med.as_secs_f64()
    );

    // 3. Lint of a pgvector-like image.
    let vtree = t.join("vtree");
    pgvector_like_tree(&vtree);
    let mut opts = BuildOptions::new("ghcr.io/example/pgvector:0.8.1-18-trixie");
    for (k, v) in [
        (cnpg_ext_images::LABEL_BASE_NAME, "ghcr.io/cloudnative-pg/postgresql:18-minimal-trixie"),
        (cnpg_ext_images::LABEL_BASE_PGMAJOR, "18"),
        (cnpg_ext_images::LABEL_BASE_OS, "trixie"),
        (cnpg_ext_images::LABEL_SQL_VERSION, "0.8.1"),
    ] {
        opts.labels.insert(k.into(), v.into());
    }
    let vimg = build_layout(&vtree, &opts, &t.join("vlayout")).unwrap();
    let lo = LintOptions::default();
    let first = lint(&vimg.layout_dir, &lo).unwrap();
    print!("{}", first.to_text());
    let mut times = Vec::new();
    for _ in 0..20 {
        let start = Instant::now();
        let r = lint(&vimg.layout_dir, &lo).unwrap();
        times.push(start.elapsed());
        assert_eq!(r.findings.len(), first.findings.len());
    }
    let lint_med = median(times);
    let summary = inspect(&vimg.layout_dir, None).unwrap();
    let mut times = Vec::new();
    for _ in 0..20 {
        let start = Instant::now();
        lint_tree(&vtree, &summary.config, &summary.reference_names, &lo);
        times.push(start.elapsed());
    }
    println!(
        "lint: pgvector-like image (vector.so {:.0} KiB, {} scripts): median {:.1} ms end to end (unpack to temp + checks + cleanup), {:.1} ms checks only",
        std::fs::metadata(vtree.join("lib/vector.so")).unwrap().len() as f64 / 1024.0,
        std::fs::read_dir(vtree.join("share/extension")).unwrap().count() - 1,
        lint_med.as_secs_f64() * 1000.0,
        median(times).as_secs_f64() * 1000.0
    );

    // 4. ELF scan of a 100 MB image: 100 ELF modules of 1 MiB each (the
    // module above padded with data past its sections), checks only.
    let etree = t.join("etree");
    std::fs::create_dir_all(etree.join("lib")).unwrap();
    std::fs::create_dir_all(etree.join("share/extension")).unwrap();
    let module = std::fs::read(vtree.join("lib/vector.so")).unwrap();
    for i in 0..100u64 {
        let mut b = module.clone();
        b.extend(payload(i + 7, (1 << 20) - module.len().min(1 << 20)));
        std::fs::write(etree.join(format!("lib/mod{i:03}.so")), b).unwrap();
    }
    let elf_bytes: u64 =
        (0..100).map(|i| std::fs::metadata(etree.join(format!("lib/mod{i:03}.so"))).unwrap().len()).sum();
    let names = vec!["ghcr.io/example/many:1-18-trixie".to_string()];
    let (findings, bin) = lint_tree_full(&etree, &summary.config, &names, None, &lo);
    let mut times = Vec::new();
    for _ in 0..10 {
        let start = Instant::now();
        lint_tree_full(&etree, &summary.config, &names, None, &lo);
        times.push(start.elapsed());
    }
    println!(
        "elf scan: {} ELF files, {:.1} MiB: median {:.1} ms checks only ({} findings; {})",
        bin.architectures.values().sum::<usize>(),
        elf_bytes as f64 / MIB,
        median(times).as_secs_f64() * 1000.0,
        findings.len(),
        bin.to_text()
    );
}

/// A copy of the single-layer gzip OCI layout `src` at `dst` whose layer is
/// recompressed with zstd (`tar+zstd`); the diff_id stays the same.
fn zstd_copy(src: &Path, dst: &Path) -> PathBuf {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let sha = |b: &[u8]| format!("sha256:{}", hex::encode(Sha256::digest(b)));
    let blob = |d: &str| src.join("blobs/sha256").join(d.trim_start_matches("sha256:"));
    let json = |p: PathBuf| -> serde_json::Value { serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap() };
    let mut index = json(src.join("index.json"));
    let mut manifest = json(blob(index["manifests"][0]["digest"].as_str().unwrap()));
    let gz = std::fs::read(blob(manifest["layers"][0]["digest"].as_str().unwrap())).unwrap();
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(gz.as_slice()).read_to_end(&mut tar).unwrap();
    let zst = zstd::encode_all(tar.as_slice(), 3).unwrap();
    let out = dst.join("blobs/sha256");
    std::fs::create_dir_all(&out).unwrap();
    let put = |b: &[u8]| {
        let d = sha(b);
        std::fs::write(out.join(d.trim_start_matches("sha256:")), b).unwrap();
        d
    };
    let cfg = std::fs::read(blob(manifest["config"]["digest"].as_str().unwrap())).unwrap();
    put(&cfg);
    manifest["layers"][0] = serde_json::json!({
        "mediaType": "application/vnd.oci.image.layer.v1.tar+zstd",
        "digest": put(&zst),
        "size": zst.len(),
    });
    let m = serde_json::to_vec(&manifest).unwrap();
    index["manifests"][0]["digest"] = put(&m).into();
    index["manifests"][0]["size"] = m.len().into();
    std::fs::write(dst.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::copy(src.join("oci-layout"), dst.join("oci-layout")).unwrap();
    println!("zstd layer: {:.1} MiB (gzip layer {:.1} MiB)", zst.len() as f64 / MIB, gz.len() as f64 / MIB);
    dst.to_path_buf()
}
