//! Process and file plumbing every room may use and that uses no room above it: child
//! process registry ([`procs`]), the out-of-process cleanup supervisor ([`supervisor`]),
//! dropping root ([`run_as`]), shell quoting, file-system and SQL helpers.

pub mod engine;
pub mod exe;
pub mod fsutil;
pub mod procs;
pub mod run_as;
pub mod shell;
pub mod sql;
pub mod supervisor;
