//! Extension image linter: checks an image against the
//! postgres-extensions-containers conventions and what PostgreSQL needs to
//! load the extension from an image volume.
//!
//! Finding codes are stable kebab-case strings (see [`codes`]).

use crate::compat::{self, Distro, FileOwner, Ownership, Runtime, DISTROS};
use crate::control::parse_control;
use crate::elf::{arch_machine, is_elf, machine_name, read_elf, read_header, BaseLibs};
use crate::error::ImageError;
use crate::platform::{host_arch, normalize_arch, Platform};
use crate::unpack::{unpack_with_names, ImageConfigSummary, UnpackOptions};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
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

/// The PostgreSQL major: the modules' magic blocks decide; the label is
/// judged against them, and alone only when no magic block was read.
fn check_pg_major(cx: &mut Ctx, config: &ImageConfigSummary) {
    let want = cx.opts.pg_major;
    let majors: BTreeSet<u32> = cx.bin.pg_majors.values().copied().collect();
    let Some(v) = config.labels.get(crate::LABEL_BASE_PGMAJOR) else {
        return;
    };
    let label = v.trim().parse::<u32>().ok();
    if let Some(l) = label {
        if let Some((path, m)) = cx.bin.pg_majors.iter().find(|(_, m)| **m != l) {
            let msg = format!(
                "label {} = {l} but {path} is built for PostgreSQL {m}; the binaries decide",
                crate::LABEL_BASE_PGMAJOR
            );
            cx.warn(codes::LABEL_PG_MAJOR_DISAGREES, None, msg);
        }
    }
    if label != Some(want) {
        let msg = format!("label {} = {v:?} but PostgreSQL {want} is expected", crate::LABEL_BASE_PGMAJOR);
        if majors.is_empty() {
            cx.err(codes::PG_MAJOR_MISMATCH, None, msg);
        } else {
            cx.warn(codes::PG_MAJOR_MISMATCH, None, format!("{msg} (the modules' magic blocks are judged instead)"));
        }
    }
}

/// The `base.os` label against the operand (a warning: the symbol versions
/// decide), and the operand stated when unknown.
fn check_os(cx: &mut Ctx, config: &ImageConfigSummary) {
    let have = config.labels.get(crate::LABEL_BASE_OS);
    match (cx.distro, have) {
        (Some(d), Some(have)) if !have.trim().eq_ignore_ascii_case(d.name) => {
            cx.warn(
                codes::OS_MISMATCH,
                None,
                format!(
                    "label {} = {have:?} but the operand is {} ({}); the symbol versions the binaries need are judged instead",
                    crate::LABEL_BASE_OS,
                    d.name,
                    cx.bin.operand_os_source
                ),
            );
        }
        (None, _) => {
            let needs = if cx.bin.newest_needs.is_empty() {
                "no versioned glibc symbols needed".to_string()
            } else {
                cx.bin
                    .newest_needs
                    .iter()
                    .map(|(rt, n)| format!("{rt} {} ({})", n.version, n.path))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            cx.info(
                codes::OS_UNKNOWN,
                None,
                format!(
                    "operand distribution unknown ({}): glibc needs not judged; the binaries need {needs}; pass --os {}",
                    cx.bin.operand_os_source,
                    DISTROS.iter().map(|d| d.name).collect::<Vec<_>>().join("|")
                ),
            );
        }
        _ => {}
    }
}

/// Every file under the configured directories must be readable, and
/// every directory on the way traversable, by the postgres user (uid 26).
/// Directories under `extension_control_path` must also be listable
/// (PostgreSQL lists them for `pg_available_extensions`); modules and
/// system libraries are opened by path, which needs traversal only.
fn check_access(cx: &mut Ctx, ownership: Option<&Ownership>, configured: &[&Vec<PathBuf>]) {
    use std::os::unix::fs::MetadataExt;
    let root = cx.root;
    let owner_of = |rel: &Path, md: &std::fs::Metadata| -> FileOwner {
        match ownership {
            Some(o) => o.get(rel).copied().unwrap_or(if md.is_dir() {
                FileOwner::IMPLICIT_DIR
            } else {
                FileOwner { uid: u64::from(md.uid()), gid: u64::from(md.gid()), mode: md.mode() & 0o777 }
            }),
            None => FileOwner { uid: u64::from(md.uid()), gid: u64::from(md.gid()), mode: md.mode() & 0o777 },
        }
    };
    let mut reported: BTreeSet<PathBuf> = BTreeSet::new();
    let mut report = |cx: &mut Ctx, rel: &Path, o: FileOwner, what: &str| {
        if reported.iter().any(|r| rel.starts_with(r)) || !reported.insert(rel.to_path_buf()) {
            return;
        }
        cx.err(
            codes::NOT_READABLE_BY_POSTGRES,
            Some(&root.join(rel)),
            format!(
                "mode {:04o}, owner {}:{}: the postgres user (uid {}) cannot {what}; make it world-{} (chmod o+{}) or owned by uid {}",
                o.mode,
                o.uid,
                o.gid,
                compat::POSTGRES_UID,
                if what.starts_with("read") { "readable" } else { "traversable" },
                if what.starts_with("read") { "r" } else { "x" },
                compat::POSTGRES_UID
            ),
        );
    };
    let mut seen: BTreeSet<PathBuf> = BTreeSet::new();
    for (i, list) in configured.iter().enumerate() {
        let listed = i == 0; // the control directories come first
        let need = if listed { 5 } else { 1 };
        for dir in list.iter() {
            // Directories on the way to the configured one: traversable.
            let mut acc = PathBuf::new();
            let comps: Vec<_> = dir.components().collect();
            for c in comps.iter().take(comps.len().saturating_sub(1)) {
                acc.push(c);
                let Ok(md) = std::fs::symlink_metadata(root.join(&acc)) else {
                    break;
                };
                let o = owner_of(&acc, &md);
                if md.is_dir() && o.postgres_bits() & 1 == 0 {
                    report(cx, &acc, o, "traverse this directory");
                }
            }
            if !root.join(dir).is_dir() {
                continue;
            }
            for e in walkdir::WalkDir::new(root.join(dir)).follow_links(false).sort_by_file_name() {
                let Ok(e) = e else { continue };
                let Ok(rel) = e.path().strip_prefix(root) else {
                    continue;
                };
                if !seen.insert(rel.to_path_buf()) || e.file_type().is_symlink() {
                    continue;
                }
                let Ok(md) = e.metadata() else { continue };
                let o = owner_of(rel, &md);
                let bits = o.postgres_bits();
                if md.is_dir() {
                    if bits & need != need {
                        let what = if listed { "list and traverse this directory" } else { "traverse this directory" };
                        report(cx, rel, o, what);
                    }
                } else if bits & 4 == 0 {
                    report(cx, rel, o, "read this file");
                }
            }
        }
    }
}

fn check_config(cx: &mut Ctx, config: &ImageConfigSummary, ref_names: &[String]) {
    let opts = cx.opts;
    for l in REQUIRED_LABELS {
        if !config.labels.contains_key(*l) {
            let sev = if opts.require_labels { Severity::Error } else { Severity::Warning };
            cx.add(
                sev,
                codes::MISSING_LABEL,
                None,
                format!("image config lacks label {l} (a convention of CloudNativePG's image repository; the operator does not read it)"),
            );
        }
    }
    if normalize_arch(&config.architecture) != normalize_arch(&opts.arch) || config.os != "linux" {
        cx.err(
            codes::ARCH_MISMATCH,
            None,
            format!(
                "image is {}/{} but linux/{} is expected",
                config.os,
                config.architecture,
                normalize_arch(&opts.arch)
            ),
        );
    }
    let user = config.user.as_deref().unwrap_or("").trim();
    let uid = user.split(':').next().unwrap_or("");
    if uid.is_empty() || uid == "0" || uid == "root" {
        let why = if uid.is_empty() { "is empty (root)".to_string() } else { format!("{user:?} is root") };
        cx.info(
            codes::ROOT_USER,
            None,
            format!("config User {why}; an image volume is never run, so this only matters if the image is also run as a container (the convention is 65532:65532)"),
        );
    }
    for name in ref_names {
        let last = name.rsplit('/').next().unwrap_or(name);
        let Some((_, tag)) = last.split_once(':') else {
            continue;
        };
        let parts: Vec<&str> = tag.split('-').collect();
        if parts.len() >= 3 {
            let major = parts[parts.len() - 2];
            if major.chars().all(|c| c.is_ascii_digit()) && major.parse::<u32>().ok() != Some(opts.pg_major) {
                cx.warn(
                    codes::TAG_PG_MAJOR_MISMATCH,
                    None,
                    format!("tag {tag:?} names PostgreSQL {major} but {} is expected", opts.pg_major),
                );
            }
        }
    }
}

/// Resolve a module name (`$libdir/x`, `x`, `x.so`) in the library dirs.
fn find_module(root: &Path, lib_dirs: &[PathBuf], name: &str) -> Option<PathBuf> {
    let file = if name.ends_with(".so") { name.to_string() } else { format!("{name}.so") };
    lib_dirs.iter().flat_map(|d| [root.join(d).join(&file), root.join(d).join(name)]).find(|p| p.is_file())
}

/// `$libdir/<name>` references in SQL text.
fn libdir_refs(sql: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = sql;
    while let Some(i) = rest.find("$libdir/") {
        rest = &rest[i + "$libdir/".len()..];
        let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || "_.-".contains(c))).unwrap_or(rest.len());
        if end > 0 {
            out.insert(rest[..end].to_string());
        }
    }
    out
}

/// Whether `target` is reachable from an install script along update scripts.
fn install_reachable(ext: &str, scripts: &[String], target: &str) -> bool {
    let prefix = format!("{ext}--");
    let mut bases = Vec::new();
    let mut edges: HashMap<String, Vec<String>> = HashMap::new();
    for s in scripts {
        let Some(v) = s.strip_prefix(&prefix).and_then(|r| r.strip_suffix(".sql")) else {
            continue;
        };
        match v.split_once("--") {
            Some((a, b)) => edges.entry(a.to_string()).or_default().push(b.to_string()),
            None => bases.push(v.to_string()),
        }
    }
    let mut seen: BTreeSet<String> = bases.iter().cloned().collect();
    let mut q: VecDeque<String> = bases.into();
    while let Some(v) = q.pop_front() {
        if v == target {
            return true;
        }
        for n in edges.get(&v).into_iter().flatten() {
            if seen.insert(n.clone()) {
                q.push_back(n.clone());
            }
        }
    }
    false
}

fn sorted_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// Returns the module files referenced and the default versions seen.
fn check_controls(
    cx: &mut Ctx,
    control_dirs: &[PathBuf],
    lib_dirs: &[PathBuf],
) -> (BTreeSet<PathBuf>, BTreeSet<String>) {
    let root = cx.root;
    let mut modules = BTreeSet::new();
    let mut versions = BTreeSet::new();
    let mut found = 0usize;
    let lib_list = cx.opts.dynamic_library_path.join(", ");
    for cd in control_dirs {
        let share = root.join(cd);
        let ext_dir = share.join("extension");
        for name in sorted_names(&ext_dir) {
            let Some(stem) = name.strip_suffix(".control") else {
                continue;
            };
            let path = ext_dir.join(&name);
            if !path.is_file() {
                continue;
            }
            let text = match std::fs::read(&path) {
                Ok(b) => String::from_utf8_lossy(&b).into_owned(),
                Err(e) => {
                    cx.err(codes::CONTROL_PARSE_ERROR, Some(&path), format!("unreadable: {e}"));
                    continue;
                }
            };
            let parsed = match parse_control(&text) {
                Ok(c) => c,
                Err(e) => {
                    cx.err(codes::CONTROL_PARSE_ERROR, Some(&path), e.to_string());
                    continue;
                }
            };
            if stem.contains("--") {
                continue; // secondary control file: syntax checked only
            }
            found += 1;
            if crate::compat::operand_ships(&cx.opts.operand, stem) == Some(true) {
                cx.warn(
                    codes::SHADOWED_BY_OPERAND,
                    Some(&path),
                    format!(
                        "the {} operand image already ships {stem}: PostgreSQL would load the operand's copy ($system and $libdir are searched first), never this image's",
                        cx.opts.operand
                    ),
                );
            }
            let script_dir = match parsed.directory() {
                Some(d) if d.starts_with('/') => {
                    cx.warn(
                        codes::ABSOLUTE_DIRECTORY,
                        Some(&path),
                        format!("directory = {d:?} is absolute and cannot point into the image volume"),
                    );
                    None
                }
                Some(d) => match safe_rel(d) {
                    Some(r) => Some(share.join(r)),
                    None => {
                        cx.err(codes::INVALID_PATH_OPTION, Some(&path), format!("directory = {d:?} leaves the image"));
                        None
                    }
                },
                None => Some(ext_dir.clone()),
            };
            let scripts: Vec<String> = script_dir
                .as_deref()
                .map(sorted_names)
                .unwrap_or_default()
                .into_iter()
                .filter(|n| n.starts_with(&format!("{stem}--")) && n.ends_with(".sql"))
                .collect();
            match parsed.default_version() {
                None => cx.warn(
                    codes::MISSING_DEFAULT_VERSION,
                    Some(&path),
                    "no default_version; CREATE EXTENSION needs an explicit VERSION".into(),
                ),
                Some(v) => {
                    versions.insert(v.to_string());
                    if script_dir.is_some() && !install_reachable(stem, &scripts, v) {
                        cx.err(
                            codes::MISSING_INSTALL_SCRIPT,
                            Some(&path),
                            format!("default_version {v:?} has no install script {stem}--{v}.sql and no update path to it from another install script"),
                        );
                    }
                }
            }
            if let Some(m) = parsed.module_pathname() {
                let name = m.strip_prefix("$libdir/");
                match name {
                    None if m.contains('/') => cx.warn(
                        codes::ABSOLUTE_MODULE_PATHNAME,
                        Some(&path),
                        format!(
                            "module_pathname {m:?} is a path; use '$libdir/<name>' so dynamic_library_path finds it"
                        ),
                    ),
                    _ => {
                        let n = name.unwrap_or(m);
                        match find_module(root, lib_dirs, n) {
                            Some(p) => {
                                modules.insert(p);
                            }
                            None => cx.err(
                                codes::MISSING_MODULE,
                                Some(&path),
                                format!("module_pathname {m:?}: no {n}.so in the library dirs ({lib_list})"),
                            ),
                        }
                    }
                }
            }
            if let Some(sd) = &script_dir {
                for s in &scripts {
                    let sp = sd.join(s);
                    let sql = std::fs::read(&sp).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
                    for r in libdir_refs(&sql) {
                        match find_module(root, lib_dirs, &r) {
                            Some(p) => {
                                modules.insert(p);
                            }
                            None => cx.err(
                                codes::MISSING_MODULE,
                                Some(&sp),
                                format!("references '$libdir/{r}' but no {r}.so is in the library dirs ({lib_list})"),
                            ),
                        }
                    }
                }
            }
        }
    }
    if found == 0 {
        let where_ = control_dirs.iter().map(|d| format!("{}/extension", d.display())).collect::<Vec<_>>().join(", ");
        // A module without an extension (loaded through shared_preload_libraries, like
        // auto_explain) is a valid image: say what it is instead of refusing it.
        let has_module = lib_dirs.iter().any(|d| {
            std::fs::read_dir(root.join(d))
                .map(|rd| rd.flatten().any(|e| e.file_name().to_string_lossy().ends_with(".so")))
                .unwrap_or(false)
        });
        if has_module {
            cx.info(
                codes::MODULE_ONLY_IMAGE,
                None,
                format!("no extension control file in {where_}: a module-only image (for shared_preload_libraries)"),
            );
        } else {
            cx.err(codes::NO_CONTROL_FILES, None, format!("no extension control file and no module in {where_}"));
        }
    }
    (modules, versions)
}

fn looks_like_shared_object(name: &str) -> bool {
    name.ends_with(".so") || name.contains(".so.")
}

/// Lexically resolve `$ORIGIN`-relative runpath `rp` for a file in `dir`
/// (relative to the root); `None` if it leaves the root or is absolute.
fn origin_dir(dir_rel: &Path, rp: &str) -> Option<PathBuf> {
    let rest = rp.strip_prefix("$ORIGIN").or_else(|| rp.strip_prefix("${ORIGIN}"))?;
    let mut out: Vec<std::ffi::OsString> = dir_rel.iter().map(|c| c.to_os_string()).collect();
    for c in rest.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop()?;
            }
            c => out.push(c.into()),
        }
    }
    Some(out.iter().collect())
}

/// OCI name of an `e_machine` where known, else its description.
fn machine_arch(m: u16) -> String {
    ["amd64", "arm64", "386", "arm", "ppc64le", "s390x", "riscv64"]
        .iter()
        .find(|a| arch_machine(a).map(|x| x.0) == Some(m))
        .map(|a| a.to_string())
        .unwrap_or_else(|| machine_name(m))
}

/// Whether the file starts with the ELF magic (reads 4 bytes).
fn starts_with_elf_magic(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 4];
    std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut head)).map(|_| is_elf(&head)).unwrap_or(false)
}

fn runtime_key(rt: Runtime) -> &'static str {
    match rt {
        Runtime::Glibc => "GLIBC",
        Runtime::Glibcxx => "GLIBCXX",
        Runtime::Cxxabi => "CXXABI",
    }
}

/// Symbol versions `path` needs: the newest per runtime is recorded, and
/// any the operand's glibc / libstdc++ lacks is an error.
fn check_versions(cx: &mut Ctx, path: &Path, info: &crate::elf::ElfInfo) {
    let rel = cx.rel(path);
    let mut too_new: BTreeMap<Runtime, Vec<String>> = BTreeMap::new();
    for need in &info.version_needs {
        let Some((rt, nums)) = compat::parse_symbol_version(&need.version) else {
            continue;
        };
        let key = runtime_key(rt);
        let newer = match cx.bin.newest_needs.get(key) {
            Some(n) => {
                let cur: Vec<u32> = n.version.split('.').filter_map(|p| p.parse().ok()).collect();
                nums > cur
            }
            None => true,
        };
        if newer {
            cx.bin.newest_needs.insert(
                key.to_string(),
                NeededVersion {
                    version: compat::dotted(&nums),
                    path: rel.clone(),
                    symbol: need.symbols.first().map(|s| format!("{s}@{}", need.version)),
                },
            );
        }
        if let Some(d) = cx.distro {
            if nums > d.provides(rt) {
                let mut shown: Vec<String> =
                    need.symbols.iter().take(4).map(|s| format!("{s}@{}", need.version)).collect();
                if shown.is_empty() {
                    shown.push(need.version.clone());
                } else if need.symbols.len() > 4 {
                    shown.push(format!("{} more", need.symbols.len() - 4));
                }
                too_new.entry(rt).or_default().push(shown.join(", "));
            }
        }
    }
    let Some(d) = cx.distro else { return };
    for (rt, list) in too_new {
        let (code, have) = match rt {
            Runtime::Glibc => (codes::GLIBC_TOO_NEW, d.glibc_text()),
            rt => (
                codes::LIBSTDCXX_TOO_NEW,
                format!("libstdc++ up to {}_{}", runtime_key(rt), compat::dotted(&d.provides(rt))),
            ),
        };
        cx.err(
            code,
            Some(path),
            format!(
                "needs {} but the operand ({}, {}) has {have}: the dynamic loader refuses it; build it on {} or older",
                list.join("; "),
                d.name,
                cx.bin.operand_os_source,
                d.name
            ),
        );
    }
}

fn check_elves(cx: &mut Ctx, lib_dirs: &[PathBuf], sys_dirs: &[PathBuf], modules: &BTreeSet<PathBuf>) {
    let root = cx.root;
    let expected = arch_machine(&cx.opts.arch);
    let lib_abs: Vec<PathBuf> = lib_dirs.iter().map(|d| root.join(d)).collect();
    let mut missing_reported: BTreeMap<(PathBuf, String), ()> = BTreeMap::new();
    let mut machines: Vec<(PathBuf, u16)> = Vec::new();
    for e in walkdir::WalkDir::new(root).min_depth(1).follow_links(false).sort_by_file_name() {
        let Ok(e) = e else { continue };
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if e.file_type().is_symlink() {
            if std::fs::metadata(path).is_err() {
                let t = std::fs::read_link(path).map(|t| t.display().to_string()).unwrap_or_default();
                cx.warn(codes::DANGLING_SYMLINK, Some(path), format!("symlink to {t:?}, which does not exist"));
            }
            continue;
        }
        if !e.file_type().is_file() {
            continue;
        }
        let so_name = looks_like_shared_object(&name);
        if !so_name && !starts_with_elf_magic(path) {
            continue;
        }
        let Ok(bytes) = std::fs::read(path) else {
            continue;
        };
        if !is_elf(&bytes) {
            cx.err(codes::NOT_ELF, Some(path), "named like a shared object but is not an ELF file".into());
            continue;
        }
        let (machine, is64, le, _) = match read_header(&bytes) {
            Ok(h) => h,
            Err(err) => {
                cx.err(codes::UNPARSABLE_ELF, Some(path), format!("bad ELF header: {err}"));
                continue;
            }
        };
        machines.push((path.to_path_buf(), machine));
        if let Some((want_m, want_64, want_le)) = expected {
            if machine != want_m || le != want_le {
                cx.err(
                    codes::WRONG_ARCH,
                    Some(path),
                    format!(
                        "ELF for {} but the image must be {}",
                        machine_name(machine),
                        normalize_arch(&cx.opts.arch)
                    ),
                );
                continue;
            }
            if is64 != want_64 {
                cx.err(
                    codes::WRONG_ELF_CLASS,
                    Some(path),
                    format!(
                        "{}-bit ELF on a {}-bit architecture",
                        if is64 { 64 } else { 32 },
                        if want_64 { 64 } else { 32 }
                    ),
                );
                continue;
            }
        }
        let info = match read_elf(&bytes) {
            Ok(i) => i,
            Err(err) => {
                cx.err(codes::UNPARSABLE_ELF, Some(path), format!("cannot parse ELF: {err}"));
                continue;
            }
        };
        if so_name && info.elf_type != goblin::elf::header::ET_DYN {
            cx.warn(codes::NOT_SHARED_OBJECT, Some(path), "not a shared object (ET_DYN)".into());
        }
        let parent = path.parent().unwrap_or(root);
        let is_module = so_name && (modules.contains(path) || lib_abs.iter().any(|d| d == parent));
        if is_module && !info.exports_pg_magic {
            cx.err(
                codes::MISSING_PG_MAGIC,
                Some(path),
                "extension module does not export Pg_magic_func (not built with PG_MODULE_MAGIC?)".into(),
            );
        }
        if is_module {
            match &info.pg_magic {
                Some(Ok(v)) => {
                    let major = v / 100;
                    let rel = cx.rel(path);
                    cx.bin.pg_majors.insert(rel, major);
                    if major != cx.opts.pg_major {
                        cx.err(
                            codes::MODULE_PG_MAJOR_MISMATCH,
                            Some(path),
                            format!(
                                "built for PostgreSQL {major} (magic block version {v}) but the Cluster runs PostgreSQL {}: PostgreSQL refuses to load it (incompatible library)",
                                cx.opts.pg_major
                            ),
                        );
                    }
                }
                Some(Err(why)) => cx.warn(
                    codes::UNREADABLE_PG_MAGIC,
                    Some(path),
                    format!("cannot tell which PostgreSQL major it is built for: {why}"),
                ),
                None => {}
            }
        }
        check_versions(cx, path, &info);
        let dir_rel = parent.strip_prefix(root).unwrap_or(Path::new("")).to_path_buf();
        let origin_dirs: Vec<PathBuf> = info.runpath.iter().filter_map(|rp| origin_dir(&dir_rel, rp)).collect();
        for n in &info.needed {
            if cx.opts.base_libs.contains(n) {
                continue;
            }
            let found = sys_dirs.iter().chain(origin_dirs.iter()).any(|d| root.join(d).join(n).exists());
            if !found && missing_reported.insert((path.to_path_buf(), n.clone()), ()).is_none() {
                let sys = cx.opts.ld_library_path.join(", ");
                cx.err(
                    codes::MISSING_NEEDED_LIBRARY,
                    Some(path),
                    format!("needs {n}, which is neither in the image's system library dirs ({sys}) nor in the base image library list"),
                );
            }
        }
    }
    // Architecture from the ELF files themselves: one for all.
    let mut counts: BTreeMap<u16, usize> = BTreeMap::new();
    for (_, m) in &machines {
        *counts.entry(*m).or_default() += 1;
    }
    for (m, n) in &counts {
        cx.bin.architectures.insert(machine_arch(*m), *n);
    }
    if counts.len() > 1 {
        let main = expected
            .map(|e| e.0)
            .filter(|m| counts.contains_key(m))
            .or_else(|| counts.iter().max_by_key(|(_, n)| **n).map(|(m, _)| *m))
            .unwrap_or_default();
        let others = counts.get(&main).copied().unwrap_or(0);
        for (p, m) in machines.iter().filter(|(_, m)| *m != main) {
            cx.err(
                codes::MIXED_ARCH,
                Some(p),
                format!(
                    "ELF for {} while {others} other ELF file(s) of the image are for {}: one image, one architecture",
                    machine_name(*m),
                    machine_name(main)
                ),
            );
        }
    }
}

fn check_top_level(cx: &mut Ctx, configured: &[&Vec<PathBuf>]) {
    let mut allowed: BTreeSet<String> = ["lib", "share", "system", "licenses"].iter().map(|s| s.to_string()).collect();
    for list in configured {
        for p in list.iter() {
            if let Some(first) = p.iter().next() {
                allowed.insert(first.to_string_lossy().into_owned());
            }
        }
    }
    let names = sorted_names(cx.root);
    for n in &names {
        if !allowed.contains(n) {
            let p = cx.root.join(n);
            cx.warn(
                codes::UNEXPECTED_TOP_LEVEL_ENTRY,
                Some(&p),
                format!(
                    "unexpected top-level entry; expected only {}",
                    allowed.iter().cloned().collect::<Vec<_>>().join(", ")
                ),
            );
        }
    }
    if !names.iter().any(|n| n == "licenses") {
        cx.warn(codes::MISSING_LICENSES, None, "no licenses/ directory".into());
    }
}

#[cfg(test)]
mod tests {
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
