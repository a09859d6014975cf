//! Errors of a pull. Each names the reference as the user wrote it and what the registry
//! answered, and maps to the harness exit codes: 2 for a reference that cannot be pulled as
//! written (bad syntax, unknown tag or repository, no image for this platform), 3 for an
//! environment that does not let us pull it (unreachable, refused credentials, corrupt
//! content, full disk).

use std::path::PathBuf;

use cnpg_ext_exit::Exit;

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The reference does not parse.
    #[error("invalid image reference `{reference}`: {reason}")]
    BadReference { reference: String, reason: String },
    /// The registry does not know the repository, tag or digest.
    #[error("`{reference}`: registry {registry} has no such image: {answer}")]
    NotFound { reference: String, registry: String, answer: String },
    /// An index without an image for the wanted platform.
    #[error("`{reference}`: the image index has no image for {wanted}; platforms present: {present}")]
    PlatformNotFound { reference: String, wanted: String, present: String },
    /// Content the harness cannot use (schema 1 manifests, artifacts, unknown media types).
    #[error("`{reference}`: {reason}")]
    Unsupported { reference: String, reason: String },
    /// Credentials missing or refused.
    #[error("`{reference}`: registry {registry} refused access: {answer}")]
    Unauthorized { reference: String, registry: String, answer: String, hint: String },
    /// No connection, TLS failure or no answer in time.
    #[error("`{reference}`: cannot talk to registry {registry}: {answer}")]
    Unreachable { reference: String, registry: String, answer: String, hint: String },
    /// Content whose hash is not the digest it was asked for.
    #[error("`{reference}`: {what} {digest} from registry {registry} hashes to {actual}; the registry served corrupt or altered content")]
    DigestMismatch { reference: String, registry: String, what: String, digest: String, actual: String },
    /// Any other registry answer (5xx, protocol violations).
    #[error("`{reference}`: registry {registry} answered: {answer}")]
    Registry { reference: String, registry: String, answer: String },
    /// A credentials file that cannot be read or parsed.
    #[error("credentials file {}: {reason}", path.display())]
    AuthFile { path: PathBuf, reason: String },
    /// A CA certificate file that cannot be read.
    #[error("CA certificate file {}: {reason}", path.display())]
    CaFile { path: PathBuf, reason: String },
    /// The content cache cannot be written.
    #[error("image cache {}: {source}", path.display())]
    Cache {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl PullError {
    /// The harness exit code for this error.
    pub fn exit_code(&self) -> Exit {
        match self {
            PullError::BadReference { .. }
            | PullError::NotFound { .. }
            | PullError::PlatformNotFound { .. }
            | PullError::Unsupported { .. }
            | PullError::AuthFile { .. }
            | PullError::CaFile { .. } => Exit::Invalid,
            PullError::Unauthorized { .. }
            | PullError::Unreachable { .. }
            | PullError::DigestMismatch { .. }
            | PullError::Registry { .. }
            | PullError::Cache { .. } => Exit::Environment,
        }
    }

    /// What to do about it.
    pub fn hint(&self) -> String {
        match self {
            PullError::BadReference { .. } => {
                "write it as HOST[:PORT]/REPOSITORY[:TAG][@sha256:DIGEST], e.g. ghcr.io/org/pgvector:0.8.1-18-trixie"
                    .into()
            }
            PullError::NotFound { .. } => {
                "check the repository, tag or digest (the registry lists tags at /v2/<repository>/tags/list)".into()
            }
            PullError::PlatformNotFound { .. } => {
                "use an image built for this machine's platform, or run on a machine of one of the platforms present"
                    .into()
            }
            PullError::Unsupported { .. } => "publish the image as an OCI or Docker v2 image manifest".into(),
            PullError::Unauthorized { hint, .. } | PullError::Unreachable { hint, .. } => hint.clone(),
            PullError::DigestMismatch { .. } => {
                "nothing corrupt was cached; retry, and if it persists the registry storage is damaged".into()
            }
            PullError::Registry { .. } => "retry later; the registry itself failed".into(),
            PullError::AuthFile { .. } => {
                "fix or remove the file (it uses the docker config.json / containers auth.json format)".into()
            }
            PullError::CaFile { .. } => {
                "point CNPG_EXT_HARNESS_REGISTRY_CA at readable PEM files, separated by `:`".into()
            }
            PullError::Cache { .. } => {
                "make the cache directory writable or point CNPG_EXT_HARNESS_CACHE elsewhere".into()
            }
        }
    }
}
