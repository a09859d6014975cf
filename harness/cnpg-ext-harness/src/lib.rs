//! cnpg-ext-harness: proves, through SQL, that CloudNativePG image-volume extensions work.
//!
//! The data path: scenario files → [`cnpg_ext_model`] (validated manifests, derived plan) →
//! [`store`] (images built/unpacked once) → a backend ([`local`]) driven by [`runner`] →
//! [`verify`] (written once) → [`report`].

pub mod app;
pub mod backends;
pub mod certify;
pub mod cli;
pub mod commands;
pub mod error;
pub mod fsutil;
pub mod harness;
pub mod matrix;
pub mod procs;
pub mod progress;
pub mod pull;
pub mod reports;
pub mod run_as;
pub mod runner;
pub mod shell;
pub mod sql;
pub mod store;
pub mod supervisor;
pub mod verify;
pub use harness::Harness;
