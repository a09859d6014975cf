//! Failure categories: one stable name per kind of failure, decided from what the step saw
//! (its failing checks, its error, the instance's log), and the evidence that decided it.
//! The list and the meaning of each name is `docs/report-schema.md` → Categories; a test
//! keeps the two in step.

use serde::{Deserialize, Serialize};

/// Why a step (and so its scenario) failed. Stable names: CI filters and `diff` read them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Category {
    ImagePull,
    ContainerCreate,
    MissingControlFile,
    Shadowed,
    ModuleNotLoadedFromImage,
    MissingSharedLibrary,
    UndefinedSymbol,
    PgMajorMismatch,
    RolloutStalled,
    DatabaseReconcileFailed,
    EnvironmentUnsupported,
    Timeout,
    Assertion,
    OperationFailed,
}

impl Category {
    pub const ALL: [Category; 14] = [
        Category::ImagePull,
        Category::ContainerCreate,
        Category::MissingControlFile,
        Category::Shadowed,
        Category::ModuleNotLoadedFromImage,
        Category::MissingSharedLibrary,
        Category::UndefinedSymbol,
        Category::PgMajorMismatch,
        Category::RolloutStalled,
        Category::DatabaseReconcileFailed,
        Category::EnvironmentUnsupported,
        Category::Timeout,
        Category::Assertion,
        Category::OperationFailed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Category::ImagePull => "image-pull",
            Category::ContainerCreate => "container-create",
            Category::MissingControlFile => "missing-control-file",
            Category::Shadowed => "shadowed",
            Category::ModuleNotLoadedFromImage => "module-not-loaded-from-image",
            Category::MissingSharedLibrary => "missing-shared-library",
            Category::UndefinedSymbol => "undefined-symbol",
            Category::PgMajorMismatch => "pg-major-mismatch",
            Category::RolloutStalled => "rollout-stalled",
            Category::DatabaseReconcileFailed => "database-reconcile-failed",
            Category::EnvironmentUnsupported => "environment-unsupported",
            Category::Timeout => "timeout",
            Category::Assertion => "assertion",
            Category::OperationFailed => "operation-failed",
        }
    }

    pub fn parse(s: &str) -> Option<Category> {
        Category::ALL.into_iter().find(|c| c.name() == s)
    }

    /// Infrastructure, not the extension: `--retries` may retry these, never the others.
    pub fn is_infrastructure(self) -> bool {
        matches!(self, Category::ImagePull | Category::Timeout | Category::ContainerCreate)
    }
}

impl std::fmt::Display for Category {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One piece of what decided a category: a log excerpt, `SHOW` values, the library named, …
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// `postmaster-log`, `show`, `mounts`, `library`, `symbol`, `checks`, `diagnostics`, `error`.
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    pub text: String,
}

impl Evidence {
    pub fn new(source: &str, instance: Option<&str>, text: impl Into<String>) -> Evidence {
        Evidence { source: source.into(), instance: instance.map(str::to_string), text: text.into() }
    }
}

/// What a failed step saw, as the classifier reads it.
#[derive(Debug, Default)]
pub struct FailureFacts<'a> {
    /// The environment refused the backend (`BackendError::Unusable`).
    pub unusable: bool,
    /// The step ended in an error instead of checks.
    pub error: Option<&'a str>,
    /// `(what, actual)` of every failing check.
    pub failing_checks: Vec<(&'a str, &'a str)>,
}

/// The text rules, most specific first: each is a phrase PostgreSQL, a container engine or
/// Kubernetes prints for that failure.
const TEXT_RULES: &[(Category, &[&str])] = &[
    (Category::MissingSharedLibrary, &["cannot open shared object file"]),
    (Category::UndefinedSymbol, &["undefined symbol"]),
    (
        Category::PgMajorMismatch,
        &["incompatible library", "magic block", "server is version", "library is version", "pg-major-mismatch"],
    ),
    (Category::Shadowed, &["shadowed"]),
    (
        Category::ImagePull,
        &["errimagepull", "imagepullbackoff", "failed to pull", "pull access denied", "manifest unknown"],
    ),
    (
        Category::ContainerCreate,
        &[
            "createcontainererror",
            "createcontainerconfigerror",
            "mkdir \"\"",
            "cannot create container",
            "creating container",
        ],
    ),
    (
        Category::MissingControlFile,
        &["could not open extension control file", "extension control file", "is not available", "control file"],
    ),
    (Category::ModuleNotLoadedFromImage, &["is not mapped", "does not ship", "loaded the operand's"]),
    (Category::RolloutStalled, &["rollout stalled", "rollout did not", "rolling update did not", "stalled"]),
    (Category::Timeout, &["timed out", "timeout", "deadline exceeded", "waited "]),
];

fn by_text(text: &str) -> Option<Category> {
    let lower = text.to_lowercase();
    TEXT_RULES.iter().find(|(_, phrases)| phrases.iter().any(|p| lower.contains(p))).map(|(c, _)| *c)
}

/// Decides the category of a failed step.
pub fn classify(f: &FailureFacts<'_>) -> Category {
    if f.unusable {
        return Category::EnvironmentUnsupported;
    }
    if let Some(e) = f.error {
        return by_text(e).unwrap_or(Category::OperationFailed);
    }
    let all: String = f.failing_checks.iter().map(|(w, a)| format!("{w}: {a}\n")).collect();
    if let Some(c) = by_text(&all) {
        // "control file" is in the name of the origin check itself: only its actual decides.
        if c != Category::MissingControlFile || f.failing_checks.iter().any(|(_, a)| by_text(a).is_some()) {
            return c;
        }
    }
    for (what, _) in &f.failing_checks {
        if what.starts_with("Database ") {
            return Category::DatabaseReconcileFailed;
        }
        if what.starts_with("origin of") && what.contains(": module") {
            return Category::ModuleNotLoadedFromImage;
        }
        if what.starts_with("origin of") && what.contains("control file") {
            return Category::MissingControlFile;
        }
        if what.starts_with("rolling update") {
            return Category::RolloutStalled;
        }
    }
    Category::Assertion
}

/// The library a `cannot open shared object file` line names (`libfoo.so.1`).
pub fn missing_library(text: &str) -> Option<String> {
    let at = text.find(": cannot open shared object file")?;
    let head = &text[..at];
    let name = head.rsplit(|c: char| c.is_whitespace() || c == '"' || c == ':' || c == '/').next()?;
    (!name.is_empty()).then(|| name.to_string())
}

/// The symbol an `undefined symbol: foo` line names.
pub fn undefined_symbol(text: &str) -> Option<String> {
    let at = text.find("undefined symbol: ")?;
    let rest = &text[at + "undefined symbol: ".len()..];
    let sym: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '@' || *c == '.').collect();
    (!sym.is_empty()).then_some(sym)
}

/// The lines of `log` around the first line containing any of `needles` (or its tail when
/// none does): what a person would grep for.
pub fn log_excerpt(log: &str, needles: &[&str], around: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    let hit = lines.iter().rposition(|l| {
        let lower = l.to_lowercase();
        needles.iter().any(|n| lower.contains(&n.to_lowercase()))
    });
    let (from, to) = match hit {
        Some(i) => (i.saturating_sub(around), (i + around + 1).min(lines.len())),
        None => (lines.len().saturating_sub(2 * around), lines.len()),
    };
    lines[from..to].join("\n")
}

/// The phrases of `category`'s rule (to find its line in a log).
pub fn phrases(category: Category) -> &'static [&'static str] {
    match TEXT_RULES.iter().find(|(c, _)| *c == category) {
        Some((_, p)) => p,
        None => &["ERROR:", "FATAL:", "PANIC:"],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checks(c: &[(&'static str, &'static str)]) -> FailureFacts<'static> {
        FailureFacts { failing_checks: c.to_vec(), ..FailureFacts::default() }
    }

    #[test]
    fn each_failure_gets_its_own_category() {
        let cases: &[(FailureFacts, Category)] = &[
            (
                checks(&[("statement succeeded", "ERROR: could not load library \"/extensions/x/lib/x.so\": libgeos_c.so.1: cannot open shared object file: No such file or directory")]),
                Category::MissingSharedLibrary,
            ),
            (checks(&[("statement succeeded", "ERROR: could not load library \"x.so\": x.so: undefined symbol: pg_foo")]), Category::UndefinedSymbol),
            (checks(&[("statement succeeded", "ERROR: incompatible library \"x.so\": version mismatch")]), Category::PgMajorMismatch),
            (checks(&[("origin of vector: control file", "/usr/share/x/vector.control — shadowed: the operand ships its own")]), Category::Shadowed),
            (checks(&[("origin of vector: module vector.so (/proc/self/maps)", "vector.so is not mapped")]), Category::ModuleNotLoadedFromImage),
            (checks(&[("origin of vector: control file", "none found")]), Category::MissingControlFile),
            (checks(&[("statement succeeded", "ERROR: extension \"vector\" is not available")]), Category::MissingControlFile),
            (checks(&[("Database app status", "applied: false, message: boom")]), Category::DatabaseReconcileFailed),
            (checks(&[("rows on x-1", "[5.2]")]), Category::Assertion),
            (FailureFacts { unusable: true, ..FailureFacts::default() }, Category::EnvironmentUnsupported),
            (FailureFacts { error: Some("pod x-1: CreateContainerError: mkdir \"\": no such file"), ..FailureFacts::default() }, Category::ContainerCreate),
            (FailureFacts { error: Some("pod x-1: ErrImagePull"), ..FailureFacts::default() }, Category::ImagePull),
            (FailureFacts { error: Some("waited 60s for x-1 to accept connections"), ..FailureFacts::default() }, Category::Timeout),
            (FailureFacts { error: Some("rejected: bad name"), ..FailureFacts::default() }, Category::OperationFailed),
        ];
        for (facts, want) in cases {
            assert_eq!(classify(facts), *want, "{facts:?}");
        }
    }

    #[test]
    fn names_round_trip_and_only_infrastructure_is_retried() {
        for c in Category::ALL {
            assert_eq!(Category::parse(c.name()), Some(c));
            assert_eq!(serde_json::to_value(c).unwrap(), serde_json::Value::String(c.name().into()));
        }
        let retried: Vec<&str> =
            Category::ALL.into_iter().filter(|c| c.is_infrastructure()).map(Category::name).collect();
        assert_eq!(retried, ["image-pull", "container-create", "timeout"]);
    }

    #[test]
    fn the_library_and_symbol_are_named() {
        let line = "could not load library \"/ext/lib/postgis-3.so\": libgeos_c.so.1: cannot open shared object file: No such file";
        assert_eq!(missing_library(line).as_deref(), Some("libgeos_c.so.1"));
        assert_eq!(
            undefined_symbol("x.so: undefined symbol: pg_detoast_datum_v2, version X").as_deref(),
            Some("pg_detoast_datum_v2")
        );
        let log = "a\nb\nc\nERROR: boom\nd\ne";
        assert_eq!(log_excerpt(log, &["error:"], 1), "c\nERROR: boom\nd");
    }
}
