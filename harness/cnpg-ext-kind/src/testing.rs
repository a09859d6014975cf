//! An in-process fake Kubernetes API for tests and the replay benchmark: a
//! `kube::Client` over a `tower` service that serves recorded JSON object sequences.
//!
//! Each route (method + path) has a sequence of responses; every request to it returns the
//! next one, and the last one repeats. Requests are recorded (with their JSON bodies) so
//! tests can check what was sent. Unrouted requests get a 404 `Status`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};

#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: String,
    pub body: Option<Value>,
}

#[derive(Default)]
struct Route {
    responses: Vec<(u16, Value)>,
    cursor: usize,
}

#[derive(Default)]
struct State {
    routes: BTreeMap<(String, String), Route>,
    log: Vec<RecordedRequest>,
}

#[derive(Clone, Default)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
}

pub fn status_body(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code})
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
        st.routes.insert(
            (method.to_string(), path.to_string()),
            Route {
                responses,
                cursor: 0,
            },
        );
        self
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.lock().unwrap().log.clone()
    }

    pub fn requests_to(&self, method: &str, path: &str) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == method && r.path == path)
            .collect()
    }

    fn answer(&self, req: RecordedRequest) -> (u16, Value) {
        let mut st = self.state.lock().unwrap();
        let key = (req.method.clone(), req.path.clone());
        st.log.push(req);
        match st.routes.get_mut(&key) {
            Some(route) if !route.responses.is_empty() => {
                let i = route.cursor.min(route.responses.len() - 1);
                route.cursor += 1;
                route.responses[i].clone()
            }
            _ => (
                404,
                status_body(
                    404,
                    "NotFound",
                    &format!("fake API: no route for {} {}", key.0, key.1),
                ),
            ),
        }
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
                let bytes = req
                    .into_body()
                    .collect()
                    .await
                    .map(|c| c.to_bytes())
                    .unwrap_or_default();
                let body = if bytes.is_empty() {
                    None
                } else {
                    serde_json::from_slice(&bytes).ok()
                };
                let (code, value) = fake.answer(RecordedRequest {
                    method,
                    path,
                    query,
                    content_type,
                    body,
                });
                let resp = Response::builder()
                    .status(code)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(
                        serde_json::to_vec(&value).expect("json"),
                    )))
                    .expect("response");
                Ok::<_, Infallible>(resp)
            }
        });
        kube::Client::new(svc, "default")
    }
}

/// Realistic objects for replays.
pub mod fixtures {
    use super::*;

    pub const HEALTHY: &str = "Cluster in healthy state";

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
        /// `false`: the stored spec lost the `image` source (gate off).
        pub keep_image: bool,
    }

    pub fn pod(
        ns: &str,
        cluster: &str,
        name: &str,
        uid: &str,
        role: &str,
        ready: bool,
        vols: &[Vol],
    ) -> Value {
        let volumes: Vec<Value> = vols
            .iter()
            .filter(|v| v.keep_image)
            .map(|v| json!({"name": v.volume, "image": {"reference": v.image, "pullPolicy": "IfNotPresent"}}))
            .chain(std::iter::once(json!({"name": "pgdata", "persistentVolumeClaim": {"claimName": name}})))
            .collect();
        let mut mounts: Vec<Value> = vols
            .iter()
            .filter(|v| v.keep_image)
            .map(|v| json!({"name": v.volume, "mountPath": v.mount, "readOnly": true}))
            .collect();
        mounts.push(json!({"name": "pgdata", "mountPath": "/var/lib/postgresql/data"}));
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
                }
            },
            "spec": {
                "containers": [{"name": "postgres", "image": "ghcr.io/cloudnative-pg/postgresql:18-minimal-trixie", "volumeMounts": mounts}],
                "volumes": volumes
            },
            "status": {
                "phase": if ready { "Running" } else { "Pending" },
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]
            }
        })
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

    /// Routes GET Cluster and LIST pods so that the n-th poll sees frame n.
    pub fn serve_frames(
        api: &FakeApi,
        ns: &str,
        cluster_name: &str,
        instances: u32,
        frames: &[Frame],
        vols: &[Vol],
    ) {
        let clusters = frames
            .iter()
            .map(|f| cluster(ns, cluster_name, instances, f.ready, f.phase))
            .collect();
        let pods = frames
            .iter()
            .map(|f| {
                list(
                    "Pod",
                    f.pods
                        .iter()
                        .map(|(n, u, r, ok)| pod(ns, cluster_name, n, u, r, *ok, vols))
                        .collect(),
                )
            })
            .collect();
        api.on("GET", &cluster_path(ns, cluster_name), clusters);
        api.on("GET", &pods_path(ns), pods);
    }

    /// A realistic 3-instance rolling update: replicas c-2 and c-3 replaced one at a time,
    /// then the primary c-1 restarted in place.
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
                phase: HEALTHY,
                ready: 3,
                pods: vec![
                    p("c-1", "uid-1a", "primary", true),
                    p("c-2", "uid-2a", "replica", true),
                    p("c-3", "uid-3a", "replica", true),
                ],
            },
            Frame {
                phase: "Upgrading cluster",
                ready: 2,
                pods: vec![
                    p("c-1", "uid-1a", "primary", true),
                    p("c-3", "uid-3a", "replica", true),
                ],
            },
            Frame {
                phase: "Upgrading cluster",
                ready: 2,
                pods: vec![
                    p("c-1", "uid-1a", "primary", true),
                    p("c-2", "uid-2b", "replica", false),
                    p("c-3", "uid-3a", "replica", true),
                ],
            },
            Frame {
                phase: "Waiting for the instances to become active",
                ready: 3,
                pods: vec![
                    p("c-1", "uid-1a", "primary", true),
                    p("c-2", "uid-2b", "replica", true),
                    p("c-3", "uid-3a", "replica", true),
                ],
            },
            Frame {
                phase: "Upgrading cluster",
                ready: 2,
                pods: vec![
                    p("c-1", "uid-1a", "primary", true),
                    p("c-2", "uid-2b", "replica", true),
                    p("c-3", "uid-3b", "replica", false),
                ],
            },
            Frame {
                phase: "Upgrading cluster",
                ready: 3,
                pods: vec![
                    p("c-1", "uid-1a", "primary", true),
                    p("c-2", "uid-2b", "replica", true),
                    p("c-3", "uid-3b", "replica", true),
                ],
            },
            Frame {
                phase: "Primary instance is being restarted without a switchover",
                ready: 2,
                pods: vec![
                    p("c-2", "uid-2b", "replica", true),
                    p("c-3", "uid-3b", "replica", true),
                ],
            },
            Frame {
                phase: "Primary instance is being restarted without a switchover",
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
