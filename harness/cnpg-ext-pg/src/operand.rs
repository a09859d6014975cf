//! The stand-in operand: what CloudNativePG's PostgreSQL images hold, made from an install.
//!
//! CNPG's operand images (`ghcr.io/cloudnative-pg/postgresql:18-minimal-<distro>` and
//! `…-standard-…`, built in the `cloudnative-pg/postgres-containers` repository) install
//! PGDG's `postgresql-18` package: the server, the procedural languages and **all of contrib**.
//! The `standard` flavour adds a few third-party extensions (pgaudit, pg_failover_slots,
//! pgvector). Because the operator searches `$system` / `$libdir` first, an image that
//! carries one of these is never used on a real cluster — so the stand-in must hold them too,
//! or a test would pass here and prove nothing there.
//!
//! The stand-in keeps, from the install it is made of, the extensions of the chosen flavour
//! that the install has (the pinned wheel lacks a few contrib modules that need libraries it
//! does not ship, e.g. pgcrypto) and drops every other extension (e.g. the wheel's pgvector
//! for `minimal`, or anything a user installed into a system PostgreSQL).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;

use crate::{Exclusions, PgInstall};

pub use cnpg_ext_images::compat::{CORE_AND_CONTRIB_18, STANDARD_EXTRAS};

/// Which CNPG operand image the stand-in imitates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OperandFlavor {
    #[default]
    Minimal,
    Standard,
}

impl OperandFlavor {
    pub fn parse(s: &str) -> Option<OperandFlavor> {
        match s {
            "minimal" => Some(OperandFlavor::Minimal),
            "standard" => Some(OperandFlavor::Standard),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            OperandFlavor::Minimal => "minimal",
            OperandFlavor::Standard => "standard",
        }
    }

    /// Whether an operand of this flavour ships extension `name`.
    pub fn allows(self, name: &str) -> bool {
        cnpg_ext_images::compat::operand_ships(self.as_str(), name) == Some(true)
    }
}

/// The operand an install gives for a flavour: what it keeps and what a copy must leave out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperandContents {
    pub flavor: OperandFlavor,
    /// Extensions (control names) the operand ships, sorted.
    pub extensions: Vec<String>,
    /// What [`PgInstall::minimal_copy`] must leave out to make it.
    pub exclusions: Exclusions,
}

impl PgInstall {
    /// The extensions of this install an operand of `flavor` keeps, and the exclusions that
    /// make it: every other control file and its SQL scripts, and the modules those control
    /// files name (`module_pathname`) or that carry their name, unless a kept extension
    /// needs the same module.
    pub fn operand(&self, flavor: OperandFlavor) -> std::io::Result<OperandContents> {
        let dir = self.extension_dir();
        let mut kept = BTreeSet::new();
        let mut dropped = BTreeSet::new();
        let mut kept_modules = BTreeSet::new();
        let mut dropped_modules = BTreeSet::new();
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".control")) else {
                continue;
            };
            let modules: Vec<String> = module_of(&path).into_iter().chain(std::iter::once(name.to_string())).collect();
            if flavor.allows(name) {
                kept.insert(name.to_string());
                kept_modules.extend(modules);
            } else {
                dropped.insert(name.to_string());
                dropped_modules.extend(modules);
            }
        }
        let modules: Vec<String> = dropped_modules.difference(&kept_modules).cloned().collect();
        Ok(OperandContents {
            flavor,
            extensions: kept.into_iter().collect(),
            exclusions: Exclusions { extensions: dropped.into_iter().collect(), modules },
        })
    }
}

/// `module_pathname = '$libdir/vector'` → `vector` (the control file read by the linter's parser).
fn module_of(control: &Path) -> Option<String> {
    let text = std::fs::read_to_string(control).ok()?;
    let parsed = cnpg_ext_images::control::parse_control(&text).ok()?;
    parsed.module().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_install(root: &Path, controls: &[(&str, Option<&str>)]) -> PgInstall {
        let share = root.join("share");
        std::fs::create_dir_all(share.join("extension")).unwrap();
        for (name, module) in controls {
            let body = match module {
                Some(m) => format!("comment = 'x'\nmodule_pathname = '$libdir/{m}'\n"),
                None => "comment = 'x'\n".to_string(),
            };
            std::fs::write(share.join("extension").join(format!("{name}.control")), body).unwrap();
        }
        PgInstall {
            bindir: root.join("bin"),
            sharedir: share,
            pkglibdir: root.join("lib"),
            libdir: root.join("lib"),
            includedir_server: root.join("include"),
            version: crate::PgVersion { major: 18, minor: 6, text: "PostgreSQL 18.6".into() },
            origin: crate::PgOrigin::PgConfig(root.join("bin/pg_config")),
        }
    }

    #[test]
    fn minimal_keeps_contrib_and_drops_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let pg = fake_install(
            dir.path(),
            &[
                ("cube", Some("cube")),
                ("vector", Some("vector")),
                ("plpgsql", Some("plpgsql")),
                ("postgis-3", Some("postgis-3")),
            ],
        );
        let min = pg.operand(OperandFlavor::Minimal).unwrap();
        assert_eq!(min.extensions, vec!["cube", "plpgsql"]);
        assert_eq!(min.exclusions.extensions, vec!["postgis-3", "vector"]);
        assert_eq!(min.exclusions.modules, vec!["postgis-3", "vector"]);
        let std = pg.operand(OperandFlavor::Standard).unwrap();
        assert_eq!(std.extensions, vec!["cube", "plpgsql", "vector"]);
        assert_eq!(std.exclusions.extensions, vec!["postgis-3"]);
    }

    #[test]
    fn a_module_a_kept_extension_needs_stays() {
        let dir = tempfile::tempdir().unwrap();
        // A foreign extension pointing at a contrib module must not take the module away.
        let pg = fake_install(dir.path(), &[("hstore", Some("hstore")), ("hstore_extra", Some("hstore"))]);
        let min = pg.operand(OperandFlavor::Minimal).unwrap();
        assert_eq!(min.exclusions.extensions, vec!["hstore_extra"]);
        assert!(min.exclusions.modules.contains(&"hstore_extra".to_string()));
        assert!(!min.exclusions.modules.contains(&"hstore".to_string()));
    }

    #[test]
    fn the_pinned_install_gives_core_and_contrib_without_pgvector() {
        let pg = crate::testutil::pg();
        let min = pg.operand(OperandFlavor::Minimal).unwrap();
        assert!(min.extensions.iter().any(|e| e == "cube") && min.extensions.iter().any(|e| e == "plpgsql"));
        assert!(!min.extensions.iter().any(|e| e == "vector"), "{:?}", min.extensions);
        // The control file's module_pathname names the module that goes with it.
        assert!(min.exclusions.modules.iter().any(|m| m == "vector"), "{:?}", min.exclusions);
        assert!(!min.exclusions.modules.iter().any(|m| m == "cube"), "{:?}", min.exclusions);
    }

    #[test]
    fn flavours_parse() {
        assert_eq!(OperandFlavor::parse("minimal"), Some(OperandFlavor::Minimal));
        assert_eq!(OperandFlavor::parse("standard"), Some(OperandFlavor::Standard));
        assert_eq!(OperandFlavor::parse("full"), None);
        assert!(OperandFlavor::Minimal.allows("earthdistance") && !OperandFlavor::Minimal.allows("vector"));
    }
}

/// The shared libraries (absolute host paths as the loader resolves them, including the loader) that
/// `files` need and that are not inside `skip_under` (the image root). Uses `ldd`; shared by every builder of an operand image.
pub fn host_libraries(files: &[PathBuf], skip_under: &Path) -> Result<BTreeSet<PathBuf>, String> {
    let mut out = BTreeSet::new();
    for chunk in files.chunks(64) {
        let o = Command::new("ldd")
            .args(chunk)
            .env("LC_ALL", "C")
            .output()
            .map_err(|e| format!("cannot run ldd (needed to build the PostgreSQL image; install libc-bin): {e}"))?;
        // ldd fails when one of several files is not dynamic; its output is still complete.
        for line in String::from_utf8_lossy(&o.stdout).lines() {
            if let Some(p) = parse_ldd_line(line) {
                if !p.starts_with(skip_under) {
                    out.insert(p);
                }
            } else if line.contains("=> not found") {
                tracing::warn!("a library of the PostgreSQL install is missing on this host: {}", line.trim());
            }
        }
    }
    if !out.iter().any(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("libc.so"))) {
        return Err("ldd did not resolve libc for the PostgreSQL programs; cannot build the PostgreSQL image".into());
    }
    Ok(out)
}

/// `\tlibz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x…)` or `\t/lib64/ld-linux-x86-64.so.2 (0x…)`.
fn parse_ldd_line(line: &str) -> Option<PathBuf> {
    let line = line.trim();
    let path = match line.split_once("=>") {
        Some((_, rhs)) => rhs.split_whitespace().next()?,
        None if line.starts_with('/') && line.ends_with(')') => line.split_whitespace().next()?,
        None => return None,
    };
    path.starts_with('/').then(|| PathBuf::from(path))
}

#[cfg(test)]
mod ldd_tests {
    use super::parse_ldd_line;

    #[test]
    fn ldd_lines() {
        assert_eq!(
            parse_ldd_line("\tlibz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x00007f)"),
            Some("/lib/x86_64-linux-gnu/libz.so.1".into())
        );
        assert_eq!(
            parse_ldd_line("\t/lib64/ld-linux-x86-64.so.2 (0x00007f)"),
            Some("/lib64/ld-linux-x86-64.so.2".into())
        );
        assert_eq!(parse_ldd_line("\tlinux-vdso.so.1 (0x00007f)"), None);
        assert_eq!(parse_ldd_line("\tlibfoo.so => not found"), None);
        assert_eq!(parse_ldd_line("/x/bin/postgres:"), None);
    }
}
