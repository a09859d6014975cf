//! Rolling-update observation: pod UIDs per instance, the order instances were replaced
//! or restarted (with the role each had when the rollout began), and the Cluster phases
//! seen.
//!
//! An instance counts as restarted when its pod is replaced (a new UID), when its
//! `postgres` container restarts (`restartCount` grows), or when its postmaster's
//! `pg_postmaster_start_time()` moves while the pod stays: CloudNativePG restarts a primary
//! in place with `primaryUpdateMethod: restart` (phase "Primary instance is being
//! restarted in-place", `internal/controller/cluster_upgrade.go` `updatePrimaryPod`; the
//! instance manager restarts the postmaster, `restartPrimaryInplaceIfRequested`) and
//! demotes the old primary in place after a switchover. The postmasters are read through
//! SQL (`crate::postmaster`) before the change and whenever the Cluster looks settled.
//!
//! [`RolloutObserver`] is pure: it is fed watch events (or whole snapshots after a relist).
//! [`RolloutWatch`] feeds it from two `kube::runtime::watcher` streams started *before* the
//! change is applied: the instance pods (label `cnpg.io/cluster=<name>`) and the Cluster
//! (field `metadata.name=<name>`). Every pod UID change is recorded in the order the API
//! server reports it, so a pod replaced twice between two reads shows twice (a poll every
//! second would see it once). The observer never judges the order: the verifier does
//! (each instance exactly once, replicas before the primary).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use cnpg_ext_model::backend::{BackendError, RolloutRecord};
use futures::stream::BoxStream;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DynamicObject, ListParams};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use serde_json::Value;

use crate::errors::kube_error;
use crate::exec::PodExec;
pub use crate::observer::{Expect, RolloutObserver};
pub use crate::pods::{fatal_in_log, is_instance_pod, pod_view, PodView};
use crate::postmaster::probe;
use crate::wait::HEALTHY;

/// `api/v1/cluster_types.go` `PhaseWaitingForUser`: with `primaryUpdateStrategy:
/// supervised` the operator stops before the primary until the user acts.
pub const WAITING_FOR_USER: &str = "Waiting for user action";


fn phase_of(c: &DynamicObject) -> Option<String> {
    c.data
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .map(String::from)
}

/// One snapshot from the API: Cluster phase and instance pods.
pub async fn snapshot(
    clusters: &Api<DynamicObject>,
    pods: &Api<Pod>,
    cluster: &str,
) -> Result<(Option<String>, Vec<PodView>), BackendError> {
    let c = clusters
        .get_opt(cluster)
        .await
        .map_err(|e| kube_error(format!("reading Cluster {cluster}"), e))?;
    let phase = c.as_ref().and_then(phase_of);
    let lp = ListParams::default().labels(&format!("cnpg.io/cluster={cluster}"));
    let list = pods
        .list(&lp)
        .await
        .map_err(|e| kube_error(format!("listing pods of Cluster {cluster}"), e))?;
    let mut views: Vec<PodView> = list
        .items
        .iter()
        .filter(|p| is_instance_pod(p))
        .map(pod_view)
        .collect();
    views.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((phase, views))
}

/// What a watch saw, in the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub record: RolloutRecord,
    /// A postmaster loaded its configuration again without restarting (a reload).
    pub reloaded: bool,
}

/// Reads the postmasters of a watched Cluster's pods (`crate::postmaster::probe`).
struct Postmasters {
    exec: std::sync::Arc<dyn PodExec>,
    namespace: String,
    /// Time between readings while the Cluster looks settled.
    poll: Duration,
    next: tokio::time::Instant,
    last_error: Option<String>,
}

// One event at a time, moved once: the variants' size difference does not matter.
#[allow(clippy::large_enum_variant)]
enum Item {
    Pod(Result<Event<Pod>, watcher::Error>),
    Cluster(Result<Event<DynamicObject>, watcher::Error>),
}

/// Watches of a Cluster and its instance pods, started before a change is applied.
///
/// ```text
/// let watch = RolloutWatch::start(&clusters, &pods, "c", timeout).await?;  // baseline = initial lists
/// /* apply the change */
/// let record = watch.finish(Expect::Rollout, timeout).await?;             // every event since
/// ```
pub struct RolloutWatch {
    events: BoxStream<'static, Item>,
    observer: RolloutObserver,
    what: String,
    /// Pods of a relist in progress (the watcher lost its place and listed again).
    relist: Option<Vec<PodView>>,
    last_error: Option<String>,
    events_seen: usize,
    /// `the operator of Cluster ns/name`, for messages.
    cluster_label: String,
    /// For the logs of a crash-looping postgres container.
    pods: Api<Pod>,
    /// Reading the postmasters through SQL ([`RolloutWatch::with_postmasters`]).
    postmasters: Option<Postmasters>,
}

fn watch_error(what: &str, e: watcher::Error) -> BackendError {
    match e {
        watcher::Error::InitialListFailed(k)
        | watcher::Error::WatchStartFailed(k)
        | watcher::Error::WatchFailed(k) => kube_error(what, k),
        other => BackendError::Failed(format!("{what}: {other}")),
    }
}

impl RolloutWatch {
    /// Starts both watches and waits for their initial lists (the baseline). Errors of the
    /// initial lists fail at once (RBAC, missing CRD); later watch errors are retried with
    /// backoff and shown in the timeout message.
    pub async fn start(
        clusters: &Api<DynamicObject>,
        pods: &Api<Pod>,
        cluster: &str,
        timeout: Duration,
    ) -> Result<Self, BackendError> {
        let ns = pods_namespace(pods);
        let pod_cfg = watcher::Config::default().labels(&format!("cnpg.io/cluster={cluster}"));
        let cluster_cfg = watcher::Config::default().fields(&format!("metadata.name={cluster}"));
        let pod_events = watcher(pods.clone(), pod_cfg)
            .default_backoff()
            .map(Item::Pod);
        let cluster_events = watcher(clusters.clone(), cluster_cfg)
            .default_backoff()
            .map(Item::Cluster);
        let mut events = futures::stream::select(pod_events, cluster_events).boxed();

        let mut pods_listed: Option<Vec<PodView>> = None;
        let mut phase_listed: Option<Option<String>> = None;
        let mut pod_buf = Vec::new();
        let mut phase_buf = None;
        let deadline = tokio::time::Instant::now() + timeout;
        while pods_listed.is_none() || phase_listed.is_none() {
            let item = tokio::select! {
                item = events.next() => item,
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(BackendError::Failed(format!(
                        "timed out after {}s waiting for the initial lists of Cluster {ns}/{cluster} and its pods (rollout watch)",
                        timeout.as_secs_f64()
                    )));
                }
            };
            match item {
                None => {
                    return Err(BackendError::Failed(format!(
                        "the watch of Cluster {ns}/{cluster} ended before its initial list"
                    )))
                }
                Some(Item::Pod(Err(e))) => {
                    return Err(watch_error(
                        &format!("watching pods of Cluster {ns}/{cluster}"),
                        e,
                    ))
                }
                Some(Item::Cluster(Err(e))) => {
                    return Err(watch_error(&format!("watching Cluster {ns}/{cluster}"), e))
                }
                Some(Item::Pod(Ok(ev))) => match ev {
                    Event::Init => pod_buf.clear(),
                    Event::InitApply(p) if is_instance_pod(&p) => pod_buf.push(pod_view(&p)),
                    Event::InitDone => pods_listed = Some(std::mem::take(&mut pod_buf)),
                    _ => {}
                },
                Some(Item::Cluster(Ok(ev))) => match ev {
                    Event::Init => phase_buf = None,
                    Event::InitApply(c) => phase_buf = phase_of(&c),
                    Event::InitDone => phase_listed = Some(phase_buf.take()),
                    _ => {}
                },
            }
        }
        let mut views = pods_listed.unwrap_or_default();
        views.sort_by(|a, b| a.name.cmp(&b.name));
        let phase = phase_listed.flatten();
        let observer = RolloutObserver::new(&views, phase.as_deref());
        let instances = observer.instances();
        Ok(RolloutWatch {
            events,
            observer,
            what: format!(
                "the rolling update of Cluster {ns}/{cluster} (every instance replaced once, then phase \"{HEALTHY}\" with {instances} ready pods)"
            ),
            relist: None,
            last_error: None,
            events_seen: 0,
            cluster_label: format!("the operator of Cluster {ns}/{cluster}"),
            pods: pods.clone(),
            postmasters: None,
        })
    }

    /// Reads every instance's postmaster now (the state before the change: call it before
    /// applying) and again whenever the Cluster looks settled, every `poll`, so that
    /// restarts inside a pod are seen and [`Expect::Converge`]'s settings can be checked.
    /// A probe that fails now is an error; later failures (a postmaster restarting) are
    /// retried and shown in the timeout message.
    pub async fn with_postmasters(
        mut self,
        exec: std::sync::Arc<dyn PodExec>,
        poll: Duration,
    ) -> Result<Self, BackendError> {
        let namespace = pods_namespace(&self.pods);
        let mut before = BTreeMap::new();
        for name in self.observer.pods().keys() {
            before.insert(name.clone(), probe(exec.as_ref(), &namespace, name).await?);
        }
        self.observer.postmasters_before(before);
        self.postmasters = Some(Postmasters {
            exec,
            namespace,
            poll: poll.max(Duration::from_millis(10)),
            next: tokio::time::Instant::now(),
            last_error: None,
        });
        Ok(self)
    }

    /// Reads every present instance's postmaster.
    async fn read_postmasters(&mut self) {
        let Some(pm) = self.postmasters.as_mut() else { return };
        let names: Vec<String> = self.observer.pods().keys().cloned().collect();
        for name in names {
            match probe(pm.exec.as_ref(), &pm.namespace, &name).await {
                Ok(state) => self.observer.postmaster_seen(&name, state, Utc::now()),
                Err(e) => pm.last_error = Some(e.to_string()),
            }
        }
        pm.next = tokio::time::Instant::now() + pm.poll;
    }

    /// The postmasters are read when the Cluster looks settled (healthy, every pod ready).
    fn read_due(&self) -> Option<tokio::time::Instant> {
        let pm = self.postmasters.as_ref()?;
        self.observer.settled(self.observer.instances()).then_some(pm.next)
    }

    /// The state so far (baseline plus the events consumed).
    #[cfg(feature = "testing")]
    pub fn observer(&self) -> &RolloutObserver {
        &self.observer
    }

    fn apply(&mut self, item: Item) {
        let now = Utc::now();
        self.events_seen += 1;
        match item {
            Item::Pod(Ok(ev)) => match ev {
                Event::Apply(p) if is_instance_pod(&p) => {
                    self.observer.pod_seen(&pod_view(&p), now)
                }
                Event::Delete(p) if is_instance_pod(&p) => self.observer.pod_gone(&pod_view(&p)),
                Event::Init => self.relist = Some(Vec::new()),
                Event::InitApply(p) if is_instance_pod(&p) => {
                    self.relist.get_or_insert_with(Vec::new).push(pod_view(&p))
                }
                Event::InitDone => {
                    let pods = self.relist.take().unwrap_or_default();
                    self.observer.replace_pods(&pods, now);
                }
                _ => {}
            },
            Item::Cluster(Ok(ev)) => match ev {
                Event::Apply(c) | Event::InitApply(c) => {
                    self.observer.phase_seen(phase_of(&c).as_deref())
                }
                Event::Delete(_) => self.observer.phase_seen(None),
                Event::Init | Event::InitDone => {}
            },
            Item::Pod(Err(e)) | Item::Cluster(Err(e)) => {
                tracing::warn!("rollout watch: {e} (retrying)");
                self.last_error = Some(e.to_string());
            }
        }
    }

    /// Consumes events until `expect` is met or `timeout` passes: the error then says what
    /// was awaited and the last state seen.
    pub async fn finish(self, expect: Expect, timeout: Duration) -> Result<RolloutRecord, BackendError> {
        self.finish_observed(expect, timeout).await.map(|o| o.record)
    }

    /// [`RolloutWatch::finish`], and whether a postmaster was seen reloading its
    /// configuration without restarting.
    pub async fn finish_observed(mut self, expect: Expect, timeout: Duration) -> Result<Observed, BackendError> {
        let deadline = tokio::time::Instant::now() + timeout;
        if let Expect::Converge { image_volumes, settings } = &expect {
            self.what = format!(
                "{} to act on the applied Cluster (every pod with image volumes [{}], then phase \"{HEALTHY}\" with every pod ready{})",
                self.cluster_label,
                image_volumes
                    .iter()
                    .map(|(v, i, m)| format!("{v}={i}@{m}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                if settings.is_some() {
                    " and every postmaster showing the applied settings, reloaded or restarted"
                } else {
                    ""
                }
            );
        }
        loop {
            if let Some((name, restarts, last)) = self.crash_looping() {
                return Err(crash_loop_error(self.pods.clone(), name, restarts, last).await);
            }
            if self.observer.phase() == Some(WAITING_FOR_USER) {
                return Err(BackendError::Failed(format!(
                    "{} is waiting for user action (phase \"{WAITING_FOR_USER}\"): with `primaryUpdateStrategy: supervised` it updates the primary only after a switchover the user requests (`kubectl cnpg promote`); nothing more will happen by itself. Last state: {}",
                    self.cluster_label,
                    self.state(&expect)
                )));
            }
            if let Some(due) = self.read_due() {
                if tokio::time::Instant::now() >= due {
                    self.read_postmasters().await;
                }
            }
            if self.observer.done(&expect) {
                tracing::debug!(
                    "{}: done after {} watch events",
                    self.what,
                    self.events_seen
                );
                return Ok(Observed { record: self.observer.record(), reloaded: self.observer.reloaded() });
            }
            let read_at = self.read_due();
            tokio::select! {
                biased;
                _ = tokio::time::sleep_until(read_at.unwrap_or(deadline)), if read_at.is_some_and(|t| t < deadline) => {}
                item = self.events.next() => match item {
                    Some(item) => self.apply(item),
                    None => {
                        return Err(BackendError::Failed(format!(
                            "the watch ended while waiting for {}; last state: {}",
                            self.what,
                            self.state(&expect)
                        )))
                    }
                },
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(BackendError::Failed(format!(
                        "timed out after {}s waiting for {}; last state: {}",
                        timeout.as_secs_f64(),
                        self.what,
                        self.state(&expect)
                    )));
                }
            }
        }
    }

    /// A pod whose postgres container crash-loops: (its name, restarts, the last state).
    fn crash_looping(&self) -> Option<(String, i32, String)> {
        self.observer
            .pods()
            .values()
            .find_map(|p| p.crash_looping.map(|n| (p.name.clone(), n, self.observer.summary())))
    }

    fn state(&self, expect: &Expect) -> String {
        let mut s = self.observer.summary();
        if let Expect::Converge { image_volumes, settings } = expect {
            s.push_str(&format!(
                "; pods without the applied image volumes [{}]",
                self.observer.pods_not_matching(image_volumes).join(", ")
            ));
            if let Some(Err(off)) = settings.as_ref().map(|t| self.observer.postmasters_converged(t)) {
                s.push_str(&format!("; postmasters not there yet [{}]", off.join("; ")));
            }
        }
        if let Some(e) = self.postmasters.as_ref().and_then(|p| p.last_error.as_ref()) {
            s.push_str(&format!("; last postmaster reading error: {e}"));
        }
        if let Some(e) = &self.last_error {
            s.push_str(&format!("; last watch error: {e}"));
        }
        s
    }
}

/// A pod whose postgres container crash-loops fails the wait at once, with the postmaster's
/// own log line (previous container), not a timeout.
async fn crash_loop_error(pods: Api<Pod>, name: String, restarts: i32, last: String) -> BackendError {
    let params = kube::api::LogParams {
        container: Some("postgres".into()),
        previous: true,
        tail_lines: Some(500),
        ..Default::default()
    };
    // The crashed container's log, else the current one's (it may have crashed again).
    let mut reason = None;
    let mut errors = Vec::new();
    for previous in [true, false] {
        match pods.logs(&name, &kube::api::LogParams { previous, ..params.clone() }).await {
            Ok(log) => reason = fatal_in_log(&log),
            Err(e) => errors.push(e.to_string()),
        }
        if reason.is_some() {
            break;
        }
    }
    let reason = reason.unwrap_or_else(|| {
        format!("no FATAL line in its logs{}", if errors.is_empty() { String::new() } else { format!(" ({})", errors.join("; ")) })
    });
    BackendError::Failed(format!(
        "pod {name}: container postgres is crash-looping (CrashLoopBackOff, {restarts} restarts): {reason}; last state: {last}"
    ))
}

fn pods_namespace(pods: &Api<Pod>) -> String {
    // `Api` does not expose its namespace; the resource URL does.
    let url = pods.resource_url();
    url.split("/namespaces/")
        .nth(1)
        .and_then(|s| s.split('/').next())
        .unwrap_or("?")
        .to_string()
}
