//! Pulling extension images by reference from OCI registries (distribution API, through the
//! `oci-client` crate) into a content cache keyed by digest, as verified OCI image layouts
//! that the rest of the harness reads like any other layout.
//!
//! * [`Puller::pull`] — reference → [`PulledImage`] (`layout`: an OCI layout directory).
//! * credentials from `REGISTRY_AUTH_FILE`, `DOCKER_CONFIG` or `~/.docker/config.json`
//!   ([`auth`]); basic, and bearer tokens (given, or obtained from the registry's token
//!   endpoint with the basic credentials);
//! * an image index resolves to `linux/<host arch>` or fails naming the platforms present;
//! * plain HTTP only for registries listed in [`PullOptions::insecure`];
//! * every request has a timeout: [`PullError`] says which reference, which registry and what
//!   it answered, with exit code 2 (bad reference) or 3 (environment).

pub mod auth;
pub mod cache;
mod error;
mod pull;

pub use error::PullError;
pub use pull::{looks_like_reference, parse_reference, PullOptions, PulledImage, Puller, ENV_CA, ENV_TIMEOUT};

/// Runs a pull to completion from synchronous code, in any context (inside or outside a
/// tokio runtime): on a thread of its own with a small runtime.
pub fn pull_blocking(puller: &Puller, reference: &str) -> Result<PulledImage, PullError> {
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| PullError::Cache { path: "tokio runtime".into(), source: e })?
                .block_on(puller.pull(reference))
        })
        .join()
        .expect("pull thread")
    })
}
