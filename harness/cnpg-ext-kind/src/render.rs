//! `--dry-run`: every manifest and kind config the run would apply, written to files
//! without contacting a cluster.

use std::path::{Path, PathBuf};

use cnpg_ext_model::backend::BackendError;
use cnpg_ext_model::scenario::{Scenario, Step};
use cnpg_ext_model::Manifest;
use serde_json::{json, Value};

use cnpg_ext_model::plan::{ClusterPlan, PlanOptions};

use crate::apply::{namespace_doc, namespace_for, namespaced, namespaced_cluster, restart_patch};
use crate::config::{render_kind_config, Topology, DEFAULT_KUBERNETES};
use crate::options::KindOptions;
use crate::preflight::{image_volume_probe_pod, PREFLIGHT_NAMESPACE};
use crate::versions::VersionsFile;

pub use crate::apply::to_yaml;

/// Every document the run applies for `scenario`, in order, as (file name, document).
pub fn scenario_documents(scenario: &Scenario, opts: &KindOptions) -> Vec<(String, Value)> {
    let ns = namespace_for(&scenario.id);
    let mut out = vec![("00-namespace.yaml".to_string(), namespace_doc(&ns))];
    let mut last_cluster: Option<String> = None;
    for ls in &scenario.steps {
        let n = ls.index;
        match &ls.step {
            Step::Apply(a) => {
                for m in scenario.manifests.get(&a.file).into_iter().flatten() {
                    let (kind, doc) = match m {
                        Manifest::Cluster(c) => {
                            last_cluster = Some(c.cluster.metadata.name.clone());
                            let doc = namespaced_cluster(&c.raw, &ns, opts);
                            out.push((
                                format!("{n:02}-origin-{}.yaml", c.cluster.metadata.name),
                                origin_expectations(&c.cluster, &c.raw, &doc, opts),
                            ));
                            ("cluster", doc)
                        }
                        Manifest::Database(d) => ("database", namespaced(&d.raw, &ns)),
                        // A ClusterImageCatalog is cluster-scoped: applied as written.
                        Manifest::Catalog(c) if c.catalog.kind == "ClusterImageCatalog" => {
                            ("clusterimagecatalog", c.raw.clone())
                        }
                        Manifest::Catalog(c) => ("imagecatalog", namespaced(&c.raw, &ns)),
                        Manifest::Other { kind, raw } => (kind.as_str(), namespaced(raw, &ns)),
                    };
                    let name = doc.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("unnamed").to_string();
                    out.push((format!("{n:02}-apply-{}-{name}.yaml", kind.to_lowercase()), doc));
                }
            }
            Step::Restart(_) => {
                let c = last_cluster.clone().unwrap_or_else(|| "cluster".into());
                let patch = restart_patch("<RFC 3339 time of the restart, with nanoseconds, unique per restart>");
                out.push((format!("{n:02}-restart-{c}.merge-patch.yaml"), patch));
            }
            Step::Sql(_) | Step::Verify(_) => {}
        }
    }
    out
}

/// What the origin checks expect of one applied Cluster, and how its SQL reaches them: as
/// `postgres`, the superuser (`pg_read_file('/proc/self/maps')` needs one), so the harness
/// turns `spec.enableSuperuserAccess` on when the manifest leaves it unset. Per extension:
/// its control file must be found under `<mount>/<extension_control_path>/extension/` and
/// its modules under `<mount>/<dynamic_library_path>/`, not in the operand image's own
/// directories (`$system`, `$libdir` come first in the search paths).
pub fn origin_expectations(
    cluster: &cnpg_ext_model::Cluster,
    raw: &Value,
    applied: &Value,
    opts: &KindOptions,
) -> Value {
    let plan = ClusterPlan::derive(cluster, &PlanOptions { mount_root: "/extensions".into(), cnpg: opts.cnpg_version });
    let asked = raw.pointer("/spec/enableSuperuserAccess").and_then(Value::as_bool);
    let applied_flag = applied.pointer("/spec/enableSuperuserAccess").and_then(Value::as_bool);
    let superuser = match (asked, applied_flag) {
        (None, Some(true)) => "spec.enableSuperuserAccess: true added by the harness (the manifest leaves it unset): SQL steps and origin checks connect as postgres with the <cluster>-superuser secret".to_string(),
        (Some(true), _) => "spec.enableSuperuserAccess: true (from the manifest): SQL steps and origin checks connect as postgres".to_string(),
        (Some(false), _) => "spec.enableSuperuserAccess: false in the manifest: there is no <cluster>-superuser secret, so SQL as postgres and the origin checks (pg_read_file needs a superuser) will fail".to_string(),
        (None, _) => "spec.enableSuperuserAccess unset and not added: the origin checks cannot connect as postgres".to_string(),
    };
    let extensions: Vec<Value> = plan
        .extensions
        .iter()
        .map(|e| {
            json!({
                "name": e.name,
                "image": e.image,
                "volume": e.volume_name,
                "mount": e.mount_path,
                "control_file_under": e.control_dirs.iter().map(|d| format!("{d}/extension/")).collect::<Vec<_>>(),
                "modules_under": e.library_dirs.iter().map(|d| format!("{d}/")).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "cluster": plan.cluster,
        "operator": opts.cnpg_version.to_string(),
        "superuser": superuser,
        "extension_control_path": plan.extension_control_path,
        "dynamic_library_path": plan.dynamic_library_path,
        "extensions": extensions,
    })
}

/// Writes the kind config, the operator release and every scenario document under
/// `out_dir` (`<report-dir>/manifests`): `kind-config.yaml`, the preflight's
/// `preflight-imagevolume-probe-pod.dry-run.yaml` (namespace `default`, as the preflight
/// sends it), `operator-release.yaml`, `<scenario-id>/NN-….yaml` with an
/// `NN-origin-<cluster>.yaml` per applied Cluster and `findings.txt` when the release
/// ignores what the scenario uses (`Scenario::unsupported`); with `--registry` also `registry-*` (ConfigMap, nodes'
/// `hosts.toml`, where each image is pushed). Returns the files written.
pub fn render_dry_run(scenario: &Scenario, opts: &KindOptions, out_dir: &Path) -> Result<Vec<PathBuf>, BackendError> {
    let io = |p: &Path, e: std::io::Error| BackendError::Failed(format!("writing {}: {e}", p.display()));
    let dir = out_dir.join(&scenario.id);
    std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
    let mut written = Vec::new();
    let mut put = |path: PathBuf, text: String| -> Result<(), BackendError> {
        std::fs::write(&path, text).map_err(|e| io(&path, e))?;
        written.push(path);
        Ok(())
    };

    put(out_dir.join("kind-config.yaml"), render_kind_config(DEFAULT_KUBERNETES, Topology::Single, opts.registry)?)?;
    // The preflight's ImageVolume probe: sent once per run, in the namespace the run uses.
    put(
        out_dir.join("preflight-imagevolume-probe-pod.dry-run.yaml"),
        to_yaml(&serde_json::to_value(image_volume_probe_pod(PREFLIGHT_NAMESPACE)).expect("pod serializes")),
    )?;

    if opts.registry {
        // What `--registry` writes besides the kind config: the KEP-1755 ConfigMap and the
        // nodes' hosts.toml (localhost:<port> and each image's own registry host).
        let cfg = crate::node_mirror::RegistryConfig::from_options(opts);
        put(
            out_dir.join("registry-local-registry-hosting.yaml"),
            to_yaml(&crate::node_mirror::local_registry_hosting(&cfg)),
        )?;
        let targets = scenario
            .images
            .iter()
            .map(|i| crate::node_mirror::mirror_target(&i.reference, &cfg))
            .collect::<Result<Vec<_>, _>>()?;
        let mut files = vec![(cfg.host(), crate::node_mirror::hosts_toml_local(&cfg))];
        files.extend(crate::node_mirror::mirror_hosts_files(&targets, &cfg));
        for (host, text) in files {
            put(out_dir.join(format!("registry-certs.d-{}-hosts.toml", host.replace(':', "_"))), text)?;
        }
        let pushes: Vec<String> = targets.iter().map(|t| format!("{} -> {}", t.reference, t.push)).collect();
        put(out_dir.join("registry-pushes.txt"), pushes.join("\n") + "\n")?;
    }

    let versions = match &opts.versions_file {
        Some(p) => VersionsFile::load(p)?,
        None => VersionsFile::embedded(),
    };
    let release = versions.find(opts.cnpg_version)?;
    let mut rel = serde_json::to_value(release).expect("release serializes");
    if let Some(local) = &opts.operator_manifest {
        let text = std::fs::read_to_string(local).map_err(|e| {
            BackendError::Unusable(format!("{}: cannot read the operator manifest: {e}", local.display()))
        })?;
        let check = crate::versions::check_manifest(release, text.as_bytes(), opts.allow_unpinned_operator)?;
        let docs = crate::operator::apply_order(crate::operator::parse_manifest(&text)?);
        rel["computed_sha256"] = json!(check.sha256);
        rel["apply_order"] = json!(crate::operator::describe(&docs));
    }
    put(out_dir.join("operator-release.yaml"), to_yaml(&rel))?;

    for (name, doc) in scenario_documents(scenario, opts) {
        put(dir.join(name), to_yaml(&doc))?;
    }
    // What this release ignores of the scenario (1.29 fields against 1.28): the run would
    // report it unsupported, never pass it.
    if !scenario.unsupported.is_empty() {
        let lines: Vec<String> = scenario.unsupported.iter().map(|e| e.to_string()).collect();
        put(dir.join("findings.txt"), lines.join("\n") + "\n")?;
    }
    Ok(written)
}
