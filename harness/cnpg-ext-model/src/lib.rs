//! The pure core of the harness: the subset of CloudNativePG's API that image-volume
//! extensions use, what the operator derives from it for each instance ([`plan`]), the
//! scenario format ([`scenario`]) and the contract every backend implements ([`backend`]).
//!
//! Nothing here starts a process or touches a cluster; everything is unit-tested.

pub mod backend;
pub mod change;
pub mod cluster;
pub mod derivation;
pub mod env;
pub mod error;
pub mod gopath;
pub mod judge;
pub mod plan;
mod resolve;
pub mod scenario;
pub mod serverlog;
pub mod validate;
pub mod version;
mod yaml;

pub use change::Change;
pub use cluster::{
    CatalogDoc, Cluster, ClusterDoc, Database, DatabaseDoc, ExtensionConfiguration, ImageCatalog, Manifest,
};
pub use error::{InputError, Located};
pub use plan::{ClusterPlan, ExtensionMount, PlanOptions};
pub use scenario::{Scenario, Step};
pub use validate::{Rejection, Source};
pub use version::CnpgVersion;
