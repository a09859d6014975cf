//! Errors about user input: always name the file, the line when known, and the field.

use std::fmt;
use std::path::PathBuf;

/// Where in an input file something was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub file: PathBuf,
    pub line: Option<u64>,
}

impl fmt::Display for Located {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}", self.file.display(), line),
            None => write!(f, "{}", self.file.display()),
        }
    }
}

/// Invalid input: a scenario, a manifest or a field the operator would reject.
/// Maps to exit code 2.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{at}: {field}: {message}")]
pub struct InputError {
    pub at: Located,
    /// Dotted path of the offending field, e.g. `spec.postgresql.extensions[1].name`.
    pub field: String,
    pub message: String,
}

impl InputError {
    pub fn new(
        file: impl Into<PathBuf>,
        line: Option<u64>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        InputError { at: Located { file: file.into(), line }, field: field.into(), message: message.into() }
    }
}
