//! The run pipeline: scenarios loaded, images prepared, a backend set up, each scenario's
//! steps driven (`runner`, one attempt after another in `attempts`), the report assembled
//! (`app`); `options` says what a run is asked, `prepared` what it sets up once; `harness` is
//! the library face.

pub(crate) mod app;
mod attempts;
pub(crate) mod evidence;
#[cfg(test)]
mod evidence_kind;
pub(crate) mod harness;
mod options;
mod prepared;
pub(crate) mod runner;
mod serverlogs;
pub(crate) mod substitute;

pub use crate::reports::run::{Status, StepResult};
pub use app::{locate_postgres, run, BackendKind, BackendWrap, RunOptions, RunOutcome, WrapFn};
