//! The CloudNativePG releases the backend installs, each pinned by sha256
//! (`kind-config/cnpg-versions.yaml`), and the download/check of a release manifest.

use std::path::{Path, PathBuf};

use cnpg_ext_model::backend::BackendError;
use cnpg_ext_model::CnpgVersion;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The versions file shipped in `kind-config/`, built into the binary.
pub const EMBEDDED: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../kind-config/cnpg-versions.yaml"
));

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorRelease {
    pub version: String,
    /// Release manifest URL.
    pub manifest: String,
    /// Lowercase hex sha256 of the manifest; `None` when not pinned.
    pub sha256: Option<String>,
    /// Where the checksum comes from.
    pub source: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionsFile {
    pub default: String,
    pub versions: Vec<OperatorRelease>,
    #[serde(skip)]
    pub origin: PathBuf,
}

impl VersionsFile {
    pub fn embedded() -> VersionsFile {
        Self::parse(Path::new("kind-config/cnpg-versions.yaml"), EMBEDDED)
            .expect("the built-in versions file is valid")
    }

    pub fn load(path: &Path) -> Result<VersionsFile, BackendError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            BackendError::Unusable(format!(
                "{}: cannot read the CNPG versions file: {e}",
                path.display()
            ))
        })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<VersionsFile, BackendError> {
        let p = path.display();
        let mut f: VersionsFile = serde_saphyr::from_str(text)
            .map_err(|e| BackendError::Unusable(format!("{p}: invalid CNPG versions file: {e}")))?;
        f.origin = path.to_path_buf();
        for (i, r) in f.versions.iter().enumerate() {
            let v: CnpgVersion = r
                .version
                .parse()
                .map_err(|e| BackendError::Unusable(format!("{p}: versions[{i}].version: {e}")))?;
            if let Some(s) = &r.sha256 {
                if s.len() != 64
                    || !s
                        .chars()
                        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
                {
                    return Err(BackendError::Unusable(format!(
                        "{p}: versions[{i}].sha256: `{s}` is not 64 lowercase hex digits (or null when not pinned)"
                    )));
                }
            }
            let expected_tail = format!("/v{v}/cnpg-{v}.yaml");
            if !r.manifest.starts_with("https://") || !r.manifest.ends_with(&expected_tail) {
                return Err(BackendError::Unusable(format!(
                    "{p}: versions[{i}].manifest: `{}` should be an https URL ending in `{expected_tail}`",
                    r.manifest
                )));
            }
            if r.source.trim().is_empty() {
                return Err(BackendError::Unusable(format!(
                    "{p}: versions[{i}].source: say where the checksum comes from"
                )));
            }
        }
        f.default
            .parse::<CnpgVersion>()
            .map_err(|e| BackendError::Unusable(format!("{p}: default: {e}")))?;
        Ok(f)
    }

    pub fn find(&self, v: CnpgVersion) -> Result<&OperatorRelease, BackendError> {
        self.versions
            .iter()
            .find(|r| r.version.parse::<CnpgVersion>().ok() == Some(v))
            .ok_or_else(|| {
                let known: Vec<&str> = self.versions.iter().map(|r| r.version.as_str()).collect();
                BackendError::Unusable(format!(
                    "CloudNativePG {v} is not in {}; known: {}. Add it there with its manifest URL and sha256",
                    self.origin.display(),
                    known.join(", ")
                ))
            })
    }

    #[cfg(feature = "testing")]
    pub fn default_version(&self) -> CnpgVersion {
        self.default.parse().expect("checked at parse")
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The outcome of checking a manifest against its pin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestCheck {
    pub sha256: String,
    pub pinned: bool,
    /// Shown to the user (e.g. the hash to pin).
    pub notice: Option<String>,
}

/// Refuses a manifest whose sha256 differs from the pin, or that has no pin unless
/// `allow_unpinned` (then the notice carries the computed hash to pin).
pub fn check_manifest(
    release: &OperatorRelease,
    bytes: &[u8],
    allow_unpinned: bool,
) -> Result<ManifestCheck, BackendError> {
    let got = sha256_hex(bytes);
    match &release.sha256 {
        Some(want) if *want == got => Ok(ManifestCheck { sha256: got, pinned: true, notice: None }),
        Some(want) => Err(BackendError::Unusable(format!(
            "operator manifest {} has sha256 {got}, but the versions file pins {want} ({}): refusing to apply it; \
             re-download it, or check upstream and update the pin",
            release.manifest, release.source
        ))),
        None if allow_unpinned => Ok(ManifestCheck {
            notice: Some(format!(
                "applying UNPINNED operator manifest {} (--allow-unpinned-operator); its sha256 is {got}: \
                 check it and pin it in the versions file (`sha256: {got}`)",
                release.manifest
            )),
            sha256: got,
            pinned: false,
        }),
        None => Err(BackendError::Unusable(format!(
            "CloudNativePG {} has no sha256 pin in the versions file ({}); the downloaded manifest hashes to {got}. \
             Pin it there, or pass --allow-unpinned-operator",
            release.version, release.source
        ))),
    }
}

/// Reads `local` or downloads the release manifest, then checks it against the pin.
/// Returns the manifest text and the check.
pub async fn fetch_manifest(
    release: &OperatorRelease,
    local: Option<&Path>,
    allow_unpinned: bool,
) -> Result<(String, ManifestCheck), BackendError> {
    let bytes = match local {
        Some(p) => std::fs::read(p).map_err(|e| {
            BackendError::Unusable(format!(
                "{}: cannot read the operator manifest: {e}",
                p.display()
            ))
        })?,
        None => download(&release.manifest).await?,
    };
    let check = check_manifest(release, &bytes, allow_unpinned)?;
    let text = String::from_utf8(bytes).map_err(|_| {
        BackendError::Unusable(format!(
            "operator manifest {} is not UTF-8 text",
            release.manifest
        ))
    })?;
    Ok((text, check))
}

/// HTTPS GET following redirects (GitHub release assets redirect to a CDN).
pub async fn download(url: &str) -> Result<Vec<u8>, BackendError> {
    use http_body_util::{BodyExt, Empty};
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| {
            BackendError::Unusable(format!("no TLS root certificates to download {url}: {e}"))
        })?
        .https_only()
        .enable_http1()
        .build();
    let client: hyper_util::client::legacy::Client<_, Empty<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(connector);
    let mut current = url.to_string();
    for _ in 0..8 {
        let uri: http::Uri = current
            .parse()
            .map_err(|e| BackendError::Unusable(format!("`{current}` is not a URL: {e}")))?;
        let resp = client.get(uri).await.map_err(|e| {
            BackendError::Unusable(format!(
                "cannot download {current}: {e}; download it yourself and pass --operator-manifest <file>"
            ))
        })?;
        let status = resp.status();
        if status.is_redirection() {
            let loc = resp
                .headers()
                .get(http::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .ok_or_else(|| {
                    BackendError::Unusable(format!("{current}: redirect without a Location"))
                })?;
            current = loc.to_string();
            continue;
        }
        if !status.is_success() {
            return Err(BackendError::Unusable(format!(
                "downloading {current}: HTTP {status}"
            )));
        }
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| BackendError::Unusable(format!("downloading {current}: {e}")))?;
        return Ok(body.to_bytes().to_vec());
    }
    Err(BackendError::Unusable(format!(
        "downloading {url}: too many redirects"
    )))
}
