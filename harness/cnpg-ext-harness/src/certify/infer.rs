//! How CNPG must mount an image nobody here wrote, read from its files: where control files,
//! modules and system libraries live, each extension's install and update scripts, and the
//! path the certification takes through its versions.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;

use cnpg_ext_images::control::parse_control;
use serde::Serialize;

/// One extension of the image and the path the certification takes through its versions.
#[derive(Debug, Clone, Serialize)]
pub struct ExtensionPlan {
    pub name: String,
    pub control_file: String,
    pub default_version: Option<String>,
    pub requires: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module_pathname: Option<String>,
    /// Versions with a full install script (`<name>--<v>.sql`).
    pub install_versions: Vec<String>,
    /// Update scripts shipped (`<name>--<from>--<to>.sql`).
    pub update_scripts: Vec<(String, String)>,
    /// Created at this version, then updated along `update_path` to the default.
    pub create_version: Option<String>,
    pub update_path: Vec<String>,
}

/// What the image looks like to CNPG: the settings a Cluster needs to mount it.
#[derive(Debug, Clone, Serialize)]
pub struct Inferred {
    pub name: String,
    pub reference: String,
    pub extension_control_path: Vec<String>,
    pub dynamic_library_path: Vec<String>,
    pub ld_library_path: Vec<String>,
    pub extensions: Vec<ExtensionPlan>,
    /// The generated Cluster's operand image (`…:18-minimal-<distribution>`).
    pub image_name: String,
}

/// CloudNativePG's operand image for a distribution.
pub fn operand_image(os: &str) -> String {
    format!("ghcr.io/cloudnative-pg/postgresql:18-minimal-{os}")
}

fn rel_str(p: &Path) -> String {
    p.display().to_string()
}

/// `1.10.2` > `1.9`: numeric runs compare as numbers.
fn version_key(v: &str) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut num = String::new();
    let mut txt = String::new();
    for c in v.chars() {
        if c.is_ascii_digit() {
            if !txt.is_empty() {
                out.push((u64::MAX, std::mem::take(&mut txt)));
            }
            num.push(c);
        } else {
            if !num.is_empty() {
                out.push((num.parse().unwrap_or(u64::MAX), String::new()));
                num.clear();
            }
            if c != '.' {
                txt.push(c);
            }
        }
    }
    if !num.is_empty() {
        out.push((num.parse().unwrap_or(u64::MAX), String::new()));
    }
    if !txt.is_empty() {
        out.push((u64::MAX, txt));
    }
    out
}

/// Shortest chain of update scripts from `from` to `to` (versions after `from`).
fn update_path(edges: &[(String, String)], from: &str, to: &str) -> Option<Vec<String>> {
    let mut prev: BTreeMap<&str, &str> = BTreeMap::new();
    let mut q = VecDeque::from([from]);
    let mut seen = BTreeSet::from([from]);
    while let Some(v) = q.pop_front() {
        if v == to {
            let mut path = vec![to.to_string()];
            let mut cur = to;
            while let Some(p) = prev.get(cur) {
                if *p == from {
                    break;
                }
                path.push(p.to_string());
                cur = p;
            }
            path.reverse();
            return Some(path);
        }
        for (a, b) in edges {
            if a == v && seen.insert(b.as_str()) {
                prev.insert(b.as_str(), v);
                q.push_back(b.as_str());
            }
        }
    }
    None
}

/// A CNPG extension name: lowercase letters, digits and `-`.
fn cnpg_name(s: &str) -> String {
    let n: String = s.to_ascii_lowercase().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    let n = n.trim_matches('-').to_string();
    if n.is_empty() {
        "extension".into()
    } else {
        n
    }
}

/// The name of the Cluster's `extensions[]` entry (the mount directory) for an image: the
/// first word of `org.opencontainers.image.title` (the extension containers project writes
/// `<name> <version> <pg major> <os>` there), else the last path component of the image's
/// repository (`…/pgvector:0.8.1-18-trixie` → `pgvector`), else its first extension's control
/// file. Never `io.cloudnativepg.image.base.name`: that label names the operand image the
/// extension was built for (`ghcr.io/cloudnative-pg/postgresql:18-minimal-trixie`).
fn entry_name(
    labels: &BTreeMap<String, String>,
    ref_names: &[String],
    reference: Option<&str>,
    extensions: &[ExtensionPlan],
) -> String {
    let title = labels.get(cnpg_ext_images::LABEL_TITLE).and_then(|t| t.split_whitespace().next()).map(str::to_string);
    let repository = reference
        .into_iter()
        .chain(ref_names.iter().map(String::as_str))
        .filter(|r| r.contains('/') && cnpg_ext_images::validate_reference(r).is_ok())
        .find_map(repository_name);
    let first = extensions.first().map(|e| e.name.clone());
    cnpg_name(title.or(repository).or(first).as_deref().unwrap_or("extension"))
}

/// `registry/path/name:tag@digest` → `name`.
fn repository_name(reference: &str) -> Option<String> {
    let without_digest = reference.split('@').next()?;
    let last = without_digest.rsplit('/').next()?;
    let name = last.split(':').next()?;
    (!name.is_empty()).then(|| name.to_string())
}

/// Reads the unpacked image: where control files, modules and system libraries live, and
/// each extension's install and update scripts.
pub fn infer(
    rootfs: &Path,
    labels: &BTreeMap<String, String>,
    ref_names: &[String],
    reference: Option<&str>,
    notes: &mut Vec<String>,
    problems: &mut Vec<String>,
) -> Inferred {
    let files = crate::plumbing::fsutil::list_files(rootfs);
    let mut control_prefixes: Vec<String> = Vec::new();
    let mut extensions = Vec::new();
    let mut modules_wanted: Vec<String> = Vec::new();
    for f in files.iter().filter(|f| f.ends_with(".control")) {
        let p = Path::new(f);
        let ext = p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let dir = p.parent().unwrap_or(Path::new(""));
        if dir.file_name().map(|n| n != "extension").unwrap_or(true) {
            problems.push(format!(
                "{f}: a control file must be in an `extension` directory (PostgreSQL looks in <extension_control_path entry>/extension)"
            ));
            continue;
        }
        let prefix = dir.parent().map(rel_str).unwrap_or_default();
        if !prefix.is_empty() && !control_prefixes.contains(&prefix) {
            control_prefixes.push(prefix.clone());
        }
        let text = std::fs::read_to_string(rootfs.join(f)).unwrap_or_default();
        let control = match parse_control(&text) {
            Ok(c) => c,
            Err(e) => {
                problems.push(format!("{f}: {e}"));
                continue;
            }
        };
        if let Some(m) = control.module() {
            modules_wanted.push(m.to_string());
        }
        // Scripts next to the control file.
        let mut install = Vec::new();
        let mut updates = Vec::new();
        let head = format!("{}/{ext}--", dir.display());
        for s in files.iter().filter(|s| s.starts_with(&head) && s.ends_with(".sql")) {
            let v = &s[head.len()..s.len() - 4];
            match v.split_once("--") {
                Some((a, b)) => updates.push((a.to_string(), b.to_string())),
                None => install.push(v.to_string()),
            }
        }
        install.sort_by_key(|v| version_key(v));
        updates
            .sort_by(|a, b| version_key(&a.0).cmp(&version_key(&b.0)).then(version_key(&a.1).cmp(&version_key(&b.1))));
        let dv = control.default_version().map(str::to_string);
        let (mut create_version, mut path) = (dv.clone(), Vec::new());
        if let Some(dv) = &dv {
            if control.directory().is_some() {
                notes.push(format!(
                    "{ext}: the control file sets `directory`; scripts were looked for next to the control file"
                ));
            }
            // The oldest installable version from which the update scripts reach the default.
            let start =
                install.iter().filter(|v| *v != dv).find_map(|v| update_path(&updates, v, dv).map(|p| (v.clone(), p)));
            match start {
                Some((v, p)) => {
                    create_version = Some(v);
                    path = p;
                }
                None if !updates.is_empty() && install.iter().all(|v| v == dv) => notes.push(format!(
                    "{ext}: only the default version {dv} has a full install script; its {} update script(s) cannot be exercised from an older install and were not run",
                    updates.len()
                )),
                None if !updates.is_empty() => notes.push(format!(
                    "{ext}: no chain of update scripts leads from an installable version to the default {dv}; update scripts not run"
                )),
                None => {}
            }
            let used: BTreeSet<(String, String)> = {
                let mut from = create_version.clone().unwrap_or_default();
                path.iter()
                    .map(|to| {
                        let e = (from.clone(), to.clone());
                        from = to.clone();
                        e
                    })
                    .collect()
            };
            let unused: Vec<String> =
                updates.iter().filter(|e| !used.contains(*e)).map(|(a, b)| format!("{a}--{b}")).collect();
            if !path.is_empty() && !unused.is_empty() {
                notes.push(format!("{ext}: update scripts not on the path taken: {}", unused.join(", ")));
            }
        }
        extensions.push(ExtensionPlan {
            name: ext.clone(),
            control_file: f.clone(),
            default_version: dv,
            requires: control.requires(),
            module_pathname: control.module_pathname().map(str::to_string),
            install_versions: install,
            update_scripts: updates,
            create_version,
            update_path: path,
        });
    }
    // Module directories: where the modules named by module_pathname are, else every
    // directory with a `*.so` outside system/.
    let so_dirs = |pred: &dyn Fn(&str) -> bool| -> Vec<String> {
        let mut v: Vec<String> = files
            .iter()
            .filter(|f| f.ends_with(".so") && pred(f))
            .filter_map(|f| Path::new(f).parent().map(rel_str))
            .filter(|d| !d.is_empty())
            .collect();
        v.sort();
        v.dedup();
        v
    };
    let mut lib_dirs = so_dirs(&|f: &str| {
        let stem = Path::new(f).file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        modules_wanted.contains(&stem)
    });
    if lib_dirs.is_empty() {
        lib_dirs = so_dirs(&|f: &str| !f.starts_with("system/"));
    }
    for m in &modules_wanted {
        if !files
            .iter()
            .any(|f| Path::new(f).file_name().map(|n| n.to_string_lossy() == format!("{m}.so")).unwrap_or(false))
        {
            problems.push(format!("module `{m}.so` named by a module_pathname is not in the image"));
        }
    }
    let default_first = |mut v: Vec<String>, dflt: &str| {
        v.sort_by_key(|d| (d != dflt, d.clone()));
        if v.is_empty() {
            v.push(dflt.to_string());
        }
        v
    };
    let control_path = default_first(control_prefixes, "share");
    let lib_path = default_first(lib_dirs, "lib");
    let ld_path: Vec<String> =
        if files.iter().any(|f| f.starts_with("system/")) { vec!["system".into()] } else { Vec::new() };

    let name = entry_name(labels, ref_names, reference, &extensions);
    let reference = match reference {
        Some(r) => r.to_string(),
        None => {
            let full = ref_names.iter().find(|r| r.contains('/') && cnpg_ext_images::validate_reference(r).is_ok());
            match full {
                Some(r) => r.clone(),
                None => {
                    let tag = ref_names
                        .iter()
                        .find(|r| {
                            !r.contains('/') && !r.contains(':') && cnpg_ext_images::validate_reference(r).is_ok()
                        })
                        .cloned()
                        .or_else(|| {
                            labels.get(cnpg_ext_images::LABEL_SQL_VERSION).map(|v| cnpg_name(v).replace('-', "."))
                        })
                        .unwrap_or_else(|| "latest".into());
                    let r = format!("localhost/cnpg-ext-certify/{name}:{tag}");
                    notes.push(format!("the image records no full reference; the Cluster uses the synthetic `{r}`"));
                    r
                }
            }
        }
    };
    let os = ref_names
        .iter()
        .find_map(|r| cnpg_ext_images::compat::distro_from_reference(r))
        .map(|d| d.name)
        .unwrap_or("trixie");
    Inferred {
        name,
        reference,
        extension_control_path: control_path,
        dynamic_library_path: lib_path,
        ld_library_path: ld_path,
        extensions,
        image_name: operand_image(os),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(name: &str) -> ExtensionPlan {
        ExtensionPlan {
            name: name.into(),
            control_file: format!("share/extension/{name}.control"),
            default_version: None,
            requires: Vec::new(),
            module_pathname: None,
            install_versions: Vec::new(),
            update_scripts: Vec::new(),
            create_version: None,
            update_path: Vec::new(),
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// An upstream-labelled image: `base.name` is the operand, not the extension (a certify of
    /// such an image once named its extension `ghcr-io-cloudnative-pg-postgresql-18-minimal-trixie`).
    #[test]
    fn the_base_name_label_is_the_operand_never_the_entry_name() {
        let upstream =
            labels(&[(cnpg_ext_images::LABEL_BASE_NAME, "ghcr.io/cloudnative-pg/postgresql:18-minimal-trixie")]);
        let exts = [plan("vector")];
        assert_eq!(entry_name(&upstream, &[], None, &exts), "vector");
        let reference = "ghcr.io/cloudnative-pg/pgvector:0.8.1-18-trixie";
        assert_eq!(entry_name(&upstream, &[], Some(reference), &exts), "pgvector");
        assert_eq!(entry_name(&upstream, &[reference.to_string()], None, &exts), "pgvector");
        let titled = labels(&[(cnpg_ext_images::LABEL_TITLE, "pgvector 0.8.1 18 trixie")]);
        assert_eq!(entry_name(&titled, &[], Some("localhost/x/other:1"), &exts), "pgvector");
        assert_eq!(entry_name(&BTreeMap::new(), &[], None, &[]), "extension");
    }

    #[test]
    fn repository_names() {
        assert_eq!(repository_name("ghcr.io/a/b/pg_ivm:1.0@sha256:00").as_deref(), Some("pg_ivm"));
        assert_eq!(repository_name("localhost:5000/postgis").as_deref(), Some("postgis"));
        assert_eq!(repository_name("x/").as_deref(), None);
    }
}
