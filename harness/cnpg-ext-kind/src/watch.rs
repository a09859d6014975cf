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

use chrono::{DateTime, Utc};
use cnpg_ext_model::backend::{BackendError, InstanceRestart, Role, RolloutRecord};
use futures::stream::BoxStream;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DynamicObject, ListParams};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use serde_json::Value;

use crate::errors::kube_error;
use crate::exec::PodExec;
use crate::postmaster::{probe, PostmasterState, SettingsTarget};
use crate::wait::HEALTHY;

/// `api/v1/cluster_types.go` `PhaseWaitingForUser`: with `primaryUpdateStrategy:
/// supervised` the operator stops before the primary until the user acts.
pub const WAITING_FOR_USER: &str = "Waiting for user action";

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

#[derive(Debug, Clone)]
pub struct RolloutObserver {
    /// instance → (uid, role) when the rollout began.
    baseline: BTreeMap<String, (String, Option<Role>)>,
    /// instance → last uid seen.
    current: BTreeMap<String, String>,
    restarts: Vec<InstanceRestart>,
    phases: Vec<String>,
    /// The instance pods that exist now (by name), as last reported.
    pods: BTreeMap<String, PodView>,
    last_phase: Option<String>,
    /// instance → (uid, `postgres` container restartCount) last seen.
    containers: BTreeMap<String, (String, i32)>,
    /// The postmasters before the change (read through SQL), by instance.
    postmasters_before: BTreeMap<String, PostmasterState>,
    /// The last reading of each instance's current postmaster (dropped when its pod or
    /// container is replaced).
    postmasters_now: BTreeMap<String, PostmasterState>,
    /// instance → start time of its current postmaster, when known.
    known_start: BTreeMap<String, String>,
}

impl RolloutObserver {
    /// Starts from the pods and phase seen before the change was applied.
    pub fn new(pods: &[PodView], phase: Option<&str>) -> Self {
        let baseline = pods
            .iter()
            .map(|p| (p.name.clone(), (p.uid.clone(), p.role)))
            .collect();
        let current = pods
            .iter()
            .map(|p| (p.name.clone(), p.uid.clone()))
            .collect();
        RolloutObserver {
            baseline,
            current,
            restarts: Vec::new(),
            phases: phase.map(|p| vec![p.to_string()]).unwrap_or_default(),
            pods: pods.iter().map(|p| (p.name.clone(), p.clone())).collect(),
            last_phase: phase.map(String::from),
            containers: pods.iter().map(|p| (p.name.clone(), (p.uid.clone(), p.restart_count))).collect(),
            postmasters_before: BTreeMap::new(),
            postmasters_now: BTreeMap::new(),
            known_start: BTreeMap::new(),
        }
    }

    /// The postmasters before the change.
    pub fn postmasters_before(&mut self, states: BTreeMap<String, PostmasterState>) {
        self.known_start = states.iter().map(|(n, s)| (n.clone(), s.started.clone())).collect();
        self.postmasters_before = states;
    }

    /// The last phase reported.
    pub fn phase(&self) -> Option<&str> {
        self.last_phase.as_deref()
    }

    /// The role an instance had when the rollout began (else its pod's, else replica).
    fn role_at_start(&self, name: &str, now: Option<Role>) -> Role {
        self.baseline.get(name).and_then(|(_, r)| *r).or(now).unwrap_or(Role::Replica)
    }

    /// The instance's postmaster is a new one (new pod or container): what was read of
    /// the old one no longer applies.
    fn new_postmaster(&mut self, name: &str) {
        self.known_start.remove(name);
        self.postmasters_now.remove(name);
    }

    /// A reading of `name`'s postmaster: a start time other than the one known for the
    /// current pod and container is a restart in place.
    pub fn postmaster_seen(&mut self, name: &str, state: PostmasterState, at: DateTime<Utc>) {
        match self.known_start.get(name) {
            Some(old) if *old != state.started => {
                let role = self.role_at_start(name, self.pods.get(name).and_then(|p| p.role));
                self.restarts.push(InstanceRestart {
                    instance: name.to_string(),
                    role,
                    old_id: format!("postmaster started {old}"),
                    new_id: format!("postmaster started {}", state.started),
                    at,
                });
            }
            _ => {}
        }
        self.known_start.insert(name.to_string(), state.started.clone());
        self.postmasters_now.insert(name.to_string(), state);
    }

    /// A postmaster read before the change has loaded its configuration again since,
    /// without restarting.
    pub fn reloaded(&self) -> bool {
        self.postmasters_now.iter().any(|(name, now)| {
            self.postmasters_before
                .get(name)
                .is_some_and(|b| b.started == now.started && now.conf_loaded > b.conf_loaded)
        })
    }

    /// Every present instance's last reading has taken the change `target` describes
    /// ([`SettingsTarget::check`], against its reading before the change): `Err` with what
    /// is still missing, by instance.
    pub fn postmasters_converged(&self, target: &SettingsTarget) -> Result<(), Vec<String>> {
        let mut off = Vec::new();
        for name in self.pods.keys() {
            let Some(now) = self.postmasters_now.get(name) else {
                off.push(format!("{name}: postmaster not read since it settled"));
                continue;
            };
            if let Err(e) = target.check(self.postmasters_before.get(name), now) {
                off.push(format!("{name}: {e}"));
            }
        }
        if off.is_empty() {
            Ok(())
        } else {
            Err(off)
        }
    }

    pub fn instances(&self) -> usize {
        self.baseline.len()
    }

    /// The Cluster's phase as reported now (`None`: no phase, or the Cluster is gone).
    pub fn phase_seen(&mut self, phase: Option<&str>) {
        if let Some(p) = phase {
            if self.phases.last().map(String::as_str) != Some(p) {
                self.phases.push(p.to_string());
            }
        }
        self.last_phase = phase.map(String::from);
    }

    /// An instance pod was added or modified: a new UID for a known instance is a restart.
    pub fn pod_seen(&mut self, pod: &PodView, at: DateTime<Utc>) {
        if pod.uid.is_empty() {
            return;
        }
        match self.current.get(&pod.name) {
            Some(old) if *old != pod.uid => {
                let role = self.role_at_start(&pod.name, pod.role);
                self.restarts.push(InstanceRestart {
                    instance: pod.name.clone(),
                    role,
                    old_id: old.clone(),
                    new_id: pod.uid.clone(),
                    at,
                });
                self.current.insert(pod.name.clone(), pod.uid.clone());
                self.new_postmaster(&pod.name);
            }
            Some(_) => {
                // The same pod: its postgres container restarted (the kubelet's count).
                if let Some((uid, count)) = self.containers.get(&pod.name).cloned() {
                    if uid == pod.uid && pod.restart_count > count {
                        let role = self.role_at_start(&pod.name, pod.role);
                        self.restarts.push(InstanceRestart {
                            instance: pod.name.clone(),
                            role,
                            old_id: format!("{uid} container restarts {count}"),
                            new_id: format!("{uid} container restarts {}", pod.restart_count),
                            at,
                        });
                        self.new_postmaster(&pod.name);
                    }
                }
            }
            None => {
                self.current.insert(pod.name.clone(), pod.uid.clone());
            }
        }
        self.containers.insert(pod.name.clone(), (pod.uid.clone(), pod.restart_count));
        self.pods.insert(pod.name.clone(), pod.clone());
    }

    /// An instance pod was deleted. The restart is recorded when its successor appears.
    pub fn pod_gone(&mut self, pod: &PodView) {
        if self
            .pods
            .get(&pod.name)
            .is_some_and(|p| p.uid == pod.uid || pod.uid.is_empty())
        {
            self.pods.remove(&pod.name);
        }
    }

    /// A whole snapshot (a poll, or a watcher's relist): the phase, and exactly these pods.
    #[cfg(feature = "testing")]
    pub fn observe(&mut self, phase: Option<&str>, pods: &[PodView], at: DateTime<Utc>) {
        self.phase_seen(phase);
        self.replace_pods(pods, at);
    }

    /// The pods are exactly `pods` now (a relist): UID changes are recorded, absent pods
    /// are gone.
    pub fn replace_pods(&mut self, pods: &[PodView], at: DateTime<Utc>) {
        for pod in pods {
            self.pod_seen(pod, at);
        }
        self.pods
            .retain(|name, _| pods.iter().any(|p| &p.name == name));
    }

    /// Every instance present at the start has been replaced or restarted at least once.
    pub fn replaced_all(&self) -> bool {
        self.baseline
            .keys()
            .all(|name| self.restarts.iter().any(|r| &r.instance == name))
    }

    pub fn any_restart(&self) -> bool {
        !self.restarts.is_empty()
    }

    /// Healthy phase, `instances` pods all ready and none being deleted.
    pub fn settled(&self, instances: usize) -> bool {
        self.last_phase.as_deref() == Some(HEALTHY)
            && self.pods.len() == instances
            && self.pods.values().all(|p| p.ready && !p.deleting)
    }

    pub fn record(&self) -> RolloutRecord {
        RolloutRecord {
            restarts: self.restarts.clone(),
            phases: self.phases.clone(),
        }
    }

    /// The last state, for timeout messages.
    pub fn summary(&self) -> String {
        let replaced: Vec<String> = self.restarts.iter().map(|r| r.instance.clone()).collect();
        let waiting: Vec<&str> = self
            .baseline
            .keys()
            .filter(|n| !self.restarts.iter().any(|r| &r.instance == *n))
            .map(String::as_str)
            .collect();
        let pods: Vec<String> = self
            .pods
            .values()
            .map(|p| {
                let role = match p.role {
                    Some(Role::Primary) => "primary",
                    Some(Role::Replica) => "replica",
                    None => "no role",
                };
                let state = if p.deleting {
                    "terminating"
                } else if p.ready {
                    "ready"
                } else {
                    "not ready"
                };
                format!("{} {role} {state} uid {}", p.name, short(&p.uid))
            })
            .collect();
        format!(
            "phase \"{}\"; replaced [{}]; not yet replaced [{}]; pods [{}]; phases seen [{}]",
            self.last_phase.as_deref().unwrap_or("<none>"),
            replaced.join(", "),
            waiting.join(", "),
            pods.join(", "),
            self.phases.join(" → ")
        )
    }

    /// Pods whose extension image volumes are not `target` yet.
    pub fn pods_not_matching(&self, target: &[(String, String, String)]) -> Vec<String> {
        self.pods
            .values()
            .filter(|p| p.image_volumes != target)
            .map(|p| p.name.clone())
            .collect()
    }

    /// Is what `expect` waits for there?
    pub fn done(&self, expect: &Expect) -> bool {
        let instances = self.instances();
        match expect {
            Expect::Rollout => self.replaced_all() && self.settled(instances),
            Expect::Converge { image_volumes, settings } => {
                self.settled(instances)
                    && self.pods_not_matching(image_volumes).is_empty()
                    && (!self.any_restart() || self.replaced_all())
                    && settings.as_ref().is_none_or(|t| self.postmasters_converged(t).is_ok())
            }
        }
    }
}

fn short(uid: &str) -> &str {
    &uid[..uid.len().min(8)]
}

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

/// What the rollout watcher waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Every instance replaced once, then healthy (a restart).
    Rollout,
    /// The operator has acted on an applied Cluster: every instance pod carries exactly
    /// these extension image volumes (sorted, as [`PodView::image_volumes`]), the Cluster
    /// is healthy with every pod ready, and a rollout, if one began, replaced every
    /// instance. No fixed window: a rollout the operator starts late is waited for (up to
    /// the rollout timeout) because the old pods do not match until it has replaced them;
    /// a change the pods already match needs nothing and ends at once.
    ///
    /// With `settings` (the watch reads the postmasters, [`RolloutWatch::with_postmasters`])
    /// every postmaster must also have taken the settings the change touches
    /// ([`SettingsTarget::check`]: a new value, no restart pending, the configuration
    /// loaded again): a reload-only change is over when the instance managers have
    /// reloaded, and a change that needs a restart the operator does in place (no pod
    /// changes) when the postmasters restarted.
    Converge {
        image_volumes: Vec<(String, String, String)>,
        settings: Option<SettingsTarget>,
    },
}

impl Expect {
    /// [`Expect::Converge`] on the pod spec a plan asks for (no settings).
    #[cfg(feature = "testing")]
    pub fn converge_on(plan: &cnpg_ext_model::plan::ClusterPlan) -> Expect {
        let mut image_volumes = plan.pod_spec_fingerprint();
        image_volumes.sort();
        Expect::Converge { image_volumes, settings: None }
    }

    /// [`Expect::converge_on`] and the settings the plan asks for (see
    /// [`SettingsTarget::of`]; `previous`: the plan of the Cluster applied before).
    pub fn converge_with(
        plan: &cnpg_ext_model::plan::ClusterPlan,
        previous: Option<&cnpg_ext_model::plan::ClusterPlan>,
    ) -> Expect {
        let mut image_volumes = plan.pod_spec_fingerprint();
        image_volumes.sort();
        Expect::Converge { image_volumes, settings: Some(SettingsTarget::of(plan, previous)) }
    }
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
        for name in self.observer.pods.keys() {
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
        let names: Vec<String> = self.observer.pods.keys().cloned().collect();
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
            .pods
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
