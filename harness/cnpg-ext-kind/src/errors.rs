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

/// Why the API server answered 403.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forbidden {
    /// The namespace is being deleted (left from a previous run): the NamespaceLifecycle
    /// admission plugin refuses new objects in it ("unable to create new content in
    /// namespace X because it is being terminated", cause `NamespaceTerminating`). Clears
    /// once the namespace is gone.
    NamespaceTerminating,
    /// The ServiceAccount admission plugin cannot find the pod's ServiceAccount ("error
    /// looking up service account ns/default: serviceaccount \"default\" not found"): the
    /// controller manager has not created a new namespace's `default` one yet. Clears
    /// within seconds.
    MissingServiceAccount,
    /// Anything else (RBAC, policy): reported with the API server's message.
    Other,
}

pub fn forbidden_kind(status: &kube::core::Status) -> Forbidden {
    let m = &status.message;
    let terminating_cause = status.details.as_ref().is_some_and(|d| {
        d.causes
            .iter()
            .any(|c| c.reason == "NamespaceTerminating")
    });
    if terminating_cause || m.contains("because it is being terminated") {
        Forbidden::NamespaceTerminating
    } else if m.contains("error looking up service account") && m.contains("not found") {
        Forbidden::MissingServiceAccount
    } else {
        Forbidden::Other
    }
}

/// The 403 that clears by itself (see [`Forbidden`]), if `e` is one.
pub fn transient_forbidden(e: &kube::Error) -> Option<Forbidden> {
    match e {
        kube::Error::Api(s) if s.code == 403 => match forbidden_kind(s) {
            Forbidden::Other => None,
            k => Some(k),
        },
        _ => None,
    }
}

/// `what` says what was attempted, e.g. "server-side apply of Cluster ns/name".
pub fn kube_error(what: impl Display, e: kube::Error) -> BackendError {
    match e {
        kube::Error::Api(status) => {
            if is_rejection(&status) {
                BackendError::Rejected(format!("{what}: {}", status.message))
            } else if status.code == 403 {
                let m = &status.message;
                match forbidden_kind(&status) {
                    Forbidden::NamespaceTerminating => BackendError::Failed(format!(
                        "{what}: forbidden: {m} (the namespace is still being deleted, probably left by an earlier run; \
                         wait for it to disappear: `kubectl get namespace`)"
                    )),
                    Forbidden::MissingServiceAccount => BackendError::Failed(format!(
                        "{what}: forbidden: {m} (the namespace's `default` ServiceAccount does not exist yet; \
                         the cluster was probably just created: retry in a few seconds)"
                    )),
                    // RBAC refusals read `User "x" cannot <verb> resource ...`.
                    Forbidden::Other if m.contains(" cannot ") => BackendError::Unusable(format!(
                        "{what}: forbidden: {m} (the kubeconfig user needs rights on this resource; cluster-admin on a test cluster)"
                    )),
                    Forbidden::Other => BackendError::Unusable(format!("{what}: forbidden: {m}")),
                }
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
