//! An in-process fake Kubernetes API for tests and the replay benchmark: a
//! `kube::Client` over a `tower` service that serves scripted JSON object sequences.
//!
//! Two kinds of routes:
//!
//! * **Sequences** ([`FakeApi::on`]): each route (method + path) has a sequence of responses;
//!   every request to it returns the next one, and the last one repeats.
//! * **Responders** ([`FakeApi::on_fn`]): the answer is computed from the request (a
//!   PATCH that comes back with what was sent).
//! * **Collections** ([`FakeApi::serve_collection`]): a list path with initial objects and a
//!   scripted sequence of watch events (`ADDED`/`MODIFIED`/`DELETED`), each given the next
//!   `resourceVersion`. A LIST answers the objects as of the last event delivered to a
//!   watcher (the initial objects before any watch) with that `resourceVersion`; a
//!   `?watch=true&resourceVersion=N` request streams every later event as newline-delimited
//!   JSON `{"type":…,"object":…}` and then stays open, like a real watch with nothing more to
//!   say; GET `<path>/<name>` answers the object or 404. `labelSelector` (`k=v`, `k!=v`) and
//!   `fieldSelector` (`metadata.name`, `metadata.namespace`) are applied.
//! * **Caused collections** ([`FakeApi::serve_collection_after`]): the same, but the events
//!   happen only once a request matching a predicate has arrived (the PATCH that causes
//!   them), as on a real cluster. Until then a watch stays silent; from then on the
//!   objects are in their final state for any LIST, and an open watch receives the events.
//!   A client that applies before it watches therefore sees the end state as its baseline
//!   and no events: the order of watch and apply is observable.
//!
//! A sequence route wins over a collection for the same method and path. Requests are
//! recorded (with their JSON bodies) so tests can check what was sent. Unrouted requests
//! get a 404 `Status`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use http::{Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use serde_json::{json, Value};

#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: String,
    pub body: Option<Value>,
}

impl RecordedRequest {
    /// A watch request (`watch=true` or `watch=1`).
    pub fn is_watch(&self) -> bool {
        query_param(&self.query, "watch").is_some_and(|v| v == "true" || v == "1")
    }
}

type Responder = Arc<dyn Fn(&RecordedRequest) -> (u16, Value) + Send + Sync>;
type Gate = Box<dyn Fn(&RecordedRequest) -> bool + Send>;

#[derive(Default)]
struct Route {
    responses: Vec<(u16, Value)>,
    cursor: usize,
    responder: Option<Responder>,
}

/// The kind of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchType {
    Added,
    Modified,
    Deleted,
}

impl WatchType {
    pub fn as_str(self) -> &'static str {
        match self {
            WatchType::Added => "ADDED",
            WatchType::Modified => "MODIFIED",
            WatchType::Deleted => "DELETED",
        }
    }
}

struct Collection {
    initial: Vec<Value>,
    /// (resourceVersion, type, object with that resourceVersion).
    events: Vec<(u64, WatchType, Value)>,
    /// Highest resourceVersion written to a watch stream.
    delivered: u64,
    list_kind: String,
    /// The request that causes the events (`None`: they happen as they are watched).
    gate: Option<Gate>,
    /// The events may be delivered (no gate, or its request arrived).
    released: bool,
    /// Every event up to here has happened (LIST and GET show it) even if unwatched.
    happened: u64,
}

impl Collection {
    /// The objects (in insertion order) as of `rv`.
    fn state_at(&self, rv: u64) -> Vec<Value> {
        let mut items: Vec<Value> = self.initial.clone();
        for (erv, ty, obj) in &self.events {
            if *erv > rv {
                break;
            }
            let name = obj.pointer("/metadata/name").cloned();
            let pos = items.iter().position(|o| o.pointer("/metadata/name").cloned() == name);
            match (ty, pos) {
                (WatchType::Deleted, Some(i)) => {
                    items.remove(i);
                }
                (WatchType::Deleted, None) => {}
                (_, Some(i)) => items[i] = obj.clone(),
                (_, None) => items.push(obj.clone()),
            }
        }
        items
    }
}

struct State {
    routes: BTreeMap<(String, String), Route>,
    collections: BTreeMap<String, Collection>,
    log: Vec<RecordedRequest>,
    /// Bumped when a gate opens: open watches look for newly released events.
    released: tokio::sync::watch::Sender<u64>,
}

impl Default for State {
    fn default() -> Self {
        State {
            routes: BTreeMap::new(),
            collections: BTreeMap::new(),
            log: Vec::new(),
            released: tokio::sync::watch::channel(0).0,
        }
    }
}

#[derive(Clone, Default)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
}

pub fn status_body(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code})
}

type Body = UnsyncBoxBody<Bytes, Infallible>;

enum Answer {
    Json(u16, Value),
    /// Newline-delimited watch events of the collection at `path` after resourceVersion
    /// `from`, as they are released; the connection stays open.
    Watch {
        path: String,
        query: String,
        from: u64,
    },
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |j: usize| (b[j] as char).to_digit(16);
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() && hex(i + 1).is_some() && hex(i + 2).is_some() => {
                out.push((hex(i + 1).unwrap() * 16 + hex(i + 2).unwrap()) as u8);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The (decoded) value of `key` in a query string.
pub fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (percent_decode(k) == key).then(|| percent_decode(v))
    })
}

/// Does `obj` match a label or field selector (equality terms only: `k=v`, `k==v`, `k!=v`)?
fn matches_selector(obj: &Value, selector: &str, field: bool) -> bool {
    selector.split(',').filter(|t| !t.trim().is_empty()).all(|term| {
        let (key, want, negate) = if let Some((k, v)) = term.split_once("!=") {
            (k, v, true)
        } else if let Some((k, v)) = term.split_once("==") {
            (k, v, false)
        } else if let Some((k, v)) = term.split_once('=') {
            (k, v, false)
        } else {
            // `key` alone: the label exists.
            let has = obj.pointer("/metadata/labels").and_then(|l| l.get(term.trim())).is_some();
            return has;
        };
        let (key, want) = (key.trim(), want.trim());
        let have = if field {
            match key {
                "metadata.name" => obj.pointer("/metadata/name").and_then(Value::as_str),
                "metadata.namespace" => obj.pointer("/metadata/namespace").and_then(Value::as_str),
                _ => return true,
            }
        } else {
            obj.pointer("/metadata/labels").and_then(|l| l.get(key)).and_then(Value::as_str)
        };
        (have == Some(want)) != negate
    })
}

fn selected(obj: &Value, query: &str) -> bool {
    query_param(query, "labelSelector").is_none_or(|s| matches_selector(obj, &s, false))
        && query_param(query, "fieldSelector").is_none_or(|s| matches_selector(obj, &s, true))
}

fn with_rv(mut obj: Value, rv: u64) -> Value {
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        m.insert("resourceVersion".into(), Value::String(rv.to_string()));
    }
    obj
}

impl FakeApi {
    pub fn new() -> Self {
        Self::default()
    }

    /// `method path` answers 200 with each of `bodies` in turn (the last one repeats).
    pub fn on(&self, method: &str, path: &str, bodies: Vec<Value>) -> &Self {
        let responses = bodies.into_iter().map(|b| (200, b)).collect();
        self.on_responses(method, path, responses)
    }

    pub fn on_responses(&self, method: &str, path: &str, responses: Vec<(u16, Value)>) -> &Self {
        let mut st = self.state.lock().unwrap();
        st.routes.insert((method.to_string(), path.to_string()), Route { responses, cursor: 0, responder: None });
        self
    }

    /// `method path` answers what `respond` computes from the request.
    pub fn on_fn(
        &self,
        method: &str,
        path: &str,
        respond: impl Fn(&RecordedRequest) -> (u16, Value) + Send + Sync + 'static,
    ) -> &Self {
        let mut st = self.state.lock().unwrap();
        st.routes.insert(
            (method.to_string(), path.to_string()),
            Route { responses: Vec::new(), cursor: 0, responder: Some(Arc::new(respond)) },
        );
        self
    }

    /// [`FakeApi::serve_collection`] whose events happen only after a request for which
    /// `cause` is true (see the module doc).
    pub fn serve_collection_after(
        &self,
        path: &str,
        list_kind: &str,
        initial: Vec<Value>,
        events: Vec<(WatchType, Value)>,
        cause: impl Fn(&RecordedRequest) -> bool + Send + 'static,
    ) -> &Self {
        self.serve_collection(path, list_kind, initial, events);
        let mut st = self.state.lock().unwrap();
        let c = st.collections.get_mut(path).expect("just added");
        c.gate = Some(Box::new(cause));
        c.released = false;
        self
    }

    /// Serves the collection at `path` (e.g. `/api/v1/namespaces/ns/pods`) for LIST, WATCH
    /// and GET of one object: `initial` objects, then `events` in order (see the module doc).
    /// `list_kind` is the list's `kind` (`PodList`).
    pub fn serve_collection(
        &self,
        path: &str,
        list_kind: &str,
        initial: Vec<Value>,
        events: Vec<(WatchType, Value)>,
    ) -> &Self {
        const BASE_RV: u64 = 100;
        let initial = initial.into_iter().map(|o| with_rv(o, BASE_RV)).collect();
        let events = events
            .into_iter()
            .enumerate()
            .map(|(i, (ty, obj))| {
                let rv = BASE_RV + 1 + i as u64;
                (rv, ty, with_rv(obj, rv))
            })
            .collect();
        let mut st = self.state.lock().unwrap();
        st.collections.insert(
            path.to_string(),
            Collection {
                initial,
                events,
                delivered: BASE_RV,
                list_kind: list_kind.to_string(),
                gate: None,
                released: true,
                happened: BASE_RV,
            },
        );
        self
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.lock().unwrap().log.clone()
    }

    pub fn requests_to(&self, method: &str, path: &str) -> Vec<RecordedRequest> {
        self.requests().into_iter().filter(|r| r.method == method && r.path == path).collect()
    }

    fn answer(&self, req: RecordedRequest) -> Answer {
        let mut st = self.state.lock().unwrap();
        let key = (req.method.clone(), req.path.clone());
        let watch = req.is_watch();
        let query = req.query.clone();
        // The request may be the one that causes a collection's events.
        let mut opened = false;
        for c in st.collections.values_mut() {
            if !c.released && c.gate.as_ref().is_some_and(|g| g(&req)) {
                c.released = true;
                c.happened = c.events.last().map(|e| e.0).unwrap_or(c.happened);
                opened = true;
            }
        }
        if opened {
            st.released.send_modify(|n| *n += 1);
        }
        let responder = st.routes.get(&key).and_then(|r| r.responder.clone()).filter(|_| !watch);
        if let Some(respond) = responder {
            let (code, body) = respond(&req);
            st.log.push(req);
            return Answer::Json(code, body);
        }
        st.log.push(req);
        if !watch {
            if let Some(route) = st.routes.get_mut(&key).filter(|r| !r.responses.is_empty()) {
                let i = route.cursor.min(route.responses.len() - 1);
                route.cursor += 1;
                let (code, body) = route.responses[i].clone();
                return Answer::Json(code, body);
            }
        }
        if key.0 == "GET" {
            if let Some(c) = st.collections.get_mut(&key.1) {
                let now = c.delivered.max(c.happened);
                if watch {
                    let from = query_param(&query, "resourceVersion")
                        .and_then(|v| v.parse::<u64>().ok())
                        .filter(|v| *v > 0)
                        .unwrap_or(now);
                    return Answer::Watch { path: key.1.clone(), query, from };
                }
                let items: Vec<Value> = c.state_at(now).into_iter().filter(|o| selected(o, &query)).collect();
                let api_version =
                    items.first().and_then(|o| o.get("apiVersion").cloned()).unwrap_or_else(|| json!("v1"));
                return Answer::Json(
                    200,
                    json!({"apiVersion": api_version, "kind": c.list_kind, "metadata": {"resourceVersion": now.to_string()}, "items": items}),
                );
            }
            if let Some((parent, name)) = key.1.rsplit_once('/') {
                if let Some(c) = st.collections.get(parent) {
                    return match c
                        .state_at(c.delivered.max(c.happened))
                        .into_iter()
                        .find(|o| o.pointer("/metadata/name").and_then(Value::as_str) == Some(name))
                    {
                        Some(o) => Answer::Json(200, o),
                        None => Answer::Json(404, status_body(404, "NotFound", &format!("\"{name}\" not found"))),
                    };
                }
            }
        }
        Answer::Json(404, status_body(404, "NotFound", &format!("fake API: no route for {} {}", key.0, key.1)))
    }

    /// The events of the collection at `path` after `from`, each as one JSON line, as they
    /// are released; never ends (an open watch with nothing more to say).
    fn watch_stream(
        &self,
        path: String,
        query: String,
        from: u64,
    ) -> impl futures::Stream<Item = Bytes> + Send + 'static {
        let rx = self.state.lock().unwrap().released.subscribe();
        futures::stream::unfold(
            (self.clone(), path, query, from, rx),
            |(fake, path, query, mut cursor, mut rx)| async move {
                loop {
                    rx.borrow_and_update();
                    let next = {
                        let mut st = fake.state.lock().unwrap();
                        let c = st.collections.get_mut(&path)?;
                        let found = if c.released { c.events.iter().find(|e| e.0 > cursor).cloned() } else { None };
                        if let Some((rv, _, _)) = &found {
                            c.delivered = c.delivered.max(*rv);
                        }
                        found
                    };
                    match next {
                        Some((rv, ty, obj)) => {
                            cursor = rv;
                            if selected(&obj, &query) {
                                let mut line =
                                    serde_json::to_vec(&json!({"type": ty.as_str(), "object": obj})).expect("json");
                                line.push(b'\n');
                                return Some((Bytes::from(line), (fake, path, query, cursor, rx)));
                            }
                        }
                        None => {
                            if rx.changed().await.is_err() {
                                futures::future::pending::<()>().await;
                            }
                        }
                    }
                }
            },
        )
    }

    /// A client whose every request goes to this fake.
    pub fn client(&self) -> kube::Client {
        let fake = self.clone();
        let svc = tower::service_fn(move |req: Request<kube::client::Body>| {
            let fake = fake.clone();
            async move {
                let method = req.method().to_string();
                let path = req.uri().path().to_string();
                let query = req.uri().query().unwrap_or("").to_string();
                let content_type = req
                    .headers()
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                let bytes = req.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
                let body = if bytes.is_empty() { None } else { serde_json::from_slice(&bytes).ok() };
                let answer = fake.answer(RecordedRequest { method, path, query, content_type, body });
                let (code, body): (u16, Body) = match answer {
                    Answer::Json(code, value) => {
                        (code, Full::new(Bytes::from(serde_json::to_vec(&value).expect("json"))).boxed_unsync())
                    }
                    Answer::Watch { path, query, from } => {
                        let frames = fake
                            .watch_stream(path, query, from)
                            .map(|l| Ok::<_, Infallible>(http_body::Frame::data(l)));
                        (200, StreamBody::new(frames).boxed_unsync())
                    }
                };
                let resp = Response::builder()
                    .status(code)
                    .header("content-type", "application/json")
                    .body(body)
                    .expect("response");
                Ok::<_, Infallible>(resp)
            }
        });
        kube::Client::new(svc, "default")
    }
}

/// Canned outputs per pod (tests): the last command is recorded.
#[derive(Default)]
pub struct FakeExec {
    pub outputs: std::sync::Mutex<std::collections::BTreeMap<String, crate::exec::ExecOutput>>,
    pub calls: std::sync::Mutex<Vec<(String, String, Vec<String>)>>,
}

impl FakeExec {
    pub fn with(pod: &str, stdout: &str) -> Self {
        let f = FakeExec::default();
        f.set(pod, stdout);
        f
    }
    pub fn set(&self, pod: &str, stdout: &str) {
        self.outputs.lock().unwrap().insert(
            pod.to_string(),
            crate::exec::ExecOutput { stdout: stdout.into(), stderr: String::new(), success: true, message: None },
        );
    }
}

#[async_trait::async_trait]
impl crate::exec::PodExec for FakeExec {
    async fn exec(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        command: &[String],
    ) -> Result<crate::exec::ExecOutput, cnpg_ext_model::backend::BackendError> {
        self.calls.lock().unwrap().push((pod.to_string(), container.to_string(), command.to_vec()));
        self.outputs.lock().unwrap().get(pod).cloned().ok_or_else(|| {
            cnpg_ext_model::backend::BackendError::Failed(format!(
                "exec in pod {namespace}/{pod}: pod not found (fake)"
            ))
        })
    }
}

/// Objects for replays, shaped after what CloudNativePG and the API server write. They are
/// **hand-written**, not recorded from a cluster (no cluster can run where this was
/// written); each item names the upstream source it follows (cloudnative-pg paths unless
/// said otherwise).
pub mod fixtures {
    use super::*;
    use cnpg_ext_model::backend::Role;
    use cnpg_ext_model::judge::InstanceState;

    // Cluster phases: `api/v1/cluster_types.go` (PhaseHealthy, PhaseUpgrade,
    // PhaseWaitingForInstancesToBeActive, PhaseSwitchover, PhaseInplaceDeletePrimaryRestart).
    pub const HEALTHY: &str = "Cluster in healthy state";
    pub const UPGRADING: &str = "Upgrading cluster";
    pub const WAITING: &str = "Waiting for the instances to become active";
    pub const SWITCHOVER: &str = "Switchover in progress";
    pub const PRIMARY_RESTART: &str = "Primary instance is being restarted without a switchover";

    /// A Cluster with the status fields the harness reads (`api/v1/cluster_types.go`,
    /// ClusterStatus: phase, readyInstances, instances).
    pub fn cluster(ns: &str, name: &str, instances: u32, ready: u32, phase: &str) -> Value {
        json!({
            "apiVersion": "postgresql.cnpg.io/v1",
            "kind": "Cluster",
            "metadata": {"name": name, "namespace": ns, "generation": 2, "uid": format!("cluster-{name}")},
            "spec": {"instances": instances},
            "status": {"phase": phase, "readyInstances": ready, "instances": instances}
        })
    }

    /// An extension image volume: (volume name, image reference, mount path).
    #[derive(Debug, Clone)]
    pub struct Vol<'a> {
        pub volume: &'a str,
        pub image: &'a str,
        pub mount: &'a str,
        /// `false`: the stored spec lost the image volume and its mount (gate off; as
        /// issue 12 describes the API server's behaviour, not checked against its source).
        pub keep_image: bool,
    }

    /// When the container of the pod with this uid started: the uid's last character is
    /// its generation (`…a` the first pod of an instance, `…b` its replacement, …), and
    /// each generation starts one minute after the previous one.
    pub fn started_at(uid: &str) -> String {
        let generation =
            uid.chars().last().filter(|c| c.is_ascii_lowercase()).map(|c| c as u32 - 'a' as u32).unwrap_or(0);
        format!("2026-01-01T00:{generation:02}:00Z")
    }

    /// An instance pod. Labels: `pkg/utils/labels_annotations.go` (cnpg.io/cluster,
    /// cnpg.io/instanceName, cnpg.io/instanceRole, the older `role`, cnpg.io/podRole).
    /// Owned by its Cluster (`api/v1/cluster_funcs.go`, SetInheritedDataAndOwnership).
    /// Extension volumes and mounts: `pkg/specs/volumes.go` (CreateExtensionVolumes: an
    /// `image` source; CreateExtensionVolumeMounts: `/extensions/<name>`, no readOnly
    /// flag, image volumes are read-only anyway). Container status: the kubelet's
    /// (`ready`, `started`, `state.running.startedAt`, see [`started_at`]).
    pub fn pod(ns: &str, cluster: &str, name: &str, uid: &str, role: &str, ready: bool, vols: &[Vol]) -> Value {
        let volumes: Vec<Value> = vols
            .iter()
            .filter(|v| v.keep_image)
            .map(|v| json!({"name": v.volume, "image": {"reference": v.image, "pullPolicy": "IfNotPresent"}}))
            .chain(std::iter::once(json!({"name": "pgdata", "persistentVolumeClaim": {"claimName": name}})))
            .collect();
        let mut mounts: Vec<Value> =
            vols.iter().filter(|v| v.keep_image).map(|v| json!({"name": v.volume, "mountPath": v.mount})).collect();
        mounts.push(json!({"name": "pgdata", "mountPath": "/var/lib/postgresql/data"}));
        let image = "ghcr.io/cloudnative-pg/postgresql:18-minimal-trixie";
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name, "namespace": ns, "uid": uid,
                "labels": {
                    "cnpg.io/cluster": cluster,
                    "cnpg.io/instanceName": name,
                    "cnpg.io/instanceRole": role,
                    "cnpg.io/podRole": "instance",
                    "role": role
                },
                "ownerReferences": [{
                    "apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster", "name": cluster,
                    "uid": format!("cluster-{cluster}"), "controller": true
                }]
            },
            "spec": {
                "containers": [{"name": "postgres", "image": image, "volumeMounts": mounts}],
                "volumes": volumes
            },
            "status": {
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
                "containerStatuses": [{
                    "name": "postgres", "image": image, "ready": ready, "started": true,
                    "restartCount": 0,
                    "state": {"running": {"startedAt": started_at(uid)}}
                }]
            }
        })
    }

    /// The state the one verifier (`cnpg_ext_model::judge`) compares, read from instance
    /// pods: role label and the postgres container's start time.
    pub fn instance_states(pods: &[Value]) -> std::collections::BTreeMap<String, InstanceState> {
        pods.iter()
            .filter(|p| p.pointer("/metadata/labels/cnpg.io~1podRole").and_then(Value::as_str) == Some("instance"))
            .map(|p| {
                let name = p.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("?").to_string();
                let role = match p.pointer("/metadata/labels/cnpg.io~1instanceRole").and_then(Value::as_str) {
                    Some("primary") => Role::Primary,
                    _ => Role::Replica,
                };
                let started = p
                    .pointer("/status/containerStatuses/0/state/running/startedAt")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                (name, InstanceState { role, started })
            })
            .collect()
    }

    pub fn list(kind: &str, items: Vec<Value>) -> Value {
        json!({"apiVersion": "v1", "kind": format!("{kind}List"), "metadata": {"resourceVersion": "1"}, "items": items})
    }

    pub fn pods_path(ns: &str) -> String {
        format!("/api/v1/namespaces/{ns}/pods")
    }

    pub fn cluster_path(ns: &str, name: &str) -> String {
        format!("/apis/postgresql.cnpg.io/v1/namespaces/{ns}/clusters/{name}")
    }

    pub fn database_path(ns: &str, name: &str) -> String {
        format!("/apis/postgresql.cnpg.io/v1/namespaces/{ns}/databases/{name}")
    }

    /// One frame of a rolling update: the Cluster phase and each pod as
    /// (name, uid, role, ready).
    pub struct Frame<'a> {
        pub phase: &'a str,
        pub ready: u32,
        pub pods: Vec<(&'a str, &'a str, &'a str, bool)>,
    }

    pub fn clusters_path(ns: &str) -> String {
        format!("/apis/postgresql.cnpg.io/v1/namespaces/{ns}/clusters")
    }

    /// The watch events that turn one list of objects into the next (by name). A pod that
    /// goes away is first `MODIFIED` with `metadata.deletionTimestamp` (graceful deletion),
    /// then `DELETED`; a new uid under the same name is `ADDED` after that; any other
    /// change is `MODIFIED`.
    pub fn diff_events(prev: &[Value], next: &[Value]) -> Vec<(WatchType, Value)> {
        let name = |o: &Value| o.pointer("/metadata/name").cloned();
        let uid = |o: &Value| o.pointer("/metadata/uid").cloned();
        let mut out = Vec::new();
        for p in prev {
            let gone = match next.iter().find(|n| name(n) == name(p)) {
                None => true,
                Some(n) => uid(n) != uid(p),
            };
            if gone {
                let mut terminating = p.clone();
                terminating["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:30Z");
                terminating["metadata"]["deletionGracePeriodSeconds"] = json!(1800);
                out.push((WatchType::Modified, terminating.clone()));
                out.push((WatchType::Deleted, terminating));
            }
        }
        for n in next {
            match prev.iter().find(|p| name(p) == name(n)) {
                None => out.push((WatchType::Added, n.clone())),
                Some(p) if uid(p) != uid(n) => out.push((WatchType::Added, n.clone())),
                Some(p) if p != n => out.push((WatchType::Modified, n.clone())),
                Some(_) => {}
            }
        }
        out
    }

    /// Watch events in order.
    pub type Events = Vec<(WatchType, Value)>;

    /// The Cluster objects and pod lists of `frames`, and the watch events between them.
    pub fn frame_objects(
        ns: &str,
        cluster_name: &str,
        instances: u32,
        frames: &[Frame],
        vols: &[Vol],
    ) -> (Vec<Value>, Events, Vec<Vec<Value>>, Events) {
        let clusters: Vec<Value> =
            frames.iter().map(|f| cluster(ns, cluster_name, instances, f.ready, f.phase)).collect();
        let pods: Vec<Vec<Value>> = frames
            .iter()
            .map(|f| f.pods.iter().map(|(n, u, r, ok)| pod(ns, cluster_name, n, u, r, *ok, vols)).collect())
            .collect();
        let mut cluster_events = Vec::new();
        for w in clusters.windows(2) {
            if w[0] != w[1] {
                cluster_events.push((WatchType::Modified, w[1].clone()));
            }
        }
        let mut pod_events = Vec::new();
        for w in pods.windows(2) {
            pod_events.extend(diff_events(&w[0], &w[1]));
        }
        (clusters, cluster_events, pods, pod_events)
    }

    /// Serves the Cluster and its pods as collections (list, watch, get) whose events take
    /// them through `frames` in order: a watcher sees every change between two frames.
    pub fn serve_frames(api: &FakeApi, ns: &str, cluster_name: &str, instances: u32, frames: &[Frame], vols: &[Vol]) {
        let (clusters, cluster_events, pods, pod_events) = frame_objects(ns, cluster_name, instances, frames, vols);
        api.serve_collection(
            &clusters_path(ns),
            "ClusterList",
            clusters.first().cloned().into_iter().collect(),
            cluster_events,
        );
        api.serve_collection(&pods_path(ns), "PodList", pods.first().cloned().unwrap_or_default(), pod_events);
    }

    /// [`serve_frames`] for a rollout caused by a request: the first frame is the state
    /// before, pods are `vols_before` in it and `vols_after` in every later frame, and
    /// nothing moves until a request for which `cause` is true has arrived.
    #[allow(clippy::too_many_arguments)]
    pub fn serve_frames_after(
        api: &FakeApi,
        ns: &str,
        cluster_name: &str,
        instances: u32,
        frames: &[Frame],
        vols_before: &[Vol],
        vols_after: &[Vol],
        cause: impl Fn(&RecordedRequest) -> bool + Send + Sync + 'static,
    ) {
        let (clusters, cluster_events, _, _) = frame_objects(ns, cluster_name, instances, frames, vols_after);
        // Pods: the ones of the first frame carry the old volumes; a pod keeps the volumes
        // it was created with (a uid seen in the first frame keeps `vols_before`).
        let first_uids: Vec<&str> = frames[0].pods.iter().map(|p| p.1).collect();
        let pods: Vec<Vec<Value>> = frames
            .iter()
            .map(|f| {
                f.pods
                    .iter()
                    .map(|(n, u, r, ok)| {
                        let v = if first_uids.contains(u) { vols_before } else { vols_after };
                        pod(ns, cluster_name, n, u, r, *ok, v)
                    })
                    .collect()
            })
            .collect();
        let mut pod_events = Vec::new();
        for w in pods.windows(2) {
            pod_events.extend(diff_events(&w[0], &w[1]));
        }
        let cause = Arc::new(cause);
        let c2 = cause.clone();
        api.serve_collection_after(
            &clusters_path(ns),
            "ClusterList",
            clusters.first().cloned().into_iter().collect(),
            cluster_events,
            move |r| cause(r),
        );
        api.serve_collection_after(
            &pods_path(ns),
            "PodList",
            pods.first().cloned().unwrap_or_default(),
            pod_events,
            move |r| c2(r),
        );
    }

    /// A 3-instance rolling update as `internal/controller/cluster_upgrade.go` runs it with
    /// the default `primaryUpdateMethod: restart`: replicas c-2 and c-3 replaced one at a
    /// time (phase "Upgrading cluster", then "Waiting for the instances to become active"
    /// between them), then the primary c-1 deleted and recreated (phase "Primary instance
    /// is being restarted without a switchover"). Hand-written frames.
    pub fn three_instance_rollout<'a>() -> Vec<Frame<'a>> {
        let p = |n, u, r, ok| (n, u, r, ok);
        vec![
            Frame {
                phase: HEALTHY,
                ready: 3,
                pods: vec![
                    p("c-1", "uid-1a", "primary", true),
                    p("c-2", "uid-2a", "replica", true),
                    p("c-3", "uid-3a", "replica", true),
                ],
            },
            Frame {
                phase: UPGRADING,
                ready: 2,
                pods: vec![p("c-1", "uid-1a", "primary", true), p("c-3", "uid-3a", "replica", true)],
            },
            Frame {
                phase: UPGRADING,
                ready: 2,
                pods: vec![
                    p("c-1", "uid-1a", "primary", true),
                    p("c-2", "uid-2b", "replica", false),
                    p("c-3", "uid-3a", "replica", true),
                ],
            },
            Frame {
                phase: WAITING,
                ready: 3,
                pods: vec![
                    p("c-1", "uid-1a", "primary", true),
                    p("c-2", "uid-2b", "replica", true),
                    p("c-3", "uid-3a", "replica", true),
                ],
            },
            Frame {
                phase: UPGRADING,
                ready: 2,
                pods: vec![
                    p("c-1", "uid-1a", "primary", true),
                    p("c-2", "uid-2b", "replica", true),
                    p("c-3", "uid-3b", "replica", false),
                ],
            },
            Frame {
                phase: UPGRADING,
                ready: 3,
                pods: vec![
                    p("c-1", "uid-1a", "primary", true),
                    p("c-2", "uid-2b", "replica", true),
                    p("c-3", "uid-3b", "replica", true),
                ],
            },
            Frame {
                phase: PRIMARY_RESTART,
                ready: 2,
                pods: vec![p("c-2", "uid-2b", "replica", true), p("c-3", "uid-3b", "replica", true)],
            },
            Frame {
                phase: PRIMARY_RESTART,
                ready: 2,
                pods: vec![
                    p("c-1", "uid-1b", "primary", false),
                    p("c-2", "uid-2b", "replica", true),
                    p("c-3", "uid-3b", "replica", true),
                ],
            },
            Frame {
                phase: HEALTHY,
                ready: 3,
                pods: vec![
                    p("c-1", "uid-1b", "primary", true),
                    p("c-2", "uid-2b", "replica", true),
                    p("c-3", "uid-3b", "replica", true),
                ],
            },
        ]
    }
}
