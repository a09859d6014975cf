//! Extension image linter: checks an image against the
//! postgres-extensions-containers conventions and what PostgreSQL needs to
//! load the extension from an image volume.
//!
//! Finding codes are stable kebab-case strings (see [`codes`]).

use crate::compat::{self, Distro, Ownership};
use crate::elf::BaseLibs;
use crate::error::ImageError;
use crate::platform::{host_arch, normalize_arch, Platform};
use crate::unpack::{unpack_with_names, ImageConfigSummary, UnpackOptions};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Stable finding codes.
pub mod codes {
    pub const MISSING_LABEL: &str = "missing-label";
    pub const PG_MAJOR_MISMATCH: &str = "pg-major-mismatch";
    pub const OS_MISMATCH: &str = "os-mismatch";
    pub const ARCH_MISMATCH: &str = "arch-mismatch";
    pub const ROOT_USER: &str = "root-user";
    pub const NO_CONTROL_FILES: &str = "no-control-files";
    pub const CONTROL_PARSE_ERROR: &str = "control-parse-error";
    pub const MISSING_DEFAULT_VERSION: &str = "missing-default-version";
    pub const MISSING_INSTALL_SCRIPT: &str = "missing-install-script";
    pub const MISSING_MODULE: &str = "missing-module";
    pub const ABSOLUTE_MODULE_PATHNAME: &str = "absolute-module-pathname";
    pub const ABSOLUTE_DIRECTORY: &str = "absolute-directory";
    pub const NOT_ELF: &str = "not-elf";
    pub const WRONG_ARCH: &str = "wrong-arch";
    pub const WRONG_ELF_CLASS: &str = "wrong-elf-class";
    pub const UNPARSABLE_ELF: &str = "unparsable-elf";
    pub const NOT_SHARED_OBJECT: &str = "not-shared-object";
    pub const MISSING_PG_MAGIC: &str = "missing-pg-magic";
    pub const MISSING_NEEDED_LIBRARY: &str = "missing-needed-library";
    pub const UNEXPECTED_TOP_LEVEL_ENTRY: &str = "unexpected-top-level-entry";
    pub const MISSING_LICENSES: &str = "missing-licenses";
    pub const SQL_VERSION_MISMATCH: &str = "sql-version-mismatch";
    pub const TAG_PG_MAJOR_MISMATCH: &str = "tag-pg-major-mismatch";
    pub const DANGLING_SYMLINK: &str = "dangling-symlink";
    pub const INVALID_PATH_OPTION: &str = "invalid-path-option";
    // Read from the binaries (issue 15).
    pub const MODULE_PG_MAJOR_MISMATCH: &str = "module-pg-major-mismatch";
    pub const LABEL_PG_MAJOR_DISAGREES: &str = "label-pg-major-disagrees";
    pub const UNREADABLE_PG_MAGIC: &str = "unreadable-pg-magic";
    pub const GLIBC_TOO_NEW: &str = "glibc-too-new";
    pub const LIBSTDCXX_TOO_NEW: &str = "libstdcxx-too-new";
    pub const OS_UNKNOWN: &str = "os-unknown";
    pub const MIXED_ARCH: &str = "mixed-arch";
    pub const CONFIG_ARCH_DISAGREES: &str = "config-arch-disagrees";
    pub const NOT_READABLE_BY_POSTGRES: &str = "not-readable-by-postgres";
    pub const SHADOWED_BY_OPERAND: &str = "shadowed-by-operand";
    pub const MODULE_ONLY_IMAGE: &str = "module-only-image";

    /// Every code, for documentation checks.
    pub const ALL: &[&str] = &[
        MISSING_LABEL,
        PG_MAJOR_MISMATCH,
        OS_MISMATCH,
        ARCH_MISMATCH,
        ROOT_USER,
        NO_CONTROL_FILES,
        SHADOWED_BY_OPERAND,
        MODULE_ONLY_IMAGE,
        CONTROL_PARSE_ERROR,
        MISSING_DEFAULT_VERSION,
        MISSING_INSTALL_SCRIPT,
        MISSING_MODULE,
        ABSOLUTE_MODULE_PATHNAME,
        ABSOLUTE_DIRECTORY,
        NOT_ELF,
        WRONG_ARCH,
        WRONG_ELF_CLASS,
        UNPARSABLE_ELF,
        NOT_SHARED_OBJECT,
        MISSING_PG_MAGIC,
        MISSING_NEEDED_LIBRARY,
        UNEXPECTED_TOP_LEVEL_ENTRY,
        MISSING_LICENSES,
        SQL_VERSION_MISMATCH,
        TAG_PG_MAJOR_MISMATCH,
        DANGLING_SYMLINK,
        INVALID_PATH_OPTION,
        MODULE_PG_MAJOR_MISMATCH,
        LABEL_PG_MAJOR_DISAGREES,
        UNREADABLE_PG_MAGIC,
        GLIBC_TOO_NEW,
        LIBSTDCXX_TOO_NEW,
        OS_UNKNOWN,
        MIXED_ARCH,
        CONFIG_ARCH_DISAGREES,
        NOT_READABLE_BY_POSTGRES,
    ];

    /// The findings read from the binaries and file modes that say whether
    /// an image fits an operand (PostgreSQL major, glibc, architecture,
    /// access), independent of how a Cluster mounts it: what `run` shows
    /// while preparing images.
    pub const COMPAT: &[&str] = &[
        MODULE_PG_MAJOR_MISMATCH,
        LABEL_PG_MAJOR_DISAGREES,
        UNREADABLE_PG_MAGIC,
        GLIBC_TOO_NEW,
        LIBSTDCXX_TOO_NEW,
        OS_UNKNOWN,
        WRONG_ARCH,
        WRONG_ELF_CLASS,
        MIXED_ARCH,
        CONFIG_ARCH_DISAGREES,
        NOT_READABLE_BY_POSTGRES,
    ];
}

/// Labels every extension image must carry.
pub const REQUIRED_LABELS: &[&str] =
    &[crate::LABEL_BASE_NAME, crate::LABEL_BASE_PGMAJOR, crate::LABEL_BASE_OS, crate::LABEL_SQL_VERSION];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
    /// Worth knowing; never fails anything.
    Info,
}

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub severity: Severity,
    /// Stable kebab-case code, e.g. `missing-install-script`.
    pub code: String,
    /// Path inside the image, when the finding is about one file.
    pub path: Option<String>,
    pub message: String,
}

/// Result of [`lint`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LintReport {
    pub image: String,
    pub manifest_digest: String,
    pub findings: Vec<Finding>,
    /// What the binaries say, whatever the labels say.
    #[serde(default)]
    pub binaries: Binaries,
}

/// Compatibility facts read from the image's ELF files.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binaries {
    /// PostgreSQL major each module's magic block names (path → major).
    pub pg_majors: BTreeMap<String, u32>,
    /// Newest symbol version needed per runtime (`GLIBC`, `GLIBCXX`,
    /// `CXXABI`), with one file and symbol that needs it.
    pub newest_needs: BTreeMap<String, NeededVersion>,
    /// Number of ELF files per architecture (OCI spelling where known).
    pub architectures: BTreeMap<String, usize>,
    /// Operand distribution judged against (`None`: unknown, not checked).
    pub operand_os: Option<String>,
    /// Where [`Self::operand_os`] came from (`--os`, the Cluster's imageName,
    /// the image's tag) or why it is unknown.
    pub operand_os_source: String,
}

/// One needed symbol version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NeededVersion {
    pub version: String,
    pub path: String,
    pub symbol: Option<String>,
}

impl LintReport {
    pub fn errors(&self) -> usize {
        self.findings.iter().filter(|f| f.severity == Severity::Error).count()
    }
    pub fn warnings(&self) -> usize {
        self.findings.iter().filter(|f| f.severity == Severity::Warning).count()
    }
    pub fn has_errors(&self) -> bool {
        self.errors() > 0
    }
    /// Whether a finding with `code` is present.
    pub fn has(&self, code: &str) -> bool {
        self.findings.iter().any(|f| f.code == code)
    }
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("report serializes")
    }
    /// Human-readable rendering, one finding per line.
    pub fn to_text(&self) -> String {
        let mut s = format!("image: {}\nmanifest: {}\n", self.image, self.manifest_digest);
        for f in &self.findings {
            let sev = match f.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
                Severity::Info => "info",
            };
            let _ = write!(s, "{sev:<7} {:<28} ", f.code);
            if let Some(p) = &f.path {
                let _ = write!(s, "{p}: ");
            }
            let _ = writeln!(s, "{}", f.message);
        }
        let _ = writeln!(s, "{}", self.binaries.to_text());
        let _ = writeln!(s, "{} error(s), {} warning(s)", self.errors(), self.warnings());
        s
    }
}

impl Binaries {
    /// One line: `binaries: PostgreSQL 18; needs GLIBC 2.34 (lib/x.so: dlopen); amd64 ×3; operand trixie (--os)`.
    pub fn to_text(&self) -> String {
        let mut parts = Vec::new();
        let majors: BTreeSet<u32> = self.pg_majors.values().copied().collect();
        parts.push(if majors.is_empty() {
            "no module magic read".to_string()
        } else {
            format!("PostgreSQL {}", majors.iter().map(u32::to_string).collect::<Vec<_>>().join(" and "))
        });
        for (rt, n) in &self.newest_needs {
            parts.push(format!(
                "needs {rt} {} ({}{})",
                n.version,
                n.path,
                n.symbol.as_ref().map(|s| format!(": {s}")).unwrap_or_default()
            ));
        }
        if !self.architectures.is_empty() {
            parts.push(self.architectures.iter().map(|(a, n)| format!("{a} ×{n}")).collect::<Vec<_>>().join(", "));
        }
        parts.push(match &self.operand_os {
            Some(os) => format!("operand {os} ({})", self.operand_os_source),
            None => format!("operand OS unknown ({})", self.operand_os_source),
        });
        format!("binaries: {}", parts.join("; "))
    }
}

/// Options of [`lint`].
#[derive(Debug, Clone)]
pub struct LintOptions {
    /// Expected PostgreSQL major; default 18.
    pub pg_major: u32,
    /// Expected architecture (OCI spelling); default the host's.
    pub arch: String,
    /// The operand's distribution (`bullseye`, `bookworm`, `trixie`; see
    /// [`crate::compat::DISTROS`]): the glibc / libstdc++ symbol versions
    /// the binaries need are judged against it, and the `base.os` label
    /// compared with it. `None`: taken from [`Self::operand_image`], else
    /// from the image's own tag, else unknown (not checked, stated).
    pub os: Option<String>,
    /// The Cluster's `imageName` (operand image), whose tag suffix names
    /// its distribution (`18-minimal-trixie`).
    pub operand_image: Option<String>,
    /// Missing `io.cloudnativepg.image.*` labels are errors instead of
    /// warnings (the operator reads none of them).
    pub require_labels: bool,
    /// Libraries the base image provides; default [`BaseLibs::glibc`].
    pub base_libs: BaseLibs,
    /// CNPG `extension_control_path`; default `["share"]`.
    pub extension_control_path: Vec<String>,
    /// CNPG `dynamic_library_path`; default `["lib"]`.
    pub dynamic_library_path: Vec<String>,
    /// CNPG `ld_library_path`; default `["system"]`.
    pub ld_library_path: Vec<String>,
    /// Unpack limits (the platform is taken from `arch`).
    pub unpack: UnpackOptions,
    /// The CNPG operand flavour (`minimal`, `standard`; see
    /// [`crate::compat::operand_ships`]): an extension it already ships is shadowed.
    pub operand: String,
}

impl Default for LintOptions {
    fn default() -> Self {
        LintOptions {
            pg_major: 18,
            arch: host_arch(),
            os: None,
            operand_image: None,
            require_labels: false,
            base_libs: BaseLibs::glibc(),
            extension_control_path: vec!["share".into()],
            dynamic_library_path: vec!["lib".into()],
            ld_library_path: vec!["system".into()],
            unpack: UnpackOptions::default(),
            operand: "minimal".into(),
        }
    }
}

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

struct Ctx<'a> {
    root: &'a Path,
    opts: &'a LintOptions,
    out: Vec<Finding>,
    distro: Option<&'static Distro>,
    bin: Binaries,
}

impl Ctx<'_> {
    fn add(&mut self, severity: Severity, code: &str, path: Option<&Path>, message: String) {
        self.out.push(Finding {
            severity,
            code: code.into(),
            path: path.map(|p| p.strip_prefix(self.root).unwrap_or(p).display().to_string()),
            message,
        });
    }
    fn err(&mut self, code: &str, path: Option<&Path>, message: String) {
        self.add(Severity::Error, code, path, message)
    }
    fn warn(&mut self, code: &str, path: Option<&Path>, message: String) {
        self.add(Severity::Warning, code, path, message)
    }
    fn info(&mut self, code: &str, path: Option<&Path>, message: String) {
        self.add(Severity::Info, code, path, message)
    }
    fn rel(&self, p: &Path) -> String {
        p.strip_prefix(self.root).unwrap_or(p).display().to_string()
    }
}

/// A relative, `..`-free option path, else `None`.
fn safe_rel(p: &str) -> Option<PathBuf> {
    let pb = PathBuf::from(p);
    let ok = !p.is_empty()
        && pb.components().all(|c| matches!(c, std::path::Component::Normal(_) | std::path::Component::CurDir));
    ok.then_some(pb)
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

use controls::check_controls;
use elves::check_elves;
use image::{check_access, check_config, check_os, check_pg_major, check_top_level};

#[cfg(test)]
mod tests {
    use super::controls::{install_reachable, libdir_refs};
    use super::elves::origin_dir;
    use super::*;

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
