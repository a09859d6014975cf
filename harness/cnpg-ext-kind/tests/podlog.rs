//! `KindBackend::server_log` over the fake API's pod log: the instance manager's JSON records
//! come back as PostgreSQL's lines; without a previous container (the API answers 400) only
//! the current log, unheaded; with one, both, headed, oldest first; no log at all is `None`.

use cnpg_ext_backend::Backend;
use cnpg_ext_kind::testing::FakeApi;
use cnpg_ext_kind::{KindBackend, KindOptions};

const NS: &str = "cnpg-ext-podlog";

fn record(severity: &str, message: &str) -> String {
    format!(
        r#"{{"level":"info","ts":"t","logger":"postgres","msg":"record","logging_pod":"c-1","record":{{"log_time":"2026-01-01 00:00:00.000 UTC","process_id":"7","error_severity":"{severity}","message":"{message}","hint":"look here"}}}}"#
    )
}

#[tokio::test]
async fn the_postgres_containers_log_is_read_as_postgresql_lines() {
    let api = FakeApi::new();
    api.serve_pod_log(NS, "c-1", &record("ERROR", "boom"), None);
    api.serve_pod_log(NS, "c-2", &record("LOG", "now"), Some(&record("FATAL", "before")));
    let tmp = tempfile::tempdir().unwrap();
    let b =
        KindBackend::new(api.client(), NS, KindOptions { report_dir: tmp.path().to_path_buf(), ..Default::default() });

    assert_eq!(
        b.server_log("c-1").await.as_deref(),
        Some("2026-01-01 00:00:00.000 UTC [7] ERROR:  boom\n    HINT:  look here")
    );
    assert_eq!(
        b.server_log("c-2").await.as_deref(),
        Some(
            "-- previous container --\n2026-01-01 00:00:00.000 UTC [7] FATAL:  before\n    HINT:  look here\n\
             -- current container --\n2026-01-01 00:00:00.000 UTC [7] LOG:  now\n    HINT:  look here"
        )
    );
    assert_eq!(b.server_log("c-3").await, None, "a pod without a log");
    let asked: Vec<_> = api.requests_to("GET", &format!("/api/v1/namespaces/{NS}/pods/c-1/log"));
    assert!(asked.iter().all(|r| r.query.contains("container=postgres")), "{asked:?}");
}
