//! How a changed Cluster reaches running instances — the operator's rule, stated once.
//!
//! The stand-in operator acts on it (restart, reload or nothing), the runner derives from it
//! what a step should observe, and the kind backend does not use it at all: there the real
//! operator decides and the backend reports what it saw.

use serde::Serialize;

use crate::plan::ClusterPlan;

/// What a change from one derived plan to the next asks of the instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// The pod spec (the image volumes: name, image, pull policy, mount path) changed: every instance is
    /// replaced, replicas first.
    PodSpecRollout,
    /// A setting that needs a restart changed (`shared_preload_libraries`): every instance
    /// is restarted, replicas first.
    RestartRequired,
    /// Only `extension_control_path` / `dynamic_library_path` changed: a reload applies them.
    SearchPathReload,
    /// Only the postmaster's environment changed (`ld_library_path`, and from 1.29
    /// `bin_path` and `env`): the operator restarts nothing; the new values reach a
    /// postmaster at its next restart (`kubectl cnpg restart`).
    EnvironmentOnly,
    /// Nothing an instance can observe changed.
    Nothing,
}

impl Change {
    /// Classifies the step from `before` to `after` (plans derived with the same options).
    pub fn between(before: &ClusterPlan, after: &ClusterPlan) -> Change {
        if before.pod_spec_fingerprint() != after.pod_spec_fingerprint()
            || before.pull_policies() != after.pull_policies()
        {
            Change::PodSpecRollout
        } else if before.shared_preload_libraries != after.shared_preload_libraries {
            Change::RestartRequired
        } else if before.extension_control_path != after.extension_control_path
            || before.dynamic_library_path != after.dynamic_library_path
        {
            Change::SearchPathReload
        } else if before.ld_library_path != after.ld_library_path
            || before.bin_path != after.bin_path
            || before.env != after.env
        {
            Change::EnvironmentOnly
        } else {
            Change::Nothing
        }
    }

    /// Whether the instances are restarted by the change itself.
    pub fn restarts(self) -> bool {
        matches!(self, Change::PodSpecRollout | Change::RestartRequired)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::Manifest;
    use crate::plan::PlanOptions;
    use crate::Cluster;
    use std::path::Path;

    fn plan(extra: &str) -> ClusterPlan {
        let text = format!(
            "apiVersion: postgresql.cnpg.io/v1\nkind: Cluster\nmetadata: {{name: c}}\nspec:\n  instances: 2\n  postgresql:\n    extensions:\n      - name: e\n        image: {{reference: x/e:1}}\n{extra}"
        );
        let cluster: Cluster = match Manifest::parse(Path::new("t.yaml"), &text).unwrap().remove(0) {
            Manifest::Cluster(d) => d.cluster,
            _ => unreachable!(),
        };
        ClusterPlan::derive(&cluster, &PlanOptions::default())
    }

    #[test]
    fn each_kind_of_change() {
        let base = plan("");
        assert_eq!(Change::between(&base, &base), Change::Nothing);
        assert_eq!(Change::between(&base, &plan("        ld_library_path: [system]\n")), Change::EnvironmentOnly);
        assert_eq!(Change::between(&base, &plan("        bin_path: [bin]\n")), Change::EnvironmentOnly);
        assert_eq!(Change::between(&base, &plan("        env: [{name: A, value: b}]\n")), Change::EnvironmentOnly);
        let mut pulled = base.clone();
        pulled.extensions[0].pull_policy = Some("Always".into());
        assert_eq!(Change::between(&base, &pulled), Change::PodSpecRollout);
        assert_eq!(Change::between(&base, &plan("        extension_control_path: [opt]\n")), Change::SearchPathReload);
        assert_eq!(Change::between(&base, &plan("        dynamic_library_path: [opt]\n")), Change::SearchPathReload);
        let mut other_image = base.clone();
        other_image.extensions[0].image = "x/e:2".into();
        assert_eq!(Change::between(&base, &other_image), Change::PodSpecRollout);
        // A pod-spec change wins over a search-path change made with it.
        let mut both = plan("        extension_control_path: [opt]\n");
        both.extensions[0].image = "x/e:2".into();
        assert_eq!(Change::between(&base, &both), Change::PodSpecRollout);
        let mut preload = base.clone();
        preload.shared_preload_libraries = vec!["p".into()];
        assert_eq!(Change::between(&base, &preload), Change::RestartRequired);
        assert!(Change::PodSpecRollout.restarts() && Change::RestartRequired.restarts());
        assert!(!Change::EnvironmentOnly.restarts() && !Change::SearchPathReload.restarts());
    }
}
