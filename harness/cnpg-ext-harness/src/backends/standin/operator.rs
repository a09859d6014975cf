//! The operator's rules the stand-in follows (local, container): how a
//! changed Cluster reaches the instances, and how a Database resource is reconciled.

use cnpg_ext_backend::Backend;

use cnpg_ext_model::backend::BackendError;
use cnpg_ext_model::plan::{ClusterPlan, PlanOptions};
use cnpg_ext_model::{Change, Cluster, CnpgVersion, Database};

use crate::plumbing::sql::{describe_error, quote_ident, quote_literal};

/// Settings every stand-in instance starts with: replication on, durability off (test data),
/// quick reconnects after a restart. The socket directory is set per backend.
pub(crate) const INSTANCE_CONF: &str = "listen_addresses = ''
port = 5432
max_connections = 30
shared_buffers = 16MB
fsync = off
synchronous_commit = off
full_page_writes = off
wal_level = replica
max_wal_senders = 10
max_replication_slots = 10
hot_standby = on
wal_writer_delay = '10ms'
# reconnect to a restarted primary quickly (default 5s)
wal_retrieve_retry_interval = '100ms'
logging_collector = off
log_min_messages = warning
";

/// The two GUCs the operator derives, as configuration lines.
pub(crate) fn operator_conf(plan: &ClusterPlan) -> String {
    let mut conf = format!(
        "# --- what the operator sets ---\nextension_control_path = {}\ndynamic_library_path = {}\n",
        quote_literal(&plan.extension_control_path),
        quote_literal(&plan.dynamic_library_path),
    );
    if !plan.shared_preload_libraries.is_empty() {
        conf += &format!("shared_preload_libraries = {}\n", quote_literal(&plan.shared_preload_libraries.join(",")));
    }
    conf
}

/// What the stand-in does with an applied Cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// No cluster yet.
    Create,
    /// Apply a change to running instances, as the operator would.
    Update(Change),
}

/// Classifies `next` against the Cluster the backend runs (`current`) with the model's one
/// classifier, or rejects what a stand-in does not model.
pub(crate) fn classify(
    current: Option<&Cluster>,
    next: &Cluster,
    cnpg: CnpgVersion,
    backend: &str,
) -> Result<Action, BackendError> {
    let Some(current) = current else { return Ok(Action::Create) };
    if current.metadata.name != next.metadata.name {
        return Err(BackendError::Rejected(format!(
            "this scenario already has Cluster `{}`; the {backend} backend runs one Cluster per scenario",
            current.metadata.name
        )));
    }
    if current.spec.instances != next.spec.instances {
        return Err(BackendError::Rejected(format!(
            "changing spec.instances is not modelled by the {backend} backend"
        )));
    }
    let opts = PlanOptions { mount_root: "/extensions".into(), cnpg };
    Ok(Action::Update(Change::between(&ClusterPlan::derive(current, &opts), &ClusterPlan::derive(next, &opts))))
}

/// Reconciles a Database on `primary`: creates the database (and owner) when missing, then
/// `ensure: present|absent` for each extension. Returns one message per extension.
pub(crate) async fn reconcile_database<B: Backend + ?Sized>(
    backend: &B,
    primary: &str,
    db: &Database,
) -> Result<Vec<String>, BackendError> {
    let failed = |m: String| BackendError::Failed(m);
    let admin = backend.connect(primary, "postgres", "postgres").await?;
    let exists = admin
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&db.spec.name])
        .await
        .map_err(|e| failed(describe_error(&e)))?;
    if exists.is_none() {
        // Two statements: CREATE DATABASE cannot run inside the implicit transaction of a
        // multi-statement query.
        let role = format!(
            "DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {owner_lit}) THEN CREATE ROLE {owner} LOGIN; END IF; END$$",
            owner_lit = quote_literal(&db.spec.owner),
            owner = quote_ident(&db.spec.owner),
        );
        admin.batch_execute(&role).await.map_err(|e| failed(describe_error(&e)))?;
        let create = format!("CREATE DATABASE {} OWNER {}", quote_ident(&db.spec.name), quote_ident(&db.spec.owner));
        admin.batch_execute(&create).await.map_err(|e| failed(describe_error(&e)))?;
    }
    let client = backend.connect(primary, &db.spec.name, "postgres").await?;
    let mut messages = Vec::new();
    for ext in &db.spec.extensions {
        let sql = match ext.ensure.as_str() {
            "present" => {
                let mut s = format!("CREATE EXTENSION IF NOT EXISTS {}", quote_ident(&ext.name));
                if let Some(schema) = &ext.schema {
                    s += &format!(" SCHEMA {}", quote_ident(schema));
                }
                if let Some(v) = &ext.version {
                    s += &format!(" VERSION {}", quote_literal(v));
                    // Present at another version: the operator updates it.
                    let current = client
                        .query_opt("SELECT extversion FROM pg_extension WHERE extname = $1", &[&ext.name])
                        .await
                        .map_err(|e| failed(describe_error(&e)))?
                        .map(|r| r.get::<_, String>(0));
                    if current.is_some_and(|c| c != *v) {
                        s = format!("ALTER EXTENSION {} UPDATE TO {}", quote_ident(&ext.name), quote_literal(v));
                    }
                }
                s
            }
            "absent" => format!("DROP EXTENSION IF EXISTS {}", quote_ident(&ext.name)),
            other => {
                return Err(BackendError::Rejected(format!(
                    "extension `{}`: ensure `{other}` is not present|absent",
                    ext.name
                )))
            }
        };
        client
            .batch_execute(&sql)
            .await
            .map_err(|e| failed(format!("extension `{}`: {}", ext.name, describe_error(&e))))?;
        messages.push(format!("{}: {}", ext.name, ext.ensure));
    }
    Ok(messages)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cnpg_ext_model::cluster::Manifest;
    use std::path::Path;

    fn cluster(extra: &str) -> Cluster {
        let text = format!(
            "apiVersion: postgresql.cnpg.io/v1\nkind: Cluster\nmetadata: {{name: c}}\nspec:\n  instances: 2\n  postgresql:\n    extensions:\n      - name: e\n        image: {{reference: x/e:1}}\n{extra}"
        );
        match Manifest::parse(Path::new("t.yaml"), &text).unwrap().remove(0) {
            Manifest::Cluster(d) => d.cluster,
            _ => unreachable!(),
        }
    }

    #[test]
    fn operator_semantics() {
        let v = CnpgVersion::DEFAULT;
        let base = cluster("");
        assert_eq!(classify(None, &base, v, "t").unwrap(), Action::Create);
        assert_eq!(classify(Some(&base), &base, v, "t").unwrap(), Action::Update(Change::Nothing));
        let ld = cluster("        ld_library_path: [system]\n");
        assert_eq!(classify(Some(&base), &ld, v, "t").unwrap(), Action::Update(Change::EnvironmentOnly));
        let paths = cluster("        extension_control_path: [opt]\n");
        assert_eq!(classify(Some(&base), &paths, v, "t").unwrap(), Action::Update(Change::SearchPathReload));
        let mut other_image = base.clone();
        other_image.spec.postgresql.extensions[0].image.reference = "x/e:2".into();
        assert_eq!(classify(Some(&base), &other_image, v, "t").unwrap(), Action::Update(Change::PodSpecRollout));
        let mut scaled = base.clone();
        scaled.spec.instances = 3;
        assert!(matches!(classify(Some(&base), &scaled, v, "t"), Err(BackendError::Rejected(_))));
    }
}
