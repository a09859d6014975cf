//! The run pipeline: scenarios loaded, images prepared, a backend set up, each scenario's
//! steps driven (`runner`), the report assembled (`app`); `harness` is the library face.

pub(crate) mod app;
pub(crate) mod evidence;
#[cfg(test)]
mod evidence_kind;
pub(crate) mod harness;
pub(crate) mod runner;
pub(crate) mod substitute;

pub use crate::reports::run::{Status, StepResult};
pub use app::{locate_postgres, run, BackendKind, BackendWrap, RunOptions, RunOutcome, WrapFn};
