//! What an instance pod really has: the image volumes in its stored spec (the API server
//! silently drops them when the ImageVolume gate is off), the files inside each mount (k3s's
//! containerd has been seen to mount them empty), and the postmaster's `LD_LIBRARY_PATH`.

use cnpg_ext_model::backend::{BackendError, InstanceObservation, MountObservation};
use cnpg_ext_model::plan::ClusterPlan;
use k8s_openapi::api::core::v1::Pod;

pub const POSTGRES_CONTAINER: &str = "postgres";
pub const DEFAULT_PGDATA: &str = "/var/lib/postgresql/data/pgdata";
const PROBE_FILE: &str = ".cnpg-ext-write-probe";

/// One image volume as stored in the pod spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecMount {
    pub name: String,
    pub volume: String,
    pub reference: String,
    pub mount_path: String,
    pub read_only: Option<bool>,
}

/// Checks the stored pod spec against the plan: every extension has its image volume
/// (`plan.extensions[].volume_name`) with the planned reference, mounted at its mount path
/// in the `postgres` container.
pub fn check_pod_spec(pod: &Pod, plan: &ClusterPlan) -> Result<Vec<SpecMount>, BackendError> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("?");
    let name = pod.metadata.name.as_deref().unwrap_or("?");
    let spec = pod
        .spec
        .as_ref()
        .ok_or_else(|| BackendError::Failed(format!("pod {ns}/{name} has no spec")))?;
    let volumes = spec.volumes.clone().unwrap_or_default();
    let container = spec
        .containers
        .iter()
        .find(|c| c.name == POSTGRES_CONTAINER)
        .ok_or_else(|| {
            BackendError::Failed(format!(
                "pod {ns}/{name} has no `{POSTGRES_CONTAINER}` container"
            ))
        })?;
    let mounts = container.volume_mounts.clone().unwrap_or_default();
    let mut out = Vec::new();
    for ext in &plan.extensions {
        let Some(vol) = volumes.iter().find(|v| v.name == ext.volume_name) else {
            let present: Vec<&str> = volumes.iter().map(|v| v.name.as_str()).collect();
            return Err(BackendError::Failed(format!(
                "pod {ns}/{name} has no volume `{}` for extension `{}` (image {}); volumes present: [{}]. \
                 If the Cluster asked for it, the API server dropped the `image` volume: the ImageVolume \
                 feature gate is off (enable ImageVolume=true on the API server and kubelets; kind: `featureGates` in kind-config)",
                ext.volume_name,
                ext.name,
                ext.image,
                present.join(", ")
            )));
        };
        let Some(image) = vol.image.as_ref() else {
            return Err(BackendError::Failed(format!(
                "pod {ns}/{name}: volume `{}` for extension `{}` is not an image volume (no `image` source): \
                 the API server dropped it, the ImageVolume feature gate is off",
                ext.volume_name, ext.name
            )));
        };
        let reference = image.reference.clone().unwrap_or_default();
        if reference != ext.image {
            return Err(BackendError::Failed(format!(
                "pod {ns}/{name}: volume `{}` has image `{reference}`, the Cluster asks for `{}`",
                ext.volume_name, ext.image
            )));
        }
        let Some(m) = mounts.iter().find(|m| m.name == ext.volume_name) else {
            return Err(BackendError::Failed(format!(
                "pod {ns}/{name}: container `{POSTGRES_CONTAINER}` does not mount volume `{}` (expected at {})",
                ext.volume_name, ext.mount_path
            )));
        };
        if m.mount_path != ext.mount_path {
            return Err(BackendError::Failed(format!(
                "pod {ns}/{name}: volume `{}` is mounted at {}, expected {}",
                ext.volume_name, m.mount_path, ext.mount_path
            )));
        }
        out.push(SpecMount {
            name: ext.name.clone(),
            volume: ext.volume_name.clone(),
            reference,
            mount_path: m.mount_path.clone(),
            read_only: m.read_only,
        });
    }
    Ok(out)
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// One POSIX `sh` script that reports the postmaster pid, its `LD_LIBRARY_PATH`, and for
/// every mount whether it is there, its regular files, and whether a write is refused.
/// Output lines start with `@@` markers parsed by [`parse_inspect_output`].
pub fn inspect_script(plan: &ClusterPlan) -> String {
    let mut s = String::new();
    s.push_str(&format!("PGDATA=\"${{PGDATA:-{DEFAULT_PGDATA}}}\"\n"));
    s.push_str("pid=\"$(head -n 1 \"$PGDATA/postmaster.pid\" 2>/dev/null)\"\n");
    s.push_str("echo \"@@pid $pid\"\n");
    s.push_str("if [ -n \"$pid\" ] && [ -r \"/proc/$pid/environ\" ]; then\n");
    s.push_str("  tr '\\000' '\\n' < \"/proc/$pid/environ\" | while IFS= read -r l; do echo \"@@env $l\"; done\n");
    s.push_str("  echo \"@@environ read\"\nfi\n");
    let paths: Vec<String> = plan
        .extensions
        .iter()
        .map(|e| sh_quote(&e.mount_path))
        .collect();
    if !paths.is_empty() {
        s.push_str(&format!("for m in {}; do\n", paths.join(" ")));
        s.push_str("  if [ -d \"$m\" ]; then\n");
        s.push_str("    echo \"@@mount present $m\"\n");
        s.push_str("    find \"$m\" -type f 2>/dev/null | while IFS= read -r f; do echo \"@@file $m ${f#\"$m\"/}\"; done\n");
        s.push_str(&format!(
            "    if ( : > \"$m/{PROBE_FILE}\" ) 2>/dev/null; then rm -f \"$m/{PROBE_FILE}\"; echo \"@@write allowed $m\"; else echo \"@@write refused $m\"; fi\n"
        ));
        s.push_str("  else\n    echo \"@@mount absent $m\"\n  fi\ndone\n");
    }
    s
}

/// The command run in the `postgres` container.
pub fn inspect_command(plan: &ClusterPlan) -> Vec<String> {
    vec!["sh".into(), "-c".into(), inspect_script(plan)]
}

/// Parses the script's output into an observation for `instance`.
pub fn parse_inspect_output(
    instance: &str,
    plan: &ClusterPlan,
    stdout: &str,
) -> Result<InstanceObservation, BackendError> {
    let mut pid: Option<String> = None;
    let mut environ_read = false;
    let mut ld: Option<String> = None;
    let mut environment = std::collections::BTreeMap::new();
    let mut mounts: Vec<MountObservation> = plan
        .extensions
        .iter()
        .map(|e| MountObservation {
            name: e.name.clone(),
            path: e.mount_path.clone(),
            present: false,
            files: vec![],
            read_only: None,
        })
        .collect();
    let find =
        |mounts: &mut Vec<MountObservation>, path: &str| mounts.iter().position(|m| m.path == path);
    for line in stdout.lines() {
        let Some(rest) = line.strip_prefix("@@") else {
            continue;
        };
        let (tag, rest) = rest.split_once(' ').unwrap_or((rest, ""));
        match tag {
            "pid" => pid = Some(rest.trim().to_string()).filter(|p| !p.is_empty()),
            "env" => {
                if let Some((k, v)) = rest.split_once('=') {
                    if k == "LD_LIBRARY_PATH" {
                        ld = Some(v.to_string());
                    }
                    environment.insert(k.to_string(), v.to_string());
                }
            }
            "environ" => environ_read = true,
            "mount" => {
                let (state, path) = rest.split_once(' ').unwrap_or((rest, ""));
                if let Some(i) = find(&mut mounts, path) {
                    mounts[i].present = state == "present";
                }
            }
            "file" => {
                // `<mount path> <relative file>`: the mount path has no spaces.
                if let Some((path, file)) = rest.split_once(' ') {
                    if let Some(i) = find(&mut mounts, path) {
                        if file != PROBE_FILE {
                            mounts[i].files.push(file.to_string());
                        }
                    }
                }
            }
            "write" => {
                let (state, path) = rest.split_once(' ').unwrap_or((rest, ""));
                if let Some(i) = find(&mut mounts, path) {
                    mounts[i].read_only = Some(state == "refused");
                }
            }
            _ => {}
        }
    }
    let Some(pid) = pid else {
        return Err(BackendError::Failed(format!(
            "instance {instance}: no postmaster pid in $PGDATA/postmaster.pid (is PostgreSQL running in container `{POSTGRES_CONTAINER}`?)"
        )));
    };
    if !environ_read {
        return Err(BackendError::Failed(format!(
            "instance {instance}: cannot read /proc/{pid}/environ of the postmaster"
        )));
    }
    for m in &mut mounts {
        m.files.sort();
        m.files.dedup();
    }
    Ok(InstanceObservation {
        instance: instance.to_string(),
        ld_library_path: ld,
        environment,
        mounts,
    })
}
