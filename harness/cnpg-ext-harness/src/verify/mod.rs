//! The verification layer, written once for every backend: it compares what a backend
//! observes with the derived plan and with what a rolling update must look like.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cnpg_ext_backend::Backend;

use cnpg_ext_model::backend::{BackendError, InstanceRef, MountObservation, Role};
pub(crate) use cnpg_ext_model::judge::{verify_no_restart, verify_rollout, Check, InstanceState};

mod mountinfo;
pub(crate) mod origin;
use cnpg_ext_model::Cluster;

use crate::images::store::ImageStore;
use crate::plumbing::sql;

fn db(e: tokio_postgres::Error) -> BackendError {
    BackendError::Failed(sql::describe_error(&e))
}

/// On every instance: both search-path GUCs, the postmaster's `LD_LIBRARY_PATH`, and the
/// files inside every image mount equal what the plan and the image say.
pub(crate) async fn verify_plan(
    backend: &dyn Backend,
    cluster: &Cluster,
    images: &ImageStore,
) -> Result<Vec<Check>, BackendError> {
    let mut checks = Vec::new();
    for inst in backend.instances().await? {
        let name = inst.name.as_str();
        let plan = backend.plan_for(cluster, name);
        let client = backend.connect(name, "postgres", "postgres").await?;
        for (guc, want) in [
            ("extension_control_path", &plan.extension_control_path),
            ("dynamic_library_path", &plan.dynamic_library_path),
        ] {
            let rows = sql::query_text(&client, &format!("SHOW {guc}")).await.map_err(db)?;
            let got = rows.first().and_then(|r| r.first().cloned().flatten()).unwrap_or_default();
            checks.push(Check::new(format!("SHOW {guc}"), Some(name), want.clone(), got));
        }
        if !plan.shared_preload_libraries.is_empty() {
            let rows = sql::query_text(&client, "SHOW shared_preload_libraries").await.map_err(db)?;
            let got = rows.first().and_then(|r| r.first().cloned().flatten()).unwrap_or_default();
            let listed: Vec<&str> = got.split(',').map(str::trim).collect();
            let ok = plan.shared_preload_libraries.iter().all(|l| listed.contains(&l.as_str()));
            checks.push(Check::that(
                "SHOW shared_preload_libraries",
                Some(name),
                plan.shared_preload_libraries.join(","),
                got,
                ok,
            ));
            checks.extend(origin::check_preloaded(backend, &plan, images, name).await?);
        }
        // Exactly the planned image volumes are mounted: one removed from the Cluster is gone.
        let root = plan.mount_root.trim_end_matches('/');
        let q = format!(
            "SELECT coalesce(string_agg(d, ',' ORDER BY d), '') FROM pg_ls_dir({}, true, false) d",
            sql::quote_literal(root)
        );
        let rows = sql::query_text(&client, &q).await.map_err(db)?;
        let got = rows.first().and_then(|r| r.first().cloned().flatten()).unwrap_or_default();
        let mut want: Vec<&str> = plan.extensions.iter().map(|e| e.name.as_str()).collect();
        want.sort();
        checks.push(Check::new(format!("mounts under {root}"), Some(name), want.join(","), got));
        let obs = backend.inspect(name, &plan).await?;
        // Read-only, and where image volumes are mounts (every backend but local, whose
        // trees are plain directories) presence and the exact set, are judged from the
        // mounts as the instance sees them.
        let mounts = sql::query_text(&client, "SELECT pg_read_file('/proc/self/mountinfo')").await.map_err(db)?;
        let mounts = mounts.first().and_then(|r| r.first().cloned().flatten()).unwrap_or_default();
        let mounted = backend.name() != "local";
        if mounted {
            let mut want: Vec<&str> = plan.extensions.iter().map(|e| e.mount_path.trim_end_matches('/')).collect();
            want.sort();
            let got = mountinfo::points_under(&mounts, root);
            checks.push(Check::new(format!("mount points under {root}"), Some(name), want.join(","), got.join(",")));
        }
        let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "(unset)".into());
        checks.push(Check::new(
            "postmaster LD_LIBRARY_PATH",
            Some(name),
            show(&plan.ld_library_path),
            show(&obs.ld_library_path),
        ));
        // 1.29+ `bin_path`: appended after the PATH the instance manager inherited.
        if let Some(bins) = &plan.bin_path {
            let path = obs.environment.get("PATH").cloned().unwrap_or_else(|| "(unset)".into());
            let ok = bins_appended(&path, bins);
            checks.push(Check::that(
                "postmaster PATH (bin_path appended)",
                Some(name),
                format!("<inherited>:{bins}"),
                path,
                ok,
            ));
        }
        // 1.29+ `env`, `${image_root}` expanded.
        for (var, value) in &plan.env {
            let got = obs.environment.get(var).cloned().unwrap_or_else(|| "(unset)".into());
            checks.push(Check::new(format!("postmaster environment {var}"), Some(name), value.clone(), got));
        }
        for ext in &plan.extensions {
            let Some(m) = obs.mounts.iter().find(|m| m.name == ext.name) else {
                checks.push(Check::new(format!("mount {}", ext.mount_path), Some(name), "present", "not reported"));
                continue;
            };
            checks.push(presence(&mounts, m, mounted, name));
            let want = images.get(&ext.image).map(|i| i.files.clone()).unwrap_or_default();
            let summary = |files: &[String]| format!("{} files: {}", files.len(), preview(files));
            let ok = same_files(&m.files, &want);
            checks.push(Check::that(format!("files in {}", m.path), Some(name), summary(&want), summary(&m.files), ok));
            if let Some(ro) = read_only(&mounts, m, name) {
                checks.push(ro);
            }
        }
    }
    Ok(checks)
}

/// Whether an image volume is read-only: from its entry in the instance's `mountinfo` (the
/// mount's or its filesystem's `ro`); where the path is no mount point (the local backend's
/// trees), from the backend's observation. A mount whose state nobody could tell is a
/// failure, never dropped; a missing one is judged by "mount … present".
fn read_only(mountinfo: &str, m: &MountObservation, instance: &str) -> Option<Check> {
    let what = format!("{} read-only", m.path);
    let (actual, ok) = match (mountinfo::mount_at(mountinfo, &m.path), m.read_only) {
        (Some(mount), _) if mount.read_only() => (format!("read-only ({})", mount.describe()), true),
        (Some(mount), _) => (format!("writable ({})", mount.describe()), false),
        (None, Some(true)) => ("read-only, as the backend observed it (not a mount point)".into(), true),
        (None, Some(false)) => ("writable, as the backend observed it (not a mount point)".into(), false),
        (None, None) if m.present => ("not checked: not a mount point, and the backend could not tell".into(), false),
        (None, None) => return None,
    };
    Some(Check::that(what, Some(instance), "read-only", actual, ok))
}

/// "mount … present": the backend saw the directory, and where image volumes are mounts
/// (`mounted`), the instance's `mountinfo` has a mount at that path.
fn presence(mountinfo: &str, m: &MountObservation, mounted: bool, instance: &str) -> Check {
    let actual = match (m.present, mounted && mountinfo::mount_at(mountinfo, &m.path).is_none()) {
        (false, _) => "missing",
        (true, true) => "a directory, not a mount point",
        (true, false) => "present",
    };
    Check::new(format!("mount {}", m.path), Some(instance), "present", actual)
}

/// Whether `PATH` is `bins` appended to what the instance manager inherited (or `bins` alone).
fn bins_appended(path: &str, bins: &str) -> bool {
    path == bins || path.ends_with(&format!(":{bins}"))
}

/// Whether a mount holds exactly the image's files. An empty mount (seen with some runtimes)
/// fails even if the image were empty.
fn same_files(mounted: &[String], image: &[String]) -> bool {
    !mounted.is_empty() && mounted == image
}

fn preview(files: &[String]) -> String {
    let mut s: Vec<&str> = files.iter().take(4).map(String::as_str).collect();
    if files.len() > 4 {
        s.push("…");
    }
    s.join(", ")
}

/// Fixed-width UTC text, so that later times compare greater as strings.
const START_TIME_SQL: &str =
    "SELECT to_char(pg_postmaster_start_time() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')";

/// `pg_postmaster_start_time()` of every instance.
pub(crate) async fn start_times(backend: &dyn Backend) -> Result<BTreeMap<String, InstanceState>, BackendError> {
    let mut out = BTreeMap::new();
    for InstanceRef { name, role } in backend.instances().await? {
        let client = backend.connect(&name, "postgres", "postgres").await?;
        let rows = sql::query_text(&client, START_TIME_SQL).await.map_err(db)?;
        let started = rows.first().and_then(|r| r.first().cloned().flatten()).unwrap_or_default();
        out.insert(name, InstanceState { role, started });
    }
    Ok(out)
}

/// The extensions the operand an instance runs from ships (its `SHAREDIR/extension/*.control`),
/// as the first instance that answers sees them: what ran, even from a `--pg-image`.
pub(crate) async fn operand_extensions(backend: &dyn Backend) -> Option<Vec<String>> {
    const SQL: &str = "SELECT coalesce(string_agg(left(f, -length('.control')), ',' ORDER BY f), '') \
         FROM pg_ls_dir((SELECT setting FROM pg_config WHERE name = 'SHAREDIR') || '/extension') f \
         WHERE f LIKE '%.control'";
    for inst in backend.instances().await.ok()? {
        let Ok(client) = backend.connect(&inst.name, "postgres", "postgres").await else { continue };
        let Ok(rows) = sql::query_text(&client, SQL).await else { continue };
        let listed = rows.first().and_then(|r| r.first().cloned().flatten()).unwrap_or_default();
        return Some(listed.split(',').filter(|e| !e.is_empty()).map(str::to_string).collect());
    }
    None
}

/// A row that must survive every rollout.
pub(crate) async fn write_sentinel(backend: &dyn Backend, token: &str) -> Result<(), BackendError> {
    let primary = primary(backend).await?;
    let client = backend.connect(&primary, "app", "postgres").await?;
    client
        .batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS cnpg_ext_harness_sentinel (token text PRIMARY KEY, at timestamptz DEFAULT now());
             INSERT INTO cnpg_ext_harness_sentinel(token) VALUES ({}) ON CONFLICT DO NOTHING",
            sql::quote_literal(token)
        ))
        .await
        .map_err(db)
}

pub(crate) async fn primary(backend: &dyn Backend) -> Result<String, BackendError> {
    backend
        .instances()
        .await?
        .into_iter()
        .find(|i| i.role == Role::Primary)
        .map(|i| i.name)
        .ok_or_else(|| BackendError::Failed("no primary instance".into()))
}

/// The sentinel row on every instance (replicas get a few seconds to replay).
pub(crate) async fn check_sentinel(backend: &dyn Backend, token: &str) -> Result<Vec<Check>, BackendError> {
    let mut checks = Vec::new();
    let q = format!("SELECT count(*) FROM cnpg_ext_harness_sentinel WHERE token = {}", sql::quote_literal(token));
    for inst in backend.instances().await? {
        let deadline = Instant::now() + Duration::from_secs(10);
        let got = loop {
            let got = match backend.connect(&inst.name, "app", "postgres").await {
                Ok(c) => match sql::query_text(&c, &q).await {
                    Ok(rows) => rows.first().and_then(|r| r.first().cloned().flatten()).unwrap_or_default(),
                    Err(e) => sql::describe_error(&e),
                },
                Err(e) => e.to_string(),
            };
            if got == "1" || Instant::now() >= deadline {
                break got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        checks.push(Check::new("row written before the update", Some(&inst.name), "1", got));
    }
    Ok(checks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(present: bool, read_only: Option<bool>) -> MountObservation {
        MountObservation { name: "a".into(), path: "/extensions/a".into(), present, files: vec![], read_only }
    }

    const RO: &str = "98 92 0:53 / /extensions/a rw,relatime - overlay o ro,lowerdir=/l";
    const RW: &str = "98 92 0:53 / /extensions/a rw,relatime - overlay o rw,lowerdir=/l,upperdir=/u";

    #[test]
    fn the_mount_decides_over_any_write_probe() {
        for probe in [Some(true), Some(false), None] {
            let c = read_only(RO, &mount(true, probe), "i").unwrap();
            assert!(c.ok && c.actual.starts_with("read-only (mount options rw,relatime; overlay"), "{c:?}");
            assert_eq!(
                (c.what.as_str(), c.instance.as_deref(), c.expected.as_str()),
                ("/extensions/a read-only", Some("i"), "read-only")
            );
            let c = read_only(RW, &mount(true, probe), "i").unwrap();
            assert!(!c.ok && c.actual.starts_with("writable (mount options"), "{c:?}");
        }
    }

    #[test]
    fn where_volumes_are_mounts_a_bare_directory_is_not_present() {
        let c = presence(RO, &mount(true, None), true, "i");
        assert!(c.ok && c.actual == "present", "{c:?}");
        assert_eq!(
            (c.what.as_str(), c.instance.as_deref(), c.expected.as_str()),
            ("mount /extensions/a", Some("i"), "present")
        );
        let other = "1 0 8:1 / / rw - ext4 /dev/vda rw";
        let c = presence(other, &mount(true, None), true, "i");
        assert!(!c.ok && c.actual == "a directory, not a mount point", "{c:?}");
        assert!(presence(other, &mount(true, None), false, "i").ok);
        for mounted in [true, false] {
            let c = presence(RO, &mount(false, None), mounted, "i");
            assert!(!c.ok && c.actual == "missing", "{c:?}");
        }
    }

    #[test]
    fn bin_path_is_appended_to_the_inherited_path() {
        assert!(bins_appended("/usr/bin:/bin:/extensions/a/bin", "/extensions/a/bin"));
        assert!(bins_appended("/extensions/a/bin", "/extensions/a/bin"));
        assert!(!bins_appended("/usr/bin:/extensions/a/share", "/extensions/a/bin"));
        assert!(!bins_appended("/extensions/a/bin:/usr/bin", "/extensions/a/bin"));
        assert!(!bins_appended("/usr/bin:/x/extensions/a/bin", "/extensions/a/bin"));
    }

    #[test]
    fn a_mount_holds_exactly_the_image_files_and_never_none() {
        let v = |f: &[&str]| f.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(same_files(&v(&["a", "b"]), &v(&["a", "b"])));
        assert!(!same_files(&v(&["a"]), &v(&["a", "b"])));
        assert!(!same_files(&v(&["a", "c"]), &v(&["a", "b"])));
        assert!(!same_files(&[], &[]));
    }

    #[test]
    fn the_preview_names_four_files_then_an_ellipsis() {
        let v = |n: usize| (0..n).map(|i| format!("f{i}")).collect::<Vec<_>>();
        assert_eq!(preview(&v(0)), "");
        assert_eq!(preview(&v(4)), "f0, f1, f2, f3");
        assert_eq!(preview(&v(5)), "f0, f1, f2, f3, …");
    }

    #[test]
    fn without_a_mount_point_the_backend_observation_decides() {
        let other = "1 0 8:1 / / rw - ext4 /dev/vda rw";
        assert!(read_only(other, &mount(true, Some(true)), "i").unwrap().ok);
        assert!(!read_only(other, &mount(true, Some(false)), "i").unwrap().ok);
        let unknown = read_only(other, &mount(true, None), "i").unwrap();
        assert!(!unknown.ok && unknown.actual.starts_with("not checked"), "{unknown:?}");
        assert_eq!(read_only(other, &mount(false, None), "i"), None);
    }
}
