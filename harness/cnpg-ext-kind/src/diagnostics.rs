//! The failure bundle: `<report-dir>/diagnostics/<namespace>/` with the Cluster, Database
//! and Pod objects (YAML), the namespace's events, instance logs and the operator's log.
//! Best effort: what cannot be read is listed in `errors.txt`, collection never fails a run
//! a second time. Secrets are not collected.

use std::path::{Path, PathBuf};

use cnpg_ext_model::backend::BackendError;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, DynamicObject, ListParams, LogParams};
use serde::Serialize;

use crate::apply::{cluster_resource, database_resource};
use crate::operator::OPERATOR_LABEL;

fn yaml<T: Serialize>(v: &T) -> String {
    let value = serde_json::to_value(v).unwrap_or_default();
    serde_saphyr::to_string(&value)
        .unwrap_or_else(|e| format!("# cannot render YAML: {e}\n{value:#}"))
}

fn write(dir: &Path, name: &str, text: &str, errors: &mut Vec<String>) {
    if let Err(e) = std::fs::write(dir.join(name), text) {
        errors.push(format!("writing {name}: {e}"));
    }
}

/// Collects the bundle for `namespace` under `report_dir`; returns its directory.
pub async fn collect(
    client: &kube::Client,
    namespace: &str,
    report_dir: &Path,
) -> Result<PathBuf, BackendError> {
    let dir = report_dir.join("diagnostics").join(namespace);
    std::fs::create_dir_all(dir.join("logs"))
        .map_err(|e| BackendError::Failed(format!("creating {}: {e}", dir.display())))?;
    let mut errors = Vec::new();
    let lp = ListParams::default();

    let clusters: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &cluster_resource());
    match clusters.list(&lp).await {
        Ok(l) => write(&dir, "clusters.yaml", &yaml(&l.items), &mut errors),
        Err(e) => errors.push(format!("listing Clusters: {e}")),
    }
    let dbs: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &database_resource());
    match dbs.list(&lp).await {
        Ok(l) => write(&dir, "databases.yaml", &yaml(&l.items), &mut errors),
        Err(e) => errors.push(format!("listing Databases: {e}")),
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    match pods.list(&lp).await {
        Ok(l) => {
            write(&dir, "pods.yaml", &yaml(&l.items), &mut errors);
            for p in &l.items {
                let name = p.metadata.name.clone().unwrap_or_default();
                let containers: Vec<String> = p
                    .spec
                    .as_ref()
                    .map(|s| s.containers.iter().map(|c| c.name.clone()).collect())
                    .unwrap_or_default();
                for c in containers {
                    let params = LogParams {
                        container: Some(c.clone()),
                        tail_lines: Some(2000),
                        ..Default::default()
                    };
                    match pods.logs(&name, &params).await {
                        Ok(text) => write(
                            &dir.join("logs"),
                            &format!("{name}.{c}.log"),
                            &text,
                            &mut errors,
                        ),
                        Err(e) => errors.push(format!("logs of {name}/{c}: {e}")),
                    }
                }
            }
        }
        Err(e) => errors.push(format!("listing pods: {e}")),
    }
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    match events.list(&lp).await {
        Ok(l) => {
            let mut lines: Vec<String> = l
                .items
                .iter()
                .map(|e| {
                    let obj = &e.involved_object;
                    format!(
                        "{} {} {}/{}: {} {}",
                        e.last_timestamp
                            .as_ref()
                            .map(|t| t.0.to_string())
                            .unwrap_or_default(),
                        e.type_.clone().unwrap_or_default(),
                        obj.kind.clone().unwrap_or_default(),
                        obj.name.clone().unwrap_or_default(),
                        e.reason.clone().unwrap_or_default(),
                        e.message.clone().unwrap_or_default()
                    )
                })
                .collect();
            lines.sort();
            write(&dir, "events.txt", &(lines.join("\n") + "\n"), &mut errors);
        }
        Err(e) => errors.push(format!("listing events: {e}")),
    }
    let ops: Api<Pod> = Api::all(client.clone());
    match ops
        .list(&ListParams::default().labels(OPERATOR_LABEL))
        .await
    {
        Ok(l) => {
            for p in &l.items {
                let (ns, name) = (
                    p.metadata.namespace.clone().unwrap_or_default(),
                    p.metadata.name.clone().unwrap_or_default(),
                );
                let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
                let params = LogParams {
                    tail_lines: Some(5000),
                    ..Default::default()
                };
                match api.logs(&name, &params).await {
                    Ok(text) => write(
                        &dir.join("logs"),
                        &format!("operator.{name}.log"),
                        &text,
                        &mut errors,
                    ),
                    Err(e) => errors.push(format!("operator logs of {ns}/{name}: {e}")),
                }
            }
        }
        Err(e) => errors.push(format!("listing operator pods: {e}")),
    }
    if !errors.is_empty() {
        write(
            &dir,
            "errors.txt",
            &(errors.join("\n") + "\n"),
            &mut Vec::new(),
        );
    }
    Ok(dir)
}
