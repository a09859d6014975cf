//! ELF inspection (architecture, DT_NEEDED, exports) and the base library
//! list that an extension image may rely on.

use goblin::elf::header;
use std::collections::{BTreeSet, HashSet, VecDeque};
use std::path::{Path, PathBuf};

/// What the linter needs to know about one ELF file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfInfo {
    pub machine: u16,
    pub is_64: bool,
    pub little_endian: bool,
    /// `e_type` (`ET_DYN` = 3 for shared objects).
    pub elf_type: u16,
    pub needed: Vec<String>,
    pub soname: Option<String>,
    /// DT_RUNPATH and DT_RPATH entries, `:`-split.
    pub runpath: Vec<String>,
    /// Defines and exports `Pg_magic_func`.
    pub exports_pg_magic: bool,
}

/// Whether `bytes` start with the ELF magic.
pub fn is_elf(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\x7fELF")
}

/// `(e_machine, 64-bit, little-endian)` expected for an OCI architecture.
pub fn arch_machine(arch: &str) -> Option<(u16, bool, bool)> {
    Some(match crate::normalize_arch(arch).as_str() {
        "amd64" => (header::EM_X86_64, true, true),
        "arm64" => (header::EM_AARCH64, true, true),
        "386" => (header::EM_386, false, true),
        "arm" => (header::EM_ARM, false, true),
        "ppc64le" => (header::EM_PPC64, true, true),
        "s390x" => (header::EM_S390, true, false),
        "riscv64" => (header::EM_RISCV, true, true),
        _ => return None,
    })
}

/// Human name of an `e_machine`.
pub fn machine_name(m: u16) -> String {
    match m {
        header::EM_X86_64 => "x86-64 (amd64)".into(),
        header::EM_AARCH64 => "aarch64 (arm64)".into(),
        header::EM_386 => "i386".into(),
        header::EM_ARM => "arm".into(),
        header::EM_PPC64 => "ppc64".into(),
        header::EM_S390 => "s390".into(),
        header::EM_RISCV => "riscv".into(),
        m => format!("machine {m}"),
    }
}

/// Read the ELF header only (works on truncated or minimal files).
pub fn read_header(bytes: &[u8]) -> Result<(u16, bool, bool, u16), String> {
    let h = goblin::elf::Elf::parse_header(bytes).map_err(|e| e.to_string())?;
    let is_64 = h.e_ident[header::EI_CLASS] == header::ELFCLASS64;
    let le = h.e_ident[header::EI_DATA] == header::ELFDATA2LSB;
    Ok((h.e_machine, is_64, le, h.e_type))
}

/// Parse an ELF file fully.
pub fn read_elf(bytes: &[u8]) -> Result<ElfInfo, String> {
    let elf = goblin::elf::Elf::parse(bytes).map_err(|e| e.to_string())?;
    let exports_pg_magic = elf.dynsyms.iter().any(|s| {
        s.st_shndx != 0
            && matches!(
                s.st_bind(),
                goblin::elf::sym::STB_GLOBAL | goblin::elf::sym::STB_WEAK
            )
            && elf.dynstrtab.get_at(s.st_name) == Some("Pg_magic_func")
    });
    let mut runpath = Vec::new();
    for r in elf.runpaths.iter().chain(elf.rpaths.iter()) {
        runpath.extend(r.split(':').filter(|s| !s.is_empty()).map(String::from));
    }
    Ok(ElfInfo {
        machine: elf.header.e_machine,
        is_64: elf.is_64,
        little_endian: elf.little_endian,
        elf_type: elf.header.e_type,
        needed: elf.libraries.iter().map(|s| s.to_string()).collect(),
        soname: elf.soname.map(String::from),
        runpath,
        exports_pg_magic,
    })
}

/// Library names (sonames) the base (PostgreSQL) image provides.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BaseLibs {
    pub names: BTreeSet<String>,
}

/// glibc and toolchain runtime libraries present in every glibc base image.
pub const GLIBC_BASE: &[&str] = &[
    "libc.so.6",
    "libm.so.6",
    "libdl.so.2",
    "librt.so.1",
    "libpthread.so.0",
    "libresolv.so.2",
    "libutil.so.1",
    "libanl.so.1",
    "libcrypt.so.1",
    "ld-linux-x86-64.so.2",
    "ld-linux-aarch64.so.1",
    "libgcc_s.so.1",
    "libstdc++.so.6",
];

impl BaseLibs {
    /// From explicit names.
    pub fn from_names<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        BaseLibs {
            names: names.into_iter().map(Into::into).collect(),
        }
    }

    /// [`GLIBC_BASE`].
    pub fn glibc() -> Self {
        Self::from_names(GLIBC_BASE.iter().copied())
    }

    /// Names one per line; blank lines and `#` comments ignored.
    pub fn from_list(text: &str) -> Self {
        Self::from_names(
            text.lines()
                .map(|l| l.split('#').next().unwrap_or("").trim())
                .filter(|l| !l.is_empty()),
        )
    }

    pub fn contains(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    /// Add every name of `other`.
    pub fn extend(&mut self, other: &BaseLibs) {
        self.names.extend(other.names.iter().cloned());
    }

    /// The DT_NEEDED closure of a PostgreSQL install (`bin/*`, `lib/**`):
    /// every needed name and soname reached, following libraries found in
    /// the install's `lib`, RUNPATH/RPATH (`$ORIGIN` expanded) and the
    /// host's standard library directories.
    pub fn from_pg_install(dir: &Path) -> std::io::Result<Self> {
        let mut queue: VecDeque<PathBuf> = VecDeque::new();
        for sub in ["bin", "lib"] {
            let d = dir.join(sub);
            if !d.is_dir() {
                continue;
            }
            for e in walkdir::WalkDir::new(&d).max_depth(3).follow_links(true) {
                let e = e.map_err(std::io::Error::other)?;
                if e.file_type().is_file() {
                    queue.push_back(e.path().to_path_buf());
                }
            }
        }
        if queue.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!(
                    "{}: no bin/ or lib/ files (not a PostgreSQL install?)",
                    dir.display()
                ),
            ));
        }
        let triplet = format!("{}-linux-gnu", std::env::consts::ARCH);
        let mut search: Vec<PathBuf> = vec![dir.join("lib")];
        for d in ["/lib", "/usr/lib"] {
            search.push(Path::new(d).join(&triplet));
        }
        search.extend(
            ["/lib64", "/usr/lib64", "/lib", "/usr/lib"]
                .iter()
                .map(PathBuf::from),
        );
        let mut seen: HashSet<PathBuf> = HashSet::new();
        let mut names = BTreeSet::new();
        while let Some(p) = queue.pop_front() {
            let canon = p.canonicalize().unwrap_or(p.clone());
            if !seen.insert(canon) {
                continue;
            }
            let Ok(bytes) = std::fs::read(&p) else {
                continue;
            };
            if !is_elf(&bytes) {
                continue;
            }
            let Ok(info) = read_elf(&bytes) else { continue };
            if let Some(s) = &info.soname {
                names.insert(s.clone());
            }
            let origin = p.parent().unwrap_or(Path::new("/")).to_path_buf();
            let own: Vec<PathBuf> = info
                .runpath
                .iter()
                .map(|r| {
                    PathBuf::from(
                        r.replace("$ORIGIN", &origin.to_string_lossy())
                            .replace("${ORIGIN}", &origin.to_string_lossy()),
                    )
                })
                .collect();
            for n in &info.needed {
                names.insert(n.clone());
                if let Some(found) = own
                    .iter()
                    .chain(search.iter())
                    .map(|d| d.join(n))
                    .find(|c| c.is_file())
                {
                    queue.push_back(found);
                }
            }
        }
        Ok(BaseLibs { names })
    }
}
