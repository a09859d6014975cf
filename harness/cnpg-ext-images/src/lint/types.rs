//! What the linter reports (codes, severities, findings, the report) and takes (options), and
//! the context every check writes its findings into.

use crate::compat::Distro;
use crate::elf::BaseLibs;
use crate::platform::host_arch;
use crate::unpack::UnpackOptions;
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

/// Result of [`lint`](super::lint).
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

/// Options of [`lint`](super::lint).
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

pub(super) struct Ctx<'a> {
    pub(super) root: &'a Path,
    pub(super) opts: &'a LintOptions,
    pub(super) out: Vec<Finding>,
    pub(super) distro: Option<&'static Distro>,
    pub(super) bin: Binaries,
}

impl Ctx<'_> {
    pub(super) fn add(&mut self, severity: Severity, code: &str, path: Option<&Path>, message: String) {
        self.out.push(Finding {
            severity,
            code: code.into(),
            path: path.map(|p| p.strip_prefix(self.root).unwrap_or(p).display().to_string()),
            message,
        });
    }
    pub(super) fn err(&mut self, code: &str, path: Option<&Path>, message: String) {
        self.add(Severity::Error, code, path, message)
    }
    pub(super) fn warn(&mut self, code: &str, path: Option<&Path>, message: String) {
        self.add(Severity::Warning, code, path, message)
    }
    pub(super) fn info(&mut self, code: &str, path: Option<&Path>, message: String) {
        self.add(Severity::Info, code, path, message)
    }
    pub(super) fn rel(&self, p: &Path) -> String {
        p.strip_prefix(self.root).unwrap_or(p).display().to_string()
    }
}

/// A relative, `..`-free option path, else `None`.
pub(super) fn safe_rel(p: &str) -> Option<PathBuf> {
    let pb = PathBuf::from(p);
    let ok = !p.is_empty()
        && pb.components().all(|c| matches!(c, std::path::Component::Normal(_) | std::path::Component::CurDir));
    ok.then_some(pb)
}
