//! A single-node Kubernetes on this machine, built from Go modules at pinned versions, with
//! the real CloudNativePG operator: `k8s build|up|status|down` (see `docs/k8s-node.md`).
//!
//! * [`components`] — the Go build modules under `k8s/build/` (embedded) and the cached
//!   `go build` of each.
//! * [`pki`] — the node's CA and certificates (rcgen).
//! * [`config`] — every configuration file the components read (pure functions).
//! * [`supervisor`] — the process that owns the node: a PID, mount and network namespace of
//!   its own, so a `down` or a SIGKILLed supervisor leaves no process, mount or veth behind.
//! * [`node`] — `up`, `status`, `down`.
//! * [`cli`] — the clap arguments and [`cli::run`].

pub mod args;
pub mod cli;
pub mod components;
pub mod config;
pub mod error;
pub mod images;
pub mod node;
pub mod operand;
pub mod paths;
pub mod pki;
pub mod provisioner;
pub mod supervisor;
pub mod util;
pub mod wheel;

pub use error::{NodeError, Result};
