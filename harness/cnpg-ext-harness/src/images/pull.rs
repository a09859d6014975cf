//! Images named by registry reference: `run` (an `images:` entry with only `reference:`),
//! `certify <reference>` and `image unpack|lint <reference>` pull them through
//! [`cnpg_ext_registry`] into `<cache>/registry` (the harness cache directory) and then read
//! the pulled OCI layout like any other.

use std::path::PathBuf;
use std::sync::OnceLock;

use cnpg_ext_registry::{PullError, PullOptions, PulledImage, Puller};

use crate::error::HarnessError;

static INSECURE: OnceLock<Vec<String>> = OnceLock::new();

/// Registries (`HOST` or `HOST:PORT`) spoken to over plain HTTP, from `--insecure-registry`.
/// Set once, before any pull.
pub fn set_insecure(registries: Vec<String>) {
    let _ = INSECURE.set(registries);
}

/// `--insecure-registry` handed on to child harness processes (matrix cells).
pub fn insecure_env() -> Option<(&'static str, String)> {
    let list = INSECURE.get().filter(|l| !l.is_empty())?;
    Some(("CNPG_EXT_HARNESS_INSECURE_REGISTRY", list.join(",")))
}

/// Pull settings of this process: the harness cache, `--insecure-registry`, credentials
/// and timeouts from the environment.
pub fn options(progress: bool) -> Result<PullOptions, HarnessError> {
    let cache = cnpg_ext_pg::ProvisionOptions::from_env().cache_dir.ok_or_else(|| {
        HarnessError::Environment("no cache directory for pulled images: set CNPG_EXT_HARNESS_CACHE or HOME".into())
    })?;
    let mut o = PullOptions::new(cache);
    o.insecure = INSECURE.get().cloned().unwrap_or_default();
    o.progress = progress;
    Ok(o)
}

/// Whether the registry of `reference` was named with `--insecure-registry`.
pub fn is_insecure(reference: &str) -> bool {
    let Ok(parsed) = cnpg_ext_registry::parse_reference(reference) else { return false };
    let mut o = PullOptions::new(std::env::temp_dir());
    o.insecure = INSECURE.get().cloned().unwrap_or_default();
    Puller::new(o).is_insecure(parsed.resolve_registry())
}

pub fn error(e: PullError) -> HarnessError {
    let text = format!("{e}; {}", e.hint());
    match e.exit_code() {
        cnpg_ext_exit::Exit::Invalid => HarnessError::Input(text),
        _ => HarnessError::Environment(text),
    }
}

/// Pulls one reference (tag or `@sha256:` pin) and returns the verified layout.
pub async fn pull(reference: &str, progress: bool) -> Result<PulledImage, HarnessError> {
    pull_platform(reference, progress, None).await
}

/// [`pull`], picking `platform` (default: the host's) from an image index.
pub async fn pull_platform(
    reference: &str,
    progress: bool,
    platform: Option<cnpg_ext_images::Platform>,
) -> Result<PulledImage, HarnessError> {
    let mut opts = options(progress)?;
    if let Some(p) = platform {
        opts.platform = p;
    }
    let puller = Puller::new(opts);
    let pulled = puller.pull(reference).await.map_err(error)?;
    tracing::info!(reference, manifest = %pulled.manifest_digest, layout = %pulled.layout.display(), "pulled");
    Ok(pulled)
}

/// Pull from synchronous code running on (a blocking thread of) the tokio runtime.
pub fn pull_blocking(reference: &str, progress: bool) -> Result<PulledImage, HarnessError> {
    let puller = Puller::new(options(progress)?);
    cnpg_ext_registry::pull_blocking(&puller, reference).map_err(error)
}

/// `image unpack|lint <reference>`: a registry reference is pulled and replaced by its layout.
pub async fn resolve_image_command(
    cmd: cnpg_ext_images::cli::ImageCommand,
) -> Result<cnpg_ext_images::cli::ImageCommand, HarnessError> {
    use cnpg_ext_images::cli::ImageCommand;
    let swap = |image: &mut PathBuf| -> Option<String> {
        let arg = image.to_str()?.to_string();
        cnpg_ext_registry::looks_like_reference(&arg).then_some(arg)
    };
    let mut cmd = cmd;
    let target = match &mut cmd {
        // `unpack --platform` picks that platform from an index, locally or in the registry.
        ImageCommand::Unpack { image, platform, .. } => Some((image, platform.clone())),
        ImageCommand::Lint { image, .. } => Some((image, None)),
        _ => None,
    };
    if let Some((image, platform)) = target {
        if let Some(reference) = swap(image) {
            let pulled = pull_platform(&reference, true, platform).await?;
            eprintln!(
                "pulled {reference} ({}{}) -> {}",
                pulled.manifest_digest,
                pulled.platform.as_deref().map(|p| format!(", {p}")).unwrap_or_default(),
                pulled.layout.display()
            );
            *image = pulled.layout;
        }
    }
    Ok(cmd)
}
