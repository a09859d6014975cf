//! cnpg-ext-harness: proves, through SQL, that CloudNativePG image-volume extensions work.
//!
//! The layout follows the data path: scenario files → [`cnpg_ext_model`] (validated
//! manifests, derived plan) → [`images`] (resolved, pulled, built and unpacked once) → a
//! backend ([`backends`]: the stand-in over local or container runtimes, or kind) driven by
//! [`run`] → [`verify`] (written once) → [`reports`]. [`matrix`] and [`certify`] run that
//! pipeline many times; [`cli`] is the command line; [`plumbing`] holds process supervision
//! and file-system helpers every room may use.

pub mod backends;
pub mod certify;
pub mod cli;
pub mod error;
pub mod images;
pub mod matrix;
pub mod plumbing;
pub mod reports;
pub mod run;
pub mod verify;
pub use run::harness::Harness;
