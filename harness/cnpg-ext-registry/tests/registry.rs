//! Pulls against a real registry on 127.0.0.1 (`docker-registry`, images pushed with `skopeo`).

mod common;

use std::time::{Duration, Instant};

use cnpg_ext_registry::{PullError, Puller};
use common::*;

fn unpack_payload(layout: &std::path::Path, name: &str) -> Vec<u8> {
    let dest = tempfile::tempdir().unwrap();
    let root = dest.path().join("root");
    cnpg_ext_images::unpack(layout, &root, &Default::default()).expect("a pulled layout unpacks");
    std::fs::read(root.join(format!("lib/{name}.data"))).expect("payload in the image")
}

fn no_temp_files(cache: &std::path::Path) {
    for e in walk(cache) {
        let n = e.file_name().unwrap().to_string_lossy().into_owned();
        assert!(!n.starts_with(".tmp-"), "left behind: {}", e.display());
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            }
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_pull_then_pinned_pull_from_cache_without_the_registry() {
    let Some(()) = require(TOOLS) else { return };
    let mut reg = Registry::start(None);
    let tmp = tempfile::tempdir().unwrap();
    let arch = cnpg_ext_images::host_arch();
    let (layout, digest) = common::layout(tmp.path(), "vec", &arch, b"payload-1");
    reg.push(&layout, "ext/vec", "1.0");
    let cache = tmp.path().join("cache");
    let puller = Puller::new(options(&cache, &[&reg.addr]));

    let reference = format!("{}/ext/vec:1.0", reg.addr);
    let got = puller.pull(&reference).await.expect("anonymous pull");
    assert_eq!(got.manifest_digest, digest, "the manifest pushed is the manifest pulled");
    assert!(got.index_digest.is_none());
    assert!(got.downloaded_bytes > 0 && got.contacted_registry);
    assert_eq!(got.pinned, format!("{}/ext/vec@{digest}", reg.addr));
    assert_eq!(unpack_payload(&got.layout, &format!("vec-{arch}")), b"payload-1");

    // The tag again: the registry is asked for the manifest, no blob is fetched again.
    let again = puller.pull(&reference).await.unwrap();
    assert!(again.contacted_registry);
    assert!(again.downloaded_bytes < 4096, "only the manifest: {}", again.downloaded_bytes);

    // A pin resolves from the cache alone, even with the registry gone; a tag cannot.
    reg.stop();
    let pinned = puller.pull(&format!("{}/ext/vec@{digest}", reg.addr)).await.expect("pinned pull from cache");
    assert!(!pinned.contacted_registry);
    assert_eq!(pinned.layout, got.layout);
    let e = puller.pull(&reference).await.unwrap_err();
    assert!(matches!(e, PullError::Unreachable { .. }) && e.exit_code() == 3, "{e}");
    no_temp_files(&cache);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_ok_and_refused() {
    let Some(()) = require(TOOLS) else { return };
    let reg = Registry::start(Some(("alice", "s3cret")));
    let tmp = tempfile::tempdir().unwrap();
    let (layout, digest) = common::layout(tmp.path(), "priv", &cnpg_ext_images::host_arch(), b"private");
    reg.push(&layout, "team/priv", "2");
    let reference = format!("{}/team/priv:2", reg.addr);

    // No credentials at all.
    let anon = Puller::new(options(&tmp.path().join("c0"), &[&reg.addr]));
    let e = anon.pull(&reference).await.unwrap_err();
    assert!(matches!(e, PullError::Unauthorized { .. }) && e.exit_code() == 3, "{e}");
    assert!(e.to_string().contains(&reference) && e.to_string().contains("401"), "{e}");
    assert!(e.hint().contains("no credentials"), "{}", e.hint());

    // Wrong password: refused, and the message names the file the credentials came from.
    let mut o = options(&tmp.path().join("c1"), &[&reg.addr]);
    let wrong = auth_file(tmp.path(), &reg.addr, "alice", "wrong");
    o.auth.explicit = Some(wrong.clone());
    let e = Puller::new(o).pull(&reference).await.unwrap_err();
    assert!(matches!(e, PullError::Unauthorized { .. }), "{e}");
    assert!(e.hint().contains(&wrong.display().to_string()), "{}", e.hint());

    // The right password through a docker config.json (DOCKER_CONFIG's file).
    let mut o = options(&tmp.path().join("c2"), &[&reg.addr]);
    let dir = tmp.path().join("docker");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::rename(auth_file(tmp.path(), &reg.addr, "alice", "s3cret"), dir.join("config.json")).unwrap();
    o.auth.docker = Some(dir.join("config.json"));
    let got = Puller::new(o).pull(&reference).await.expect("authenticated pull");
    assert_eq!(got.manifest_digest, digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_picks_the_host_platform_or_names_the_platforms_present() {
    let Some(()) = require(TOOLS) else { return };
    let reg = Registry::start(None);
    let tmp = tempfile::tempdir().unwrap();
    let host = cnpg_ext_images::host_arch();
    let others: Vec<&str> = ["arm64", "s390x", "ppc64le"].into_iter().filter(|a| *a != host).take(2).collect();

    let with_host = multi_arch_layout(tmp.path(), "multi", &[others[0], &host]);
    reg.push(&with_host, "ext/multi", "1");
    let without = multi_arch_layout(tmp.path(), "foreign", &others);
    reg.push(&without, "ext/foreign", "1");

    let puller = Puller::new(options(&tmp.path().join("cache"), &[&reg.addr]));
    let got = puller.pull(&format!("{}/ext/multi:1", reg.addr)).await.expect("index with the host platform");
    assert!(got.index_digest.is_some());
    assert_eq!(got.platform.as_deref(), Some(format!("linux/{host}").as_str()));
    // The payload of each arch is its name: the host's image was unpacked.
    assert_eq!(unpack_payload(&got.layout, &format!("multi-{host}")), host.as_bytes());
    // Pinned to the index: resolved from the cache.
    let pinned = puller.pull(&format!("{}/ext/multi@{}", reg.addr, got.index_digest.as_ref().unwrap())).await.unwrap();
    assert!(!pinned.contacted_registry);
    assert_eq!(pinned.manifest_digest, got.manifest_digest);

    let e = puller.pull(&format!("{}/ext/foreign:1", reg.addr)).await.unwrap_err();
    assert!(matches!(e, PullError::PlatformNotFound { .. }) && e.exit_code() == 2, "{e}");
    for a in &others {
        assert!(e.to_string().contains(&format!("linux/{a}")), "{e}");
    }
    assert!(e.to_string().contains(&format!("linux/{host}")), "names what was wanted: {e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_layer_is_refused_and_not_cached() {
    let Some(()) = require(TOOLS) else { return };
    let reg = Registry::start(None);
    let tmp = tempfile::tempdir().unwrap();
    let (layout, digest) = common::layout(tmp.path(), "bad", &cnpg_ext_images::host_arch(), &[7u8; 50_000]);
    reg.push(&layout, "ext/bad", "1");
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(layout.join("blobs/sha256").join(digest.trim_start_matches("sha256:"))).unwrap(),
    )
    .unwrap();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap().trim_start_matches("sha256:").to_string();
    let data = reg.blob_data(&layer);
    let mut bytes = std::fs::read(&data).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&data, &bytes).unwrap();

    let cache = tmp.path().join("cache");
    let puller = Puller::new(options(&cache, &[&reg.addr]));
    let e = puller.pull(&format!("{}/ext/bad:1", reg.addr)).await.unwrap_err();
    assert!(matches!(e, PullError::DigestMismatch { .. }) && e.exit_code() == 3, "{e}");
    assert!(e.to_string().contains(&layer) && e.to_string().contains("layer 1"), "{e}");
    assert!(puller.cache().blob(&format!("sha256:{layer}"), None).is_none(), "nothing corrupt is cached");
    no_temp_files(&cache);

    // A damaged manifest is caught before anything it names is fetched.
    let m = reg.blob_data(&digest);
    let mut bytes = std::fs::read(&m).unwrap();
    // Still valid JSON (the registry parses what it serves): one digit of a size changed.
    let at = bytes.windows(7).position(|w| w == b"\"size\":").unwrap() + 7;
    bytes[at] = if bytes[at] == b'9' { b'8' } else { bytes[at] + 1 };
    std::fs::write(&m, &bytes).unwrap();
    let puller = Puller::new(options(&tmp.path().join("cache2"), &[&reg.addr]));
    let e = puller.pull(&format!("{}/ext/bad:1", reg.addr)).await.unwrap_err();
    assert!(matches!(e, PullError::DigestMismatch { .. }) && e.exit_code() == 3, "{e}");
    assert!(e.to_string().contains("manifest") && e.to_string().contains(&digest), "{e}");
    assert!(puller.cache().blob(&digest, None).is_none(), "nothing corrupt is cached");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_tag_repository_and_wrong_pin_are_bad_references() {
    let Some(()) = require(TOOLS) else { return };
    let reg = Registry::start(None);
    let tmp = tempfile::tempdir().unwrap();
    let (layout, _) = common::layout(tmp.path(), "known", &cnpg_ext_images::host_arch(), b"k");
    reg.push(&layout, "ext/known", "1");
    let puller = Puller::new(options(&tmp.path().join("cache"), &[&reg.addr]));

    let e = puller.pull(&format!("{}/ext/known:nope", reg.addr)).await.unwrap_err();
    assert!(matches!(e, PullError::NotFound { .. }) && e.exit_code() == 2, "{e}");
    assert!(e.to_string().contains("MANIFEST_UNKNOWN") && e.to_string().contains("ext/known:nope"), "{e}");

    let e = puller.pull(&format!("{}/ext/absent:1", reg.addr)).await.unwrap_err();
    assert!(matches!(e, PullError::NotFound { .. }), "{e}");
    // distribution 2.8 answers MANIFEST_UNKNOWN here; others NAME_UNKNOWN.
    assert!(e.to_string().contains("_UNKNOWN") && e.to_string().contains("ext/absent"), "{e}");

    let e = puller.pull(&format!("{}/ext/known@sha256:{}", reg.addr, "0".repeat(64))).await.unwrap_err();
    assert_eq!(e.exit_code(), 2, "{e}");

    let e = puller.pull("127.0.0.1:1/Bad Name:1").await.unwrap_err();
    assert!(matches!(e, PullError::BadReference { .. }) && e.exit_code() == 2, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_needs_insecure_registry() {
    let Some(()) = require(TOOLS) else { return };
    let reg = Registry::start(None);
    let tmp = tempfile::tempdir().unwrap();
    let (layout, _) = common::layout(tmp.path(), "h", &cnpg_ext_images::host_arch(), b"h");
    reg.push(&layout, "ext/h", "1");
    let puller = Puller::new(options(&tmp.path().join("cache"), &[]));
    let e = puller.pull(&format!("{}/ext/h:1", reg.addr)).await.unwrap_err();
    assert!(matches!(e, PullError::Unreachable { .. }) && e.exit_code() == 3, "{e}");
    assert!(e.hint().contains(&format!("--insecure-registry {}", reg.addr)), "{}", e.hint());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_and_silent_registries_end_quickly() {
    // No registry binary needed: nothing listens, or something listens and never answers.
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let puller = Puller::new(options(&tmp.path().join("cache"), &[&addr]));
    let e = puller.pull(&format!("{addr}/ext/x:1")).await.unwrap_err();
    assert!(matches!(e, PullError::Unreachable { .. }) && e.exit_code() == 3, "{e}");
    assert!(e.to_string().contains(&addr), "{e}");

    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let held = std::thread::spawn(move || {
        // Accept and hold connections without answering.
        let mut conns = Vec::new();
        silent.set_nonblocking(true).unwrap();
        let end = Instant::now() + Duration::from_secs(15);
        while Instant::now() < end {
            if let Ok((c, _)) = silent.accept() {
                conns.push(c);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let mut o = options(&tmp.path().join("cache"), &[&addr]);
    o.timeout = Duration::from_millis(1500);
    // A hang would never return; the error says which limit ended the wait.
    let e = Puller::new(o).pull(&format!("{addr}/ext/x:1")).await.unwrap_err();
    assert!(matches!(e, PullError::Unreachable { .. }), "{e}");
    assert!(e.to_string().contains("1.5 s") || e.to_string().contains("timed out"), "{e}");
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_auth_with_basic_credentials_or_a_registry_token() {
    let Some(()) = require(&["docker-registry", "skopeo", "openssl"]) else { return };
    let reg = Registry::start_token("alice", "s3cret");
    let tmp = tempfile::tempdir().unwrap();
    let (layout, digest) = common::layout(tmp.path(), "tok", &cnpg_ext_images::host_arch(), b"token");
    reg.push(&layout, "team/priv", "3");
    let reference = format!("{}/team/priv:3", reg.addr);

    let e = Puller::new(options(&tmp.path().join("c0"), &[&reg.addr])).pull(&reference).await.unwrap_err();
    assert!(matches!(e, PullError::Unauthorized { .. }) && e.exit_code() == 3, "{e}");

    // Wrong password: the token endpoint refuses, so does the registry.
    let mut o = options(&tmp.path().join("c1"), &[&reg.addr]);
    o.auth.explicit = Some(auth_file(tmp.path(), &reg.addr, "alice", "wrong"));
    let e = Puller::new(o).pull(&reference).await.unwrap_err();
    assert!(matches!(e, PullError::Unauthorized { .. }), "{e}");

    // Basic credentials exchanged for a bearer token at the realm.
    let mut o = options(&tmp.path().join("c2"), &[&reg.addr]);
    o.auth.explicit = Some(auth_file(tmp.path(), &reg.addr, "alice", "s3cret"));
    let got = Puller::new(o).pull(&reference).await.expect("token from basic credentials");
    assert_eq!(got.manifest_digest, digest);

    // A bearer token given directly (`registrytoken`).
    let f = tmp.path().join("token.json");
    let token = reg.token.clone().unwrap();
    std::fs::write(&f, serde_json::json!({"auths": {reg.addr.clone(): {"registrytoken": token}}}).to_string()).unwrap();
    let mut o = options(&tmp.path().join("c3"), &[&reg.addr]);
    o.auth.explicit = Some(f);
    let got = Puller::new(o).pull(&reference).await.expect("given bearer token");
    assert_eq!(got.manifest_digest, digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_a_private_ca() {
    let Some(()) = require(&["docker-registry", "skopeo", "openssl"]) else { return };
    let reg = Registry::start_tls();
    let tmp = tempfile::tempdir().unwrap();
    let (layout, digest) = common::layout(tmp.path(), "tls", &cnpg_ext_images::host_arch(), b"tls");
    reg.push(&layout, "ext/tls", "1");
    let reference = format!("{}/ext/tls:1", reg.addr);

    // Not trusted: a TLS failure is an environment error, not a fallback to HTTP.
    let e = Puller::new(options(&tmp.path().join("c0"), &[])).pull(&reference).await.unwrap_err();
    assert!(matches!(e, PullError::Unreachable { .. }) && e.exit_code() == 3, "{e}");

    let mut o = options(&tmp.path().join("c1"), &[]);
    o.ca_files = vec![reg.ca.clone().unwrap()];
    let got = Puller::new(o).pull(&reference).await.expect("HTTPS pull with the CA");
    assert_eq!(got.manifest_digest, digest);

    let mut o = options(&tmp.path().join("c2"), &[]);
    o.ca_files = vec![tmp.path().join("missing.pem")];
    let e = Puller::new(o).pull(&reference).await.unwrap_err();
    assert!(matches!(e, PullError::CaFile { .. }) && e.exit_code() == 2, "{e}");
}
