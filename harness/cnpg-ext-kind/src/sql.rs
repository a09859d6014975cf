//! SQL sessions on an instance pod: a kube port-forward to its 5432 and tokio-postgres.
//!
//! Credentials come from the operator's secrets and are never printed: `<cluster>-superuser`
//! for user `postgres` (the harness sets `enableSuperuserAccess: true` unless the manifest
//! says otherwise), `<cluster>-app` for the application owner (default `app`). CNPG's
//! default pg_hba accepts password (scram) connections without TLS from the pod network,
//! and a port-forward arrives on the pod's loopback, so no TLS is used.

use cnpg_ext_model::backend::BackendError;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::Api;

use crate::errors::kube_error;

/// The secret that holds `user`'s password.
pub fn secret_for(cluster: &str, user: &str) -> String {
    if user == "postgres" {
        format!("{cluster}-superuser")
    } else {
        format!("{cluster}-app")
    }
}

/// (username, password) from a basic-auth secret; checks the username matches.
pub fn credentials_from(secret: &Secret, user: &str) -> Result<(String, String), BackendError> {
    let name = secret.metadata.name.clone().unwrap_or_default();
    let data = secret.data.clone().unwrap_or_default();
    let get = |k: &str| {
        data.get(k)
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            .ok_or_else(|| BackendError::Failed(format!("secret {name} has no `{k}` key")))
    };
    let username = get("username")?;
    if username != user {
        return Err(BackendError::Failed(format!(
            "secret {name} is for user `{username}`, not `{user}`: CNPG creates secrets for `postgres` \
             (<cluster>-superuser) and the application owner (<cluster>-app) only"
        )));
    }
    Ok((username, get("password")?))
}

pub async fn credentials(
    client: &kube::Client,
    namespace: &str,
    cluster: &str,
    user: &str,
) -> Result<(String, String), BackendError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let name = secret_for(cluster, user);
    let secret = secrets
        .get_opt(&name)
        .await
        .map_err(|e| kube_error(format!("reading secret {namespace}/{name}"), e))?;
    let Some(secret) = secret else {
        let hint = if user == "postgres" {
            " (superuser access is off: set `spec.enableSuperuserAccess: true` in the Cluster, or use `user: app`)"
        } else {
            ""
        };
        return Err(BackendError::Failed(format!(
            "secret {namespace}/{name} not found{hint}"
        )));
    };
    credentials_from(&secret, user)
}

/// Connects to `database` on pod `pod` as `user` through a port-forward.
pub async fn connect(
    client: &kube::Client,
    namespace: &str,
    cluster: &str,
    pod: &str,
    database: &str,
    user: &str,
) -> Result<tokio_postgres::Client, BackendError> {
    let (username, password) = credentials(client, namespace, cluster, user).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let what = format!("port-forward to pod {namespace}/{pod}:5432");
    let mut pf = pods
        .portforward(pod, &[5432])
        .await
        .map_err(|e| kube_error(&what, e))?;
    let stream = pf
        .take_stream(5432)
        .ok_or_else(|| BackendError::Failed(format!("{what}: no stream for port 5432")))?;
    let mut cfg = tokio_postgres::Config::new();
    cfg.user(&username)
        .password(password)
        .dbname(database)
        .application_name("cnpg-ext-harness");
    let (pg, conn) = cfg
        .connect_raw(stream, tokio_postgres::NoTls)
        .await
        .map_err(|e| {
            BackendError::Failed(format!(
                "connecting to database `{database}` as `{user}` on pod {namespace}/{pod}: {e}"
            ))
        })?;
    tokio::spawn(async move {
        // The forwarder lives as long as the connection.
        let _ = conn.await;
        pf.abort();
    });
    Ok(pg)
}
