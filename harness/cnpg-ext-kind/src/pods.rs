//! What the watcher reads of an instance pod: its identity, role, readiness, extension
//! image volumes and `postgres` container (restarts, crash loop, the postmaster's FATAL).

use cnpg_ext_model::backend::Role;
use k8s_openapi::api::core::v1::Pod;

/// The part of an instance pod the observer needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    pub name: String,
    pub uid: String,
    pub role: Option<Role>,
    pub ready: bool,
    pub deleting: bool,
    /// The extension image volumes of the pod's spec, sorted: (volume name, image
    /// reference, mount path in the `postgres` container).
    pub image_volumes: Vec<(String, String, String)>,
    /// The `postgres` container is in `CrashLoopBackOff`: its restart count.
    pub crash_looping: Option<i32>,
    /// The `postgres` container's `restartCount` (0 when not reported yet).
    pub restart_count: i32,
}

/// The extension image volumes of a pod, as [`PodView::image_volumes`]: what the operator
/// put in the pod for `spec.postgresql.extensions` (cloudnative-pg `pkg/specs/volumes.go`,
/// `CreateExtensionVolumes` / `CreateExtensionVolumeMounts`).
pub fn pod_image_volumes(pod: &Pod) -> Vec<(String, String, String)> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    let mounts = spec
        .containers
        .iter()
        .find(|c| c.name == crate::inspect::POSTGRES_CONTAINER)
        .and_then(|c| c.volume_mounts.clone())
        .unwrap_or_default();
    let mut out: Vec<(String, String, String)> = spec
        .volumes
        .iter()
        .flatten()
        .filter_map(|v| {
            let reference = v.image.as_ref()?.reference.clone().unwrap_or_default();
            let path = mounts
                .iter()
                .find(|m| m.name == v.name)
                .map(|m| m.mount_path.clone())
                .unwrap_or_default();
            Some((v.name.clone(), reference, path))
        })
        .collect();
    out.sort();
    out
}

/// Role from `cnpg.io/instanceRole` (or the older `role` label).
pub fn pod_role(pod: &Pod) -> Option<Role> {
    let labels = pod.metadata.labels.as_ref()?;
    let r = labels
        .get("cnpg.io/instanceRole")
        .or_else(|| labels.get("role"))?;
    match r.as_str() {
        "primary" => Some(Role::Primary),
        "replica" => Some(Role::Replica),
        _ => None,
    }
}

/// Instance pods of a Cluster (not the initdb/join job pods).
pub fn is_instance_pod(pod: &Pod) -> bool {
    let Some(labels) = pod.metadata.labels.as_ref() else {
        return false;
    };
    if labels.contains_key("cnpg.io/jobRole") {
        return false;
    }
    match labels.get("cnpg.io/podRole") {
        Some(r) => r == "instance",
        None => {
            labels.contains_key("cnpg.io/instanceRole")
                || labels.contains_key("role")
                || labels.contains_key("cnpg.io/instanceName")
        }
    }
}

pub fn pod_view(pod: &Pod) -> PodView {
    let ready = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    PodView {
        name: pod.metadata.name.clone().unwrap_or_default(),
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        role: pod_role(pod),
        ready,
        deleting: pod.metadata.deletion_timestamp.is_some(),
        image_volumes: pod_image_volumes(pod),
        crash_looping: postgres_crash_loop(pod),
        restart_count: postgres_restart_count(pod),
    }
}

/// The `postgres` container's `restartCount` (0 when not reported yet).
pub fn postgres_restart_count(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == crate::inspect::POSTGRES_CONTAINER))
        .map(|c| c.restart_count)
        .unwrap_or(0)
}

/// The restart count of the pod's `postgres` container when it is waiting in
/// `CrashLoopBackOff` (a postmaster that cannot start: the rollout will never converge).
pub fn postgres_crash_loop(pod: &Pod) -> Option<i32> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    let c = statuses.iter().find(|c| c.name == "postgres")?;
    let waiting = c.state.as_ref()?.waiting.as_ref()?;
    (waiting.reason.as_deref() == Some("CrashLoopBackOff")).then_some(c.restart_count)
}

/// The postmaster's own reason in a container log: the last FATAL or PANIC, from the
/// instance manager's JSON records (`record.error_severity`, `record.message`) or plain
/// lines, as `FATAL:  <message>`.
pub fn fatal_in_log(log: &str) -> Option<String> {
    log.lines().rev().find_map(|line| {
        let plain = |text: &str| {
            ["FATAL:", "PANIC:"].iter().find_map(|m| text.split_once(m).map(|(_, r)| format!("{m}{r}")))
        };
        match serde_json::from_str::<serde_json::Value>(line) {
            // The instance manager's records: a parsed csvlog record, or a line the postmaster
            // wrote to stderr before its logging collector ran (`msg`).
            Ok(v) => {
                if let Some(rec) = v.get("record") {
                    let sev = rec.get("error_severity")?.as_str()?;
                    return (sev == "FATAL" || sev == "PANIC")
                        .then(|| format!("{sev}:  {}", rec.get("message").and_then(|m| m.as_str()).unwrap_or("")));
                }
                v.get("msg").and_then(|m| m.as_str()).and_then(plain)
            }
            Err(_) => plain(line),
        }
    })
}

#[cfg(test)]
mod crash_tests {
    use super::fatal_in_log;

    #[test]
    fn the_postmasters_fatal_line_from_instance_manager_records() {
        let log = concat!(
            r#"{"level":"info","msg":"starting"}"#, "\n",
            r#"{"level":"info","logger":"postgres","msg":"record","record":{"error_severity":"FATAL","message":"could not access file \"preloadprobe\": No such file or directory"}}"#, "\n",
            r#"{"level":"info","logger":"postgres","msg":"record","record":{"error_severity":"LOG","message":"database system is shut down"}}"#, "\n",
        );
        assert_eq!(
            fatal_in_log(log).as_deref(),
            Some(r#"FATAL:  could not access file "preloadprobe": No such file or directory"#)
        );
        assert_eq!(fatal_in_log("2026 [1] FATAL:  x\n").as_deref(), Some("FATAL:  x"));
        // Written to stderr before the logging collector ran (seen on the real node).
        let stderr = r#"{"level":"info","logger":"postgres","msg":"2026-12-03 08:16:46.343 UTC [22] FATAL:  could not access file \"preloadprobe\": No such file or directory","pipe":"stderr"}"#;
        assert_eq!(
            fatal_in_log(stderr).as_deref(),
            Some(r#"FATAL:  could not access file "preloadprobe": No such file or directory"#)
        );
        assert_eq!(fatal_in_log("LOG: fine\n"), None);
    }
}
