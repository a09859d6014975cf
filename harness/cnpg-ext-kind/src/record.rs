//! Recording what the API server answers, for the fake API's replays.
//!
//! With [`ENV_RECORD`] set to a directory, the backend's client writes every GET response it
//! receives there (pod exec upgrades excepted): a plain GET as `NNNNN-get-<path>.json`
//! (`{"method", "path", "query", "status", "body"}`), a watch as `NNNNN-watch-<path>.jsonl`
//! (a first line `{"method", "path", "query", "status"}`, then the event lines exactly as they
//! arrived). `NNNNN` is the order the responses started in. The fake API's tests read these
//! files back (`tests/fixtures/recorded/`, see `tests/recorded.rs`).

use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use kube::client::{Body, DynBody};
use serde_json::{json, Value};

/// The environment variable naming the directory responses are recorded into.
pub const ENV_RECORD: &str = "CNPG_EXT_KIND_RECORD";

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Where responses go, and their sequence.
#[derive(Debug)]
pub struct RecordDir {
    dir: PathBuf,
    seq: AtomicU64,
}

impl RecordDir {
    /// Creates `dir` (and its parents).
    pub fn create(dir: &Path) -> std::io::Result<Arc<RecordDir>> {
        std::fs::create_dir_all(dir)?;
        Ok(Arc::new(RecordDir { dir: dir.to_path_buf(), seq: AtomicU64::new(0) }))
    }

    fn file(&self, kind: &str, path: &str, ext: &str) -> PathBuf {
        let n = self.seq.fetch_add(1, Ordering::SeqCst);
        let name: String =
            path.trim_matches('/').chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' }).collect();
        self.dir.join(format!("{n:05}-{kind}-{name}.{ext}"))
    }
}

/// Whether a query asks for a watch (`watch=true` / `watch=1`).
pub fn is_watch(query: &str) -> bool {
    query.split('&').any(|kv| kv == "watch=true" || kv == "watch=1")
}

/// The service of a recording client: passes every request on, tees the GET responses.
pub struct Recorder<S> {
    pub inner: S,
    pub dir: Arc<RecordDir>,
}

impl<S> tower::Service<Request<Body>> for Recorder<S>
where
    S: tower::Service<Request<Body>, Response = Response<Box<DynBody>>, Error = BoxError>,
    S::Future: Send + 'static,
{
    type Response = Response<Box<DynBody>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let method = req.method().to_string();
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or("").to_string();
        let upgrade = req.headers().contains_key(http::header::UPGRADE);
        let record = method == "GET" && !upgrade;
        let fut = self.inner.call(req);
        let dir = self.dir.clone();
        Box::pin(async move {
            let resp = fut.await?;
            if !record {
                return Ok(resp);
            }
            let (parts, body) = resp.into_parts();
            let head = json!({"method": method, "path": path, "query": query, "status": parts.status.as_u16()});
            if is_watch(&query) {
                let file = dir.file("watch", &path, "jsonl");
                let out = std::fs::File::create(&file).ok().map(|mut f| {
                    let _ = writeln!(f, "{head}");
                    Arc::new(Mutex::new(f))
                });
                let body = body.map_frame(move |frame| {
                    if let (Some(data), Some(out)) = (frame.data_ref(), &out) {
                        let _ = out.lock().expect("record file").write_all(data);
                    }
                    frame
                });
                return Ok(Response::from_parts(parts, Box::new(body) as Box<DynBody>));
            }
            let bytes = body.collect().await?.to_bytes();
            let mut frame = head;
            frame["body"] = serde_json::from_slice::<Value>(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
            let file = dir.file("get", &path, "json");
            if let Err(e) = std::fs::write(&file, serde_json::to_vec_pretty(&frame).expect("json")) {
                tracing::warn!("cannot record {}: {e}", file.display());
            }
            let body = Full::new(bytes).map_err(|never: std::convert::Infallible| -> BoxError { match never {} });
            Ok(Response::from_parts(parts, Box::new(body) as Box<DynBody>))
        })
    }
}

/// A client from `config` that records into `dir`.
pub fn recording_client(config: kube::Config, dir: &Path) -> Result<kube::Client, String> {
    let dir = RecordDir::create(dir).map_err(|e| format!("{ENV_RECORD}={}: {e}", dir.display()))?;
    let builder = kube::client::ClientBuilder::try_from(config).map_err(|e| e.to_string())?;
    Ok(builder.with_layer(&tower::layer::layer_fn(move |inner| Recorder { inner, dir: dir.clone() })).build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watches_are_told_from_gets() {
        assert!(is_watch("labelSelector=a&watch=true&resourceVersion=1"));
        assert!(is_watch("watch=1"));
        assert!(!is_watch("watch=false"));
        assert!(!is_watch("labelSelector=watch%3Dtrue"));
    }

    #[test]
    fn files_are_numbered_in_order_and_named_after_the_path() {
        let t = tempfile::tempdir().unwrap();
        let d = RecordDir::create(&t.path().join("r")).unwrap();
        let a = d.file("get", "/api/v1/namespaces/x/pods", "json");
        let b = d.file("watch", "/apis/postgresql.cnpg.io/v1/namespaces/x/clusters", "jsonl");
        assert_eq!(a.file_name().unwrap(), "00000-get-api_v1_namespaces_x_pods.json");
        assert_eq!(b.file_name().unwrap(), "00001-watch-apis_postgresql.cnpg.io_v1_namespaces_x_clusters.jsonl");
    }
}
