//! Benchmark: pull + unpack of a ~100 MB (uncompressed) image from a local registry, end to
//! end with every digest checked, and how long an already cached reference takes to resolve
//! (by tag: one manifest request; by `@sha256:` pin: no request). Prints figures; asserts
//! nothing about time.
//!
//! `cargo bench -p cnpg-ext-registry --bench pull`
//! Needs `docker-registry` and `skopeo` (Debian packages).

use std::time::{Duration, Instant};

use cnpg_ext_registry::{PullOptions, Puller};
use cnpg_ext_testutil::registry::{require, Registry};

const MB: f64 = 1_000_000.0;
const SIZE: usize = 100_000_000;

/// Bytes that compress roughly like binaries (≈3:1), as in the unpack benchmark.
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

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    if require(&["docker-registry", "skopeo"]).is_none() {
        std::process::exit(3);
    }
    let scratch = tempfile::tempdir().unwrap();
    let tree = scratch.path().join("tree");
    std::fs::create_dir_all(tree.join("lib")).unwrap();
    std::fs::create_dir_all(tree.join("share/extension")).unwrap();
    std::fs::write(tree.join("share/extension/big.control"), "default_version = '1.0'\n").unwrap();
    for i in 0..4 {
        std::fs::write(tree.join(format!("lib/part{i}.so")), payload(i + 1, SIZE / 4)).unwrap();
    }
    let layout = scratch.path().join("oci");
    let built = cnpg_ext_images::build_layout(&tree, &cnpg_ext_images::BuildOptions::new("example.org/big:1"), &layout)
        .unwrap();
    let reg = Registry::start(None);
    reg.push(&layout, "bench/big", "1");
    let reference = format!("{}/bench/big:1", reg.addr);
    let pinned = format!("{}/bench/big@{}", reg.addr, built.manifest_digest);
    let options = |cache: &std::path::Path| {
        let mut o = PullOptions::new(cache.to_path_buf());
        o.insecure = vec![reg.addr.clone()];
        o.progress = false;
        o
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();

    let (mut pulls, mut unpacks, mut totals) = (Vec::new(), Vec::new(), Vec::new());
    let mut fetched = 0;
    for round in 0..3 {
        let cache = scratch.path().join(format!("cache{round}"));
        let dest = scratch.path().join(format!("rootfs{round}"));
        let t0 = Instant::now();
        let pulled = rt.block_on(Puller::new(options(&cache)).pull(&reference)).expect("pull");
        let t1 = Instant::now();
        let u = cnpg_ext_images::unpack(&pulled.layout, &dest, &Default::default()).expect("unpack");
        let t2 = Instant::now();
        assert!(u.bytes >= SIZE as u64);
        fetched = pulled.downloaded_bytes;
        pulls.push(t1 - t0);
        unpacks.push(t2 - t1);
        totals.push(t2 - t0);
        std::fs::remove_dir_all(&dest).unwrap();
    }
    let total = median(totals);
    println!(
        "pull + unpack of a {:.0} MB image ({:.1} MB compressed): {:.0} ms = {:.0} MB/s end to end (pull {:.0} ms, unpack {:.0} ms; medians of 3); goal >= 150 MB/s",
        SIZE as f64 / MB,
        fetched as f64 / MB,
        ms(total),
        SIZE as f64 / MB / total.as_secs_f64(),
        ms(median(pulls)),
        ms(median(unpacks)),
    );

    // Cached: a fresh puller each time, as a new harness process would have.
    let cache = scratch.path().join("cache0");
    let time = |r: &str| {
        let v: Vec<Duration> = (0..20)
            .map(|_| {
                let t = Instant::now();
                let p = rt.block_on(Puller::new(options(&cache)).pull(r)).expect("cached pull");
                assert!(p.downloaded_bytes < 10_000);
                t.elapsed()
            })
            .collect();
        median(v)
    };
    println!("cached reference resolves: by tag {:.1} ms (one manifest request), by @sha256 pin {:.2} ms (no request); medians of 20; goal <= 50 ms", ms(time(&reference)), ms(time(&pinned)));
}
