//! Platforms (`os/arch[/variant]`) and the host default.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// An image platform as found in an OCI index or image config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// Normalize an architecture name to its OCI (GOARCH) spelling.
pub fn normalize_arch(arch: &str) -> String {
    match arch {
        "x86_64" | "x86-64" => "amd64".into(),
        "aarch64" => "arm64".into(),
        other => other.to_string(),
    }
}

/// The host's architecture in OCI spelling (`amd64` on x86_64, `arm64` on aarch64).
pub fn host_arch() -> String {
    normalize_arch(std::env::consts::ARCH)
}

impl Platform {
    /// `linux/<arch>`.
    pub fn linux(arch: &str) -> Self {
        Platform { architecture: normalize_arch(arch), os: "linux".into(), variant: None }
    }

    /// `linux/<host arch>`.
    pub fn host() -> Self {
        Platform::linux(&host_arch())
    }

    /// Whether an image of platform `have` satisfies this requested platform.
    /// A requested variant must match (`arm64` has the implied variant `v8`);
    /// no requested variant accepts any.
    pub fn accepts(&self, have: &Platform) -> bool {
        if self.os != have.os || normalize_arch(&self.architecture) != normalize_arch(&have.architecture) {
            return false;
        }
        match &self.variant {
            None => true,
            Some(v) => {
                let implied = |p: &Platform| {
                    p.variant.clone().or_else(|| (normalize_arch(&p.architecture) == "arm64").then(|| "v8".to_string()))
                };
                implied(have).as_deref() == Some(v.as_str())
            }
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl FromStr for Platform {
    type Err = String;
    /// Parse `os/arch[/variant]`, or a bare `arch` meaning `linux/arch`.
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split('/').collect();
        let bad = || format!("invalid platform {s:?}: expected os/arch[/variant], e.g. linux/amd64");
        if parts.iter().any(|p| p.is_empty()) {
            return Err(bad());
        }
        match parts.as_slice() {
            [arch] => Ok(Platform::linux(arch)),
            [os, arch] => Ok(Platform { os: os.to_string(), architecture: normalize_arch(arch), variant: None }),
            [os, arch, variant] => Ok(Platform {
                os: os.to_string(),
                architecture: normalize_arch(arch),
                variant: Some(variant.to_string()),
            }),
            _ => Err(bad()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_match() {
        let p: Platform = "linux/arm64/v8".parse().unwrap();
        assert!(p.accepts(&Platform::linux("aarch64")));
        assert!(!p.accepts(&Platform::linux("amd64")));
        let any: Platform = "linux/arm64".parse().unwrap();
        assert!(any.accepts(&Platform { variant: Some("v8".into()), ..Platform::linux("arm64") }));
        assert!("linux//x".parse::<Platform>().is_err());
        assert_eq!("amd64".parse::<Platform>().unwrap().to_string(), "linux/amd64");
    }
}
