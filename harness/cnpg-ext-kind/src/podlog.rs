//! An instance's server log and settings as evidence of a failure: the `postgres`
//! container's log through the pod log API (the previous container's first, when it
//! restarted), with each of the instance manager's JSON records (`logger: postgres`,
//! `record: {log_time, process_id, error_severity, message, …}`) written back as the line
//! PostgreSQL would have printed, and the extension settings read by `psql` in the pod.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, LogParams};
use serde_json::Value;

use crate::exec::PodExec;
use crate::inspect::POSTGRES_CONTAINER;

/// Most lines read from each container.
const MOST_LINES: i64 = 20_000;

/// The `postgres` container's log of `pod` (its previous container's first, headed, when
/// the kubelet kept one), as text; `None` when neither can be read.
pub async fn server_log(client: &kube::Client, namespace: &str, pod: &str) -> Option<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let params = |previous: bool| LogParams {
        container: Some(POSTGRES_CONTAINER.to_string()),
        previous,
        tail_lines: Some(MOST_LINES),
        ..Default::default()
    };
    let previous = pods.logs(pod, &params(true)).await.ok().filter(|l| !l.trim().is_empty());
    let current = match pods.logs(pod, &params(false)).await {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::debug!("log of {namespace}/{pod}: {e}");
            None
        }
    };
    let text = match (previous, current) {
        (None, None) => return None,
        (Some(p), None) => format!("-- previous container --\n{}", render(&p)),
        (None, Some(c)) => render(&c),
        (Some(p), Some(c)) => {
            format!("-- previous container --\n{}\n-- current container --\n{}", render(&p), render(&c))
        }
    };
    Some(text)
}

/// The instance manager's JSON lines as PostgreSQL's own text lines; other lines unchanged.
pub fn render(log: &str) -> String {
    log.lines().map(render_line).collect::<Vec<_>>().join("\n")
}

fn render_line(line: &str) -> String {
    let Ok(v) = serde_json::from_str::<Value>(line) else { return line.to_string() };
    let field = |r: &Value, k: &str| r.get(k).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
    match v.get("record") {
        Some(r) if v.get("logger").and_then(Value::as_str) == Some("postgres") => {
            let mut out = format!(
                "{} [{}] {}:  {}",
                field(r, "log_time").unwrap_or_default(),
                field(r, "process_id").unwrap_or_default(),
                field(r, "error_severity").unwrap_or_else(|| "LOG".into()),
                field(r, "message").unwrap_or_default()
            );
            for (key, label) in [("detail", "DETAIL"), ("hint", "HINT"), ("context", "CONTEXT"), ("query", "STATEMENT")] {
                if let Some(x) = field(r, key) {
                    out += &format!("\n    {label}:  {x}");
                }
            }
            out
        }
        // Another logger (the instance manager itself): its message, with the record if any.
        _ => match (field(&v, "logger"), field(&v, "msg")) {
            (Some(logger), Some(msg)) => {
                let level = field(&v, "level").unwrap_or_default();
                let extra = v.get("record").map(|r| format!(" {r}")).unwrap_or_default();
                format!("[{logger}] {level}: {msg}{extra}")
            }
            _ => line.to_string(),
        },
    }
}

/// `extension_control_path`, `dynamic_library_path` and `shared_preload_libraries` as the
/// postmaster of `pod` has them (the postmaster probe: `psql` in the pod).
pub async fn settings(exec: &dyn PodExec, namespace: &str, pod: &str) -> Option<Vec<(String, String)>> {
    match crate::postmaster::probe(exec, namespace, pod).await {
        Ok(state) => Some(state.settings.into_iter().collect()),
        Err(e) => {
            tracing::debug!("settings of {namespace}/{pod}: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::render;

    #[test]
    fn records_become_postgresql_lines_and_other_lines_stay() {
        let log = concat!(
            r#"{"level":"info","ts":"2026-01-01T00:00:00Z","logger":"postgres","msg":"record","logging_pod":"c-1","record":{"log_time":"2026-01-01 00:00:00.100 UTC","process_id":"41","error_severity":"ERROR","sql_state_code":"58P01","message":"could not load library \"/extensions/x/lib/x.so\": libgeos_c.so.1: cannot open shared object file: No such file or directory","query":"CREATE EXTENSION x"}}"#,
            "\n",
            r#"{"level":"info","ts":"2026-01-01T00:00:01Z","logger":"instance-manager","msg":"Readiness probe failing"}"#,
            "\nplain text\n"
        );
        assert_eq!(
            render(log),
            "2026-01-01 00:00:00.100 UTC [41] ERROR:  could not load library \"/extensions/x/lib/x.so\": libgeos_c.so.1: cannot open shared object file: No such file or directory\n    STATEMENT:  CREATE EXTENSION x\n[instance-manager] info: Readiness probe failing\nplain text"
        );
    }
}
