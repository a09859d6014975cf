//! Pulling one reference into the cache, through `oci-client`.
//!
//! Every document and blob is hashed here, whatever the client also checks: the manifest (or
//! index) against the `@sha256:` pin when there is one, the platform manifest against the
//! index entry, every config and layer against its descriptor (size first, so that a registry
//! sending more than declared is cut off). Nothing enters the cache unverified.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cnpg_ext_images::Platform;
use futures::StreamExt;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::auth::{AuthFiles, Credential, Found};
use crate::cache::{digest_hex, Cache};
use crate::error::PullError;

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const ACCEPT: &[&str] = &[OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST];

/// Layers at least this large get a progress bar (on a terminal).
const PROGRESS_MIN_BYTES: u64 = 8 << 20;

/// Settings of a [`Puller`].
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// The harness cache directory; content goes to `<cache_dir>/registry`.
    pub cache_dir: PathBuf,
    /// Registries spoken to over plain HTTP: `HOST` (any port) or `HOST:PORT`.
    pub insecure: Vec<String>,
    /// Platform picked from an image index.
    pub platform: Platform,
    /// Limit on establishing a connection.
    pub connect_timeout: Duration,
    /// Limit on a whole manifest or token request, and on any wait for the next bytes of a blob.
    pub timeout: Duration,
    /// Progress bars for large layers (drawn only on a terminal).
    pub progress: bool,
    pub auth: AuthFiles,
    /// PEM files of extra certificate authorities for HTTPS registries (private CAs).
    pub ca_files: Vec<PathBuf>,
}

/// Environment variable: extra CA certificate PEM files, separated by `:`.
pub const ENV_CA: &str = "CNPG_EXT_HARNESS_REGISTRY_CA";

/// Environment variable: request timeout in seconds (default 30).
pub const ENV_TIMEOUT: &str = "CNPG_EXT_HARNESS_REGISTRY_TIMEOUT";

impl PullOptions {
    /// Defaults: host platform, 10 s to connect, 30 s per request (`CNPG_EXT_HARNESS_REGISTRY_TIMEOUT`),
    /// credentials from the environment, progress on.
    pub fn new(cache_dir: PathBuf) -> Self {
        let timeout = std::env::var(ENV_TIMEOUT)
            .ok()
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| *s > 0.0)
            .map(Duration::from_secs_f64)
            .unwrap_or(Duration::from_secs(30));
        PullOptions {
            cache_dir,
            insecure: Vec::new(),
            platform: Platform::host(),
            connect_timeout: Duration::from_secs(10).min(timeout),
            timeout,
            progress: true,
            auth: AuthFiles::from_env(),
            ca_files: std::env::var_os(ENV_CA)
                .map(|v| std::env::split_paths(&v).filter(|p| !p.as_os_str().is_empty()).collect())
                .unwrap_or_default(),
        }
    }
}

/// What a pull produced.
#[derive(Debug, Clone, Serialize)]
pub struct PulledImage {
    /// The reference as given.
    pub reference: String,
    /// `registry/repository@sha256:…` of the reference's target (the index when there is one).
    pub pinned: String,
    /// The index the reference named, when it named one.
    pub index_digest: Option<String>,
    /// The platform image manifest.
    pub manifest_digest: String,
    /// `os/arch[/variant]` picked from the index.
    pub platform: Option<String>,
    /// OCI image layout of the platform image (inside the cache; do not modify).
    pub layout: PathBuf,
    /// Bytes fetched from the registry by this pull (0: everything was cached).
    pub downloaded_bytes: u64,
    /// Whether the registry was contacted at all.
    pub contacted_registry: bool,
}

/// Pulls references into the content cache.
pub struct Puller {
    opts: PullOptions,
    cache: Cache,
    clients: Mutex<HashMap<String, Arc<Client>>>,
}

struct Ctx<'a> {
    reference: &'a str,
    registry: String,
    auth: RegistryAuth,
    found: Option<Found>,
    notes: Vec<String>,
}

impl Ctx<'_> {
    /// Turns a client error into one naming the reference, the registry and its answer.
    fn map(&self, e: OciDistributionError, what: &str, insecure: bool) -> PullError {
        let reference = self.reference.to_string();
        let registry = self.registry.clone();
        let refused = |answer: String| PullError::Unauthorized {
            reference: reference.clone(),
            registry: registry.clone(),
            answer,
            hint: self.auth_hint(),
        };
        let not_found =
            |answer: String| PullError::NotFound { reference: reference.clone(), registry: registry.clone(), answer };
        match e {
            OciDistributionError::UnauthorizedError { url } => refused(format!("HTTP 401 Unauthorized for {url}")),
            OciDistributionError::AuthenticationFailure(body) => {
                refused(format!("the token endpoint refused: {}", body.trim()))
            }
            OciDistributionError::RegistryError { envelope, url } => {
                let answer = envelope
                    .errors
                    .iter()
                    .map(|e| format!("{}: {}", code_name(&e.code), e.message))
                    .collect::<Vec<_>>()
                    .join("; ");
                let answer = format!("{answer} ({url})");
                match envelope.errors.first().map(|e| &e.code) {
                    Some(OciErrorCode::Unauthorized | OciErrorCode::Denied) => refused(answer),
                    Some(
                        OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::NotFound
                        | OciErrorCode::BlobUnknown
                        | OciErrorCode::ManifestBlobUnknown
                        | OciErrorCode::NameInvalid
                        | OciErrorCode::TagInvalid,
                    ) => not_found(answer),
                    _ => PullError::Registry { reference, registry, answer },
                }
            }
            OciDistributionError::ServerError { code, url, message } => {
                let answer = format!("HTTP {code} for {url}: {}", message.trim());
                match code {
                    401 | 403 => refused(answer),
                    404 => not_found(answer),
                    _ => PullError::Registry { reference, registry, answer },
                }
            }
            OciDistributionError::ImageManifestNotFoundError(m) => not_found(m),
            OciDistributionError::DigestError(oci_client::errors::DigestError::VerificationError {
                expected,
                actual,
            }) => PullError::DigestMismatch { reference, registry, what: what.to_string(), digest: expected, actual },
            OciDistributionError::DigestError(d) => PullError::Registry { reference, registry, answer: d.to_string() },
            OciDistributionError::RequestError(e) => PullError::Unreachable {
                answer: describe_request_error(&e),
                hint: self.unreachable_hint(insecure),
                reference,
                registry,
            },
            OciDistributionError::IoError(e) => PullError::Unreachable {
                answer: e.to_string(),
                hint: self.unreachable_hint(insecure),
                reference,
                registry,
            },
            other => PullError::Registry { reference, registry, answer: other.to_string() },
        }
    }

    fn auth_hint(&self) -> String {
        let mut h = match &self.found {
            Some(f) => format!(
                "the credentials for `{}` in {} were refused; log in again (docker/podman login) or fix them",
                f.key,
                f.file.display()
            ),
            None => format!(
                "no credentials for {} were found; log in (docker/podman login) or set REGISTRY_AUTH_FILE / DOCKER_CONFIG",
                self.registry
            ),
        };
        for n in &self.notes {
            h.push_str("; ");
            h.push_str(n);
        }
        h
    }

    fn unreachable_hint(&self, insecure: bool) -> String {
        if insecure {
            format!("check that a registry listens on {} (plain HTTP, as --insecure-registry asks)", self.registry)
        } else {
            format!(
                "check that a registry listens on {} over HTTPS; a registry that speaks plain HTTP needs --insecure-registry {}",
                self.registry, self.registry
            )
        }
    }

    fn timeout(&self, what: &str, limit: Duration, insecure: bool) -> PullError {
        PullError::Unreachable {
            reference: self.reference.to_string(),
            registry: self.registry.clone(),
            answer: format!("no answer to the {what} request within {:.1} s", limit.as_secs_f64()),
            hint: self.unreachable_hint(insecure),
        }
    }
}

fn code_name(code: &OciErrorCode) -> String {
    match serde_json::to_value(code) {
        Ok(serde_json::Value::String(s)) => s,
        _ => format!("{code:?}"),
    }
}

/// The error and its causes on one line (reqwest hides the useful part in `source()`).
fn describe_request_error(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        cur = s.source();
    }
    parts.join(": ")
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// What a manifest document is.
enum Doc {
    Index(serde_json::Value),
    Manifest(serde_json::Value),
}

fn classify(reference: &str, bytes: &[u8], media_type_hint: Option<&str>) -> Result<(Doc, String), PullError> {
    let unsupported = |reason: String| PullError::Unsupported { reference: reference.to_string(), reason };
    let v: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| unsupported(format!("the registry's manifest is not valid JSON: {e}")))?;
    if v.get("schemaVersion").and_then(|s| s.as_i64()) == Some(1) {
        return Err(unsupported("a Docker schema 1 manifest (deprecated, unsupported); re-push the image".into()));
    }
    let mt = v.get("mediaType").and_then(|m| m.as_str()).or(media_type_hint).map(str::to_string).unwrap_or_else(|| {
        if v.get("manifests").is_some() {
            OCI_INDEX.into()
        } else {
            OCI_MANIFEST.into()
        }
    });
    match mt.as_str() {
        OCI_INDEX | DOCKER_LIST => Ok((Doc::Index(v), mt)),
        OCI_MANIFEST | DOCKER_MANIFEST => Ok((Doc::Manifest(v), mt)),
        other => Err(unsupported(format!("media type {other} is not an image manifest or index"))),
    }
}

fn platform_of(v: &serde_json::Value) -> Option<Platform> {
    let p = v.get("platform")?;
    Some(Platform {
        os: p.get("os")?.as_str()?.to_string(),
        architecture: p.get("architecture")?.as_str()?.to_string(),
        variant: p.get("variant").and_then(|x| x.as_str()).map(str::to_string),
    })
}

/// The index entry for `want`, or the platforms present (attestation entries left out).
fn pick(index: &serde_json::Value, want: &Platform) -> Result<serde_json::Value, Vec<String>> {
    let entries = index.get("manifests").and_then(|m| m.as_array()).cloned().unwrap_or_default();
    let mut present = Vec::new();
    for e in &entries {
        match platform_of(e) {
            Some(p) if p.os == "unknown" => {}
            Some(p) => {
                if want.accepts(&p) {
                    return Ok(e.clone());
                }
                present.push(p.to_string());
            }
            None => present.push("(no platform)".into()),
        }
    }
    present.sort();
    present.dedup();
    Err(present)
}

struct Descriptor {
    digest: String,
    size: u64,
    media_type: String,
}

fn descriptors(reference: &str, manifest: &serde_json::Value) -> Result<Vec<(String, Descriptor)>, PullError> {
    let unsupported = |reason: String| PullError::Unsupported { reference: reference.to_string(), reason };
    let one = |v: &serde_json::Value, what: &str| -> Result<Descriptor, PullError> {
        let digest = v.get("digest").and_then(|d| d.as_str()).unwrap_or_default().to_string();
        if digest_hex(&digest).is_none() {
            return Err(unsupported(format!("{what} has digest {digest:?}; only sha256 digests are supported")));
        }
        let size = v
            .get("size")
            .and_then(|s| s.as_u64())
            .ok_or_else(|| unsupported(format!("{what} {digest} has no size")))?;
        let media_type = v.get("mediaType").and_then(|m| m.as_str()).unwrap_or_default().to_string();
        Ok(Descriptor { digest, size, media_type })
    };
    let mut out = Vec::new();
    let config = manifest.get("config").ok_or_else(|| unsupported("the manifest has no config".into()))?;
    out.push(("config".to_string(), one(config, "config")?));
    let layers = manifest
        .get("layers")
        .and_then(|l| l.as_array())
        .ok_or_else(|| unsupported("the manifest has no layers".into()))?;
    for (i, l) in layers.iter().enumerate() {
        let what = format!("layer {}", i + 1);
        out.push((what.clone(), one(l, &what)?));
    }
    Ok(out)
}

/// Removes a temporary blob unless it was committed.
struct TmpGuard(Option<PathBuf>);
impl Drop for TmpGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Puller {
    pub fn new(opts: PullOptions) -> Self {
        // reqwest is built without a default TLS provider (no C toolchain dependency).
        let _ = rustls::crypto::ring::default_provider().install_default();
        Puller { cache: Cache::new(&opts.cache_dir), opts, clients: Mutex::new(HashMap::new()) }
    }

    pub fn options(&self) -> &PullOptions {
        &self.opts
    }

    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// Whether `registry` (`host[:port]`) was named with `--insecure-registry`.
    pub fn is_insecure(&self, registry: &str) -> bool {
        let host = host_part(registry);
        self.opts.insecure.iter().any(|i| i == registry || (!i.contains(':') && i == host) || host_part(i) == registry)
    }

    fn client(&self, registry: &str) -> Result<Arc<Client>, PullError> {
        let mut clients = self.clients.lock().unwrap();
        if let Some(c) = clients.get(registry) {
            return Ok(c.clone());
        }
        let mut extra_root_certificates = Vec::new();
        for f in &self.opts.ca_files {
            let data = std::fs::read(f).map_err(|e| PullError::CaFile { path: f.clone(), reason: e.to_string() })?;
            if !String::from_utf8_lossy(&data).contains("-----BEGIN CERTIFICATE-----") {
                return Err(PullError::CaFile { path: f.clone(), reason: "no PEM certificate in it".into() });
            }
            extra_root_certificates.push(Certificate { encoding: CertificateEncoding::Pem, data });
        }
        let protocol = if self.is_insecure(registry) {
            ClientProtocol::HttpsExcept(vec![registry.to_string()])
        } else {
            ClientProtocol::Https
        };
        // `Client::new` would fall back to a default client (no timeouts, HTTPS only) on error.
        let client = Arc::new(
            Client::try_from(ClientConfig {
                protocol,
                platform_resolver: None,
                read_timeout: Some(self.opts.timeout),
                connect_timeout: Some(self.opts.connect_timeout),
                user_agent: concat!("cnpg-ext-harness/", env!("CARGO_PKG_VERSION")),
                extra_root_certificates,
                ..ClientConfig::default()
            })
            .map_err(|e| PullError::CaFile {
                path: std::env::join_paths(&self.opts.ca_files).map(PathBuf::from).unwrap_or_default(),
                reason: format!("cannot build the HTTPS client: {e}"),
            })?,
        );
        clients.insert(registry.to_string(), client.clone());
        Ok(client)
    }

    /// Resolves `reference` to a verified OCI layout of the image for the configured platform,
    /// fetching what the cache lacks. A `@sha256:` reference already in the cache needs no
    /// registry at all.
    pub async fn pull(&self, reference: &str) -> Result<PulledImage, PullError> {
        let parsed = parse_reference(reference)?;
        if let Some(hit) = self.cached(reference, &parsed)? {
            return Ok(hit);
        }
        let registry = parsed.resolve_registry().to_string();
        let mut notes = Vec::new();
        let found = self.opts.auth.lookup(&registry, parsed.repository(), &mut notes)?;
        let auth = match found.as_ref().map(|f| &f.credential) {
            None => RegistryAuth::Anonymous,
            Some(Credential::Basic { username, password }) => RegistryAuth::Basic(username.clone(), password.clone()),
            Some(Credential::Bearer(t)) => RegistryAuth::Bearer(t.clone()),
        };
        let ctx = Ctx { reference, registry: registry.clone(), auth, found, notes };
        let insecure = self.is_insecure(&registry);
        let client = self.client(&registry)?;

        let (top_bytes, top_digest) = self.manifest(&client, &ctx, &parsed, insecure).await?;
        let (doc, top_mt) = classify(reference, &top_bytes, None)?;
        self.cache.put(&top_digest, &top_bytes)?;
        let pinned = format!("{}/{}@{}", parsed.registry(), parsed.repository(), top_digest);
        let (index_digest, manifest_bytes, manifest_digest, manifest_mt, manifest, platform) = match doc {
            Doc::Manifest(m) => (None, top_bytes, top_digest, top_mt, m, None),
            Doc::Index(index) => {
                let entry = pick(&index, &self.opts.platform).map_err(|present| PullError::PlatformNotFound {
                    reference: reference.to_string(),
                    wanted: self.opts.platform.to_string(),
                    present: if present.is_empty() { "none".into() } else { present.join(", ") },
                })?;
                let child = entry.get("digest").and_then(|d| d.as_str()).unwrap_or_default().to_string();
                if digest_hex(&child).is_none() {
                    return Err(PullError::Unsupported {
                        reference: reference.into(),
                        reason: format!(
                            "the index entry for {} has digest {child:?}; only sha256 is supported",
                            self.opts.platform
                        ),
                    });
                }
                let child_ref = parsed.clone_with_digest(child.clone());
                let hint = entry.get("mediaType").and_then(|m| m.as_str());
                let (bytes, digest) = match self.cache.read_blob(&child) {
                    Some(b) => (b, child.clone()),
                    None => {
                        let (b, d) = self.manifest(&client, &ctx, &child_ref, insecure).await?;
                        (b.to_vec(), d)
                    }
                };
                let (doc, mt) = classify(reference, &bytes, hint)?;
                let Doc::Manifest(m) = doc else {
                    return Err(PullError::Unsupported {
                        reference: reference.into(),
                        reason: "an index inside an index".into(),
                    });
                };
                self.cache.put(&digest, &bytes)?;
                (Some(top_digest), bytes.into(), digest, mt, m, entry.get("platform").cloned())
            }
        };

        let mut downloaded = manifest_bytes.len() as u64;
        let blobs = descriptors(reference, &manifest)?;
        for (what, d) in &blobs {
            if self.cache.blob(&d.digest, Some(d.size)).is_some() {
                continue;
            }
            downloaded += self.fetch_blob(&client, &ctx, &parsed, what, d, insecure).await?;
        }
        let digests: Vec<String> = blobs.iter().map(|(_, d)| d.digest.clone()).collect();
        let layout = self.cache.write_layout(
            &manifest_digest,
            &manifest_mt,
            manifest_bytes.len() as u64,
            platform.as_ref(),
            &digests,
        )?;
        Ok(PulledImage {
            reference: reference.to_string(),
            pinned,
            index_digest,
            manifest_digest,
            platform: platform
                .as_ref()
                .and_then(|p| platform_of(&serde_json::json!({ "platform": p })))
                .map(|p| p.to_string()),
            layout,
            downloaded_bytes: downloaded,
            contacted_registry: true,
        })
    }

    /// A pinned reference whose documents and layout are all cached.
    fn cached(&self, reference: &str, parsed: &Reference) -> Result<Option<PulledImage>, PullError> {
        let Some(pin) = parsed.digest().filter(|d| digest_hex(d).is_some()) else { return Ok(None) };
        let Some(bytes) = self.cache.read_blob(pin) else { return Ok(None) };
        let pinned = format!("{}/{}@{}", parsed.registry(), parsed.repository(), pin);
        let (doc, _) = classify(reference, &bytes, None)?;
        let (index_digest, manifest_digest, platform) = match doc {
            Doc::Manifest(_) => (None, pin.to_string(), None),
            Doc::Index(index) => {
                let Ok(entry) = pick(&index, &self.opts.platform) else { return Ok(None) };
                let child = entry.get("digest").and_then(|d| d.as_str()).unwrap_or_default().to_string();
                (Some(pin.to_string()), child, platform_of(&entry).map(|p| p.to_string()))
            }
        };
        let Some(layout) = self.cache.layout(&manifest_digest) else { return Ok(None) };
        Ok(Some(PulledImage {
            reference: reference.to_string(),
            pinned,
            index_digest,
            manifest_digest,
            platform,
            layout,
            downloaded_bytes: 0,
            contacted_registry: false,
        }))
    }

    /// GET a manifest or index, with a whole-request timeout, verified against the pin.
    async fn manifest(
        &self,
        client: &Client,
        ctx: &Ctx<'_>,
        r: &Reference,
        insecure: bool,
    ) -> Result<(bytes::Bytes, String), PullError> {
        let limit = self.opts.timeout;
        let got = tokio::time::timeout(limit, client.pull_manifest_raw(r, &ctx.auth, ACCEPT))
            .await
            .map_err(|_| ctx.timeout("manifest", limit, insecure))?;
        let (bytes, _) = got.map_err(|e| ctx.map(e, "manifest", insecure))?;
        let actual = sha256(&bytes);
        if let Some(pin) = r.digest() {
            if actual != pin {
                return Err(PullError::DigestMismatch {
                    reference: ctx.reference.to_string(),
                    registry: ctx.registry.clone(),
                    what: "manifest".into(),
                    digest: pin.to_string(),
                    actual,
                });
            }
        }
        Ok((bytes, actual))
    }

    /// Streams one blob into the store; returns the bytes fetched.
    async fn fetch_blob(
        &self,
        client: &Client,
        ctx: &Ctx<'_>,
        r: &Reference,
        what: &str,
        d: &Descriptor,
        insecure: bool,
    ) -> Result<u64, PullError> {
        let limit = self.opts.timeout;
        let desc = OciDescriptor {
            digest: d.digest.clone(),
            size: d.size as i64,
            media_type: d.media_type.clone(),
            ..Default::default()
        };
        let mut stream = tokio::time::timeout(limit, client.pull_blob_stream(r, &desc))
            .await
            .map_err(|_| ctx.timeout(&format!("{what} ({})", d.digest), limit, insecure))?
            .map_err(|e| ctx.map(e, what, insecure))?;
        let (tmp, file) = self.cache.temp_blob()?;
        let mut guard = TmpGuard(Some(tmp.clone()));
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        let mut hasher = Sha256::new();
        let mut received: u64 = 0;
        let bar = (self.opts.progress && d.size >= PROGRESS_MIN_BYTES).then(|| {
            let b = indicatif::ProgressBar::with_draw_target(Some(d.size), indicatif::ProgressDrawTarget::stderr());
            if let Ok(style) =
                indicatif::ProgressStyle::with_template("{msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec}")
            {
                b.set_style(style);
            }
            b.set_message(format!("pull {} {what}", ctx.reference));
            b
        });
        let broken = |received: u64, e: String| PullError::Unreachable {
            reference: ctx.reference.to_string(),
            registry: ctx.registry.clone(),
            answer: format!("the transfer of {what} ({}) broke after {received} of {} bytes: {e}", d.digest, d.size),
            hint: "retry; check the network and the registry's logs".into(),
        };
        let cache_err = |e: std::io::Error| PullError::Cache { path: tmp.clone(), source: e };
        loop {
            let next = match tokio::time::timeout(limit, stream.next()).await {
                Ok(n) => n,
                Err(_) => return Err(broken(received, format!("no bytes for {:.1} s", limit.as_secs_f64()))),
            };
            match next {
                None => break,
                Some(Ok(chunk)) => {
                    received += chunk.len() as u64;
                    if received > d.size {
                        return Err(PullError::Registry {
                            reference: ctx.reference.to_string(),
                            registry: ctx.registry.clone(),
                            answer: format!(
                                "sent more than the {} bytes the manifest declares for {what} ({})",
                                d.size, d.digest
                            ),
                        });
                    }
                    hasher.update(&chunk);
                    out.write_all(&chunk).map_err(cache_err)?;
                    if let Some(b) = &bar {
                        b.set_position(received);
                    }
                }
                Some(Err(e)) => {
                    // The client's own check fails at the end of the stream: report ours,
                    // which names the blob and both digests.
                    if received == d.size {
                        break;
                    }
                    return Err(broken(received, describe_request_error(&e)));
                }
            }
        }
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        if received != d.size {
            return Err(broken(received, "the registry ended the response early".into()));
        }
        let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
        if actual != d.digest {
            return Err(PullError::DigestMismatch {
                reference: ctx.reference.to_string(),
                registry: ctx.registry.clone(),
                what: what.to_string(),
                digest: d.digest.clone(),
                actual,
            });
        }
        out.flush().map_err(cache_err)?;
        drop(out);
        self.cache.commit(&tmp, &d.digest)?;
        guard.0 = None;
        Ok(received)
    }
}

fn host_part(registry: &str) -> &str {
    // `[::1]:5000` keeps its brackets; `host:port` loses the port.
    if let Some(end) = registry.find(']') {
        return &registry[..=end];
    }
    registry.split(':').next().unwrap_or(registry)
}

/// Parses a reference, naming it on error.
pub fn parse_reference(reference: &str) -> Result<Reference, PullError> {
    let bad = |reason: String| PullError::BadReference { reference: reference.to_string(), reason };
    if reference.trim() != reference || reference.is_empty() {
        return Err(bad("empty or surrounded by spaces".into()));
    }
    let parsed = Reference::try_from(reference).map_err(|e| bad(e.to_string()))?;
    if let Some(d) = parsed.digest() {
        if digest_hex(d).is_none() {
            return Err(bad(format!("digest {d} is not sha256:<64 lowercase hex>")));
        }
    }
    Ok(parsed)
}

/// Whether `arg` names an image in a registry rather than a file: not an existing path, and
/// the first component is a registry host (has a `.` or `:`, or is `localhost`) or there is
/// an `@sha256:` pin. Short Docker Hub names (`postgres:18`) must be written in full
/// (`docker.io/library/postgres:18`) so that a mistyped path is never sent to a registry.
pub fn looks_like_reference(arg: &str) -> bool {
    if std::path::Path::new(arg).exists() || arg.starts_with('/') || arg.starts_with('.') {
        return false;
    }
    if arg.contains("@sha256:") {
        return true;
    }
    match arg.split_once('/') {
        Some((first, _)) => first.contains('.') || first.contains(':') || first == "localhost",
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_vs_paths() {
        assert!(looks_like_reference("127.0.0.1:5000/ext/pgvector:1"));
        assert!(looks_like_reference("ghcr.io/org/x@sha256:abc"));
        assert!(looks_like_reference("localhost/x"));
        assert!(!looks_like_reference("fixtures/pgvector"));
        assert!(!looks_like_reference("./ghcr.io/x"));
        assert!(!looks_like_reference("image.tar"));
    }

    #[test]
    fn bad_references_name_themselves() {
        let e = parse_reference("Ghcr.io/Org/X:1").unwrap_err();
        assert!(e.to_string().contains("Ghcr.io/Org/X:1") && e.exit_code() == 2, "{e}");
        let e = parse_reference("h.io/x@sha256:123").unwrap_err();
        assert_eq!(e.exit_code(), 2, "{e}");
    }

    #[test]
    fn platform_pick_names_what_is_there() {
        let index = serde_json::json!({"manifests": [
            {"digest": "sha256:a", "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
            {"digest": "sha256:b", "platform": {"os": "linux", "architecture": "s390x"}},
            {"digest": "sha256:c", "platform": {"os": "unknown", "architecture": "unknown"}},
        ]});
        assert_eq!(pick(&index, &Platform::linux("arm64")).unwrap()["digest"], "sha256:a");
        assert_eq!(pick(&index, &Platform::linux("amd64")).unwrap_err(), vec!["linux/arm64/v8", "linux/s390x"]);
    }

    #[test]
    fn insecure_matching() {
        let mut o = PullOptions::new("/nonexistent".into());
        o.insecure = vec!["127.0.0.1:5000".into(), "reg.local".into()];
        let p = Puller::new(o);
        assert!(p.is_insecure("127.0.0.1:5000"));
        assert!(!p.is_insecure("127.0.0.1:5001"));
        assert!(p.is_insecure("reg.local:443"));
        assert!(!p.is_insecure("ghcr.io"));
    }
}
