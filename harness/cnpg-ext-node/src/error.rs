//! One error type: a message for the user and the exit code (1 failure, 2 invalid input,
//! 3 environment unusable), as the rest of the harness uses them.

use std::fmt;

#[derive(Debug)]
pub struct NodeError {
    pub code: i32,
    pub message: String,
}

pub type Result<T> = std::result::Result<T, NodeError>;

impl NodeError {
    /// Something did not work (exit 1).
    pub fn failed(m: impl Into<String>) -> Self {
        NodeError { code: 1, message: m.into() }
    }
    /// Bad input from the user (exit 2).
    pub fn input(m: impl Into<String>) -> Self {
        NodeError { code: 2, message: m.into() }
    }
    /// This machine cannot run the node (exit 3).
    pub fn env(m: impl Into<String>) -> Self {
        NodeError { code: 3, message: m.into() }
    }
    /// An I/O error on `path`, while doing `what`.
    pub fn io(what: &str, path: &std::path::Path, e: std::io::Error) -> Self {
        NodeError::failed(format!("{what} {}: {e}", path.display()))
    }
}

impl fmt::Display for NodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for NodeError {}
