//! The ELF files of an image: architecture, class, PostgreSQL magic block, symbol versions
//! against the operand, needed libraries.

use super::types::{codes, Ctx, NeededVersion};
use crate::compat::{self, Runtime};
use crate::elf::{arch_machine, is_elf, machine_name, read_elf, read_header};
use crate::platform::normalize_arch;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn looks_like_shared_object(name: &str) -> bool {
    name.ends_with(".so") || name.contains(".so.")
}

/// Lexically resolve `$ORIGIN`-relative runpath `rp` for a file in `dir`
/// (relative to the root); `None` if it leaves the root or is absolute.
pub(super) fn origin_dir(dir_rel: &Path, rp: &str) -> Option<PathBuf> {
    let rest = rp.strip_prefix("$ORIGIN").or_else(|| rp.strip_prefix("${ORIGIN}"))?;
    let mut out: Vec<std::ffi::OsString> = dir_rel.iter().map(|c| c.to_os_string()).collect();
    for c in rest.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop()?;
            }
            c => out.push(c.into()),
        }
    }
    Some(out.iter().collect())
}

/// OCI name of an `e_machine` where known, else its description.
fn machine_arch(m: u16) -> String {
    ["amd64", "arm64", "386", "arm", "ppc64le", "s390x", "riscv64"]
        .iter()
        .find(|a| arch_machine(a).map(|x| x.0) == Some(m))
        .map(|a| a.to_string())
        .unwrap_or_else(|| machine_name(m))
}

/// Whether the file starts with the ELF magic (reads 4 bytes).
fn starts_with_elf_magic(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 4];
    std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut head)).map(|_| is_elf(&head)).unwrap_or(false)
}

fn runtime_key(rt: Runtime) -> &'static str {
    match rt {
        Runtime::Glibc => "GLIBC",
        Runtime::Glibcxx => "GLIBCXX",
        Runtime::Cxxabi => "CXXABI",
    }
}

/// Symbol versions `path` needs: the newest per runtime is recorded, and
/// any the operand's glibc / libstdc++ lacks is an error.
fn check_versions(cx: &mut Ctx, path: &Path, info: &crate::elf::ElfInfo) {
    let rel = cx.rel(path);
    let mut too_new: BTreeMap<Runtime, Vec<String>> = BTreeMap::new();
    for need in &info.version_needs {
        let Some((rt, nums)) = compat::parse_symbol_version(&need.version) else {
            continue;
        };
        let key = runtime_key(rt);
        let newer = match cx.bin.newest_needs.get(key) {
            Some(n) => {
                let cur: Vec<u32> = n.version.split('.').filter_map(|p| p.parse().ok()).collect();
                nums > cur
            }
            None => true,
        };
        if newer {
            cx.bin.newest_needs.insert(
                key.to_string(),
                NeededVersion {
                    version: compat::dotted(&nums),
                    path: rel.clone(),
                    symbol: need.symbols.first().map(|s| format!("{s}@{}", need.version)),
                },
            );
        }
        if let Some(d) = cx.distro {
            if nums > d.provides(rt) {
                let mut shown: Vec<String> =
                    need.symbols.iter().take(4).map(|s| format!("{s}@{}", need.version)).collect();
                if shown.is_empty() {
                    shown.push(need.version.clone());
                } else if need.symbols.len() > 4 {
                    shown.push(format!("{} more", need.symbols.len() - 4));
                }
                too_new.entry(rt).or_default().push(shown.join(", "));
            }
        }
    }
    let Some(d) = cx.distro else { return };
    for (rt, list) in too_new {
        let (code, have) = match rt {
            Runtime::Glibc => (codes::GLIBC_TOO_NEW, d.glibc_text()),
            rt => (
                codes::LIBSTDCXX_TOO_NEW,
                format!("libstdc++ up to {}_{}", runtime_key(rt), compat::dotted(&d.provides(rt))),
            ),
        };
        cx.err(
            code,
            Some(path),
            format!(
                "needs {} but the operand ({}, {}) has {have}: the dynamic loader refuses it; build it on {} or older",
                list.join("; "),
                d.name,
                cx.bin.operand_os_source,
                d.name
            ),
        );
    }
}

/// Every ELF file of the image (and every file named like a shared object) checked on its own,
/// then the architectures of all of them together.
pub(super) fn check_elves(cx: &mut Ctx, lib_dirs: &[PathBuf], sys_dirs: &[PathBuf], modules: &BTreeSet<PathBuf>) {
    let root = cx.root;
    let scope = ElfScope { lib_abs: lib_dirs.iter().map(|d| root.join(d)).collect(), sys_dirs, modules };
    let mut machines: Vec<(PathBuf, u16)> = Vec::new();
    for e in walkdir::WalkDir::new(root).min_depth(1).follow_links(false).sort_by_file_name() {
        let Ok(e) = e else { continue };
        let path = e.path();
        if e.file_type().is_symlink() {
            if std::fs::metadata(path).is_err() {
                let t = std::fs::read_link(path).map(|t| t.display().to_string()).unwrap_or_default();
                cx.warn(codes::DANGLING_SYMLINK, Some(path), format!("symlink to {t:?}, which does not exist"));
            }
            continue;
        }
        if e.file_type().is_file() {
            let so_name = looks_like_shared_object(&e.file_name().to_string_lossy());
            if let Some(machine) = check_elf_file(cx, path, so_name, &scope) {
                machines.push((path.to_path_buf(), machine));
            }
        }
    }
    check_one_architecture(cx, &machines);
}

/// What decides whether an ELF file is an extension module and where its libraries may come from.
struct ElfScope<'a> {
    lib_abs: Vec<PathBuf>,
    sys_dirs: &'a [PathBuf],
    modules: &'a BTreeSet<PathBuf>,
}

/// One file: its `e_machine` when it is an ELF file (whatever else is wrong with it), `None`
/// when it is not one or cannot be read.
fn check_elf_file(cx: &mut Ctx, path: &Path, so_name: bool, scope: &ElfScope) -> Option<u16> {
    if !so_name && !starts_with_elf_magic(path) {
        return None;
    }
    let bytes = std::fs::read(path).ok()?;
    if !is_elf(&bytes) {
        cx.err(codes::NOT_ELF, Some(path), "named like a shared object but is not an ELF file".into());
        return None;
    }
    let (machine, is64, le, _) = match read_header(&bytes) {
        Ok(h) => h,
        Err(err) => {
            cx.err(codes::UNPARSABLE_ELF, Some(path), format!("bad ELF header: {err}"));
            return None;
        }
    };
    if let Some((want_m, want_64, want_le)) = arch_machine(&cx.opts.arch) {
        if machine != want_m || le != want_le {
            let want = normalize_arch(&cx.opts.arch);
            cx.err(
                codes::WRONG_ARCH,
                Some(path),
                format!("ELF for {} but the image must be {want}", machine_name(machine)),
            );
            return Some(machine);
        }
        if is64 != want_64 {
            let bits = |b: bool| if b { 64 } else { 32 };
            cx.err(
                codes::WRONG_ELF_CLASS,
                Some(path),
                format!("{}-bit ELF on a {}-bit architecture", bits(is64), bits(want_64)),
            );
            return Some(machine);
        }
    }
    let info = match read_elf(&bytes) {
        Ok(i) => i,
        Err(err) => {
            cx.err(codes::UNPARSABLE_ELF, Some(path), format!("cannot parse ELF: {err}"));
            return Some(machine);
        }
    };
    if so_name && info.elf_type != goblin::elf::header::ET_DYN {
        cx.warn(codes::NOT_SHARED_OBJECT, Some(path), "not a shared object (ET_DYN)".into());
    }
    let parent = path.parent().unwrap_or(cx.root);
    if so_name && (scope.modules.contains(path) || scope.lib_abs.iter().any(|d| d == parent)) {
        check_module_magic(cx, path, &info);
    }
    check_versions(cx, path, &info);
    check_needed(cx, path, &info, scope.sys_dirs);
    Some(machine)
}

/// An extension module exports `Pg_magic_func`, and its magic block names the Cluster's major.
fn check_module_magic(cx: &mut Ctx, path: &Path, info: &crate::elf::ElfInfo) {
    if !info.exports_pg_magic {
        cx.err(
            codes::MISSING_PG_MAGIC,
            Some(path),
            "extension module does not export Pg_magic_func (not built with PG_MODULE_MAGIC?)".into(),
        );
    }
    match &info.pg_magic {
        Some(Ok(v)) => {
            let major = v / 100;
            let rel = cx.rel(path);
            cx.bin.pg_majors.insert(rel, major);
            if major != cx.opts.pg_major {
                cx.err(
                    codes::MODULE_PG_MAJOR_MISMATCH,
                    Some(path),
                    format!(
                        "built for PostgreSQL {major} (magic block version {v}) but the Cluster runs PostgreSQL {}: PostgreSQL refuses to load it (incompatible library)",
                        cx.opts.pg_major
                    ),
                );
            }
        }
        Some(Err(why)) => cx.warn(
            codes::UNREADABLE_PG_MAGIC,
            Some(path),
            format!("cannot tell which PostgreSQL major it is built for: {why}"),
        ),
        None => {}
    }
}

/// Every `DT_NEEDED` library is in the base image, the image's system library dirs, or a
/// `$ORIGIN`-relative runpath inside the image (each missing one said once per file).
fn check_needed(cx: &mut Ctx, path: &Path, info: &crate::elf::ElfInfo, sys_dirs: &[PathBuf]) {
    let root = cx.root;
    let parent = path.parent().unwrap_or(root);
    let dir_rel = parent.strip_prefix(root).unwrap_or(Path::new("")).to_path_buf();
    let origin_dirs: Vec<PathBuf> = info.runpath.iter().filter_map(|rp| origin_dir(&dir_rel, rp)).collect();
    let mut reported = BTreeSet::new();
    for n in &info.needed {
        if cx.opts.base_libs.contains(n) {
            continue;
        }
        let found = sys_dirs.iter().chain(origin_dirs.iter()).any(|d| root.join(d).join(n).exists());
        if !found && reported.insert(n.clone()) {
            let sys = cx.opts.ld_library_path.join(", ");
            cx.err(
                codes::MISSING_NEEDED_LIBRARY,
                Some(path),
                format!("needs {n}, which is neither in the image's system library dirs ({sys}) nor in the base image library list"),
            );
        }
    }
}

/// Architecture from the ELF files themselves: one for all.
fn check_one_architecture(cx: &mut Ctx, machines: &[(PathBuf, u16)]) {
    let mut counts: BTreeMap<u16, usize> = BTreeMap::new();
    for (_, m) in machines {
        *counts.entry(*m).or_default() += 1;
    }
    for (m, n) in &counts {
        cx.bin.architectures.insert(machine_arch(*m), *n);
    }
    if counts.len() <= 1 {
        return;
    }
    let main = arch_machine(&cx.opts.arch)
        .map(|e| e.0)
        .filter(|m| counts.contains_key(m))
        .or_else(|| counts.iter().max_by_key(|(_, n)| **n).map(|(m, _)| *m))
        .unwrap_or_default();
    let others = counts.get(&main).copied().unwrap_or(0);
    for (p, m) in machines.iter().filter(|(_, m)| *m != main) {
        cx.err(
            codes::MIXED_ARCH,
            Some(p),
            format!(
                "ELF for {} while {others} other ELF file(s) of the image are for {}: one image, one architecture",
                machine_name(*m),
                machine_name(main)
            ),
        );
    }
}
