//! Extension image linter: checks an image against the
//! postgres-extensions-containers conventions and what PostgreSQL needs to
//! load the extension from an image volume.
//!
//! Finding codes are stable kebab-case strings (see [`codes`]).

use crate::compat::{self, Distro, Ownership};
use crate::error::ImageError;
use crate::platform::{normalize_arch, Platform};
use crate::unpack::{unpack_with_names, ImageConfigSummary};
use std::path::{Path, PathBuf};

/// Unpack `image` into a temporary directory (removed afterwards) with the
/// hardened unpacker and lint it. `Err` only when the image cannot be read.
pub fn lint(image: &Path, opts: &LintOptions) -> Result<LintReport, ImageError> {
    let tmp = tempfile::Builder::new()
        .prefix("cnpg-ext-lint-")
        .tempdir()
        .map_err(|e| ImageError::io(std::env::temp_dir(), e))?;
    let root = tmp.path().join("rootfs");
    let mut uo = opts.unpack.clone();
    uo.platform = Some(Platform::linux(&opts.arch));
    let (u, names) = match unpack_with_names(image, &root, &uo) {
        Err(ImageError::PlatformNotFound { .. }) => {
            // A single-platform image of another arch: unpack it anyway so
            // the mismatch is reported as findings.
            uo.platform = None;
            unpack_with_names(image, &root, &uo)?
        }
        other => other?,
    };
    let (findings, binaries) = lint_tree_full(&root, &u.config, &names, Some(&u.ownership), opts);
    Ok(LintReport { image: image.display().to_string(), manifest_digest: u.manifest_digest, findings, binaries })
}

/// Lint an already unpacked image root. `ref_names` are the image's
/// reference names (for the tag check). File access is judged from the
/// files' modes and owners on disk.
pub fn lint_tree(root: &Path, config: &ImageConfigSummary, ref_names: &[String], opts: &LintOptions) -> Vec<Finding> {
    lint_tree_full(root, config, ref_names, None, opts).0
}

/// The operand distribution: `--os`, else the Cluster's imageName tag,
/// else the image's own tag; with where it came from.
fn operand_distro(opts: &LintOptions, ref_names: &[String]) -> (Option<&'static Distro>, String) {
    if let Some(os) = &opts.os {
        return match compat::distro(os) {
            Some(d) => (Some(d), "given".into()),
            None => (None, format!("{os:?} is not a known distribution ({})", compat::distro_names())),
        };
    }
    if let Some(img) = &opts.operand_image {
        if let Some(d) = compat::distro_from_reference(img) {
            return (Some(d), format!("the Cluster's imageName {img}"));
        }
    }
    for r in ref_names {
        if let Some(d) = compat::distro_from_reference(r) {
            return (Some(d), format!("the image's tag {r}"));
        }
    }
    (None, "no --os, no Cluster imageName and no distribution in the image's tag".into())
}

/// [`lint_tree`] with the owners and modes the layers recorded (when
/// known), also returning what the binaries say.
pub fn lint_tree_full(
    root: &Path,
    config: &ImageConfigSummary,
    ref_names: &[String],
    ownership: Option<&Ownership>,
    opts: &LintOptions,
) -> (Vec<Finding>, Binaries) {
    let (distro, source) = operand_distro(opts, ref_names);
    let mut cx = Ctx {
        root,
        opts,
        out: Vec::new(),
        distro,
        bin: Binaries {
            operand_os: distro.map(|d| d.name.to_string()),
            operand_os_source: source,
            ..Binaries::default()
        },
    };
    let dirs = |cx: &mut Ctx, list: &[String], what: &str| -> Vec<PathBuf> {
        let mut v = Vec::new();
        for p in list {
            match safe_rel(p) {
                Some(r) => v.push(r),
                None => cx.err(
                    codes::INVALID_PATH_OPTION,
                    None,
                    format!("{what} entry {p:?} must be a relative path without '..'"),
                ),
            }
        }
        v
    };
    let control_dirs = dirs(&mut cx, &opts.extension_control_path, "extension_control_path");
    let lib_dirs = dirs(&mut cx, &opts.dynamic_library_path, "dynamic_library_path");
    let sys_dirs = dirs(&mut cx, &opts.ld_library_path, "ld_library_path");

    check_config(&mut cx, config, ref_names);
    let (modules, default_versions) = check_controls(&mut cx, &control_dirs, &lib_dirs);
    if let Some(v) = config.labels.get(crate::LABEL_SQL_VERSION) {
        if !default_versions.is_empty() && !default_versions.contains(v) {
            cx.warn(
                codes::SQL_VERSION_MISMATCH,
                None,
                format!(
                    "label {} = {v:?} matches no control file default_version ({})",
                    crate::LABEL_SQL_VERSION,
                    default_versions.iter().cloned().collect::<Vec<_>>().join(", ")
                ),
            );
        }
    }
    check_elves(&mut cx, &lib_dirs, &sys_dirs, &modules);
    let elf_arch = cx.bin.architectures.iter().max_by_key(|(_, n)| **n).map(|(a, _)| a.clone());
    if let Some(a) = elf_arch {
        if normalize_arch(&config.architecture) != a {
            cx.warn(
                codes::CONFIG_ARCH_DISAGREES,
                None,
                format!(
                    "image config says {} but its ELF files are {a}; the files decide what runs",
                    config.architecture
                ),
            );
        }
    }
    check_pg_major(&mut cx, config);
    check_os(&mut cx, config);
    check_access(&mut cx, ownership, &[&control_dirs, &lib_dirs, &sys_dirs]);
    check_top_level(&mut cx, &[&control_dirs, &lib_dirs, &sys_dirs]);
    (cx.out, cx.bin)
}

mod controls;
mod elves;
mod image;
mod types;

pub use types::{codes, Binaries, Finding, LintOptions, LintReport, NeededVersion, Severity, REQUIRED_LABELS};
use types::{safe_rel, Ctx};

use controls::check_controls;
use elves::check_elves;
use image::{check_access, check_config, check_os, check_pg_major, check_top_level};

#[cfg(test)]
mod tests {
    use super::controls::{install_reachable, libdir_refs};
    use super::elves::origin_dir;
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn update_paths() {
        let s: Vec<String> =
            ["vector--0.5.0.sql", "vector--0.5.0--0.6.0.sql", "vector--0.6.0--0.8.1.sql", "vectorx--0.9.sql"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        assert!(install_reachable("vector", &s, "0.8.1"));
        assert!(install_reachable("vector", &s, "0.5.0"));
        assert!(!install_reachable("vector", &s, "0.9"));
        assert!(!install_reachable("vector", &["vector--0.6.0--0.8.1.sql".into()], "0.8.1"));
    }

    /// The README's lint table names every code, each with a severity.
    #[test]
    fn readme_lists_every_code_with_its_severity() {
        let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md")).unwrap();
        for code in codes::ALL {
            // A scenario may share a code's name (`shadowed-by-operand`): the lint row is the
            // one whose second cell is a severity.
            let rows: Vec<&str> = readme.lines().filter(|l| l.starts_with(&format!("| `{code}` |"))).collect();
            assert!(!rows.is_empty(), "README lint table lacks {code}");
            assert!(
                rows.iter().any(|row| ["error", "warning", "info"].iter().any(|s| row
                    .split('|')
                    .nth(2)
                    .unwrap_or("")
                    .trim_start()
                    .starts_with(s))),
                "{rows:?}"
            );
        }
        // No code defined twice.
        let set: BTreeSet<&str> = codes::ALL.iter().copied().collect();
        assert_eq!(set.len(), codes::ALL.len());
    }

    #[test]
    fn libdir_references() {
        let r =
            libdir_refs("CREATE FUNCTION f() RETURNS int AS '$libdir/vector', 'f' LANGUAGE C; AS 'MODULE_PATHNAME'");
        assert_eq!(r.into_iter().collect::<Vec<_>>(), vec!["vector".to_string()]);
        assert_eq!(origin_dir(Path::new("lib"), "$ORIGIN/../system"), Some(PathBuf::from("system")));
        assert_eq!(origin_dir(Path::new(""), "$ORIGIN/.."), None);
    }
}
