//! A tiny hostPath volume provisioner for the node's default StorageClass
//! ([`STORAGE_CLASS`], provisioner [`PROVISIONER`], binding Immediate): every pending claim
//! of that class gets a PersistentVolume pre-bound to it (`claimRef`) on a directory under
//! `<state>/volumes/` (owned by uid/gid 26, CloudNativePG's postgres user, since hostPath
//! volumes get no fsGroup ownership change); a released volume is deleted with its directory.
//! Runs in the outer supervisor, polling through kubectl every 2 s.

use serde_json::{json, Value};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub const STORAGE_CLASS: &str = "standard";
pub const PROVISIONER: &str = "cnpg-ext-node/hostpath";

/// The StorageClass manifest `up` applies.
pub fn storage_class() -> Value {
    json!({
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": STORAGE_CLASS,
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}
        },
        "provisioner": PROVISIONER,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate"
    })
}

/// The volume for `pvc` (a PersistentVolumeClaim object), or `None` when it is not ours to
/// provision (bound, another class, being deleted).
pub fn volume_for(pvc: &Value, dir: &Path) -> Option<(String, Value)> {
    let class = pvc["spec"]["storageClassName"].as_str()?;
    if class != STORAGE_CLASS
        || pvc["status"]["phase"].as_str() != Some("Pending")
        || pvc["spec"]["volumeName"].as_str().is_some_and(|v| !v.is_empty())
        || pvc["metadata"]["deletionTimestamp"].is_string()
    {
        return None;
    }
    let uid = pvc["metadata"]["uid"].as_str()?;
    let name = format!("pvc-{uid}");
    let path = dir.join(&name).display().to_string();
    let storage = pvc["spec"]["resources"]["requests"]["storage"].clone();
    let pv = json!({
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": name,
            "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER}
        },
        "spec": {
            "capacity": {"storage": storage},
            "accessModes": pvc["spec"]["accessModes"].clone(),
            "volumeMode": pvc["spec"]["volumeMode"].as_str().unwrap_or("Filesystem"),
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": STORAGE_CLASS,
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": pvc["metadata"]["namespace"].clone(),
                "name": pvc["metadata"]["name"].clone(),
                "uid": uid
            },
            "hostPath": {"path": path, "type": "DirectoryOrCreate"}
        }
    });
    Some((name, pv))
}

fn kubectl(kubectl: &Path, state: &Path, args: &[&str], stdin: Option<&[u8]>) -> Option<Vec<u8>> {
    let mut cmd = Command::new(kubectl);
    cmd.arg(format!("--kubeconfig={}", state.join("kubeconfig/admin").display()))
        .arg("--request-timeout=10s")
        .args(args);
    // SAFETY: prctl is async-signal-safe. A kubectl never outlives the supervisor.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut c = cmd
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    if let Some(input) = stdin {
        c.stdin.take()?.write_all(input).ok()?;
    }
    let out = c.wait_with_output().ok()?;
    out.status.success().then_some(out.stdout)
}

fn list(kc: &Path, state: &Path, what: &str) -> Vec<Value> {
    kubectl(kc, state, &["get", what, "-A", "-o", "json"], None)
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v["items"].as_array().cloned())
        .unwrap_or_default()
}

/// One pass: provision pending claims, delete released volumes.
pub fn pass(kc: &Path, state: &Path) {
    let dir = state.join("volumes");
    for pvc in list(kc, state, "pvc") {
        if let Some((name, pv)) = volume_for(&pvc, &dir) {
            let path = dir.join(&name);
            if std::fs::create_dir_all(&path).is_err() {
                continue;
            }
            let _ = nix::unistd::chown(&path, Some(26.into()), Some(26.into()));
            let _ = kubectl(kc, state, &["create", "-f", "-"], Some(pv.to_string().as_bytes()));
        }
    }
    for pv in list(kc, state, "pv") {
        let ours = pv["metadata"]["annotations"]["pv.kubernetes.io/provisioned-by"].as_str() == Some(PROVISIONER);
        let phase = pv["status"]["phase"].as_str().unwrap_or("");
        if ours && matches!(phase, "Released" | "Failed") {
            let Some(name) = pv["metadata"]["name"].as_str() else { continue };
            if kubectl(kc, state, &["delete", "pv", name, "--wait=false"], None).is_some() {
                let _ = std::fs::remove_dir_all(dir.join(name));
            }
        }
    }
}

pub fn run(state: &Path, kc: &Path, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        if state.join("started").exists() {
            pass(kc, state);
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pvc(phase: &str, class: &str, volume: Option<&str>) -> Value {
        json!({
            "metadata": {"name": "c-1", "namespace": "ns", "uid": "u-1"},
            "spec": {"storageClassName": class, "accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": "1Gi"}}, "volumeName": volume},
            "status": {"phase": phase}
        })
    }

    #[test]
    fn provisions_only_pending_claims_of_our_class() {
        let d = Path::new("/v");
        let (name, pv) = volume_for(&pvc("Pending", STORAGE_CLASS, None), d).unwrap();
        assert_eq!(name, "pvc-u-1");
        assert_eq!(pv["spec"]["claimRef"]["uid"], "u-1");
        assert_eq!(pv["spec"]["capacity"]["storage"], "1Gi");
        assert_eq!(pv["spec"]["hostPath"]["path"], "/v/pvc-u-1");
        assert!(volume_for(&pvc("Bound", STORAGE_CLASS, Some("pvc-u-1")), d).is_none());
        assert!(volume_for(&pvc("Pending", "other", None), d).is_none());
    }
}
