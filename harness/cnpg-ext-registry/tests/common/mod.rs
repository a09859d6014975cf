//! Pull options and credentials files for the registry tests; the registry and the images
//! pushed to it are `cnpg_ext_testutil::registry`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use cnpg_ext_testutil::registry::*;

/// Pull options for tests: a private cache, the registry insecure, no credentials files.
pub fn options(cache: &Path, insecure: &[&str]) -> cnpg_ext_registry::PullOptions {
    let mut o = cnpg_ext_registry::PullOptions::new(cache.to_path_buf());
    o.insecure = insecure.iter().map(|s| s.to_string()).collect();
    o.auth = cnpg_ext_registry::auth::AuthFiles::default();
    o.progress = false;
    o.timeout = Duration::from_secs(10);
    o.connect_timeout = Duration::from_secs(5);
    o
}

/// A credentials file in the containers auth.json format.
pub fn auth_file(dir: &Path, registry: &str, user: &str, pass: &str) -> PathBuf {
    use base64::Engine as _;
    let f = dir.join(format!("auth-{user}.json"));
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    std::fs::write(&f, serde_json::json!({"auths": {registry: {"auth": auth}}}).to_string()).unwrap();
    f
}
