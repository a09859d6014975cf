//! The crate's error type. Every message names the image path and, where one
//! is involved, the blob digest or layer entry; a fixture error names the
//! recipe file and the field.

use std::path::PathBuf;

/// Errors of build, unpack, inspect, lint and fixture builds.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// An I/O error on a named file.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The path is not an OCI layout, OCI archive or docker-archive.
    #[error("{}: not an image: {reason}", path.display())]
    NotAnImage { path: PathBuf, reason: String },
    /// A JSON document (index, manifest, config) does not parse.
    #[error("{}: {what} is not valid JSON: {source}", image.display())]
    Json {
        image: PathBuf,
        what: String,
        #[source]
        source: serde_json::Error,
    },
    /// A structurally wrong document (missing field, bad value).
    #[error("{}: {what}: {reason}", image.display())]
    Invalid { image: PathBuf, what: String, reason: String },
    /// A blob a descriptor points to is absent.
    #[error("{}: blob {digest} ({what}) is missing", image.display())]
    BlobMissing { image: PathBuf, digest: String, what: String },
    /// The blob content does not hash to its descriptor's digest.
    #[error("{}: blob {digest} ({what}) has sha256:{actual}; it is corrupt or was altered", image.display())]
    DigestMismatch { image: PathBuf, digest: String, what: String, actual: String },
    /// The blob size differs from its descriptor's size.
    #[error("{}: blob {digest} ({what}) is {actual} bytes, its descriptor says {expected}", image.display())]
    SizeMismatch { image: PathBuf, digest: String, what: String, expected: u64, actual: u64 },
    /// A digest that is not `sha256:<64 lowercase hex>`.
    #[error("{}: unsupported or malformed digest {digest:?} ({what})", image.display())]
    BadDigest { image: PathBuf, digest: String, what: String },
    /// A media type the reader does not handle.
    #[error("{}: unsupported media type {media_type:?} ({what})", image.display())]
    UnsupportedMediaType { image: PathBuf, media_type: String, what: String },
    /// No manifest for the requested platform.
    #[error("{}: no image for platform {wanted}; available: {}", image.display(), if available.is_empty() { "none".to_string() } else { available.join(", ") })]
    PlatformNotFound { image: PathBuf, wanted: String, available: Vec<String> },
    /// A layer entry that would be unsafe to write.
    #[error("{}: layer {layer}: entry {entry:?} rejected: {reason}", image.display())]
    UnsafeEntry { image: PathBuf, layer: String, entry: String, reason: String },
    /// Total size or entry count over the configured cap.
    #[error("{}: layer {layer}: entry {entry:?}: {what} exceeds the limit of {limit} (raise it with --max-bytes / --max-entries if the image is trusted)", image.display())]
    LimitExceeded { image: PathBuf, layer: String, entry: String, what: String, limit: u64 },
    /// A layer that cannot be read: truncated or corrupt compression or tar.
    #[error("{}: layer {layer} is corrupt or truncated: {source}", image.display())]
    CorruptLayer {
        image: PathBuf,
        layer: String,
        #[source]
        source: std::io::Error,
    },
    /// The unpack destination already exists.
    #[error("{}: destination already exists; remove it or choose another", path.display())]
    DestExists { path: PathBuf },
    /// A source tree cannot be built into an image.
    #[error("{}: cannot build: {reason}", path.display())]
    Build { path: PathBuf, reason: String },
    /// An image reference that cannot be used.
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },
    /// Any other invalid argument.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A fixture recipe is invalid (or its sources do not compile). `field` is the path of the
    /// offending recipe field, e.g. `steps[2].compile.sources[0]`.
    #[error("{}: {field}: {message}", file.display())]
    Fixture { file: PathBuf, field: String, message: String },
    /// A program a build needs is missing; the message says what to install or set.
    #[error("not found: {0}")]
    ToolMissing(String),
}

impl ImageError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ImageError::Io { path: path.into(), source }
    }

    /// A short hint telling the user what to do about this error.
    pub fn hint(&self) -> &'static str {
        match self {
            ImageError::Io { .. } => "check the path exists and is readable",
            ImageError::NotAnImage { .. } => "pass an OCI layout directory, an OCI archive or a docker-archive tar",
            ImageError::Json { .. } | ImageError::Invalid { .. } => {
                "the image metadata is malformed; rebuild or re-export the image"
            }
            ImageError::BlobMissing { .. }
            | ImageError::DigestMismatch { .. }
            | ImageError::SizeMismatch { .. }
            | ImageError::CorruptLayer { .. } => "the image is incomplete or corrupt; re-export or re-pull it",
            ImageError::BadDigest { .. } | ImageError::UnsupportedMediaType { .. } => {
                "re-export the image with sha256 digests and standard OCI/docker media types"
            }
            ImageError::PlatformNotFound { .. } => {
                "pass --platform with one of the available platforms, or build for this one"
            }
            ImageError::UnsafeEntry { .. } => "the image contains an unsafe entry; do not use it, fix how it is built",
            ImageError::LimitExceeded { .. } => "raise --max-bytes / --max-entries only for a trusted image",
            ImageError::DestExists { .. } => "choose a destination that does not exist",
            ImageError::Build { .. } => "fix the source tree",
            ImageError::InvalidReference { .. } => {
                "use a reference like registry/name:tag, e.g. ghcr.io/org/pgvector:0.8.1-18-trixie"
            }
            ImageError::InvalidArgument(_) => "see --help",
            ImageError::Fixture { .. } => "fix the named field of the fixture recipe",
            ImageError::ToolMissing(_) => "install the program named, or set the variable named",
        }
    }
}
