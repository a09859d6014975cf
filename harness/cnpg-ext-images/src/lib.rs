//! OCI images for CloudNativePG image-volume extensions.
//!
//! * [`build_layout`] — reproducible FROM-scratch image (one gzip layer) as an
//!   OCI layout; [`write_oci_archive`] / [`write_docker_archive`] export it
//!   for `podman load` / `kind load image-archive`.
//! * [`unpack`] / [`inspect`] — read an OCI layout, OCI archive or
//!   docker-archive (auto-detected), verify every blob, select a platform and
//!   extract with hardened rules (see [`unpack()`]).
//! * [`lint::lint`] — check an extension image against the
//!   postgres-extensions-containers conventions and, from its binaries,
//!   against the operand ([`compat`]: PostgreSQL major, glibc, architecture,
//!   file access for uid 26).
//! * [`fixture::build_fixture`] — an extension image tree from a declarative
//!   recipe (`fixtures/<name>/fixture.yaml`): files copied from a PostgreSQL
//!   install, C compiled against its server headers, the image labels.
//! * [`cli`] — the `image build|unpack|lint` subcommands.

mod build;
pub mod cli;
pub mod compat;
pub mod control;
mod digest;
pub mod elf;
mod error;
mod extract;
pub mod fixture;
mod layout;
pub mod lint;
mod platform;
mod source;
pub mod spec;
mod unpack;
pub mod util;

pub use build::{
    build_layout, validate_reference, write_docker_archive, write_oci_archive, BuildOptions, BuiltImage, CREATED,
    GZIP_LEVEL,
};
pub use digest::sha256_digest;
pub use error::ImageError;
pub use layout::ImageFormat;
pub use platform::{host_arch, normalize_arch, Platform};
pub use unpack::{
    inspect, unpack, ImageConfigSummary, ImageSummary, UnpackOptions, UnpackedImage, DEFAULT_MAX_ENTRIES,
    DEFAULT_MAX_TOTAL_BYTES,
};

/// Label: the operand image the extension is built for
/// (`ghcr.io/cloudnative-pg/postgresql:18-minimal-trixie`), not the extension's name.
pub const LABEL_BASE_NAME: &str = "io.cloudnativepg.image.base.name";
/// Label (OCI): the image's title; the extension containers project writes
/// `<name> <version> <pg major> <os>`, whose first word names the extension entry.
pub const LABEL_TITLE: &str = "org.opencontainers.image.title";
/// Label: PostgreSQL major version.
pub const LABEL_BASE_PGMAJOR: &str = "io.cloudnativepg.image.base.pgmajor";
/// Label: OS distribution (e.g. `trixie`).
pub const LABEL_BASE_OS: &str = "io.cloudnativepg.image.base.os";
/// Label: extension SQL version.
pub const LABEL_SQL_VERSION: &str = "io.cloudnativepg.image.sql.version";

/// For fuzzing: parse an `index.json` / manifest document as the reader would.
#[doc(hidden)]
pub fn fuzz_parse_documents(bytes: &[u8]) {
    let p = std::path::Path::new("fuzz");
    let _ = layout::parse_index(p, bytes);
    let _ = serde_json::from_slice::<spec::Manifest>(bytes);
    let _ = serde_json::from_slice::<spec::ImageConfig>(bytes);
    let _ = serde_json::from_slice::<Vec<spec::DockerArchiveEntry>>(bytes);
}

/// For fuzzing: apply `layer` (gzip, zstd or plain tar bytes) into the empty
/// directory `root` with the default limits.
#[doc(hidden)]
pub fn fuzz_apply_layer(layer: &[u8], root: &std::path::Path) -> Result<(), ImageError> {
    let mut ex = extract::Extractor::new(root, extract::Limits { max_bytes: 64 << 20, max_entries: 10_000 })
        .map_err(|e| ImageError::io(root, e))?;
    let ctx = extract::LayerCtx { image: std::path::Path::new("fuzz"), layer: "fuzz" };
    ex.apply_layer(layer, None, &ctx)?;
    ex.finish().map_err(|e| ImageError::io(root, e))
}
