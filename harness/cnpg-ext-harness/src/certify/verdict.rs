//! What decides a certification verdict: the kinds of finding, in the order that makes the
//! most fundamental cause decide, and the verdict they give.

use serde::Serialize;

use crate::error::Exit;

/// What can decide a certification verdict. When several are found, the first in this
/// order decides: the most fundamental cause first (a module for another architecture also
/// makes CREATE EXTENSION fail; the architecture is what the vendor must fix).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FindingKind {
    /// An ELF file or the image config is for another architecture, or the image mixes them.
    ArchitectureMismatch,
    /// A module's magic block names another PostgreSQL major (or, with no module, the label).
    PgMajorMismatch,
    /// A binary needs a newer glibc / libstdc++ than the operand's distribution has.
    OsMismatch,
    /// A DT_NEEDED library is neither in the image nor in the operand.
    UnresolvableNeeded,
    /// The postgres user (uid 26) cannot read a file or traverse a directory.
    NotReadable,
    /// An io.cloudnativepg.image.* label is missing and `--require-labels` was given.
    MissingLabel,
    /// Any other lint error, or an image whose extensions cannot be inferred.
    ImageLayout,
    /// The operand already ships the extension, so the image's copy is never used.
    /// From lint (`shadowed-by-operand`) and from the run's origin check.
    ShadowedByOperand,
    /// The module PostgreSQL loaded is not the image's file.
    /// From the run's origin check (`/proc/self/maps`).
    ModuleNotLoadedFromImage,
    /// CREATE EXTENSION failed in the generated scenario.
    CreateExtensionFailed,
    /// Another step of the generated scenario failed (ALTER EXTENSION UPDATE, DROP, …).
    ScenarioFailed,
    /// The extension could not be run here: the verdict is inconclusive, not a failure.
    EnvironmentUnusable,
}

impl FindingKind {
    /// The kind of an error-severity lint finding.
    pub fn of_lint_code(code: &str) -> FindingKind {
        use cnpg_ext_images::lint::codes as c;
        match code {
            c::ARCH_MISMATCH | c::WRONG_ARCH | c::WRONG_ELF_CLASS | c::MIXED_ARCH => FindingKind::ArchitectureMismatch,
            c::MODULE_PG_MAJOR_MISMATCH | c::PG_MAJOR_MISMATCH => FindingKind::PgMajorMismatch,
            c::GLIBC_TOO_NEW | c::LIBSTDCXX_TOO_NEW => FindingKind::OsMismatch,
            c::MISSING_NEEDED_LIBRARY => FindingKind::UnresolvableNeeded,
            c::NOT_READABLE_BY_POSTGRES => FindingKind::NotReadable,
            c::MISSING_LABEL => FindingKind::MissingLabel,
            _ => FindingKind::ImageLayout,
        }
    }

    /// The verdict this finding alone gives.
    pub fn verdict(self) -> Verdict {
        match self {
            FindingKind::EnvironmentUnusable => Verdict::Inconclusive,
            _ => Verdict::Fail,
        }
    }
}

/// One reason the verdict is not `pass`.
#[derive(Debug, Clone, Serialize)]
pub struct VerdictFinding {
    pub kind: FindingKind,
    /// The reason as a line of text (`lint <code>: <path>: <message>`, `run: …`).
    pub reason: String,
}

/// The verdict and the finding that decided it ([`FindingKind`] order); `pass` when none.
pub fn decide(findings: &[VerdictFinding]) -> (Verdict, Option<&VerdictFinding>) {
    match findings.iter().min_by_key(|f| f.kind) {
        Some(f) => (f.kind.verdict(), Some(f)),
        None => (Verdict::Pass, None),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail,
    Inconclusive,
}

impl Verdict {
    pub fn exit_code(self) -> Exit {
        match self {
            Verdict::Pass => Exit::Passed,
            Verdict::Fail => Exit::Failed,
            Verdict::Inconclusive => Exit::Environment,
        }
    }
    pub(super) fn name(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Inconclusive => "inconclusive",
        }
    }
}

/// The kebab-case name of a finding kind, as in certification.json.
pub fn kind_name(k: FindingKind) -> String {
    serde_json::to_value(k).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(kind: FindingKind) -> VerdictFinding {
        VerdictFinding { kind, reason: kind_name(kind) }
    }

    #[test]
    fn the_most_fundamental_finding_decides() {
        assert_eq!(decide(&[]).0, Verdict::Pass);
        let all = [
            f(FindingKind::CreateExtensionFailed),
            f(FindingKind::EnvironmentUnusable),
            f(FindingKind::ArchitectureMismatch),
            f(FindingKind::PgMajorMismatch),
        ];
        let (v, d) = decide(&all);
        assert_eq!((v, d.map(|d| d.kind)), (Verdict::Fail, Some(FindingKind::ArchitectureMismatch)));
        // Only an unusable environment: inconclusive; with any image defect: fail.
        assert_eq!(decide(&[f(FindingKind::EnvironmentUnusable)]).0, Verdict::Inconclusive);
        let two = [f(FindingKind::EnvironmentUnusable), f(FindingKind::ImageLayout)];
        let (v, d) = decide(&two);
        assert_eq!((v, d.map(|d| d.kind)), (Verdict::Fail, Some(FindingKind::ImageLayout)));
        // The hook points fail the verdict like any other finding.
        assert_eq!(decide(&[f(FindingKind::ShadowedByOperand)]).0, Verdict::Fail);
        assert_eq!(decide(&[f(FindingKind::ModuleNotLoadedFromImage)]).0, Verdict::Fail);
    }

    #[test]
    fn lint_codes_map_to_kinds() {
        use cnpg_ext_images::lint::codes as c;
        for (code, kind) in [
            (c::WRONG_ARCH, FindingKind::ArchitectureMismatch),
            (c::MIXED_ARCH, FindingKind::ArchitectureMismatch),
            (c::ARCH_MISMATCH, FindingKind::ArchitectureMismatch),
            (c::MODULE_PG_MAJOR_MISMATCH, FindingKind::PgMajorMismatch),
            (c::GLIBC_TOO_NEW, FindingKind::OsMismatch),
            (c::LIBSTDCXX_TOO_NEW, FindingKind::OsMismatch),
            (c::MISSING_NEEDED_LIBRARY, FindingKind::UnresolvableNeeded),
            (c::NOT_READABLE_BY_POSTGRES, FindingKind::NotReadable),
            (c::MISSING_LABEL, FindingKind::MissingLabel),
            (c::MISSING_MODULE, FindingKind::ImageLayout),
        ] {
            assert_eq!(FindingKind::of_lint_code(code), kind, "{code}");
        }
        assert_eq!(kind_name(FindingKind::PgMajorMismatch), "pg-major-mismatch");
    }
}
