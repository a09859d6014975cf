//! Mapping kube-rs errors to the model's [`BackendError`] with what was attempted.

use std::fmt::Display;

use cnpg_ext_model::backend::BackendError;

/// An admission webhook or the API server's validation refused the object.
pub fn is_rejection(status: &kube::core::Status) -> bool {
    let m = &status.message;
    (m.contains("admission webhook") && m.contains("denied the request"))
        || status.code == 422
        || status.reason == "Invalid"
}

/// `what` says what was attempted, e.g. "server-side apply of Cluster ns/name".
pub fn kube_error(what: impl Display, e: kube::Error) -> BackendError {
    match e {
        kube::Error::Api(status) => {
            if is_rejection(&status) {
                BackendError::Rejected(format!("{what}: {}", status.message))
            } else if status.code == 403 {
                BackendError::Unusable(format!(
                    "{what}: forbidden ({}): the kubeconfig user needs rights on this resource (cluster-admin on a test cluster)",
                    status.message
                ))
            } else {
                BackendError::Failed(format!(
                    "{what}: HTTP {} {}: {}",
                    status.code, status.reason, status.message
                ))
            }
        }
        other => BackendError::Failed(format!("{what}: {other}")),
    }
}

/// Is this a 404 from the API server?
pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}
