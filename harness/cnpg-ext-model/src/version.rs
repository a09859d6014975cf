//! CloudNativePG operator versions: behaviour that changed between releases is keyed on them.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CnpgVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl CnpgVersion {
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        CnpgVersion { major, minor, patch }
    }

    /// The release the harness models by default (the newest one it knows; equals
    /// `default` in `kind-config/cnpg-versions.yaml`, checked by a test).
    pub const DEFAULT: CnpgVersion = CnpgVersion::new(1, 30, 1);

    /// First release with `spec.postgresql.extensions`.
    pub const FIRST_WITH_EXTENSIONS: CnpgVersion = CnpgVersion::new(1, 27, 0);

    /// First release that applies `bin_path`, `env` and extensions declared in image
    /// catalogs, and that checks `ld_library_path` / `bin_path` and `..` in every path list.
    pub const FIRST_WITH_EXTENSION_ENV: CnpgVersion = CnpgVersion::new(1, 29, 0);

    /// `bin_path`, `env`, catalog extensions: applied from 1.29.0.
    pub fn applies_extension_env(&self) -> bool {
        *self >= Self::FIRST_WITH_EXTENSION_ENV
    }

    /// The webhook's path checks cover `ld_library_path` and `bin_path` and refuse paths
    /// that leave the image with `..` (1.29.0+); before, only the first two lists are
    /// checked, for empty and duplicate entries.
    pub fn checks_every_path_list(&self) -> bool {
        *self >= Self::FIRST_WITH_EXTENSION_ENV
    }

    /// The CRD limits extension names to 59 characters: 1.29.2 on the 1.29 line, 1.30.0 on.
    pub fn limits_name_length(&self) -> bool {
        match (self.major, self.minor) {
            (1, m) if m < 29 => false,
            (1, 29) => *self >= CnpgVersion::new(1, 29, 2),
            _ => true,
        }
    }

    /// 1.27.4+ and 1.28.2+ carry `bin_path` and `env` in their schema without applying
    /// them; earlier patch releases prune them as unknown fields.
    pub fn knows_extension_env_fields(&self) -> bool {
        self.at_least_on_line(CnpgVersion::new(1, 27, 4), CnpgVersion::new(1, 28, 2))
    }

    /// Underscores in extension names (PR #9386): 1.27.3 on the 1.27 line, 1.28.1 on 1.28.
    pub fn allows_underscore_names(&self) -> bool {
        self.at_least_on_line(CnpgVersion::new(1, 27, 3), CnpgVersion::new(1, 28, 1))
    }

    /// Pod volume names `ext-<name>` (issue #9972): 1.27.4 on 1.27, 1.28.2 on 1.28.
    pub fn prefixes_volume_names(&self) -> bool {
        self.at_least_on_line(CnpgVersion::new(1, 27, 4), CnpgVersion::new(1, 28, 2))
    }

    /// A fix that landed on the 1.27 line at `on_127` and on the 1.28 line at `on_128`;
    /// every later minor has it.
    fn at_least_on_line(&self, on_127: CnpgVersion, on_128: CnpgVersion) -> bool {
        match (self.major, self.minor) {
            (1, m) if m < 27 => false,
            (1, 27) => *self >= on_127,
            (1, 28) => *self >= on_128,
            _ => true,
        }
    }
}

impl fmt::Display for CnpgVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl FromStr for CnpgVersion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim().trim_start_matches('v');
        let parts: Vec<&str> = t.split('.').collect();
        let num = |p: Option<&&str>| -> Result<u32, String> {
            match p {
                None => Ok(0),
                Some(x) => x.parse::<u32>().map_err(|_| format!("`{s}` is not a CloudNativePG version like 1.27.1")),
            }
        };
        if parts.is_empty() || parts.len() > 3 || parts[0].is_empty() {
            return Err(format!("`{s}` is not a CloudNativePG version like 1.27.1"));
        }
        Ok(CnpgVersion::new(num(parts.first())?, num(parts.get(1))?, num(parts.get(2))?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_orders() {
        let v: CnpgVersion = "v1.27.3".parse().unwrap();
        assert_eq!(v, CnpgVersion::new(1, 27, 3));
        assert!(v < CnpgVersion::new(1, 28, 0));
        assert!("1.x".parse::<CnpgVersion>().is_err());
    }

    #[test]
    fn underscore_support_by_line() {
        assert!(!CnpgVersion::new(1, 27, 2).allows_underscore_names());
        assert!(CnpgVersion::new(1, 27, 3).allows_underscore_names());
        assert!(!CnpgVersion::new(1, 28, 0).allows_underscore_names());
        assert!(CnpgVersion::new(1, 28, 1).allows_underscore_names());
        assert!(CnpgVersion::new(1, 29, 0).allows_underscore_names());
    }

    #[test]
    fn volume_prefix_by_line() {
        assert!(!CnpgVersion::new(1, 27, 3).prefixes_volume_names());
        assert!(CnpgVersion::new(1, 27, 4).prefixes_volume_names());
        assert!(!CnpgVersion::new(1, 28, 1).prefixes_volume_names());
        assert!(CnpgVersion::new(1, 28, 2).prefixes_volume_names());
        assert!(CnpgVersion::new(1, 30, 0).prefixes_volume_names());
    }

    #[test]
    fn releases_1_29_and_later() {
        assert!(!CnpgVersion::new(1, 28, 2).applies_extension_env());
        assert!(CnpgVersion::new(1, 29, 0).applies_extension_env());
        assert!(!CnpgVersion::new(1, 28, 4).checks_every_path_list());
        assert!(CnpgVersion::new(1, 29, 0).checks_every_path_list());
        assert!(!CnpgVersion::new(1, 29, 1).limits_name_length());
        assert!(CnpgVersion::new(1, 29, 2).limits_name_length());
        assert!(CnpgVersion::new(1, 30, 0).limits_name_length());
        assert!(!CnpgVersion::new(1, 28, 1).knows_extension_env_fields());
        assert!(CnpgVersion::new(1, 28, 2).knows_extension_env_fields());
        assert!(CnpgVersion::new(1, 27, 4).knows_extension_env_fields());
        assert!(!CnpgVersion::new(1, 27, 2).knows_extension_env_fields());
    }
}
