//! Test support for every cnpg-ext crate (a dev-dependency only, never in a binary).
//!
//! [`cannot_run`] is the project's one rule for a test that cannot run on this host (no
//! container engine, no chromium, no `cc`, no registry tools): it says so on stderr and the
//! test returns — unless `CI=true`, or the matching `CNPG_EXT_HARNESS_REQUIRE_*` variable is
//! set, where the skip is a failure. With the `registry` feature, `registry` runs a real
//! registry on 127.0.0.1 for pull tests.

#[cfg(feature = "registry")]
pub mod registry;

/// `CNPG_EXT_HARNESS_REQUIRE_ENGINE`: a missing or unusable container engine fails the test.
pub const REQUIRE_ENGINE: &str = "CNPG_EXT_HARNESS_REQUIRE_ENGINE";
/// `CNPG_EXT_HARNESS_REQUIRE_CHROMIUM`: a missing chromium (page screenshots) fails the test.
pub const REQUIRE_CHROMIUM: &str = "CNPG_EXT_HARNESS_REQUIRE_CHROMIUM";
/// `CNPG_EXT_HARNESS_REQUIRE_CC`: a missing C compiler fails the test.
pub const REQUIRE_CC: &str = "CNPG_EXT_HARNESS_REQUIRE_CC";
/// `CNPG_EXT_HARNESS_REQUIRE_REGISTRY`: missing registry tools fail the test.
pub const REQUIRE_REGISTRY: &str = "CNPG_EXT_HARNESS_REQUIRE_REGISTRY";

/// Why a skip must be a failure here, if it must: `CI=true` (or `1`), or `require` set to
/// anything but empty, `0` or `false`.
pub fn skip_is_failure(require: Option<&str>) -> Option<String> {
    let ci = std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
    let required = require.filter(|var| std::env::var(var).is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false")));
    match required {
        Some(var) => Some(format!("{var} is set")),
        None if ci => Some("CI=true".into()),
        None => None,
    }
}

/// The one rule for a test that cannot run here: it says so on stderr and returns; under
/// `CI=true` (set by CI), or with `require` (e.g. [`REQUIRE_ENGINE`]) set to anything but
/// empty, `0` or `false`, the skip is a failure instead (a panic naming why).
pub fn cannot_run(why: &str, require: Option<&str>) {
    if let Some(by) = skip_is_failure(require) {
        panic!("cannot run: {why} (a skip is a failure because {by})");
    }
    let hint = require
        .map(|v| format!("; set {v}=1 or CI=true to fail instead"))
        .unwrap_or_else(|| "; CI=true fails instead".into());
    eprintln!("SKIPPED: {why}{hint}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_skip_fails_when_required_and_passes_quietly_otherwise() {
        // One variable nobody sets, so the test does not depend on the caller's environment
        // except CI, which decides the second half.
        let var = "CNPG_EXT_TESTUTIL_SELFTEST_REQUIRE";
        std::env::remove_var(var);
        let ci = skip_is_failure(None).is_some();
        assert_eq!(skip_is_failure(Some(var)).is_some(), ci);
        std::env::set_var(var, "0");
        assert_eq!(skip_is_failure(Some(var)).is_some(), ci, "0 does not require");
        std::env::set_var(var, "1");
        assert_eq!(skip_is_failure(Some(var)), Some(format!("{var} is set")));
        let caught = std::panic::catch_unwind(|| cannot_run("nothing here", Some(var)));
        assert!(caught.is_err(), "a required skip panics");
        std::env::remove_var(var);
    }
}
