//! What the operator derives for every instance from `spec.postgresql.extensions`.
//!
//! Computed once, here, and *compared* against what each backend observes: a backend never
//! recomputes GUCs itself (the kind backend observes what the real operator did).

use serde::Serialize;

use crate::cluster::{sanitize_name, Cluster};
use crate::version::CnpgVersion;

/// Inputs of the derivation that are not in the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanOptions {
    /// Where image volumes are mounted: `/extensions` in a pod or container; the local
    /// backend mounts under its work directory instead.
    pub mount_root: String,
    /// Operator release whose behaviour is modelled (volume names changed over time).
    pub cnpg: CnpgVersion,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions { mount_root: "/extensions".into(), cnpg: CnpgVersion::DEFAULT }
    }
}

/// One image volume and what it contributes to the search paths.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExtensionMount {
    pub name: String,
    pub image: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pull_policy: Option<String>,
    /// Pod volume name: `ext-<name>` from 1.27.4 / 1.28.2, the bare name before.
    pub volume_name: String,
    pub mount_path: String,
    pub control_dirs: Vec<String>,
    pub library_dirs: Vec<String>,
    pub ld_dirs: Vec<String>,
}

/// The per-instance settings for one Cluster (the same for every instance).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterPlan {
    pub cluster: String,
    pub instances: u32,
    pub mount_root: String,
    pub extensions: Vec<ExtensionMount>,
    /// `SHOW extension_control_path` on every instance.
    pub extension_control_path: String,
    /// `SHOW dynamic_library_path` on every instance.
    pub dynamic_library_path: String,
    /// `LD_LIBRARY_PATH` of the postmaster; `None` when no extension asks for one.
    pub ld_library_path: Option<String>,
    /// `spec.postgresql.shared_preload_libraries`: loaded by the postmaster at start, found
    /// along `dynamic_library_path` like any module; a change needs a restart.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shared_preload_libraries: Vec<String>,
}

impl ClusterPlan {
    /// Derives the plan. The manifest must have passed [`crate::cluster::ClusterDoc::validate`].
    pub fn derive(cluster: &Cluster, opts: &PlanOptions) -> ClusterPlan {
        let root = opts.mount_root.trim_end_matches('/');
        let mut control = vec!["$system".to_string()];
        let mut libs = vec!["$libdir".to_string()];
        let mut ld = Vec::new();
        let mut extensions = Vec::new();
        for e in &cluster.spec.postgresql.extensions {
            let mount_path = format!("{root}/{}", e.name);
            let under = |paths: Vec<String>| -> Vec<String> { paths.iter().map(|p| join(&mount_path, p)).collect() };
            let m = ExtensionMount {
                name: e.name.clone(),
                image: e.image.reference.clone(),
                pull_policy: e.image.pull_policy.clone(),
                volume_name: volume_name(&e.name, opts.cnpg),
                control_dirs: under(e.control_paths()),
                library_dirs: under(e.library_paths()),
                ld_dirs: under(e.ld_paths()),
                mount_path,
            };
            control.extend(m.control_dirs.iter().cloned());
            libs.extend(m.library_dirs.iter().cloned());
            ld.extend(m.ld_dirs.iter().cloned());
            extensions.push(m);
        }
        ClusterPlan {
            cluster: cluster.metadata.name.clone(),
            instances: cluster.spec.instances,
            mount_root: root.to_string(),
            extensions,
            extension_control_path: control.join(":"),
            dynamic_library_path: libs.join(":"),
            ld_library_path: if ld.is_empty() { None } else { Some(ld.join(":")) },
            shared_preload_libraries: cluster.spec.postgresql.shared_preload_libraries.clone(),
        }
    }

    /// What goes into the pod template: a change here makes the operator roll the pods.
    /// Search-path-only changes are applied by a reload; `ld_library_path` is not applied
    /// until a restart (see the reference).
    pub fn pod_spec_fingerprint(&self) -> Vec<(String, String, String)> {
        self.extensions.iter().map(|e| (e.volume_name.clone(), e.image.clone(), e.mount_path.clone())).collect()
    }
}

/// Pod volume name for an extension under a given operator release.
pub fn volume_name(name: &str, cnpg: CnpgVersion) -> String {
    let stem = sanitize_name(name);
    if cnpg.prefixes_volume_names() {
        format!("ext-{stem}")
    } else {
        stem
    }
}

/// Joins a relative image path onto a mount path, dropping `.` and empty components.
fn join(mount: &str, rel: &str) -> String {
    let mut out = mount.to_string();
    for part in rel.split('/').filter(|c| !c.is_empty() && *c != ".") {
        out.push('/');
        out.push_str(part);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::Manifest;
    use std::path::Path;

    fn cluster(yaml: &str) -> Cluster {
        match Manifest::parse(Path::new("t.yaml"), yaml).unwrap().remove(0) {
            Manifest::Cluster(d) => d.cluster,
            other => panic!("not a cluster: {other:?}"),
        }
    }

    const TWO: &str = r#"
apiVersion: postgresql.cnpg.io/v1
kind: Cluster
metadata: {name: c}
spec:
  instances: 3
  postgresql:
    extensions:
      - name: pgvector
        image: {reference: "ghcr.io/x/pgvector:1"}
      - name: my_ext
        image: {reference: "ghcr.io/x/mine:1"}
        extension_control_path: [opt/ctl, ./more/]
        dynamic_library_path: [opt/modules]
        ld_library_path: [system]
"#;

    #[test]
    fn derives_paths_in_list_order() {
        let p = ClusterPlan::derive(&cluster(TWO), &PlanOptions::default());
        assert_eq!(
            p.extension_control_path,
            "$system:/extensions/pgvector/share:/extensions/my_ext/opt/ctl:/extensions/my_ext/more"
        );
        assert_eq!(p.dynamic_library_path, "$libdir:/extensions/pgvector/lib:/extensions/my_ext/opt/modules");
        assert_eq!(p.ld_library_path.as_deref(), Some("/extensions/my_ext/system"));
        assert_eq!(p.extensions[1].volume_name, "ext-my-ext");
    }

    #[test]
    fn no_extensions_means_postgres_defaults() {
        let c =
            cluster("apiVersion: postgresql.cnpg.io/v1\nkind: Cluster\nmetadata: {name: c}\nspec: {instances: 1}\n");
        let p = ClusterPlan::derive(&c, &PlanOptions::default());
        assert_eq!(p.extension_control_path, "$system");
        assert_eq!(p.dynamic_library_path, "$libdir");
        assert_eq!(p.ld_library_path, None);
    }

    #[test]
    fn volume_names_follow_the_operator_release() {
        assert_eq!(volume_name("my_ext", CnpgVersion::new(1, 27, 3)), "my-ext");
        assert_eq!(volume_name("my_ext", CnpgVersion::new(1, 27, 4)), "ext-my-ext");
        assert_eq!(volume_name("pgvector", CnpgVersion::new(1, 28, 1)), "pgvector");
    }

    #[test]
    fn mount_root_is_a_parameter() {
        let p = ClusterPlan::derive(
            &cluster(TWO),
            &PlanOptions { mount_root: "/tmp/w/c-1/extensions/".into(), cnpg: CnpgVersion::DEFAULT },
        );
        assert!(p.extension_control_path.starts_with("$system:/tmp/w/c-1/extensions/pgvector/share:"));
    }

    #[test]
    fn ld_only_change_keeps_the_pod_spec() {
        let a = ClusterPlan::derive(&cluster(TWO), &PlanOptions::default());
        let b = ClusterPlan::derive(
            &cluster(&TWO.replace("ld_library_path: [system]", "ld_library_path: []")),
            &PlanOptions::default(),
        );
        assert_ne!(a.ld_library_path, b.ld_library_path);
        assert_eq!(a.pod_spec_fingerprint(), b.pod_spec_fingerprint());
    }
}
