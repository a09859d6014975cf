//! Rolling-update observation: pod UIDs per instance, the order instances were replaced
//! (with the role each had when the rollout began), and the Cluster phases seen.
//!
//! [`RolloutObserver`] is pure (fed snapshots); [`observe_rollout`] polls the API for them.
//! The observer never judges the order: the verifier does (replicas before primary).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use cnpg_ext_model::backend::{BackendError, InstanceRestart, Role, RolloutRecord};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DynamicObject, ListParams};
use serde_json::Value;

use crate::errors::kube_error;
use crate::wait::{poll_until, Probe, HEALTHY};

/// The part of an instance pod the observer needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    pub name: String,
    pub uid: String,
    pub role: Option<Role>,
    pub ready: bool,
    pub deleting: bool,
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
    }
}

#[derive(Debug, Clone)]
pub struct RolloutObserver {
    /// instance → (uid, role) when the rollout began.
    baseline: BTreeMap<String, (String, Option<Role>)>,
    /// instance → last uid seen.
    current: BTreeMap<String, String>,
    restarts: Vec<InstanceRestart>,
    phases: Vec<String>,
    last_pods: Vec<PodView>,
    last_phase: Option<String>,
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
            last_pods: pods.to_vec(),
            last_phase: phase.map(String::from),
        }
    }

    pub fn instances(&self) -> usize {
        self.baseline.len()
    }

    /// Feeds one snapshot.
    pub fn observe(&mut self, phase: Option<&str>, pods: &[PodView], at: DateTime<Utc>) {
        if let Some(p) = phase {
            if self.phases.last().map(String::as_str) != Some(p) {
                self.phases.push(p.to_string());
            }
        }
        for pod in pods {
            if pod.uid.is_empty() {
                continue;
            }
            match self.current.get(&pod.name) {
                Some(old) if *old != pod.uid => {
                    let role = self
                        .baseline
                        .get(&pod.name)
                        .and_then(|(_, r)| *r)
                        .or(pod.role)
                        .unwrap_or(Role::Replica);
                    self.restarts.push(InstanceRestart {
                        instance: pod.name.clone(),
                        role,
                        old_id: old.clone(),
                        new_id: pod.uid.clone(),
                        at,
                    });
                    self.current.insert(pod.name.clone(), pod.uid.clone());
                }
                Some(_) => {}
                None => {
                    self.current.insert(pod.name.clone(), pod.uid.clone());
                }
            }
        }
        self.last_pods = pods.to_vec();
        self.last_phase = phase.map(String::from);
    }

    /// Every instance present at the start has been replaced at least once.
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
            && self.last_pods.len() == instances
            && self.last_pods.iter().all(|p| p.ready && !p.deleting)
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
        let waiting: Vec<&String> = self
            .baseline
            .keys()
            .filter(|n| !self.restarts.iter().any(|r| &r.instance == *n))
            .collect();
        let pods: Vec<String> = self
            .last_pods
            .iter()
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
            waiting
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            pods.join(", "),
            self.phases.join(" → ")
        )
    }
}

fn short(uid: &str) -> &str {
    &uid[..uid.len().min(8)]
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
    let phase = c
        .as_ref()
        .and_then(|c| c.data.pointer("/status/phase"))
        .and_then(Value::as_str)
        .map(String::from);
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Every instance replaced once, then healthy.
    Rollout,
    /// Probably nothing: watch for `settle`; if a rollout starts anyway, follow it to the end.
    MaybeNothing { settle: Duration },
}

/// Observes from `observer`'s baseline until the rollout finished (or, for
/// [`Expect::MaybeNothing`], until the settle time passed without one).
pub async fn observe_rollout(
    clusters: &Api<DynamicObject>,
    pods: &Api<Pod>,
    cluster: &str,
    mut observer: RolloutObserver,
    expect: Expect,
    timeout: Duration,
    poll: Duration,
) -> Result<RolloutRecord, BackendError> {
    let instances = observer.instances();
    let start = tokio::time::Instant::now();
    let obs = std::sync::Mutex::new(&mut observer);
    let what = format!(
        "the rolling update of Cluster {}/{cluster} (every instance replaced once, then phase \"{HEALTHY}\" with {instances} ready pods)",
        pods_namespace(pods)
    );
    let result = poll_until(&what, timeout, poll, || async {
        let (phase, views) = snapshot(clusters, pods, cluster).await?;
        let mut o = obs.lock().expect("observer lock");
        o.observe(phase.as_deref(), &views, Utc::now());
        let done = match expect {
            Expect::Rollout => o.replaced_all() && o.settled(instances),
            Expect::MaybeNothing { settle } => {
                if o.any_restart() {
                    o.replaced_all() && o.settled(instances)
                } else {
                    start.elapsed() >= settle && o.settled(instances)
                }
            }
        };
        Ok(if done {
            Probe::Done(())
        } else {
            Probe::Pending(o.summary())
        })
    })
    .await;
    let _ = obs.into_inner();
    result.map(|_| observer.record())
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
