//! cnpg-ext-harness: proves, through SQL, that CloudNativePG image-volume extensions work.
//!
//! The layout follows the data path: scenario files → [`cnpg_ext_model`] (validated
//! manifests, derived plan) → `images` (resolved, pulled, built and unpacked once) → a
//! backend (`backends`: the stand-in over local or container runtimes, or kind) driven by
//! [`run`] → `verify` (written once) → [`reports`]. [`matrix`] and [`certify`] run that
//! pipeline many times; [`cli`] is the command line; `plumbing` holds process supervision
//! and file-system helpers every room may use.
//!
//! What other crates use: [`Harness`] (run scenario directories, get a [`reports::run::RunReport`]),
//! [`run::run`] with [`run::RunOptions`] for every option, [`matrix::run_matrix`],
//! [`certify::certify`], the report types, and [`error::Exit`], the exit-code contract.
#![warn(unreachable_pub)]
// Plumbing the container backend uses (engine locks, cleanup hooks, image records) is unused
// in a build without it; the default build (every feature, linted in CI) still flags dead code.
#![cfg_attr(not(feature = "container"), allow(dead_code, unused_imports, unused_variables, unreachable_pub))]

mod backends;
pub mod certify;
pub mod cli;
pub mod error;
mod images;
pub mod matrix;
mod plumbing;
pub mod reports;
pub mod run;
#[doc(hidden)]
pub mod testing;
mod verify;

pub use images::pull::Registries;
pub use plumbing::engine::EngineOptions;
pub use run::harness::Harness;
