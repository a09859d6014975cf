//! What the operator derives for every instance from `spec.postgresql.extensions`.
//!
//! Computed once, here, and *compared* against what each backend observes: a backend never
//! recomputes GUCs itself (the kind backend observes what the real operator did).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::cluster::{sanitize_name, Cluster};
use crate::env;
use crate::gopath;
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

/// One image volume and what it contributes to the search paths and the environment.
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
    /// Directories appended to `PATH` (1.29+).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bin_dirs: Vec<String>,
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
    /// Whether the instance manager writes the two search paths into the configuration
    /// (when the Cluster has extensions, or the user set them); otherwise PostgreSQL's
    /// defaults (`$system`, `$libdir`) hold.
    #[serde(skip)]
    pub writes_search_paths: bool,
    /// What the extensions append to the postmaster's `LD_LIBRARY_PATH` (after whatever the
    /// instance manager inherited); `None` when no extension asks for one.
    pub ld_library_path: Option<String>,
    /// What the extensions append to the postmaster's `PATH` (1.29+ `bin_path`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bin_path: Option<String>,
    /// Variables the extensions set in the postmaster's environment (1.29+ `env`, with
    /// `${image_root}` expanded); a later extension overrides an earlier one.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// `shared_preload_libraries` as the instance manager writes it: the Cluster's list, then
    /// the libraries of the extensions the operator manages when their settings are used
    /// (`pg_stat_statements.*`, `auto_explain.*`, …), without duplicates. Loaded by the
    /// postmaster at start, found along `dynamic_library_path`; a change needs a restart.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shared_preload_libraries: Vec<String>,
}

/// Extensions whose libraries the operator preloads when a parameter in their namespace is
/// set (`<namespace>.<setting>`), in the operator's order.
const MANAGED_PRELOAD: &[(&str, &str)] = &[
    ("pgaudit", "pgaudit"),
    ("pg_stat_statements", "pg_stat_statements"),
    ("auto_explain", "auto_explain"),
    ("pg_failover_slots", "pg_failover_slots"),
];

impl ClusterPlan {
    /// Derives the plan from a Cluster whose extensions are resolved (see
    /// [`crate::cluster::ClusterDoc::resolve_extensions`]) and which passed validation.
    pub fn derive(cluster: &Cluster, opts: &PlanOptions) -> ClusterPlan {
        let root = opts.mount_root.trim_end_matches('/');
        let pg = &cluster.spec.postgresql;
        let applies_env = opts.cnpg.applies_extension_env();
        let mut control = vec!["$system".to_string()];
        let mut libs = vec!["$libdir".to_string()];
        let (mut ld, mut bin) = (Vec::new(), Vec::new());
        let mut environment = BTreeMap::new();
        let mut extensions = Vec::new();
        for e in &pg.extensions {
            let mount_path = gopath::join(&[root, &e.name]);
            let under =
                |paths: Vec<String>| -> Vec<String> { paths.iter().map(|p| gopath::join(&[&mount_path, p])).collect() };
            let m = ExtensionMount {
                name: e.name.clone(),
                image: e.image.reference.clone(),
                pull_policy: e.image.pull_policy.clone().filter(|p| !p.is_empty()),
                volume_name: volume_name(&e.name, opts.cnpg),
                control_dirs: under(e.control_paths()),
                library_dirs: under(e.library_paths()),
                ld_dirs: under(e.ld_paths()),
                bin_dirs: if applies_env { under(e.bin_paths()) } else { Vec::new() },
                mount_path: mount_path.clone(),
            };
            if applies_env {
                for v in e.env_vars() {
                    let dedicated = env::DEDICATED.iter().any(|(n, _)| *n == v.name);
                    if !env::is_reserved(&v.name) && !dedicated {
                        environment.insert(v.name.clone(), env::expand(&v.value, &mount_path));
                    }
                }
            }
            control.extend(m.control_dirs.iter().cloned());
            libs.extend(m.library_dirs.iter().cloned());
            ld.extend(m.ld_dirs.iter().cloned());
            bin.extend(m.bin_dirs.iter().cloned());
            extensions.push(m);
        }
        let user = |key: &str| pg.parameters.get(key).cloned();
        let has_extensions = !extensions.is_empty();
        let search_path = |mut list: Vec<String>, key: &str| -> String {
            match (has_extensions, user(key)) {
                (true, set) => {
                    list.extend(set.unwrap_or_default().split(':').map(str::to_string));
                    list.retain(|p| !p.is_empty());
                    list.join(":")
                }
                (false, Some(set)) => set,
                (false, None) => list.remove(0),
            }
        };
        let writes_search_paths =
            has_extensions || user("extension_control_path").is_some() || user("dynamic_library_path").is_some();
        let mut preload: Vec<String> = Vec::new();
        let managed = MANAGED_PRELOAD
            .iter()
            .filter(|(namespace, _)| pg.parameters.keys().any(|k| k.starts_with(&format!("{namespace}."))));
        for lib in pg.shared_preload_libraries.iter().cloned().chain(managed.map(|(_, lib)| lib.to_string())) {
            if !lib.is_empty() && !preload.contains(&lib) {
                preload.push(lib);
            }
        }
        let joined = |v: Vec<String>| if v.is_empty() { None } else { Some(v.join(":")) };
        ClusterPlan {
            cluster: cluster.metadata.name.clone(),
            instances: cluster.spec.instances,
            mount_root: root.to_string(),
            extensions,
            extension_control_path: search_path(control, "extension_control_path"),
            dynamic_library_path: search_path(libs, "dynamic_library_path"),
            writes_search_paths,
            ld_library_path: joined(ld),
            bin_path: joined(bin),
            env: environment,
            shared_preload_libraries: preload,
        }
    }

    /// What goes into the pod template: a change here makes the operator roll the pods.
    /// Search-path-only changes are applied by a reload; `ld_library_path`, `bin_path` and
    /// `env` are not applied until a restart (see the reference).
    pub fn pod_spec_fingerprint(&self) -> Vec<(String, String, String)> {
        self.extensions.iter().map(|e| (e.volume_name.clone(), e.image.clone(), e.mount_path.clone())).collect()
    }

    /// The image pull policy of each volume, as written (`None`: the API server's default).
    pub fn pull_policies(&self) -> Vec<Option<String>> {
        self.extensions.iter().map(|e| e.pull_policy.clone()).collect()
    }

    /// The postmaster's `LD_LIBRARY_PATH` when the instance manager inherited `inherited`:
    /// the extensions' directories are appended after it.
    pub fn postmaster_ld_library_path(&self, inherited: Option<&str>) -> Option<String> {
        append_paths(inherited, self.ld_library_path.as_deref())
    }

    /// The postmaster's `PATH` when the instance manager inherited `inherited`.
    pub fn postmaster_path(&self, inherited: Option<&str>) -> Option<String> {
        append_paths(inherited, self.bin_path.as_deref())
    }
}

/// The operator's `AppendPaths`: `extra` after `existing`, `existing` alone when nothing
/// is added (an empty `LD_LIBRARY_PATH` is never created).
fn append_paths(existing: Option<&str>, extra: Option<&str>) -> Option<String> {
    match (existing.filter(|e| !e.is_empty()), extra) {
        (None, None) => existing.map(str::to_string),
        (Some(e), None) => Some(e.to_string()),
        (None, Some(x)) => Some(x.to_string()),
        (Some(e), Some(x)) => Some(format!("{e}:{x}")),
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

    #[test]
    fn operator_path_rules() {
        // Absolute and dotted paths are joined onto the mount and cleaned; an empty list
        // means the default; user-set search paths follow the extensions' directories.
        let text = TWO
            .replace("extension_control_path: [opt/ctl, ./more/]", "extension_control_path: [/opt/ctl, a/../more]")
            .replace("dynamic_library_path: [opt/modules]", "dynamic_library_path: []")
            .replace("  postgresql:\n", "  postgresql:\n    parameters: {dynamic_library_path: '/usr/local/lib::/x', pg_stat_statements.max: '100'}\n    shared_preload_libraries: [vector]\n");
        let p = ClusterPlan::derive(&cluster(&text), &PlanOptions::default());
        assert_eq!(
            p.extension_control_path,
            "$system:/extensions/pgvector/share:/extensions/my_ext/opt/ctl:/extensions/my_ext/more"
        );
        assert_eq!(p.dynamic_library_path, "$libdir:/extensions/pgvector/lib:/extensions/my_ext/lib:/usr/local/lib:/x");
        assert_eq!(p.shared_preload_libraries, vec!["vector", "pg_stat_statements"]);
    }

    #[test]
    fn user_search_paths_alone_are_written_as_given() {
        let c = cluster(
            "apiVersion: postgresql.cnpg.io/v1\nkind: Cluster\nmetadata: {name: c}\nspec:\n  postgresql:\n    parameters: {extension_control_path: '/a:'}\n",
        );
        let p = ClusterPlan::derive(&c, &PlanOptions::default());
        assert_eq!(p.extension_control_path, "/a:");
        assert!(p.writes_search_paths);
    }

    #[test]
    fn environment_from_1_29() {
        let text = TWO.replace(
            "ld_library_path: [system]",
            "ld_library_path: [system]\n        bin_path: [bin]\n        env: [{name: GDAL_DATA, value: '${image_root}/share/gdal'}, {name: LIT, value: '$${image_root}'}]",
        );
        let new = ClusterPlan::derive(&cluster(&text), &PlanOptions::default());
        assert_eq!(new.bin_path.as_deref(), Some("/extensions/my_ext/bin"));
        assert_eq!(new.env["GDAL_DATA"], "/extensions/my_ext/share/gdal");
        assert_eq!(new.env["LIT"], "${image_root}");
        assert_eq!(new.postmaster_path(Some("/usr/bin")).as_deref(), Some("/usr/bin:/extensions/my_ext/bin"));
        assert_eq!(
            new.postmaster_ld_library_path(Some("/opt/pg/lib")).as_deref(),
            Some("/opt/pg/lib:/extensions/my_ext/system")
        );
        assert_eq!(new.postmaster_ld_library_path(Some("")).as_deref(), Some("/extensions/my_ext/system"));
        let old = ClusterPlan::derive(
            &cluster(&text),
            &PlanOptions { cnpg: CnpgVersion::new(1, 28, 2), ..Default::default() },
        );
        assert_eq!(old.bin_path, None, "1.28 ignores bin_path");
        assert!(old.env.is_empty(), "1.28 ignores env");
    }
}
