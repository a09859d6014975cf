//! Extension control files: each one parsed, its install script reachable, its module found.

use super::types::{codes, safe_rel, Ctx};
use crate::control::parse_control;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};

/// Resolve a module name (`$libdir/x`, `x`, `x.so`) in the library dirs.
fn find_module(root: &Path, lib_dirs: &[PathBuf], name: &str) -> Option<PathBuf> {
    let file = if name.ends_with(".so") { name.to_string() } else { format!("{name}.so") };
    lib_dirs.iter().flat_map(|d| [root.join(d).join(&file), root.join(d).join(name)]).find(|p| p.is_file())
}

/// `$libdir/<name>` references in SQL text.
pub(super) fn libdir_refs(sql: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = sql;
    while let Some(i) = rest.find("$libdir/") {
        rest = &rest[i + "$libdir/".len()..];
        let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || "_.-".contains(c))).unwrap_or(rest.len());
        if end > 0 {
            out.insert(rest[..end].to_string());
        }
    }
    out
}

/// Whether `target` is reachable from an install script along update scripts.
pub(super) fn install_reachable(ext: &str, scripts: &[String], target: &str) -> bool {
    let prefix = format!("{ext}--");
    let mut bases = Vec::new();
    let mut edges: HashMap<String, Vec<String>> = HashMap::new();
    for s in scripts {
        let Some(v) = s.strip_prefix(&prefix).and_then(|r| r.strip_suffix(".sql")) else {
            continue;
        };
        match v.split_once("--") {
            Some((a, b)) => edges.entry(a.to_string()).or_default().push(b.to_string()),
            None => bases.push(v.to_string()),
        }
    }
    let mut seen: BTreeSet<String> = bases.iter().cloned().collect();
    let mut q: VecDeque<String> = bases.into();
    while let Some(v) = q.pop_front() {
        if v == target {
            return true;
        }
        for n in edges.get(&v).into_iter().flatten() {
            if seen.insert(n.clone()) {
                q.push_back(n.clone());
            }
        }
    }
    false
}

pub(super) fn sorted_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// What the control files of an image declare: the module files they reference and the
/// default versions they name.
#[derive(Default)]
struct Declared {
    modules: BTreeSet<PathBuf>,
    versions: BTreeSet<String>,
    /// Primary control files read (secondary `name--version.control` files not counted).
    controls: usize,
}

/// Returns the module files referenced and the default versions seen.
pub(super) fn check_controls(
    cx: &mut Ctx,
    control_dirs: &[PathBuf],
    lib_dirs: &[PathBuf],
) -> (BTreeSet<PathBuf>, BTreeSet<String>) {
    let mut seen = Declared::default();
    for cd in control_dirs {
        let share = cx.root.join(cd);
        let ext_dir = share.join("extension");
        for name in sorted_names(&ext_dir) {
            if let Some(stem) = name.strip_suffix(".control") {
                check_control_file(cx, &share, &ext_dir.join(&name), stem, lib_dirs, &mut seen);
            }
        }
    }
    if seen.controls == 0 {
        no_control_files(cx, control_dirs, lib_dirs);
    }
    (seen.modules, seen.versions)
}

/// One control file: parsed, not shadowed by the operand, its scripts reachable, its module
/// and every `$libdir/` module its scripts name present in the library dirs.
fn check_control_file(cx: &mut Ctx, share: &Path, path: &Path, stem: &str, lib_dirs: &[PathBuf], seen: &mut Declared) {
    if !path.is_file() {
        return;
    }
    let text = match std::fs::read(path) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => return cx.err(codes::CONTROL_PARSE_ERROR, Some(path), format!("unreadable: {e}")),
    };
    let parsed = match parse_control(&text) {
        Ok(c) => c,
        Err(e) => return cx.err(codes::CONTROL_PARSE_ERROR, Some(path), e.to_string()),
    };
    if stem.contains("--") {
        return; // secondary control file: syntax checked only
    }
    seen.controls += 1;
    if crate::compat::operand_ships(&cx.opts.operand, stem) == Some(true) {
        cx.warn(
            codes::SHADOWED_BY_OPERAND,
            Some(path),
            format!(
                "the {} operand image already ships {stem}: PostgreSQL would load the operand's copy ($system and $libdir are searched first), never this image's",
                cx.opts.operand
            ),
        );
    }
    let script_dir = script_dir(cx, share, path, parsed.directory());
    let scripts: Vec<String> = script_dir
        .as_deref()
        .map(sorted_names)
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.starts_with(&format!("{stem}--")) && n.ends_with(".sql"))
        .collect();
    match parsed.default_version() {
        None => cx.warn(
            codes::MISSING_DEFAULT_VERSION,
            Some(path),
            "no default_version; CREATE EXTENSION needs an explicit VERSION".into(),
        ),
        Some(v) => {
            seen.versions.insert(v.to_string());
            if script_dir.is_some() && !install_reachable(stem, &scripts, v) {
                cx.err(
                    codes::MISSING_INSTALL_SCRIPT,
                    Some(path),
                    format!("default_version {v:?} has no install script {stem}--{v}.sql and no update path to it from another install script"),
                );
            }
        }
    }
    if let Some(m) = parsed.module_pathname() {
        check_module_pathname(cx, path, m, lib_dirs, seen);
    }
    if let Some(sd) = &script_dir {
        for s in &scripts {
            check_script_modules(cx, &sd.join(s), lib_dirs, seen);
        }
    }
}

/// Where a control file's scripts are: its `directory` (relative to the share dir), else the
/// extension dir; `None` when the directory cannot be inside the image.
fn script_dir(cx: &mut Ctx, share: &Path, control: &Path, directory: Option<&str>) -> Option<PathBuf> {
    match directory {
        Some(d) if d.starts_with('/') => {
            cx.warn(
                codes::ABSOLUTE_DIRECTORY,
                Some(control),
                format!("directory = {d:?} is absolute and cannot point into the image volume"),
            );
            None
        }
        Some(d) => match safe_rel(d) {
            Some(r) => Some(share.join(r)),
            None => {
                cx.err(codes::INVALID_PATH_OPTION, Some(control), format!("directory = {d:?} leaves the image"));
                None
            }
        },
        None => control.parent().map(Path::to_path_buf),
    }
}

fn check_module_pathname(cx: &mut Ctx, control: &Path, m: &str, lib_dirs: &[PathBuf], seen: &mut Declared) {
    let name = m.strip_prefix("$libdir/");
    if name.is_none() && m.contains('/') {
        return cx.warn(
            codes::ABSOLUTE_MODULE_PATHNAME,
            Some(control),
            format!("module_pathname {m:?} is a path; use '$libdir/<name>' so dynamic_library_path finds it"),
        );
    }
    let n = name.unwrap_or(m);
    match find_module(cx.root, lib_dirs, n) {
        Some(p) => {
            seen.modules.insert(p);
        }
        None => {
            let lib_list = cx.opts.dynamic_library_path.join(", ");
            cx.err(
                codes::MISSING_MODULE,
                Some(control),
                format!("module_pathname {m:?}: no {n}.so in the library dirs ({lib_list})"),
            )
        }
    }
}

fn check_script_modules(cx: &mut Ctx, script: &Path, lib_dirs: &[PathBuf], seen: &mut Declared) {
    let sql = std::fs::read(script).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    for r in libdir_refs(&sql) {
        match find_module(cx.root, lib_dirs, &r) {
            Some(p) => {
                seen.modules.insert(p);
            }
            None => {
                let lib_list = cx.opts.dynamic_library_path.join(", ");
                cx.err(
                    codes::MISSING_MODULE,
                    Some(script),
                    format!("references '$libdir/{r}' but no {r}.so is in the library dirs ({lib_list})"),
                )
            }
        }
    }
}

/// No control file at all: a module-only image (loaded through `shared_preload_libraries`,
/// like auto_explain) is valid and said to be one; an image with neither is refused.
fn no_control_files(cx: &mut Ctx, control_dirs: &[PathBuf], lib_dirs: &[PathBuf]) {
    let where_ = control_dirs.iter().map(|d| format!("{}/extension", d.display())).collect::<Vec<_>>().join(", ");
    let has_module = lib_dirs.iter().any(|d| {
        std::fs::read_dir(cx.root.join(d))
            .map(|rd| rd.flatten().any(|e| e.file_name().to_string_lossy().ends_with(".so")))
            .unwrap_or(false)
    });
    if has_module {
        cx.info(
            codes::MODULE_ONLY_IMAGE,
            None,
            format!("no extension control file in {where_}: a module-only image (for shared_preload_libraries)"),
        );
    } else {
        cx.err(codes::NO_CONTROL_FILES, None, format!("no extension control file and no module in {where_}"));
    }
}
