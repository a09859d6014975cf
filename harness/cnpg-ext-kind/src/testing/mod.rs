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
//! * **Texts** ([`FakeApi::serve_text`]): a GET path answered with plain text, as the pod
//!   log API answers (`/api/v1/namespaces/<ns>/pods/<pod>/log`; [`FakeApi::serve_pod_log`]).
//!
//! A sequence route wins over a collection for the same method and path. Requests are
//! recorded (with their JSON bodies) so tests can check what was sent. Unrouted requests
//! get a 404 `Status`.

mod collection;
mod exec;
pub mod fixtures;
mod query;
pub mod recorded;
mod request;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use http::{Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use serde_json::{json, Value};

use collection::Collection;
pub use collection::WatchType;
pub use exec::FakeExec;
pub use query::query_param;
use query::{selected, with_rv};
pub use request::RecordedRequest;

type Responder = Arc<dyn Fn(&RecordedRequest) -> (u16, Value) + Send + Sync>;

#[derive(Default)]
struct Route {
    responses: Vec<(u16, Value)>,
    cursor: usize,
    responder: Option<Responder>,
}

struct State {
    routes: BTreeMap<(String, String), Route>,
    collections: BTreeMap<String, Collection>,
    /// Plain-text answers by path (GET), keyed also by `previous=true` for pod logs.
    texts: BTreeMap<String, String>,
    log: Vec<RecordedRequest>,
    /// Bumped when a gate opens: open watches look for newly released events.
    released: tokio::sync::watch::Sender<u64>,
}

impl Default for State {
    fn default() -> Self {
        State {
            routes: BTreeMap::new(),
            collections: BTreeMap::new(),
            texts: BTreeMap::new(),
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
    Text(String),
    /// Newline-delimited watch events of the collection at `path` after resourceVersion
    /// `from`, as they are released; the connection stays open.
    Watch {
        path: String,
        query: String,
        from: u64,
    },
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

    /// GET `path` answers 200 with `text` as `text/plain`.
    pub fn serve_text(&self, path: &str, text: &str) -> &Self {
        self.state.lock().unwrap().texts.insert(path.to_string(), text.to_string());
        self
    }

    /// The pod log API of `pod`: its `postgres` container's log is `current`, and its
    /// previous container's (`previous=true`) is `previous` when given (else 400, as the
    /// API answers for a container that never restarted).
    pub fn serve_pod_log(&self, namespace: &str, pod: &str, current: &str, previous: Option<&str>) -> &Self {
        let path = format!("/api/v1/namespaces/{namespace}/pods/{pod}/log");
        if let Some(p) = previous {
            self.serve_text(&format!("{path}?previous"), p);
        }
        self.serve_text(&path, current)
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.lock().unwrap().log.clone()
    }

    pub fn requests_to(&self, method: &str, path: &str) -> Vec<RecordedRequest> {
        self.requests().into_iter().filter(|r| r.method == method && r.path == path).collect()
    }

    /// The object `name` of the collection at `path` as of the last event delivered to a
    /// watcher (the initial objects before any): what the pod exec of the fake answers
    /// from, so that a postmaster read through it is never ahead of what the watches said.
    pub fn object(&self, path: &str, name: &str) -> Option<Value> {
        let st = self.state.lock().unwrap();
        let c = st.collections.get(path)?;
        c.state_at(c.delivered).into_iter().find(|o| o.pointer("/metadata/name").and_then(Value::as_str) == Some(name))
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
        if key.0 == "GET" && key.1.ends_with("/log") {
            let previous = query_param(&query, "previous").is_some_and(|v| v == "true");
            let at = if previous { format!("{}?previous", key.1) } else { key.1.clone() };
            return match st.texts.get(&at) {
                Some(t) => Answer::Text(t.clone()),
                None if previous => Answer::Json(
                    400,
                    status_body(400, "BadRequest", "previous terminated container \"postgres\" not found"),
                ),
                None => Answer::Json(404, status_body(404, "NotFound", &format!("fake API: no log at {}", key.1))),
            };
        }
        if key.0 == "GET" {
            if let Some(text) = st.texts.get(&key.1) {
                return Answer::Text(text.clone());
            }
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
                let mut content_type = "application/json";
                let (code, body): (u16, Body) = match answer {
                    Answer::Text(text) => {
                        content_type = "text/plain";
                        (200, Full::new(Bytes::from(text)).boxed_unsync())
                    }
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
                let resp =
                    Response::builder().status(code).header("content-type", content_type).body(body).expect("response");
                Ok::<_, Infallible>(resp)
            }
        });
        kube::Client::new(svc, "default")
    }
}
