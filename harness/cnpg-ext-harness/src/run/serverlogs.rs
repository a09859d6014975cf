//! Every instance's server log, read before and after an operation that may restart
//! postmasters, so that the judge counts the starts the logs show in between
//! (`cnpg_ext_model::serverlog`). A backend's log may lag behind what the instance wrote (a
//! container engine's log, the pod log API), so each read first has the instance log a mark
//! of the harness's own (`RAISE LOG` through SQL) and waits until the log shows it: what the
//! instance logged before — its postmaster's start line among it — is then in the text read.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cnpg_ext_backend::Backend;
use cnpg_ext_model::backend::BackendError;
use cnpg_ext_model::serverlog::MeasuredStarts;

use crate::plumbing::sql;

/// How long an instance's log may take to show the mark.
const MARK_TIMEOUT: Duration = Duration::from_secs(30);

/// Each instance's log (or why it could not be read whole).
pub(crate) type LogReads = BTreeMap<String, Result<String, String>>;

/// Every instance's server log, each read once it shows a mark logged just before.
pub(crate) async fn read(backend: &dyn Backend) -> Result<LogReads, BackendError> {
    let mut out = BTreeMap::new();
    for inst in backend.instances().await? {
        let log = read_one(backend, &inst.name).await;
        out.insert(inst.name, log);
    }
    Ok(out)
}

/// The postmaster starts each instance's log shows between the two reads.
pub(crate) fn starts(before: &LogReads, after: &LogReads) -> BTreeMap<String, MeasuredStarts> {
    let unread = Err("not read".to_string());
    before
        .iter()
        .map(|(name, b)| (name.clone(), MeasuredStarts::between(b, after.get(name).unwrap_or(&unread))))
        .collect()
}

async fn read_one(backend: &dyn Backend, instance: &str) -> Result<String, String> {
    // Without a log there is nothing to wait for.
    if backend.server_log(instance).await.is_none() {
        return Err(format!("the {} backend reads no server log of {instance}", backend.name()));
    }
    let mark = format!(
        "cnpg-ext-harness log mark {instance} {}",
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
    );
    let client = backend.connect(instance, "postgres", "postgres").await.map_err(|e| e.to_string())?;
    let raise = format!("DO $$BEGIN RAISE LOG '%', {}; END$$", sql::quote_literal(&mark));
    client
        .simple_query(&raise)
        .await
        .map_err(|e| format!("logging the harness's mark: {}", sql::describe_error(&e)))?;
    let deadline = Instant::now() + MARK_TIMEOUT;
    loop {
        match backend.server_log(instance).await {
            Some(log) if log.contains(&mark) => return Ok(log),
            _ if Instant::now() >= deadline => {
                return Err(format!(
                    "the server log did not show the harness's mark within {}s",
                    MARK_TIMEOUT.as_secs()
                ))
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}
