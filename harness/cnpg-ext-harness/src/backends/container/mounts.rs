//! Listing what is inside each image mount of a running container, as the postgres uid.

use std::collections::BTreeMap;
use std::path::PathBuf;

use cnpg_ext_model::ClusterPlan;

use super::api;
use super::argv::PG_UID;
use super::engine::strings;
use super::runtime::{ContainerRuntime, Instance};
use crate::plumbing::sql::quote_literal;

impl ContainerRuntime {
    /// Regular files below each mount, listed inside the container as the postgres uid;
    /// unreadable ones are reported as such (so that the comparison with the image fails).
    pub(super) async fn list_mounts(
        &self,
        inst: &Instance,
        plan: &ClusterPlan,
        client: &tokio_postgres::Client,
    ) -> BTreeMap<String, Option<Vec<String>>> {
        if plan.extensions.is_empty() {
            return BTreeMap::new();
        }
        if let Some(out) = self.list_mounts_from_host(inst, plan, client).await {
            return out;
        }
        self.list_mounts_exec(inst, plan).await
    }

    /// As root with a local engine: the container's own view of its mounts through
    /// `/proc/<postmaster pid>/root` (its mount namespace), and readability checked by the
    /// postgres process itself opening every file. `None` when that view is not reachable.
    pub(super) async fn list_mounts_from_host(
        &self,
        inst: &Instance,
        plan: &ClusterPlan,
        client: &tokio_postgres::Client,
    ) -> Option<BTreeMap<String, Option<Vec<String>>>> {
        if !nix::unistd::Uid::effective().is_root() || crate::plumbing::supervisor::mounts_by_exec() {
            return None;
        }
        let id = inst.container.clone()?;
        let (_, pid) = api::state(&id).await.ok()?;
        // A container that is not running has no pid (0): `/proc/0/root` does not exist.
        let pid: u32 = u32::try_from(pid).ok()?;
        let root = PathBuf::from(format!("/proc/{pid}/root"));
        std::fs::read_dir(&root).ok()?;
        let mut out = BTreeMap::new();
        let mut all: Vec<String> = Vec::new();
        for ext in &plan.extensions {
            let dir = root.join(ext.mount_path.trim_start_matches('/'));
            let listed = dir.is_dir().then(|| crate::plumbing::fsutil::list_files(&dir));
            if let Some(files) = &listed {
                all.extend(files.iter().map(|f| format!("{}/{f}", ext.mount_path)));
            }
            out.insert(ext.mount_path.clone(), listed);
        }
        if all.is_empty() {
            return Some(out);
        }
        let array = all.iter().map(|f| quote_literal(f)).collect::<Vec<_>>().join(",");
        let sql = format!(
            "DO $$DECLARE f text; bad text[] := '{{}}'; BEGIN \
             FOREACH f IN ARRAY ARRAY[{array}]::text[] LOOP \
             BEGIN PERFORM pg_read_binary_file(f, 0, 1); EXCEPTION WHEN OTHERS THEN bad := bad || f; END; \
             END LOOP; \
             IF cardinality(bad) > 0 THEN RAISE EXCEPTION 'cnpg-ext-unreadable:%', array_to_string(bad, E'\\n'); END IF; END$$"
        );
        if let Err(e) = client.batch_execute(&sql).await {
            let msg = crate::plumbing::sql::describe_error(&e);
            let Some(bad) = unreadable_in(&msg) else {
                tracing::debug!("readability check in {}: {msg}", inst.name);
                return None;
            };
            mark_unreadable(&mut out, &bad);
        }
        Some(out)
    }

    /// `find` run inside the container as the postgres uid.
    pub(super) async fn list_mounts_exec(
        &self,
        inst: &Instance,
        plan: &ClusterPlan,
    ) -> BTreeMap<String, Option<Vec<String>>> {
        let id = inst.container.clone().unwrap_or_default();
        let mut args = strings(&["exec", "--user", &format!("{PG_UID}:{PG_UID}"), &id, "find"]);
        args.extend(plan.extensions.iter().map(|e| e.mount_path.clone()));
        args.extend(strings(&[
            "-type",
            "f",
            "(",
            "-readable",
            "-printf",
            "r\\t%H\\t%P\\n",
            "-o",
            "-printf",
            "u\\t%H\\t%P\\n",
            ")",
        ]));
        let text = match self.engine().run(&args).await {
            Ok(t) => t,
            // find exits 1 when a starting point is missing; what it printed is still right.
            Err(e) => {
                tracing::debug!("find in {}: {e}", inst.name);
                e
            }
        };
        let mut out = parse_find(&text);
        for ext in &plan.extensions {
            if !out.contains_key(&ext.mount_path) {
                // Nothing listed: an empty mount, or none at all (checked below).
                let present = self
                    .engine()
                    .run(&strings(&[
                        "exec",
                        "--user",
                        &format!("{PG_UID}:{PG_UID}"),
                        &id,
                        "find",
                        &ext.mount_path,
                        "-maxdepth",
                        "0",
                        "-type",
                        "d",
                    ]))
                    .await
                    .is_ok_and(|s| !s.trim().is_empty());
                out.insert(ext.mount_path.clone(), present.then(Vec::new));
            }
        }
        out
    }
}

/// The files the readability check's error names (after `cnpg-ext-unreadable:`, one full path
/// a line); `None` when the check failed for another reason.
fn unreadable_in(msg: &str) -> Option<Vec<&str>> {
    let list = msg.split("cnpg-ext-unreadable:").nth(1)?;
    Some(list.lines().map(str::trim).collect())
}

/// Marks every listed file (relative to its mount path, the key) that `bad` names by its full
/// path as not readable by the postgres uid.
fn mark_unreadable(out: &mut BTreeMap<String, Option<Vec<String>>>, bad: &[&str]) {
    for (mount, files) in out.iter_mut() {
        for f in files.iter_mut().flatten() {
            if bad.contains(&format!("{mount}/{f}").as_str()) {
                *f = format!("{f} (not readable by uid {PG_UID})");
            }
        }
    }
}

/// `find`'s lines (`r|u <tab> starting point <tab> path below it`) as the sorted files of
/// each starting point; `u` (not readable by the postgres uid) marked as such.
fn parse_find(text: &str) -> BTreeMap<String, Option<Vec<String>>> {
    let mut out: BTreeMap<String, Option<Vec<String>>> = BTreeMap::new();
    for line in text.lines() {
        let mut parts = line.splitn(3, '\t');
        let (Some(flag), Some(start), Some(rel)) = (parts.next(), parts.next(), parts.next()) else { continue };
        let entry = out.entry(start.to_string()).or_insert_with(|| Some(Vec::new()));
        if let Some(files) = entry {
            files.push(if flag == "r" { rel.to_string() } else { format!("{rel} (not readable by uid {PG_UID})") });
        }
    }
    for files in out.values_mut().flatten() {
        files.sort();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_lines_become_sorted_files_per_mount() {
        let text = "r\t/extensions/a\tlib/z.so\nu\t/extensions/a\tlib/secret\nr\t/extensions/a\tshare/x.control\n\
                    r\t/extensions/b\tlib/b.so\nfind: '/extensions/c': No such file or directory\nr\t/extensions/b\n";
        let out = parse_find(text);
        let want: BTreeMap<String, Option<Vec<String>>> = [
            (
                "/extensions/a".to_string(),
                Some(vec![
                    "lib/secret (not readable by uid 26)".to_string(),
                    "lib/z.so".to_string(),
                    "share/x.control".to_string(),
                ]),
            ),
            ("/extensions/b".to_string(), Some(vec!["lib/b.so".to_string()])),
        ]
        .into();
        assert_eq!(out, want);
        assert!(parse_find("").is_empty());
    }

    #[test]
    fn the_files_the_readability_check_names_are_marked() {
        let msg = "ERROR: cnpg-ext-unreadable:/extensions/a/lib/secret\n /extensions/b/x \n";
        let bad = unreadable_in(msg).unwrap();
        assert_eq!(bad, ["/extensions/a/lib/secret", "/extensions/b/x"]);
        assert_eq!(unreadable_in("ERROR: permission denied for function pg_read_binary_file"), None);
        let mut out: BTreeMap<String, Option<Vec<String>>> = [
            ("/extensions/a".to_string(), Some(vec!["lib/secret".to_string(), "lib/open.so".to_string()])),
            ("/extensions/b".to_string(), Some(vec!["x".to_string(), "lib/secret".to_string()])),
            ("/extensions/c".to_string(), None),
        ]
        .into();
        mark_unreadable(&mut out, &bad);
        assert_eq!(
            out["/extensions/a"],
            Some(vec!["lib/secret (not readable by uid 26)".into(), "lib/open.so".into()])
        );
        assert_eq!(out["/extensions/b"], Some(vec!["x (not readable by uid 26)".into(), "lib/secret".into()]));
        assert_eq!(out["/extensions/c"], None);
    }
}
