//! Proof of origin: an extension a scenario creates must be the one in the image under test.
//!
//! A conformance PASS must not be possible with the image ignored. CloudNativePG puts the
//! operand's own directories first (`$system` in `extension_control_path`, `$libdir` in
//! `dynamic_library_path`), so an image that carries an extension the operand already has is
//! never used ("shadowed"), and a module missing from an image may silently come from the
//! operand. Two things are checked on the instance itself, through SQL as a superuser, the
//! same way on every backend (local postmasters, containers, kind pods):
//!
//! 1. **control file**: following the instance's live `extension_control_path` in order
//!    (`$system` = the operand's `SHAREDIR`), the first `<dir>/extension/<name>.control`
//!    that exists is the one PostgreSQL used; it must be the one in the image the scenario
//!    mounts (the first mount, in Cluster order, whose image ships it);
//! 2. **module**: for every shared library the extension's C functions name (`probin`), one
//!    of those functions is resolved in a fresh backend the way a call resolves it (its C
//!    validator, `fmgr_c_validator`, goes through the same loader along
//!    `dynamic_library_path` without running the function); the backend's own
//!    `/proc/self/maps` then says which file is mapped, and it must be the file in the image.
//!
//! Which image is expected is derived from the Cluster's plan and the images' file lists —
//! nothing in scenario files says it.

use std::path::Path;

use cnpg_ext_backend::Backend;
use cnpg_ext_images::control::module_basename;
use cnpg_ext_model::backend::BackendError;
use cnpg_ext_model::plan::ClusterPlan;
use tokio_postgres::Client;

use super::Check;
use crate::images::store::ImageStore;
use crate::plumbing::sql::{self, quote_literal};

/// An extension as installed in a database.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Installed {
    pub name: String,
    pub version: String,
}

/// Extensions of the database `client` is connected to.
pub(crate) async fn installed(client: &Client) -> Result<Vec<Installed>, BackendError> {
    let rows = sql::query_text(client, "SELECT extname, extversion FROM pg_extension ORDER BY 1").await.map_err(db)?;
    Ok(rows.into_iter().map(|r| Installed { name: cell(&r, 0), version: cell(&r, 1) }).collect())
}

/// What a step changed: extensions that are new, or at a new version.
pub(crate) fn changed(before: &[Installed], after: &[Installed]) -> Vec<Installed> {
    after.iter().filter(|a| !before.contains(a)).cloned().collect()
}

fn cell(row: &[Option<String>], i: usize) -> String {
    row.get(i).cloned().flatten().unwrap_or_default()
}

fn db(e: tokio_postgres::Error) -> BackendError {
    BackendError::Failed(sql::describe_error(&e))
}

/// Where the scenario says an extension comes from: one image mount and the file in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Expected {
    /// `extensions[].name` of the Cluster.
    pub mount: String,
    pub image: String,
    /// Absolute path of the file as the instance sees it.
    pub path: String,
}

/// Relative path of `dir` (absolute, below `mount_path`) inside the image.
fn rel_in_image<'a>(dir: &'a str, mount_path: &str) -> Option<&'a str> {
    let rest = dir.strip_prefix(mount_path)?;
    if !rest.is_empty() && !rest.starts_with('/') {
        return None;
    }
    Some(rest.trim_start_matches('/'))
}

fn join_rel(rel: &str, file: &str) -> String {
    if rel.is_empty() {
        file.to_string()
    } else {
        format!("{rel}/{file}")
    }
}

/// The first mount, in Cluster order, whose image ships `<control dir>/extension/<name>.control`.
pub(crate) fn expected_control(
    plan: &ClusterPlan,
    files: &dyn Fn(&str) -> Option<Vec<String>>,
    name: &str,
) -> Option<Expected> {
    first_in_image(plan, files, |m| &m.control_dirs, &format!("extension/{name}.control"))
}

/// The first mount, in Cluster order, whose image ships `<library dir>/<module>.so`.
pub(crate) fn expected_module(
    plan: &ClusterPlan,
    files: &dyn Fn(&str) -> Option<Vec<String>>,
    module: &str,
) -> Option<Expected> {
    first_in_image(plan, files, |m| &m.library_dirs, &format!("{module}.so"))
}

fn first_in_image(
    plan: &ClusterPlan,
    files: &dyn Fn(&str) -> Option<Vec<String>>,
    dirs: impl Fn(&cnpg_ext_model::ExtensionMount) -> &Vec<String>,
    file: &str,
) -> Option<Expected> {
    for m in &plan.extensions {
        let Some(listed) = files(&m.image) else { continue };
        for dir in dirs(m) {
            let Some(rel) = rel_in_image(dir, &m.mount_path) else { continue };
            if listed.iter().any(|f| *f == join_rel(rel, file)) {
                return Some(Expected { mount: m.name.clone(), image: m.image.clone(), path: format!("{dir}/{file}") });
            }
        }
    }
    None
}

/// Paths of `/proc/<pid>/maps` whose file name is `<module>.so`, in order, without repeats.
pub(crate) fn mapped(maps: &str, module: &str) -> Vec<String> {
    let want = format!("{module}.so");
    let mut out: Vec<String> = Vec::new();
    for line in maps.lines() {
        // address perms offset dev inode [path]; the path may contain spaces.
        let mut rest = line;
        for _ in 0..5 {
            rest = rest.trim_start();
            rest = rest.split_once(char::is_whitespace).map(|(_, r)| r).unwrap_or("");
        }
        let path = rest.trim();
        let path = path.strip_suffix(" (deleted)").unwrap_or(path);
        if path.starts_with('/')
            && Path::new(path).file_name().is_some_and(|n| n == want.as_str())
            && !out.iter().any(|p| p == path)
        {
            out.push(path.to_string());
        }
    }
    out
}

/// Origin checks of `extensions` on `instance`, in `database`.
pub(crate) async fn check_origins(
    backend: &dyn Backend,
    plan: &ClusterPlan,
    images: &ImageStore,
    instance: &str,
    database: &str,
    extensions: &[String],
) -> Result<Vec<Check>, BackendError> {
    let files = |reference: &str| images.get(reference).map(|i| i.files.clone());
    let mut checks = Vec::new();
    if extensions.is_empty() {
        return Ok(checks);
    }
    let client = backend.connect(instance, database, "postgres").await?;
    let sharedir = one(&client, "SELECT setting FROM pg_config WHERE name = 'SHAREDIR'").await?;
    let search = one(&client, "SHOW extension_control_path").await?;
    for name in extensions {
        let modules = modules_of(&client, name).await?;
        let by_control = expected_control(plan, &files, name);
        let by_module = modules.iter().find_map(|(m, _)| expected_module(plan, &files, module_basename(m)));
        // Not shipped by any image of the Cluster: the operand's own extension, nothing to prove.
        if by_control.is_none() && by_module.is_none() {
            checks.push(Check::new(
                format!("origin of {name}"),
                Some(instance),
                "not from an image (no mounted image ships it)",
                "not from an image (no mounted image ships it)",
            ));
            continue;
        }
        let resolved = resolve_control(&client, &search, &sharedir, name).await?;
        let operand_copy = format!("{}/extension/{name}.control", sharedir.trim_end_matches('/'));
        let (expected, actual, ok) = match (&by_control, &resolved) {
            (Some(want), Some(got)) if *got == want.path => (want.path.clone(), got.clone(), true),
            (Some(want), Some(got)) if *got == operand_copy => (
                want.path.clone(),
                format!("{got} — shadowed: the operand ships its own {name}.control and $system is searched first, so the image's copy ({}) is never used", want.path),
                false,
            ),
            (Some(want), Some(got)) => (want.path.clone(), format!("{got} (another location earlier on extension_control_path)"), false),
            (Some(want), None) => (want.path.clone(), "no control file found along extension_control_path".into(), false),
            (None, got) => (
                format!("{name}.control in the image that ships its module ({})", by_module.as_ref().map(|m| m.image.as_str()).unwrap_or("")),
                match got {
                    Some(g) if *g == operand_copy => format!("{g} — shadowed: only the operand ships {name}.control"),
                    Some(g) => g.clone(),
                    None => "no control file found".into(),
                },
                false,
            ),
        };
        checks.push(Check::that(format!("origin of {name}: control file"), Some(instance), expected, actual, ok));
        for (probin, function) in &modules {
            let module = module_basename(probin);
            let want = expected_module(plan, &files, module);
            let got = loaded_paths(backend, instance, database, function, module).await?;
            let got = match got {
                Ok(paths) => paths,
                Err(msg) => {
                    let expected = want
                        .as_ref()
                        .map(|w| w.path.clone())
                        .unwrap_or_else(|| format!("{module}.so from an image of the Cluster"));
                    checks.push(Check::that(
                        format!("origin of {name}: module {module}.so (/proc/self/maps)"),
                        Some(instance),
                        expected,
                        format!("loading {probin} failed: {msg}"),
                        false,
                    ));
                    continue;
                }
            };
            checks.push(
                judge_module(
                    &client,
                    plan,
                    instance,
                    &format!("origin of {name}: module {module}.so (/proc/self/maps)"),
                    module,
                    want.as_ref(),
                    &got,
                )
                .await?,
            );
        }
    }
    Ok(checks)
}

/// Judges which `<module>.so` files a backend has mapped (`got`) against the file the
/// scenario's images provide (`want`).
async fn judge_module(
    client: &Client,
    plan: &ClusterPlan,
    instance: &str,
    what: &str,
    module: &str,
    want: Option<&Expected>,
    got: &[String],
) -> Result<Check, BackendError> {
    let want = want.cloned();
    let expected =
        want.as_ref().map(|w| w.path.clone()).unwrap_or_else(|| format!("{module}.so from an image of the Cluster"));
    // Overlay-backed image mounts (podman, containerd) map the file of the image's
    // layer: the kernel then names it by its path inside the image. That path is
    // the expected file only if nothing else answers to it in the instance's own
    // filesystem (else the operand's file could hide behind the same name).
    let in_image = match &want {
        Some(w) if got.len() == 1 && got[0] != w.path => {
            let inner = w.path.strip_prefix(&mount_of(plan, &w.mount)).unwrap_or("").to_string();
            let exists_outside =
                one(client, &format!("SELECT (pg_stat_file({}, true)).size IS NOT NULL", quote_literal(&inner)))
                    .await?;
            (!inner.is_empty() && got[0] == inner && exists_outside != "t").then_some(inner)
        }
        _ => None,
    };
    let (actual, ok) = match (&want, got) {
        (_, []) => (format!("{module}.so is not mapped"), false),
        (Some(w), [one]) if *one == w.path => (one.clone(), true),
        (Some(w), [one]) if in_image.is_some() => (
            format!("{one} (the file inside the image mounted at {}: the mount is overlay-backed, and no {one} exists outside it)", mount_of(plan, &w.mount)),
            true,
        ),
        (None, paths) => (format!("{} — the image does not ship {module}.so: PostgreSQL loaded the operand's", paths.join(", ")), false),
        (Some(_), paths) => {
            let root = format!("{}/", plan.mount_root.trim_end_matches('/'));
            let shadow = paths.iter().any(|p| !p.starts_with(&root));
            let note = if shadow { " — shadowed by the operand's $libdir, searched first" } else { "" };
            (format!("{}{note}", paths.join(", ")), false)
        }
    };
    Ok(Check::that(what, Some(instance), expected, actual, ok))
}

/// `shared_preload_libraries` entries that an image of the Cluster provides must be mapped in
/// every backend (they are loaded by the postmaster) from that image.
pub(crate) async fn check_preloaded(
    backend: &dyn Backend,
    plan: &ClusterPlan,
    images: &ImageStore,
    instance: &str,
) -> Result<Vec<Check>, BackendError> {
    let files = |reference: &str| images.get(reference).map(|i| i.files.clone());
    let mut checks = Vec::new();
    if plan.shared_preload_libraries.is_empty() {
        return Ok(checks);
    }
    let client = backend.connect(instance, "postgres", "postgres").await?;
    let maps = one(&client, "SELECT pg_read_file('/proc/self/maps')").await?;
    for lib in &plan.shared_preload_libraries {
        let module = module_basename(lib);
        let Some(want) = expected_module(plan, &files, module) else { continue };
        let got = mapped(&maps, module);
        let what = format!("origin of preloaded {module}.so (/proc/self/maps)");
        checks.push(judge_module(&client, plan, instance, &what, module, Some(&want), &got).await?);
    }
    Ok(checks)
}

/// Mount path of the Cluster's extension `name`.
fn mount_of(plan: &ClusterPlan, name: &str) -> String {
    plan.extensions.iter().find(|m| m.name == name).map(|m| m.mount_path.clone()).unwrap_or_default()
}

async fn one(client: &Client, q: &str) -> Result<String, BackendError> {
    let rows = sql::query_text(client, q).await.map_err(db)?;
    Ok(rows.first().map(|r| cell(r, 0)).unwrap_or_default())
}

/// The control file PostgreSQL finds for `name`: the first along `search` that exists.
async fn resolve_control(
    client: &Client,
    search: &str,
    sharedir: &str,
    name: &str,
) -> Result<Option<String>, BackendError> {
    for entry in search.split(':').filter(|e| !e.is_empty()) {
        let dir = if entry == "$system" {
            sharedir.trim_end_matches('/').to_string()
        } else {
            entry.trim_end_matches('/').to_string()
        };
        let path = format!("{dir}/extension/{name}.control");
        let q = format!("SELECT (pg_stat_file({}, true)).size IS NOT NULL", quote_literal(&path));
        if one(client, &q).await? == "t" {
            return Ok(Some(path));
        }
    }
    Ok(None)
}

/// Each `probin` of the extension's C functions, with one function that uses it.
async fn modules_of(client: &Client, name: &str) -> Result<Vec<(String, String)>, BackendError> {
    let q = format!(
        "SELECT p.probin, min(p.oid::int8)::text FROM pg_proc p \
         JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid \
              AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e' \
         JOIN pg_extension e ON e.oid = d.refobjid \
         WHERE e.extname = {} AND p.probin IS NOT NULL GROUP BY 1 ORDER BY 1",
        quote_literal(name)
    );
    let rows = sql::query_text(client, &q).await.map_err(db)?;
    Ok(rows.iter().map(|r| (cell(r, 0), cell(r, 1))).filter(|(p, _)| !p.is_empty()).collect())
}

/// In a fresh backend: resolve function `oid`'s library exactly as a call would (the C
/// language validator looks the symbol up through the same loader, `load_external_function`,
/// without running the function), then read which `<module>.so` files the backend mapped.
/// `Err` is the server's answer when the library cannot be loaded.
async fn loaded_paths(
    backend: &dyn Backend,
    instance: &str,
    database: &str,
    function: &str,
    module: &str,
) -> Result<Result<Vec<String>, String>, BackendError> {
    let client = backend.connect(instance, database, "postgres").await?;
    if let Err(e) = client.batch_execute(&format!("SELECT fmgr_c_validator({function}::oid)")).await {
        return Ok(Err(sql::describe_error(&e)));
    }
    let maps = one(&client, "SELECT pg_read_file('/proc/self/maps')").await?;
    Ok(Ok(mapped(&maps, module)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cnpg_ext_model::cluster::Manifest;
    use cnpg_ext_model::plan::PlanOptions;

    fn plan(yaml_exts: &str) -> ClusterPlan {
        let text = format!(
            "apiVersion: postgresql.cnpg.io/v1\nkind: Cluster\nmetadata: {{name: c}}\nspec:\n  instances: 1\n  postgresql:\n    extensions:\n{yaml_exts}"
        );
        let cluster = match Manifest::parse(Path::new("t.yaml"), &text).unwrap().remove(0) {
            Manifest::Cluster(d) => d.cluster,
            _ => unreachable!(),
        };
        ClusterPlan::derive(&cluster, &PlanOptions::default())
    }

    #[test]
    fn expected_file_is_the_first_image_in_cluster_order() {
        let p = plan(
            "      - name: a\n        image: {reference: r/a:1}\n      - name: b\n        image: {reference: r/b:1}\n        extension_control_path: [x/share]\n        dynamic_library_path: [x/lib]\n",
        );
        let files = |r: &str| -> Option<Vec<String>> {
            match r {
                "r/a:1" => Some(vec!["share/extension/one.control".into()]),
                "r/b:1" => Some(vec![
                    "x/share/extension/one.control".into(),
                    "x/share/extension/two.control".into(),
                    "x/lib/two.so".into(),
                ]),
                _ => None,
            }
        };
        assert_eq!(expected_control(&p, &files, "one").unwrap().path, "/extensions/a/share/extension/one.control");
        let two = expected_control(&p, &files, "two").unwrap();
        assert_eq!((two.mount.as_str(), two.path.as_str()), ("b", "/extensions/b/x/share/extension/two.control"));
        assert_eq!(expected_module(&p, &files, "two").unwrap().path, "/extensions/b/x/lib/two.so");
        assert!(expected_module(&p, &files, "one").is_none());
        assert!(expected_control(&p, &files, "three").is_none());
    }

    #[test]
    fn a_prefix_of_the_mount_name_is_not_the_mount() {
        assert_eq!(rel_in_image("/extensions/ab/share", "/extensions/a"), None);
        assert_eq!(rel_in_image("/extensions/a/share", "/extensions/a"), Some("share"));
        assert_eq!(rel_in_image("/extensions/a", "/extensions/a"), Some(""));
    }

    #[test]
    fn maps_lines() {
        let maps = "\
7f00-7f01 r--p 00000000 00:2a 123   /extensions/pgvector/lib/vector.so
7f01-7f02 r-xp 00001000 00:2a 123   /extensions/pgvector/lib/vector.so
7f02-7f03 r--p 00000000 08:01 9     /usr/lib/postgresql/18/lib/vector.so (deleted)
7f03-7f04 rw-p 00000000 00:00 0 
7f04-7f05 r--p 00000000 08:01 10    /tmp/dir with space/lib/myvector.so
7f05-7f06 r--p 00000000 08:01 11    /tmp/w/lib/vector.so.1
";
        assert_eq!(
            mapped(maps, "vector"),
            vec!["/extensions/pgvector/lib/vector.so", "/usr/lib/postgresql/18/lib/vector.so"]
        );
        assert_eq!(mapped(maps, "myvector"), vec!["/tmp/dir with space/lib/myvector.so"]);
        assert!(mapped(maps, "cube").is_empty());
    }

    #[test]
    fn changes_are_new_or_updated_extensions() {
        let i = |n: &str, v: &str| Installed { name: n.into(), version: v.into() };
        let before = vec![i("plpgsql", "1.0"), i("x", "1.0")];
        let after = vec![i("plpgsql", "1.0"), i("x", "1.1"), i("y", "2")];
        assert_eq!(changed(&before, &after), vec![i("x", "1.1"), i("y", "2")]);
        assert!(changed(&after, &after).is_empty());
    }
}
