//! Images named by registry reference: `run` (an `images:` entry with only `reference:`),
//! `certify <reference>` and `image unpack|lint <reference>` pull them through
//! [`cnpg_ext_registry`] into `<cache>/registry` (the harness cache directory) and then read
//! the pulled OCI layout like any other.

use std::path::PathBuf;

use cnpg_ext_registry::{PullError, PullOptions, PulledImage, Puller};

use crate::error::HarnessError;

/// The environment variable that hands `--insecure-registry` on to child harness processes.
pub(crate) const ENV_INSECURE: &str = "CNPG_EXT_HARNESS_INSECURE_REGISTRY";

/// How a run reaches registries: the ones (`HOST` or `HOST:PORT`) spoken to over plain HTTP,
/// from `--insecure-registry`. Held by each run's options, not by the process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registries {
    pub insecure: Vec<String>,
}

impl Registries {
    pub fn new(insecure: Vec<String>) -> Registries {
        Registries { insecure }
    }

    /// `--insecure-registry` handed on to child harness processes (matrix cells).
    pub fn child_env(&self) -> Option<(&'static str, String)> {
        (!self.insecure.is_empty()).then(|| (ENV_INSECURE, self.insecure.join(",")))
    }

    /// Pull settings: the harness cache, `--insecure-registry`, credentials and timeouts from
    /// the environment.
    pub fn options(&self, progress: bool) -> Result<PullOptions, HarnessError> {
        let cache = cnpg_ext_pg::ProvisionOptions::from_env().cache_dir.ok_or_else(|| {
            HarnessError::Environment("no cache directory for pulled images: set CNPG_EXT_HARNESS_CACHE or HOME".into())
        })?;
        let mut o = PullOptions::new(cache);
        o.insecure = self.insecure.clone();
        o.progress = progress;
        Ok(o)
    }

    /// Whether the registry of `reference` was named with `--insecure-registry`.
    pub fn is_insecure(&self, reference: &str) -> bool {
        let Ok(parsed) = cnpg_ext_registry::parse_reference(reference) else { return false };
        let mut o = PullOptions::new(std::env::temp_dir());
        o.insecure = self.insecure.clone();
        Puller::new(o).is_insecure(parsed.resolve_registry())
    }

    /// Pulls one reference (tag or `@sha256:` pin) and returns the verified layout.
    pub async fn pull(&self, reference: &str, progress: bool) -> Result<PulledImage, HarnessError> {
        self.pull_platform(reference, progress, None).await
    }

    /// [`Registries::pull`], picking `platform` (default: the host's) from an image index.
    pub async fn pull_platform(
        &self,
        reference: &str,
        progress: bool,
        platform: Option<cnpg_ext_images::Platform>,
    ) -> Result<PulledImage, HarnessError> {
        let mut opts = self.options(progress)?;
        if let Some(p) = platform {
            opts.platform = p;
        }
        let puller = Puller::new(opts);
        let pulled = puller.pull(reference).await.map_err(error)?;
        tracing::info!(reference, manifest = %pulled.manifest_digest, layout = %pulled.layout.display(), "pulled");
        Ok(pulled)
    }

    /// Pull from synchronous code running on (a blocking thread of) the tokio runtime.
    pub fn pull_blocking(&self, reference: &str, progress: bool) -> Result<PulledImage, HarnessError> {
        let puller = Puller::new(self.options(progress)?);
        cnpg_ext_registry::pull_blocking(&puller, reference).map_err(error)
    }

    /// `image unpack|lint <reference>`: a registry reference is pulled and replaced by its
    /// layout.
    pub async fn resolve_image_command(
        &self,
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
                let pulled = self.pull_platform(&reference, true, platform).await?;
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
}

pub(crate) fn error(e: PullError) -> HarnessError {
    let text = format!("{e}; {}", e.hint());
    match e.exit_code() {
        cnpg_ext_exit::Exit::Invalid => HarnessError::Input(text),
        _ => HarnessError::Environment(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insecure_registries_belong_to_each_run_not_to_the_process() {
        let plain = Registries::new(vec!["127.0.0.1:5000".into()]);
        let other = Registries::default();
        assert!(plain.is_insecure("127.0.0.1:5000/ext/a:1"));
        assert!(!plain.is_insecure("127.0.0.1:5001/ext/a:1"));
        assert!(!other.is_insecure("127.0.0.1:5000/ext/a:1"), "a second run's options are its own");
        assert_eq!(plain.child_env(), Some((ENV_INSECURE, "127.0.0.1:5000".to_string())));
        assert_eq!(other.child_env(), None);
    }
}
