//! `--image REF=SOURCE` (and a matrix's `axes.images`): the image mounted under `REF` comes
//! from `SOURCE` instead of where the scenario says — a registry reference (pulled, verified,
//! by tag or digest), `fixture:DIR` (a recipe) or `oci:PATH` (a layout or archive). The
//! Cluster manifests keep naming `REF`; the report records the digest that ran.

use std::collections::BTreeMap;
use std::path::PathBuf;

use cnpg_ext_model::scenario::{ImageOrigin, ImageSpec};

use crate::error::HarnessError;
use crate::images::pull::Registries;

/// What a SOURCE names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    Fixture(PathBuf),
    Oci(PathBuf),
    Pull(String),
}

/// `REF=SOURCE` → `(REF, SOURCE)`.
pub(crate) fn parse_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((r, src)) if !r.is_empty() && !src.is_empty() => Ok((r.to_string(), src.to_string())),
        _ => Err(format!("`{s}`: write REF=SOURCE (SOURCE: a registry reference, fixture:DIR or oci:PATH)")),
    }
}

pub(crate) fn parse_source(s: &str) -> Source {
    if let Some(p) = s.strip_prefix("fixture:") {
        Source::Fixture(PathBuf::from(p))
    } else if let Some(p) = s.strip_prefix("oci:") {
        Source::Oci(PathBuf::from(p))
    } else {
        Source::Pull(s.to_string())
    }
}

/// The specs with every substitution applied. A substitution whose REF no scenario uses is
/// an error (a typo would otherwise run the original image and pass).
pub(crate) fn apply(
    specs: Vec<ImageSpec>,
    sources: &BTreeMap<String, String>,
    registries: &Registries,
) -> Result<Vec<ImageSpec>, HarnessError> {
    for r in sources.keys() {
        if !specs.iter().any(|s| &s.reference == r) {
            let used: Vec<&str> = specs.iter().map(|s| s.reference.as_str()).collect();
            return Err(HarnessError::Input(format!(
                "--image {r}=…: no scenario uses the image `{r}` (they use: {})",
                used.join(", ")
            )));
        }
    }
    let mut resolved: BTreeMap<String, ImageOrigin> = BTreeMap::new();
    for (r, src) in sources {
        let origin = match parse_source(src) {
            Source::Fixture(p) => {
                let p = p.canonicalize().map_err(|e| HarnessError::Input(format!("--image {r}={src}: {e}")))?;
                ImageOrigin::Fixture(p)
            }
            Source::Oci(p) => {
                if !p.exists() {
                    return Err(HarnessError::Input(format!("--image {r}={src}: {} does not exist", p.display())));
                }
                ImageOrigin::Oci(p)
            }
            Source::Pull(reference) => ImageOrigin::Oci(registries.pull_blocking(&reference, true)?.layout),
        };
        resolved.insert(r.clone(), origin);
    }
    Ok(specs
        .into_iter()
        .map(|s| match resolved.get(&s.reference) {
            Some(o) => ImageSpec { reference: s.reference, origin: o.clone() },
            None => s,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_told_apart() {
        assert_eq!(parse_source("fixture:fixtures/x"), Source::Fixture("fixtures/x".into()));
        assert_eq!(parse_source("oci:/tmp/a.tar"), Source::Oci("/tmp/a.tar".into()));
        assert_eq!(parse_source("ghcr.io/a/b:1"), Source::Pull("ghcr.io/a/b:1".into()));
        assert!(parse_pair("a").is_err());
        assert_eq!(parse_pair("a:1=b@sha256:x").unwrap(), ("a:1".into(), "b@sha256:x".into()));
    }

    #[test]
    fn a_substitution_nobody_uses_is_refused() {
        let specs = vec![ImageSpec { reference: "r:1".into(), origin: ImageOrigin::Pull }];
        let sources = BTreeMap::from([("r:2".to_string(), "fixture:.".to_string())]);
        let err = apply(specs, &sources, &Registries::default()).unwrap_err().to_string();
        assert!(err.contains("no scenario uses the image `r:2`") && err.contains("r:1"), "{err}");
    }
}
