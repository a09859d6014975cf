//! ELF inspection (architecture, DT_NEEDED, exports, the PostgreSQL major a
//! module was built for, the symbol versions it needs) and the base library
//! list that an extension image may rely on. The one ELF reader of the
//! workspace: `cnpg-ext-pg` reads dynamic sections through it too.

use goblin::elf::header;
use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
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
    /// When `Pg_magic_func` is exported: the magic block's `version` field
    /// (`PG_VERSION_NUM / 100`, e.g. 1500, 1800), or why it could not be read.
    pub pg_magic: Option<Result<u32, String>>,
    /// Symbol versions needed from other objects (`.gnu.version_r`), with the
    /// undefined symbols bound to each.
    pub version_needs: Vec<VersionNeed>,
}

impl ElfInfo {
    /// PostgreSQL major of the magic block (`1500` → 15), when read.
    pub fn pg_major(&self) -> Option<u32> {
        match &self.pg_magic {
            Some(Ok(v)) => Some(v / 100),
            _ => None,
        }
    }
}

/// One `Vernaux` of `.gnu.version_r`: `library` must provide `version`
/// (e.g. `libc.so.6` / `GLIBC_2.34`) for `symbols`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionNeed {
    pub library: String,
    pub version: String,
    /// Undefined dynamic symbols bound to this version, sorted.
    pub symbols: Vec<String>,
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
    let magic_sym = elf.dynsyms.iter().find(|s| {
        s.st_shndx != 0
            && matches!(s.st_bind(), goblin::elf::sym::STB_GLOBAL | goblin::elf::sym::STB_WEAK)
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
        exports_pg_magic: magic_sym.is_some(),
        pg_magic: magic_sym.map(|s| pg_magic_version(&elf, bytes, s.st_value)),
        version_needs: version_needs(&elf),
    })
}

/// `.gnu.version_r` entries joined with `.gnu.version` to name the symbols
/// that need each version.
fn version_needs(elf: &goblin::elf::Elf) -> Vec<VersionNeed> {
    let Some(verneed) = &elf.verneed else {
        return Vec::new();
    };
    // Version index (vna_other) → (library, version name).
    let mut by_index: BTreeMap<u16, (String, String)> = BTreeMap::new();
    for need in verneed.iter() {
        let lib = elf.dynstrtab.get_at(need.vn_file).unwrap_or("?").to_string();
        for aux in need.iter() {
            let name = elf.dynstrtab.get_at(aux.vna_name).unwrap_or("?").to_string();
            by_index.insert(aux.vna_other, (lib.clone(), name));
        }
    }
    let mut symbols: BTreeMap<u16, BTreeSet<String>> = BTreeMap::new();
    if let Some(versym) = &elf.versym {
        for (i, sym) in elf.dynsyms.iter().enumerate() {
            if sym.st_shndx != 0 {
                continue; // defined here
            }
            let Some(v) = versym.get_at(i) else { continue };
            let idx = v.version();
            if by_index.contains_key(&idx) {
                if let Some(n) = elf.dynstrtab.get_at(sym.st_name) {
                    symbols.entry(idx).or_default().insert(n.to_string());
                }
            }
        }
    }
    by_index
        .into_iter()
        .map(|(idx, (library, version))| VersionNeed {
            library,
            version,
            symbols: symbols.remove(&idx).unwrap_or_default().into_iter().collect(),
        })
        .collect()
}

/// File offset of virtual address `vaddr` (through the PT_LOAD segments).
fn file_offset(elf: &goblin::elf::Elf, vaddr: u64) -> Option<usize> {
    elf.program_headers
        .iter()
        .filter(|p| p.p_type == goblin::elf::program_header::PT_LOAD)
        .find(|p| vaddr >= p.p_vaddr && vaddr < p.p_vaddr.saturating_add(p.p_filesz))
        .and_then(|p| usize::try_from(p.p_offset + (vaddr - p.p_vaddr)).ok())
}

/// How many bytes of `Pg_magic_func` are searched for the instruction that
/// loads the magic block's address (prologue, `endbr64`, frame setup).
const MAGIC_FUNC_SCAN: usize = 64;

/// Read the `version` field of the magic block `Pg_magic_func` returns.
///
/// `PG_MODULE_MAGIC` defines `Pg_magic_func` as `return &Pg_magic_data;` with
/// a static struct, so position-independent code loads its address
/// relative to the program counter: `lea reg, [rip + disp32]` on x86-64,
/// `adrp` + `add` (or `adr`) on aarch64, at -O0 and -O2 alike. The struct
/// starts `int len; int version; …` in every release since 8.2 (in 18 the
/// ABI fields moved into a nested struct, `version` still at offset 4).
fn pg_magic_version(elf: &goblin::elf::Elf, bytes: &[u8], func: u64) -> Result<u32, String> {
    let off =
        file_offset(elf, func).ok_or_else(|| format!("Pg_magic_func at {func:#x} is outside the file's segments"))?;
    let code = &bytes[off..bytes.len().min(off + MAGIC_FUNC_SCAN)];
    let target = match elf.header.e_machine {
        header::EM_X86_64 => x86_64_rip_lea(code, func),
        header::EM_AARCH64 if elf.little_endian => aarch64_adrp_add(code, func),
        m => {
            return Err(format!("reading Pg_magic_func is implemented for x86-64 and aarch64, not {}", machine_name(m)))
        }
    }
    .ok_or_else(|| {
        "Pg_magic_func does not load its magic block PC-relatively as PostgreSQL's macro compiles to".to_string()
    })?;
    let at = file_offset(elf, target).ok_or_else(|| format!("the magic block at {target:#x} is not in the file"))?;
    let word = |i: usize| -> Option<u32> {
        let b: [u8; 4] = bytes.get(at + i..at + i + 4)?.try_into().ok()?;
        Some(if elf.little_endian { u32::from_le_bytes(b) } else { u32::from_be_bytes(b) })
    };
    let (len, version) = word(0).zip(word(4)).ok_or_else(|| "the magic block is truncated".to_string())?;
    if !(8..=4096).contains(&len) || !(800..=9999).contains(&version) {
        return Err(format!("the magic block does not look like one (len {len}, version {version})"));
    }
    Ok(version)
}

/// Target of the first `lea r64, [rip + disp32]` in `code` (at `addr`).
pub(crate) fn x86_64_rip_lea(code: &[u8], addr: u64) -> Option<u64> {
    (0..code.len().saturating_sub(6)).find_map(|i| {
        let rex = code[i];
        // REX.W (0x48/0x4c), opcode 8D, ModRM mod=00 rm=101 (RIP-relative).
        if (rex == 0x48 || rex == 0x4c) && code[i + 1] == 0x8d && code[i + 2] & 0xc7 == 0x05 {
            let disp = i32::from_le_bytes(code[i + 3..i + 7].try_into().ok()?);
            Some(addr.wrapping_add(i as u64 + 7).wrapping_add_signed(i64::from(disp)))
        } else {
            None
        }
    })
}

/// Target of the first `adrp xN` + `add xN, xN, #imm` (or `adr xN`) in `code`.
pub(crate) fn aarch64_adrp_add(code: &[u8], addr: u64) -> Option<u64> {
    let insns: Vec<u32> = code.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    // ADR/ADRP: op(31) immlo(30:29) 10000(28:24) immhi(23:5) Rd(4:0).
    let pc_rel = |insn: u32| -> i64 {
        let imm = (((insn >> 5) & 0x7ffff) << 2) | ((insn >> 29) & 3);
        // 21-bit signed.
        (i64::from(imm) << 43) >> 43
    };
    for (i, &insn) in insns.iter().enumerate() {
        if insn & 0x1f00_0000 != 0x1000_0000 {
            continue;
        }
        let pc = addr.wrapping_add(i as u64 * 4);
        let rd = insn & 0x1f;
        if insn & 0x8000_0000 == 0 {
            return Some(pc.wrapping_add_signed(pc_rel(insn))); // ADR
        }
        let page = (pc & !0xfff).wrapping_add_signed(pc_rel(insn) << 12);
        // ADD (immediate, 64-bit): 1001000100 sh imm12 Rn Rd, with Rn = Rd of the ADRP.
        return insns[i + 1..].iter().find_map(|&a| {
            (a & 0xff80_0000 == 0x9100_0000 && (a >> 5) & 0x1f == rd).then(|| {
                let imm = u64::from((a >> 10) & 0xfff);
                page + if a & (1 << 22) != 0 { imm << 12 } else { imm }
            })
        });
    }
    None
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
        BaseLibs { names: names.into_iter().map(Into::into).collect() }
    }

    /// [`GLIBC_BASE`].
    pub fn glibc() -> Self {
        Self::from_names(GLIBC_BASE.iter().copied())
    }

    /// Names one per line; blank lines and `#` comments ignored.
    pub fn from_list(text: &str) -> Self {
        Self::from_names(text.lines().map(|l| l.split('#').next().unwrap_or("").trim()).filter(|l| !l.is_empty()))
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
                format!("{}: no bin/ or lib/ files (not a PostgreSQL install?)", dir.display()),
            ));
        }
        let triplet = format!("{}-linux-gnu", std::env::consts::ARCH);
        let mut search: Vec<PathBuf> = vec![dir.join("lib")];
        for d in ["/lib", "/usr/lib"] {
            search.push(Path::new(d).join(&triplet));
        }
        search.extend(["/lib64", "/usr/lib64", "/lib", "/usr/lib"].iter().map(PathBuf::from));
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
                        r.replace("$ORIGIN", &origin.to_string_lossy()).replace("${ORIGIN}", &origin.to_string_lossy()),
                    )
                })
                .collect();
            for n in &info.needed {
                names.insert(n.clone());
                if let Some(found) = own.iter().chain(search.iter()).map(|d| d.join(n)).find(|c| c.is_file()) {
                    queue.push_back(found);
                }
            }
        }
        Ok(BaseLibs { names })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x86_64_lea_after_endbr64_and_frame_setup() {
        // endbr64; push rbp; mov rbp,rsp; lea rax,[rip+0x10]; pop rbp; ret
        let code =
            [0xf3, 0x0f, 0x1e, 0xfa, 0x55, 0x48, 0x89, 0xe5, 0x48, 0x8d, 0x05, 0x10, 0x00, 0x00, 0x00, 0x5d, 0xc3];
        assert_eq!(x86_64_rip_lea(&code, 0x1000), Some(0x1000 + 8 + 7 + 0x10));
        // Negative displacement, r8 as destination (REX 0x4c).
        let code = [0x4c, 0x8d, 0x05, 0xf0, 0xff, 0xff, 0xff, 0xc3];
        assert_eq!(x86_64_rip_lea(&code, 0x2000), Some(0x2000 + 7 - 0x10));
        assert_eq!(x86_64_rip_lea(&[0x31, 0xc0, 0xc3], 0), None);
    }

    #[test]
    fn aarch64_adrp_add_and_adr() {
        let le = |w: &[u32]| w.iter().flat_map(|i| i.to_le_bytes()).collect::<Vec<u8>>();
        // adrp x0, +1 page; add x0, x0, #0x123; ret
        let code = le(&[0xb000_0000, 0x9104_8c00, 0xd65f_03c0]);
        assert_eq!(aarch64_adrp_add(&code, 0x10_004), Some(0x11_123));
        // adrp x0, -1 page; nop; add x0, x0, #0x8
        let code = le(&[0xf0ff_ffe0, 0xd503_201f, 0x9100_2000]);
        assert_eq!(aarch64_adrp_add(&code, 0x10_000), Some(0xf_008));
        // adr x0, +0x40
        let code = le(&[0x1000_0200]);
        assert_eq!(aarch64_adrp_add(&code, 0x500), Some(0x540));
        // An add into another register than the adrp's does not count.
        let code = le(&[0xb000_0000, 0x9104_8c21]);
        assert_eq!(aarch64_adrp_add(&code, 0), None);
    }
}
