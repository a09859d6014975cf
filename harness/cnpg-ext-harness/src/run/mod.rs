//! The run pipeline: scenarios loaded, images prepared, a backend set up, each scenario's
//! steps driven ([`runner`]), the report assembled ([`app`]); [`harness`] is the library face.

pub mod app;
pub mod harness;
pub mod runner;
