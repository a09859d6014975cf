//! Checks of the image as a whole: its config, labels, tag, PostgreSQL major, OS, file access
//! and top-level layout.

use super::controls::sorted_names;
use super::types::{codes, Ctx, Severity, REQUIRED_LABELS};
use crate::compat::{self, FileOwner, Ownership, DISTROS};
use crate::platform::normalize_arch;
use crate::unpack::ImageConfigSummary;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The PostgreSQL major: the modules' magic blocks decide; the label is
/// judged against them, and alone only when no magic block was read.
pub(super) fn check_pg_major(cx: &mut Ctx, config: &ImageConfigSummary) {
    let want = cx.opts.pg_major;
    let majors: BTreeSet<u32> = cx.bin.pg_majors.values().copied().collect();
    let Some(v) = config.labels.get(crate::LABEL_BASE_PGMAJOR) else {
        return;
    };
    let label = v.trim().parse::<u32>().ok();
    if let Some(l) = label {
        if let Some((path, m)) = cx.bin.pg_majors.iter().find(|(_, m)| **m != l) {
            let msg = format!(
                "label {} = {l} but {path} is built for PostgreSQL {m}; the binaries decide",
                crate::LABEL_BASE_PGMAJOR
            );
            cx.warn(codes::LABEL_PG_MAJOR_DISAGREES, None, msg);
        }
    }
    if label != Some(want) {
        let msg = format!("label {} = {v:?} but PostgreSQL {want} is expected", crate::LABEL_BASE_PGMAJOR);
        if majors.is_empty() {
            cx.err(codes::PG_MAJOR_MISMATCH, None, msg);
        } else {
            cx.warn(codes::PG_MAJOR_MISMATCH, None, format!("{msg} (the modules' magic blocks are judged instead)"));
        }
    }
}

/// The `base.os` label against the operand (a warning: the symbol versions
/// decide), and the operand stated when unknown.
pub(super) fn check_os(cx: &mut Ctx, config: &ImageConfigSummary) {
    let have = config.labels.get(crate::LABEL_BASE_OS);
    match (cx.distro, have) {
        (Some(d), Some(have)) if !have.trim().eq_ignore_ascii_case(d.name) => {
            cx.warn(
                codes::OS_MISMATCH,
                None,
                format!(
                    "label {} = {have:?} but the operand is {} ({}); the symbol versions the binaries need are judged instead",
                    crate::LABEL_BASE_OS,
                    d.name,
                    cx.bin.operand_os_source
                ),
            );
        }
        (None, _) => {
            let needs = if cx.bin.newest_needs.is_empty() {
                "no versioned glibc symbols needed".to_string()
            } else {
                cx.bin
                    .newest_needs
                    .iter()
                    .map(|(rt, n)| format!("{rt} {} ({})", n.version, n.path))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            cx.info(
                codes::OS_UNKNOWN,
                None,
                format!(
                    "operand distribution unknown ({}): glibc needs not judged; the binaries need {needs}; pass --os {}",
                    cx.bin.operand_os_source,
                    DISTROS.iter().map(|d| d.name).collect::<Vec<_>>().join("|")
                ),
            );
        }
        _ => {}
    }
}

/// Every file under the configured directories must be readable, and
/// every directory on the way traversable, by the postgres user (uid 26).
/// Directories under `extension_control_path` must also be listable
/// (PostgreSQL lists them for `pg_available_extensions`); modules and
/// system libraries are opened by path, which needs traversal only.
pub(super) fn check_access(cx: &mut Ctx, ownership: Option<&Ownership>, configured: &[&Vec<PathBuf>]) {
    use std::os::unix::fs::MetadataExt;
    let root = cx.root;
    let owner_of = |rel: &Path, md: &std::fs::Metadata| -> FileOwner {
        match ownership {
            Some(o) => o.get(rel).copied().unwrap_or(if md.is_dir() {
                FileOwner::IMPLICIT_DIR
            } else {
                FileOwner { uid: u64::from(md.uid()), gid: u64::from(md.gid()), mode: md.mode() & 0o777 }
            }),
            None => FileOwner { uid: u64::from(md.uid()), gid: u64::from(md.gid()), mode: md.mode() & 0o777 },
        }
    };
    let mut reported: BTreeSet<PathBuf> = BTreeSet::new();
    let mut report = |cx: &mut Ctx, rel: &Path, o: FileOwner, what: &str| {
        if reported.iter().any(|r| rel.starts_with(r)) || !reported.insert(rel.to_path_buf()) {
            return;
        }
        cx.err(
            codes::NOT_READABLE_BY_POSTGRES,
            Some(&root.join(rel)),
            format!(
                "mode {:04o}, owner {}:{}: the postgres user (uid {}) cannot {what}; make it world-{} (chmod o+{}) or owned by uid {}",
                o.mode,
                o.uid,
                o.gid,
                compat::POSTGRES_UID,
                if what.starts_with("read") { "readable" } else { "traversable" },
                if what.starts_with("read") { "r" } else { "x" },
                compat::POSTGRES_UID
            ),
        );
    };
    let mut seen: BTreeSet<PathBuf> = BTreeSet::new();
    for (i, list) in configured.iter().enumerate() {
        let listed = i == 0; // the control directories come first
        let need = if listed { 5 } else { 1 };
        for dir in list.iter() {
            // Directories on the way to the configured one: traversable.
            let mut acc = PathBuf::new();
            let comps: Vec<_> = dir.components().collect();
            for c in comps.iter().take(comps.len().saturating_sub(1)) {
                acc.push(c);
                let Ok(md) = std::fs::symlink_metadata(root.join(&acc)) else {
                    break;
                };
                let o = owner_of(&acc, &md);
                if md.is_dir() && o.postgres_bits() & 1 == 0 {
                    report(cx, &acc, o, "traverse this directory");
                }
            }
            if !root.join(dir).is_dir() {
                continue;
            }
            for e in walkdir::WalkDir::new(root.join(dir)).follow_links(false).sort_by_file_name() {
                let Ok(e) = e else { continue };
                let Ok(rel) = e.path().strip_prefix(root) else {
                    continue;
                };
                if !seen.insert(rel.to_path_buf()) || e.file_type().is_symlink() {
                    continue;
                }
                let Ok(md) = e.metadata() else { continue };
                let o = owner_of(rel, &md);
                let bits = o.postgres_bits();
                if md.is_dir() {
                    if bits & need != need {
                        let what = if listed { "list and traverse this directory" } else { "traverse this directory" };
                        report(cx, rel, o, what);
                    }
                } else if bits & 4 == 0 {
                    report(cx, rel, o, "read this file");
                }
            }
        }
    }
}

pub(super) fn check_config(cx: &mut Ctx, config: &ImageConfigSummary, ref_names: &[String]) {
    let opts = cx.opts;
    for l in REQUIRED_LABELS {
        if !config.labels.contains_key(*l) {
            let sev = if opts.require_labels { Severity::Error } else { Severity::Warning };
            cx.add(
                sev,
                codes::MISSING_LABEL,
                None,
                format!("image config lacks label {l} (a convention of CloudNativePG's image repository; the operator does not read it)"),
            );
        }
    }
    if normalize_arch(&config.architecture) != normalize_arch(&opts.arch) || config.os != "linux" {
        cx.err(
            codes::ARCH_MISMATCH,
            None,
            format!(
                "image is {}/{} but linux/{} is expected",
                config.os,
                config.architecture,
                normalize_arch(&opts.arch)
            ),
        );
    }
    let user = config.user.as_deref().unwrap_or("").trim();
    let uid = user.split(':').next().unwrap_or("");
    if uid.is_empty() || uid == "0" || uid == "root" {
        let why = if uid.is_empty() { "is empty (root)".to_string() } else { format!("{user:?} is root") };
        cx.info(
            codes::ROOT_USER,
            None,
            format!("config User {why}; an image volume is never run, so this only matters if the image is also run as a container (the convention is 65532:65532)"),
        );
    }
    for name in ref_names {
        let last = name.rsplit('/').next().unwrap_or(name);
        let Some((_, tag)) = last.split_once(':') else {
            continue;
        };
        let parts: Vec<&str> = tag.split('-').collect();
        if parts.len() >= 3 {
            let major = parts[parts.len() - 2];
            if major.chars().all(|c| c.is_ascii_digit()) && major.parse::<u32>().ok() != Some(opts.pg_major) {
                cx.warn(
                    codes::TAG_PG_MAJOR_MISMATCH,
                    None,
                    format!("tag {tag:?} names PostgreSQL {major} but {} is expected", opts.pg_major),
                );
            }
        }
    }
}

pub(super) fn check_top_level(cx: &mut Ctx, configured: &[&Vec<PathBuf>]) {
    let mut allowed: BTreeSet<String> = ["lib", "share", "system", "licenses"].iter().map(|s| s.to_string()).collect();
    for list in configured {
        for p in list.iter() {
            if let Some(first) = p.iter().next() {
                allowed.insert(first.to_string_lossy().into_owned());
            }
        }
    }
    let names = sorted_names(cx.root);
    for n in &names {
        if !allowed.contains(n) {
            let p = cx.root.join(n);
            cx.warn(
                codes::UNEXPECTED_TOP_LEVEL_ENTRY,
                Some(&p),
                format!(
                    "unexpected top-level entry; expected only {}",
                    allowed.iter().cloned().collect::<Vec<_>>().join(", ")
                ),
            );
        }
    }
    if !names.iter().any(|n| n == "licenses") {
        cx.warn(codes::MISSING_LICENSES, None, "no licenses/ directory".into());
    }
}
