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

/// One file mapped in a process (`/proc/<pid>/maps`): the name the kernel gives it and which
/// file it is (device and inode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mapped {
    pub path: String,
    /// `major:minor`, as `maps` writes it.
    pub dev: String,
    pub inode: u64,
    /// The kernel's ` (deleted)`: the file was removed or replaced after it was mapped.
    pub deleted: bool,
}

impl Mapped {
    fn file(&self) -> (&str, u64) {
        (self.dev.as_str(), self.inode)
    }

    fn describe(&self) -> String {
        let deleted = if self.deleted { " (deleted)" } else { "" };
        format!("{}{deleted} [device {}, inode {}]", self.path, self.dev, self.inode)
    }
}

/// The mappings of `/proc/<pid>/maps` whose file name is `<module>.so`, in order, one entry
/// per name and file (two files under one name are two entries).
pub(crate) fn mapped(maps: &str, module: &str) -> Vec<Mapped> {
    let want = format!("{module}.so");
    let mut out: Vec<Mapped> = Vec::new();
    for line in maps.lines() {
        // address perms offset dev inode [path]; the path may contain spaces.
        let mut fields = Vec::with_capacity(5);
        let mut rest = line;
        for _ in 0..5 {
            rest = rest.trim_start();
            let (field, tail) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            fields.push(field);
            rest = tail;
        }
        let path = rest.trim();
        let (path, deleted) = match path.strip_suffix(" (deleted)") {
            Some(p) => (p, true),
            None => (path, false),
        };
        let Ok(inode) = fields[4].parse::<u64>() else { continue };
        let entry = Mapped { path: path.to_string(), dev: fields[3].to_string(), inode, deleted };
        if path.starts_with('/')
            && Path::new(path).file_name().is_some_and(|n| n == want.as_str())
            && !out.contains(&entry)
        {
            out.push(entry);
        }
    }
    out
}

/// What a fresh backend mapped of one module: after resolving it as a call would, and after
/// `LOAD` of the file the scenario expects (PostgreSQL and the dynamic loader load a file
/// once, by device and inode: the same file adds no mapping, another file does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Loaded {
    pub mapped: Vec<Mapped>,
    /// `None` when no file is expected; `Err` is the server's answer to the `LOAD`.
    pub with_expected: Option<Result<Vec<Mapped>, String>>,
}

fn distinct_files(m: &[Mapped]) -> Vec<(&str, u64)> {
    let mut files: Vec<(&str, u64)> = m.iter().map(Mapped::file).collect();
    files.sort_unstable();
    files.dedup();
    files
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
        let resolved = resolve_control(&client, &search, &sharedir, name).await?;
        if by_control.is_none() && by_module.is_none() {
            checks.push(not_from_an_image(plan, instance, name, resolved.as_deref()));
            continue;
        }
        let operand_copy = format!("{}/extension/{name}.control", sharedir.trim_end_matches('/'));
        let module_image = by_module.as_ref().map(|m| m.image.as_str()).unwrap_or("");
        checks.push(judge_control(
            instance,
            name,
            by_control.as_ref(),
            module_image,
            resolved.as_deref(),
            &operand_copy,
        ));
        for (probin, function) in &modules {
            let module = module_basename(probin);
            let want = expected_module(plan, &files, module);
            let what = format!("origin of {name}: module {module}.so (/proc/self/maps)");
            let got = match loaded(backend, instance, database, Some(function), module, want.as_ref()).await? {
                Ok(got) => got,
                Err(msg) => {
                    let expected = want
                        .as_ref()
                        .map(|w| w.path.clone())
                        .unwrap_or_else(|| format!("{module}.so from an image of the Cluster"));
                    let actual = format!("loading {probin} failed: {msg}");
                    checks.push(Check::that(what, Some(instance), expected, actual, false));
                    continue;
                }
            };
            checks.push(judge_module(plan, &files, instance, &what, module, want.as_ref(), &got));
        }
    }
    Ok(checks)
}

/// Judges the control file PostgreSQL found for `name` (`resolved`, the first along the
/// live `extension_control_path`) against the one the scenario's images ship (`want`); when no
/// image ships one, the extension still comes from an image (`module_image` ships its module),
/// and whatever was found is not the image's. `operand_copy` is where the operand keeps its own.
fn judge_control(
    instance: &str,
    name: &str,
    want: Option<&Expected>,
    module_image: &str,
    resolved: Option<&str>,
    operand_copy: &str,
) -> Check {
    let (expected, actual, ok) = match (want, resolved) {
        (Some(want), Some(got)) if got == want.path => (want.path.clone(), got.to_string(), true),
        (Some(want), Some(got)) if got == operand_copy => (
            want.path.clone(),
            format!("{got} — shadowed: the operand ships its own {name}.control and $system is searched first, so the image's copy ({}) is never used", want.path),
            false,
        ),
        (Some(want), Some(got)) => (want.path.clone(), format!("{got} (another location earlier on extension_control_path)"), false),
        (Some(want), None) => (want.path.clone(), "no control file found along extension_control_path".into(), false),
        (None, got) => (
            format!("{name}.control in the image that ships its module ({module_image})"),
            match got {
                Some(g) if g == operand_copy => format!("{g} — shadowed: only the operand ships {name}.control"),
                Some(g) => g.to_string(),
                None => "no control file found".into(),
            },
            false,
        ),
    };
    Check::that(format!("origin of {name}: control file"), Some(instance), expected, actual, ok)
}

/// Judges which `<module>.so` file a backend has mapped (`got`) against the file the
/// scenario's images provide (`want`): the same name — the path in the mount, or for
/// overlay-backed image mounts (podman, containerd) the path inside the image when exactly
/// one mount of the instance ships that path — and the same file (device and inode), never
/// a deleted one.
pub(crate) fn judge_module(
    plan: &ClusterPlan,
    files: &dyn Fn(&str) -> Option<Vec<String>>,
    instance: &str,
    what: &str,
    module: &str,
    want: Option<&Expected>,
    got: &Loaded,
) -> Check {
    let expected = want.map(|w| w.path.clone()).unwrap_or_else(|| format!("{module}.so from an image of the Cluster"));
    let names = || got.mapped.iter().map(|m| m.path.as_str()).collect::<Vec<_>>().join(", ");
    let fail = |actual: String| Check::that(what, Some(instance), expected.clone(), actual, false);
    let [one] = got.mapped.as_slice() else {
        if got.mapped.is_empty() {
            return fail(format!("{module}.so is not mapped"));
        }
        let list = got.mapped.iter().map(Mapped::describe).collect::<Vec<_>>().join(", ");
        return fail(format!("{list} — more than one {module}.so is mapped"));
    };
    if one.deleted {
        return fail(format!("{} — the mapped file was removed or replaced after it was loaded", one.describe()));
    }
    let Some(w) = want else {
        return fail(format!("{} — the image does not ship {module}.so: PostgreSQL loaded the operand's", names()));
    };
    let mount = mount_of(plan, &w.mount);
    let inner = w.path.strip_prefix(mount.as_str()).filter(|i| i.starts_with('/')).unwrap_or("");
    let shipping = if inner.is_empty() {
        0
    } else {
        let rel = inner.trim_start_matches('/');
        plan.extensions.iter().filter(|m| files(&m.image).is_some_and(|f| f.iter().any(|f| f == rel))).count()
    };
    let by_name = if one.path == w.path {
        None
    } else if one.path == inner && shipping == 1 {
        Some(format!(
            "the file inside the image mounted at {mount}, the only mount of this instance that ships {inner}"
        ))
    } else if one.path == inner {
        return fail(format!(
            "{} — {shipping} mounts of this instance ship {inner}: the name does not tell which one was loaded",
            one.describe()
        ));
    } else {
        let root = format!("{}/", plan.mount_root.trim_end_matches('/'));
        let note =
            if one.path.starts_with(&root) { "" } else { " — shadowed by the operand's $libdir, searched first" };
        return fail(format!("{}{note}", one.describe()));
    };
    match &got.with_expected {
        Some(Ok(after)) if distinct_files(after) == distinct_files(&got.mapped) => {
            let how = by_name.map(|b| format!(": {b}")).unwrap_or_default();
            Check::that(
                what,
                Some(instance),
                expected.clone(),
                format!("{}{how}; the same file as {}", one.describe(), w.path),
                true,
            )
        }
        Some(Ok(after)) => {
            let others: Vec<String> = after.iter().filter(|m| m.file() != one.file()).map(Mapped::describe).collect();
            fail(format!(
                "{} — not the expected file: loading {} mapped another file, {}",
                one.describe(),
                w.path,
                others.join(", ")
            ))
        }
        Some(Err(e)) => {
            fail(format!("{} — loading {} beside it failed, so it is another file: {e}", one.describe(), w.path))
        }
        None => fail(format!("{} — not compared with {}", one.describe(), w.path)),
    }
}

/// An extension no image of the Cluster ships: measured, its control file (the first along
/// the live `extension_control_path`) must lie outside every image mount.
fn not_from_an_image(plan: &ClusterPlan, instance: &str, name: &str, resolved: Option<&str>) -> Check {
    let root = format!("{}/", plan.mount_root.trim_end_matches('/'));
    let (actual, ok) = match resolved {
        Some(p) if !p.starts_with(&root) => (format!("not from an image: {p}"), true),
        Some(p) => (format!("{p} — inside an image mount, though no image of the Cluster lists it"), false),
        None => ("no control file found along extension_control_path".to_string(), false),
    };
    Check::that(
        format!("origin of {name}"),
        Some(instance),
        "not from an image (no mounted image ships it)",
        actual,
        ok,
    )
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
    for lib in &plan.shared_preload_libraries {
        let module = module_basename(lib);
        let Some(want) = expected_module(plan, &files, module) else { continue };
        let what = format!("origin of preloaded {module}.so (/proc/self/maps)");
        // Loaded by the postmaster: every fresh backend has it mapped already.
        let got = match loaded(backend, instance, "postgres", None, module, Some(&want)).await? {
            Ok(got) => got,
            Err(msg) => {
                checks.push(Check::that(what, Some(instance), want.path.clone(), msg, false));
                continue;
            }
        };
        checks.push(judge_module(plan, &files, instance, &what, module, Some(&want), &got));
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
/// without running the function), read which `<module>.so` files the backend mapped, then
/// `LOAD` the expected file and read them again. The outer `Err` is the server's answer when
/// the function's library cannot be loaded.
async fn loaded(
    backend: &dyn Backend,
    instance: &str,
    database: &str,
    function: Option<&str>,
    module: &str,
    want: Option<&Expected>,
) -> Result<Result<Loaded, String>, BackendError> {
    let client = backend.connect(instance, database, "postgres").await?;
    if let Some(function) = function {
        if let Err(e) = client.batch_execute(&format!("SELECT fmgr_c_validator({function}::oid)")).await {
            return Ok(Err(sql::describe_error(&e)));
        }
    }
    let maps = one(&client, "SELECT pg_read_file('/proc/self/maps')").await?;
    let with_expected = match want {
        None => None,
        Some(w) => Some(match client.batch_execute(&format!("LOAD {}", quote_literal(&w.path))).await {
            Ok(()) => Ok(mapped(&one(&client, "SELECT pg_read_file('/proc/self/maps')").await?, module)),
            Err(e) => Err(sql::describe_error(&e)),
        }),
    };
    Ok(Ok(Loaded { mapped: mapped(&maps, module), with_expected }))
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

    fn m(path: &str, dev: &str, inode: u64, deleted: bool) -> Mapped {
        Mapped { path: path.into(), dev: dev.into(), inode, deleted }
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
7f06-7f07 r--p 00000000 00:2b 77    /lib/vector.so
7f07-7f08 r--p 00000000 00:2c 77    /lib/vector.so
7f08-7f09 r--p 00001000 00:2c 77    /lib/vector.so
7f09-7f0a r--p 00000000 00:2c x     /lib/vector.so
7f0a-7f0b r--p 00000000 00:2c 78    lib/vector.so
";
        assert_eq!(
            mapped(maps, "vector"),
            vec![
                m("/extensions/pgvector/lib/vector.so", "00:2a", 123, false),
                m("/usr/lib/postgresql/18/lib/vector.so", "08:01", 9, true),
                // One name, two files: two entries.
                m("/lib/vector.so", "00:2b", 77, false),
                m("/lib/vector.so", "00:2c", 77, false),
            ]
        );
        assert_eq!(mapped(maps, "myvector"), vec![m("/tmp/dir with space/lib/myvector.so", "08:01", 10, false)]);
        assert!(mapped(maps, "cube").is_empty());
        assert!(mapped("7f00-7f01 r--p", "vector").is_empty());
    }

    /// `a` (pgvector) and `b` (other) of a plan; `b` ships lib/vector.so too when `both`.
    fn two(both: bool) -> (ClusterPlan, impl Fn(&str) -> Option<Vec<String>>) {
        let p = plan(
            "      - name: a\n        image: {reference: r/a:1}\n      - name: b\n        image: {reference: r/b:1}\n",
        );
        let files = move |r: &str| -> Option<Vec<String>> {
            match r {
                "r/a:1" => Some(vec!["lib/vector.so".into(), "share/extension/vector.control".into()]),
                "r/b:1" if both => Some(vec!["lib/vector.so".into()]),
                "r/b:1" => Some(vec!["lib/other.so".into()]),
                _ => None,
            }
        };
        (p, files)
    }

    fn judge(both: bool, mapped: Vec<Mapped>, with_expected: Option<Result<Vec<Mapped>, String>>) -> Check {
        let (p, files) = two(both);
        let want = expected_module(&p, &files, "vector").unwrap();
        assert_eq!(want.path, "/extensions/a/lib/vector.so");
        judge_module(&p, &files, "c-1", "w", "vector", Some(&want), &Loaded { mapped, with_expected })
    }

    const IN_MOUNT: &str = "/extensions/a/lib/vector.so";

    #[test]
    fn the_file_in_the_mount_and_the_same_file_passes() {
        let f = m(IN_MOUNT, "00:2a", 5, false);
        let c = judge(false, vec![f.clone()], Some(Ok(vec![f.clone()])));
        assert!(c.ok, "{c:?}");
        assert_eq!((c.what.as_str(), c.instance.as_deref(), c.expected.as_str()), ("w", Some("c-1"), IN_MOUNT));
        assert_eq!(c.actual, format!("{IN_MOUNT} [device 00:2a, inode 5]; the same file as {IN_MOUNT}"));
        // Another file, though under the expected name.
        let other = m(IN_MOUNT, "00:2a", 6, false);
        let c = judge(false, vec![f.clone()], Some(Ok(vec![f.clone(), other])));
        assert!(!c.ok && c.actual.contains("mapped another file") && c.actual.contains("inode 6"), "{c:?}");
        let c = judge(false, vec![f.clone()], Some(Err("attempt to redefine parameter".into())));
        assert!(!c.ok && c.actual.contains("beside it failed") && c.actual.contains("redefine"), "{c:?}");
        let c = judge(false, vec![f], None);
        assert!(!c.ok && c.actual.contains("not compared"), "{c:?}");
    }

    #[test]
    fn the_in_image_name_passes_only_when_one_mount_ships_it() {
        let f = m("/lib/vector.so", "00:31", 9, false);
        let c = judge(false, vec![f.clone()], Some(Ok(vec![f.clone()])));
        assert!(c.ok, "{c:?}");
        assert!(c.actual.contains("the only mount of this instance that ships /lib/vector.so"), "{c:?}");
        assert!(c.actual.contains("mounted at /extensions/a,"), "{c:?}");
        let c = judge(true, vec![f.clone()], Some(Ok(vec![f.clone()])));
        assert!(!c.ok && c.actual.contains("2 mounts of this instance ship /lib/vector.so"), "{c:?}");
        // A path inside the image that is not the expected one.
        let f = m("/vector.so", "00:31", 9, false);
        assert!(!judge(false, vec![f.clone()], Some(Ok(vec![f]))).ok);
    }

    #[test]
    fn deleted_several_none_or_elsewhere_fail() {
        let f = m(IN_MOUNT, "00:2a", 5, true);
        let c = judge(false, vec![f.clone()], Some(Ok(vec![f])));
        assert!(!c.ok && c.actual.contains("(deleted)") && c.actual.contains("removed or replaced"), "{c:?}");
        let (a, b) = (m(IN_MOUNT, "00:2a", 5, false), m(IN_MOUNT, "00:2a", 6, false));
        let c = judge(false, vec![a.clone(), b.clone()], Some(Ok(vec![a.clone(), b])));
        assert!(!c.ok && c.actual.contains("more than one vector.so is mapped"), "{c:?}");
        let c = judge(false, vec![], Some(Ok(vec![a])));
        assert!(!c.ok && c.actual == "vector.so is not mapped", "{c:?}");
        let op = m("/usr/lib/postgresql/18/lib/vector.so", "08:01", 9, false);
        let c = judge(false, vec![op.clone()], Some(Ok(vec![op.clone()])));
        assert!(!c.ok && c.actual.ends_with("shadowed by the operand's $libdir, searched first"), "{c:?}");
        let other_mount = m("/extensions/b/lib/vector.so", "00:2a", 5, false);
        let c = judge(true, vec![other_mount.clone()], Some(Ok(vec![other_mount])));
        assert!(!c.ok && !c.actual.contains("shadowed"), "{c:?}");
        let (p, files) = two(false);
        let c = judge_module(&p, &files, "c-1", "w", "vector", None, &Loaded { mapped: vec![op], with_expected: None });
        assert!(!c.ok && c.actual.contains("the image does not ship vector.so"), "{c:?}");
        assert_eq!(c.expected, "vector.so from an image of the Cluster");
    }

    #[test]
    fn the_control_file_found_first_must_be_the_images() {
        let want = Expected {
            mount: "a".into(),
            image: "r/a:1".into(),
            path: "/extensions/a/share/extension/vector.control".into(),
        };
        let operand = "/usr/share/postgresql/18/extension/vector.control";
        let judge =
            |want: Option<&Expected>, got: Option<&str>| judge_control("c-1", "vector", want, "r/m:1", got, operand);
        let c = judge(Some(&want), Some(&want.path));
        assert!(c.ok && c.actual == want.path && c.expected == want.path, "{c:?}");
        assert_eq!((c.what.as_str(), c.instance.as_deref()), ("origin of vector: control file", Some("c-1")));
        let c = judge(Some(&want), Some(operand));
        assert!(!c.ok && c.actual.starts_with(operand) && c.actual.contains("shadowed: the operand ships"), "{c:?}");
        let c = judge(Some(&want), Some("/tmp/x/extension/vector.control"));
        assert!(!c.ok && c.actual.ends_with("(another location earlier on extension_control_path)"), "{c:?}");
        assert!(!c.actual.contains("shadowed"), "{c:?}");
        let c = judge(Some(&want), None);
        assert!(!c.ok && c.actual == "no control file found along extension_control_path", "{c:?}");
        // No image ships the control file: whatever is found is not the image's.
        let c = judge(None, Some(operand));
        assert!(!c.ok && c.actual.ends_with("shadowed: only the operand ships vector.control"), "{c:?}");
        assert_eq!(c.expected, "vector.control in the image that ships its module (r/m:1)");
        let c = judge(None, Some("/tmp/x/extension/vector.control"));
        assert!(!c.ok && c.actual == "/tmp/x/extension/vector.control", "{c:?}");
        let c = judge(None, None);
        assert!(!c.ok && c.actual == "no control file found", "{c:?}");
    }

    #[test]
    fn an_extension_no_image_ships_must_resolve_outside_the_mounts() {
        let (p, _) = two(false);
        let c = not_from_an_image(&p, "c-1", "cube", Some("/usr/share/postgresql/extension/cube.control"));
        assert!(c.ok && c.actual == "not from an image: /usr/share/postgresql/extension/cube.control", "{c:?}");
        assert_eq!((c.what.as_str(), c.instance.as_deref()), ("origin of cube", Some("c-1")));
        let c = not_from_an_image(&p, "c-1", "cube", Some("/extensions/b/share/extension/cube.control"));
        assert!(!c.ok && c.actual.contains("inside an image mount"), "{c:?}");
        let c = not_from_an_image(&p, "c-1", "cube", None);
        assert!(!c.ok && c.actual.starts_with("no control file found"), "{c:?}");
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
