//! Registry credentials from the files `docker login` and `podman login` write.
//!
//! Files are consulted in this order; the first that has an entry for the registry wins:
//! `$REGISTRY_AUTH_FILE` (containers auth.json), `$DOCKER_CONFIG/config.json`, else
//! `~/.docker/config.json`. Both formats keep `{"auths": {KEY: ENTRY}}`, where KEY is a
//! registry host (optionally with a scheme, a `/v1/` suffix or — in auth.json — a repository
//! path) and ENTRY has `auth` (base64 `user:password`), or `username` + `password`, and/or
//! `registrytoken` (sent as a bearer token). Basic credentials are also what the token
//! endpoint of a bearer-token registry is asked with.

use std::path::{Path, PathBuf};

use base64::Engine as _;

use crate::error::PullError;

/// Credentials found for one registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    Basic { username: String, password: String },
    Bearer(String),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
            Credential::Bearer(_) => write!(f, "Bearer(<redacted>)"),
        }
    }
}

/// Where credentials came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub credential: Credential,
    pub file: PathBuf,
    pub key: String,
}

/// The credentials files to consult, in order, from the environment.
#[derive(Debug, Clone, Default)]
pub struct AuthFiles {
    /// `REGISTRY_AUTH_FILE`: must exist when set.
    pub explicit: Option<PathBuf>,
    /// `DOCKER_CONFIG/config.json` or `~/.docker/config.json`: may be absent.
    pub docker: Option<PathBuf>,
}

impl AuthFiles {
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        let docker = match var("DOCKER_CONFIG") {
            Some(dir) => Some(dir.join("config.json")),
            None => var("HOME").map(|h| h.join(".docker").join("config.json")),
        };
        AuthFiles { explicit: var("REGISTRY_AUTH_FILE"), docker }
    }

    /// Credentials for `repository` on `registry` (`host[:port]`), or `None` (anonymous).
    /// A credential helper (`credHelpers`/`credsStore`) is not run: `notes` says so.
    pub fn lookup(
        &self,
        registry: &str,
        repository: &str,
        notes: &mut Vec<String>,
    ) -> Result<Option<Found>, PullError> {
        if let Some(f) = &self.explicit {
            if !f.is_file() {
                return Err(PullError::AuthFile {
                    path: f.clone(),
                    reason: "REGISTRY_AUTH_FILE names a file that does not exist".into(),
                });
            }
            if let Some(found) = lookup_file(f, registry, repository, notes)? {
                return Ok(Some(found));
            }
        }
        if let Some(f) = &self.docker {
            if f.is_file() {
                if let Some(found) = lookup_file(f, registry, repository, notes)? {
                    return Ok(Some(found));
                }
            }
        }
        Ok(None)
    }

    /// The files that would be read, for messages.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(f) = &self.explicit {
            parts.push(format!("{} (REGISTRY_AUTH_FILE)", f.display()));
        }
        if let Some(f) = &self.docker {
            parts.push(f.display().to_string());
        }
        if parts.is_empty() {
            "no credentials file (set REGISTRY_AUTH_FILE or DOCKER_CONFIG)".into()
        } else {
            parts.join(", ")
        }
    }
}

/// The registry host a config key names: scheme and path stripped, Docker Hub aliases folded.
fn key_host(key: &str) -> (String, String) {
    let k = key.trim_start_matches("https://").trim_start_matches("http://");
    let (host, path) = match k.split_once('/') {
        Some((h, p)) => (h, p.trim_end_matches('/')),
        None => (k, ""),
    };
    // `https://index.docker.io/v1/` is how docker writes Docker Hub.
    let path = if path == "v1" || path == "v2" { "" } else { path };
    (fold_hub(host), path.to_string())
}

fn fold_hub(host: &str) -> String {
    match host {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io".into(),
        h => h.to_string(),
    }
}

fn lookup_file(
    file: &Path,
    registry: &str,
    repository: &str,
    notes: &mut Vec<String>,
) -> Result<Option<Found>, PullError> {
    let bad = |reason: String| PullError::AuthFile { path: file.to_path_buf(), reason };
    let text = std::fs::read_to_string(file).map_err(|e| bad(format!("cannot read: {e}")))?;
    let doc: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let want = fold_hub(registry);
    for helper_key in ["credHelpers"] {
        if let Some(map) = doc.get(helper_key).and_then(|v| v.as_object()) {
            if map.keys().any(|k| key_host(k).0 == want) {
                notes.push(format!(
                    "{} sends {registry} to a credential helper, which this harness does not run",
                    file.display()
                ));
            }
        }
    }
    if doc.get("credsStore").and_then(|v| v.as_str()).is_some() {
        notes.push(format!("{} has a credsStore, which this harness does not run", file.display()));
    }
    let Some(auths) = doc.get("auths") else { return Ok(None) };
    let auths = auths.as_object().ok_or_else(|| bad("`auths` is not an object".into()))?;
    // The most specific key wins: `host/ns/repo` over `host/ns` over `host`.
    let mut best: Option<(usize, &String, &serde_json::Value)> = None;
    for (key, entry) in auths {
        let (host, path) = key_host(key);
        if host != want {
            continue;
        }
        let matches = path.is_empty() || repository == path || repository.starts_with(&format!("{path}/"));
        if matches && best.is_none_or(|(len, _, _)| path.len() > len) {
            best = Some((path.len(), key, entry));
        }
    }
    let Some((_, key, entry)) = best else { return Ok(None) };
    let field = |name: &str| entry.get(name).and_then(|v| v.as_str()).filter(|s| !s.is_empty());
    let credential = if let Some(token) = field("registrytoken") {
        Credential::Bearer(token.to_string())
    } else if let Some(encoded) = field("auth") {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|e| bad(format!("auths.{key}.auth is not base64: {e}")))?;
        let raw = String::from_utf8(raw).map_err(|_| bad(format!("auths.{key}.auth is not UTF-8 once decoded")))?;
        let (u, p) =
            raw.split_once(':').ok_or_else(|| bad(format!("auths.{key}.auth does not decode to user:password")))?;
        Credential::Basic { username: u.to_string(), password: p.to_string() }
    } else if let (Some(u), Some(p)) = (field("username"), field("password")) {
        Credential::Basic { username: u.to_string(), password: p.to_string() }
    } else if field("identitytoken").is_some() {
        return Err(bad(format!(
            "auths.{key} has only an `identitytoken` (an OAuth refresh token), which this harness cannot exchange; add `auth` (base64 user:password) or `registrytoken`"
        )));
    } else {
        return Err(bad(format!("auths.{key} has neither `auth`, `username`/`password` nor `registrytoken`")));
    };
    Ok(Some(Found { credential, file: file.to_path_buf(), key: key.clone() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path, text: &str) -> AuthFiles {
        let f = dir.join("auth.json");
        std::fs::write(&f, text).unwrap();
        AuthFiles { explicit: Some(f), docker: None }
    }

    #[test]
    fn basic_from_auth_field_and_most_specific_key() {
        let d = tempfile::tempdir().unwrap();
        let a = files(
            d.path(),
            r#"{"auths": {"127.0.0.1:5000": {"auth": "YWxpY2U6czNjcmV0"},
                          "https://127.0.0.1:5000/team": {"username": "bob", "password": "pw"}}}"#,
        );
        let mut notes = Vec::new();
        let f = a.lookup("127.0.0.1:5000", "other/img", &mut notes).unwrap().unwrap();
        assert_eq!(f.credential, Credential::Basic { username: "alice".into(), password: "s3cret".into() });
        let f = a.lookup("127.0.0.1:5000", "team/img", &mut notes).unwrap().unwrap();
        assert_eq!(f.credential, Credential::Basic { username: "bob".into(), password: "pw".into() });
        assert!(a.lookup("127.0.0.1:5001", "team/img", &mut notes).unwrap().is_none());
    }

    #[test]
    fn bearer_and_hub_aliases() {
        let d = tempfile::tempdir().unwrap();
        let a = files(d.path(), r#"{"auths": {"https://index.docker.io/v1/": {"registrytoken": "tok"}}}"#);
        let f = a.lookup("index.docker.io", "library/x", &mut Vec::new()).unwrap().unwrap();
        assert_eq!(f.credential, Credential::Bearer("tok".into()));
    }

    #[test]
    fn malformed_files_name_the_file_and_key() {
        let d = tempfile::tempdir().unwrap();
        let e = files(d.path(), "{not json").lookup("h", "r", &mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("auth.json") && e.to_string().contains("not valid JSON"), "{e}");
        let e = files(d.path(), r#"{"auths": {"h": {"auth": "!!"}}}"#).lookup("h", "r", &mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("auths.h.auth is not base64"), "{e}");
        let e = files(d.path(), r#"{"auths": {"h": {"identitytoken": "x"}}}"#)
            .lookup("h", "r", &mut Vec::new())
            .unwrap_err();
        assert!(e.to_string().contains("identitytoken"), "{e}");
        let missing = AuthFiles { explicit: Some(d.path().join("nope.json")), docker: None };
        let e = missing.lookup("h", "r", &mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("nope.json") && e.exit_code() == 2, "{e}");
    }

    #[test]
    fn helpers_are_reported_not_run() {
        let d = tempfile::tempdir().unwrap();
        let a = files(d.path(), r#"{"credHelpers": {"ghcr.io": "gh"}, "auths": {}}"#);
        let mut notes = Vec::new();
        assert!(a.lookup("ghcr.io", "org/x", &mut notes).unwrap().is_none());
        assert!(notes[0].contains("credential helper"), "{notes:?}");
    }
}
