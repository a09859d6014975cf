//! Process and file plumbing every room may use and that uses no room above it: child
//! process registry ([`procs`]), the out-of-process cleanup supervisor ([`supervisor`]),
//! dropping root ([`run_as`]), shell quoting, file-system and SQL helpers.

pub(crate) mod engine;
pub(crate) mod exe;
pub(crate) mod fsutil;
pub(crate) mod procs;
pub(crate) mod progress;
pub(crate) mod run_as;
pub(crate) mod shell;
pub(crate) mod sql;
pub(crate) mod supervisor;
