//! The pure core of the harness: the subset of CloudNativePG's API that image-volume
//! extensions use, what the operator derives from it for each instance ([`plan`]), the
//! scenario format ([`scenario`]) and the contract every backend implements ([`backend`]).
//!
//! Nothing here starts a process or touches a cluster; everything is unit-tested.

pub mod backend;
pub mod change;
pub mod cluster;
pub mod error;
pub mod judge;
pub mod plan;
pub mod scenario;
pub mod version;
mod yaml;

pub use change::Change;
pub use cluster::{Cluster, ClusterDoc, Database, DatabaseDoc, ExtensionConfiguration, Manifest};
pub use error::{InputError, Located};
pub use plan::{ClusterPlan, ExtensionMount, PlanOptions};
pub use scenario::{Scenario, Step};
pub use version::CnpgVersion;
