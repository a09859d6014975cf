//! Internals this crate's own integration tests and benchmarks reach (cleanup after a dead
//! run, the container engine, process ownership). Not part of the public API.

#[cfg(feature = "container")]
pub use crate::backends::container::{engine_available, engine_reference_of, start_api_service, ApiService, LABEL_RUN};
/// A build without the container backend can use no engine.
#[cfg(not(feature = "container"))]
pub fn engine_available(_: &crate::EngineOptions) -> bool {
    false
}
pub use crate::matrix::parse_duration;
pub use crate::plumbing::exe::harness_binary;
pub use crate::plumbing::fsutil::remove_tree;
pub use crate::plumbing::run_as::RunAs;
pub use crate::plumbing::shell::split_flags;
pub use crate::plumbing::supervisor::{
    read_record, supervisor, sweep_stale, sweep_stale_engine, EngineImage, EngineTarget, Owner, OwnerRecord, ENV_FAULT,
    LABEL_OWNER, OWNER_FILE,
};
