//! The pure side of rollout observation: [`RolloutObserver`] is fed pod and phase events
//! (or whole snapshots after a relist) and postmaster readings, and records every restart
//! it sees in order; [`Expect`] is what a wait is over. `crate::watch` feeds it from the
//! API server.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use cnpg_ext_model::backend::{InstanceRestart, Role, RolloutRecord};

use crate::pods::PodView;
use crate::postmaster::{PostmasterState, SettingsTarget};
use crate::wait::HEALTHY;

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

    /// The instance pods that exist now, by name.
    pub fn pods(&self) -> &BTreeMap<String, PodView> {
        &self.pods
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
    /// With `settings` (the watch reads the postmasters, `RolloutWatch::with_postmasters`)
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
