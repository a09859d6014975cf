//! What an extension image needs from the operand it is mounted into, read
//! from its binaries rather than its labels: the operand's distribution
//! (as glibc and libstdc++ symbol versions) and file access for the
//! postgres user.

use std::collections::HashMap;
use std::path::PathBuf;

/// A Debian release CloudNativePG builds operand images on, with the newest
/// symbol versions its C and C++ runtimes provide.
///
/// Source: the `libc6` and `libstdc++6` package versions of each release
/// (bullseye: glibc 2.31, GCC 10; bookworm: glibc 2.36, GCC 12; trixie:
/// glibc 2.41, GCC 14) and, per GCC release, the newest `GLIBCXX_` /
/// `CXXABI_` version listed in the libstdc++ manual's ABI policy
/// (GCC 10: 3.4.28 / 1.3.12, GCC 12: 3.4.30 / 1.3.13, GCC 14: 3.4.33 /
/// 1.3.15). The bookworm row was also checked against this machine's
/// libc6 2.36 and libstdc++6 12.2.
///
/// `GLIBCXX_`/`CXXABI_` needs are judged for every distribution because
/// every Debian-based operand image ships libstdc++ (Debian's `apt`
/// depends on it, and so does PostgreSQL's LLVM JIT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Distro {
    pub name: &'static str,
    pub glibc: (u32, u32),
    pub glibcxx: (u32, u32, u32),
    pub cxxabi: (u32, u32, u32),
}

/// Known operand distributions, oldest first.
pub const DISTROS: &[Distro] = &[
    Distro { name: "bullseye", glibc: (2, 31), glibcxx: (3, 4, 28), cxxabi: (1, 3, 12) },
    Distro { name: "bookworm", glibc: (2, 36), glibcxx: (3, 4, 30), cxxabi: (1, 3, 13) },
    Distro { name: "trixie", glibc: (2, 41), glibcxx: (3, 4, 33), cxxabi: (1, 3, 15) },
];

/// The distribution called `name` (case-insensitive).
pub fn distro(name: &str) -> Option<&'static Distro> {
    DISTROS.iter().find(|d| d.name.eq_ignore_ascii_case(name.trim()))
}

/// Comma-separated names of [`DISTROS`], for messages.
pub fn distro_names() -> String {
    DISTROS.iter().map(|d| d.name).collect::<Vec<_>>().join(", ")
}

/// The distribution a reference's tag ends with: `…/postgresql:18-minimal-trixie`,
/// `…/pgvector:0.8.1-18-bookworm`. `None` without a tag or a known suffix.
pub fn distro_from_reference(reference: &str) -> Option<&'static Distro> {
    let last = reference.rsplit('/').next().unwrap_or(reference);
    let last = last.split('@').next().unwrap_or(last);
    let (_, tag) = last.split_once(':')?;
    distro(tag.rsplit('-').next()?)
}

/// Which runtime a symbol version belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Runtime {
    /// `GLIBC_x.y` (libc, libm, libdl, libpthread, ld.so …).
    Glibc,
    /// `GLIBCXX_x.y.z` (libstdc++).
    Glibcxx,
    /// `CXXABI_x.y.z` (libstdc++).
    Cxxabi,
}

/// Parse a symbol version name into its runtime and numbers.
/// `GLIBC_ABI_DT_RELR` (what a linker using DT_RELR requires) counts as
/// glibc 2.36, the release that introduced it. Private and unnumbered
/// versions (`GLIBC_PRIVATE`, `CXXABI_TM_1`) give `None`.
pub fn parse_symbol_version(v: &str) -> Option<(Runtime, Vec<u32>)> {
    if v == "GLIBC_ABI_DT_RELR" {
        return Some((Runtime::Glibc, vec![2, 36]));
    }
    let (rt, rest) = if let Some(r) = v.strip_prefix("GLIBCXX_") {
        (Runtime::Glibcxx, r)
    } else if let Some(r) = v.strip_prefix("GLIBC_") {
        (Runtime::Glibc, r)
    } else if let Some(r) = v.strip_prefix("CXXABI_") {
        (Runtime::Cxxabi, r)
    } else {
        return None;
    };
    let nums: Option<Vec<u32>> = rest.split('.').map(|p| p.parse().ok()).collect();
    nums.filter(|n| !n.is_empty()).map(|n| (rt, n))
}

impl Distro {
    /// The newest version of `rt` this distribution provides.
    pub fn provides(&self, rt: Runtime) -> Vec<u32> {
        match rt {
            Runtime::Glibc => vec![self.glibc.0, self.glibc.1],
            Runtime::Glibcxx => vec![self.glibcxx.0, self.glibcxx.1, self.glibcxx.2],
            Runtime::Cxxabi => vec![self.cxxabi.0, self.cxxabi.1, self.cxxabi.2],
        }
    }

    /// `glibc 2.36` style text.
    pub fn glibc_text(&self) -> String {
        format!("glibc {}.{}", self.glibc.0, self.glibc.1)
    }
}

/// Dotted text of a version number list.
pub fn dotted(v: &[u32]) -> String {
    v.iter().map(u32::to_string).collect::<Vec<_>>().join(".")
}

/// uid of the postgres user in CloudNativePG's operand images.
pub const POSTGRES_UID: u64 = 26;
/// Its primary group.
pub const POSTGRES_GID: u64 = 26;

/// Owner and permission bits of one image entry, as the layer recorded them
/// (an image volume keeps them; the unpacked copy here belongs to whoever
/// unpacked it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileOwner {
    pub uid: u64,
    pub gid: u64,
    /// Permission bits (`0o777` mask).
    pub mode: u32,
}

impl FileOwner {
    /// What a runtime gives a directory no layer entry describes.
    pub const IMPLICIT_DIR: FileOwner = FileOwner { uid: 0, gid: 0, mode: 0o755 };

    /// The permission bits (`r`=4, `w`=2, `x`=1) that apply to the postgres
    /// user: owner bits for uid 26, group bits for gid 26, else other bits.
    pub fn postgres_bits(&self) -> u32 {
        if self.uid == POSTGRES_UID {
            (self.mode >> 6) & 7
        } else if self.gid == POSTGRES_GID {
            (self.mode >> 3) & 7
        } else {
            self.mode & 7
        }
    }
}

/// Owners and modes of an unpacked image's files and directories, keyed by
/// path relative to the image root (last layer wins).
pub type Ownership = HashMap<PathBuf, FileOwner>;

/// Extensions of PostgreSQL 18 itself: the procedural languages of `src/pl` and every control
/// file of `contrib/` (PostgreSQL 18.x source tree). CloudNativePG's operand images install
/// PGDG's `postgresql-18` package, which ships all of them.
pub const CORE_AND_CONTRIB_18: &[&str] = &[
    "amcheck",
    "autoinc",
    "bloom",
    "bool_plperl",
    "bool_plperlu",
    "btree_gin",
    "btree_gist",
    "citext",
    "cube",
    "dblink",
    "dict_int",
    "dict_xsyn",
    "earthdistance",
    "file_fdw",
    "fuzzystrmatch",
    "hstore",
    "hstore_plperl",
    "hstore_plperlu",
    "hstore_plpython3u",
    "insert_username",
    "intagg",
    "intarray",
    "isn",
    "jsonb_plperl",
    "jsonb_plperlu",
    "jsonb_plpython3u",
    "lo",
    "ltree",
    "ltree_plpython3u",
    "moddatetime",
    "pageinspect",
    "pg_buffercache",
    "pg_freespacemap",
    "pg_logicalinspect",
    "pg_prewarm",
    "pg_stat_statements",
    "pg_surgery",
    "pg_trgm",
    "pg_visibility",
    "pg_walinspect",
    "pgcrypto",
    "pgrowlocks",
    "pgstattuple",
    "plperl",
    "plperlu",
    "plpgsql",
    "plpython3u",
    "pltcl",
    "pltclu",
    "postgres_fdw",
    "refint",
    "seg",
    "sslinfo",
    "tablefunc",
    "tcn",
    "tsm_system_rows",
    "tsm_system_time",
    "unaccent",
    "uuid-ossp",
    "xml2",
];

/// What CNPG's `standard` operand images add to `minimal` (postgres-containers README).
pub const STANDARD_EXTRAS: &[&str] = &["pgaudit", "pg_failover_slots", "vector"];

/// The CNPG operand flavours: `minimal`, `standard`.
pub const OPERAND_FLAVORS: &[&str] = &["minimal", "standard"];

/// Whether CNPG's operand image of `flavor` (`minimal` | `standard`) ships extension `name`
/// itself; `None` for an unknown flavour.
pub fn operand_ships(flavor: &str, name: &str) -> Option<bool> {
    let contrib = CORE_AND_CONTRIB_18.contains(&name);
    match flavor {
        "minimal" => Some(contrib),
        "standard" => Some(contrib || STANDARD_EXTRAS.contains(&name)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse() {
        assert_eq!(parse_symbol_version("GLIBC_2.34"), Some((Runtime::Glibc, vec![2, 34])));
        assert_eq!(parse_symbol_version("GLIBCXX_3.4.30"), Some((Runtime::Glibcxx, vec![3, 4, 30])));
        assert_eq!(parse_symbol_version("CXXABI_1.3.13"), Some((Runtime::Cxxabi, vec![1, 3, 13])));
        assert_eq!(parse_symbol_version("GLIBC_ABI_DT_RELR"), Some((Runtime::Glibc, vec![2, 36])));
        assert_eq!(parse_symbol_version("GLIBC_PRIVATE"), None);
        assert_eq!(parse_symbol_version("CXXABI_TM_1"), None);
        assert_eq!(parse_symbol_version("OPENSSL_3.0.0"), None);
    }

    #[test]
    fn distros_from_names_and_tags() {
        assert_eq!(distro("Bookworm").unwrap().glibc, (2, 36));
        assert!(distro("alpine").is_none());
        let t = distro_from_reference("ghcr.io/cloudnative-pg/postgresql:18-minimal-trixie");
        assert_eq!(t.unwrap().name, "trixie");
        let b = distro_from_reference("localhost:5000/pgvector:0.8.1-18-bullseye@sha256:ab");
        assert_eq!(b.unwrap().name, "bullseye");
        assert!(distro_from_reference("localhost:5000/pgvector").is_none());
        assert!(distro_from_reference("x/pgvector:0.8.1-18").is_none());
        // Versions only grow from one release to the next.
        for w in DISTROS.windows(2) {
            assert!(w[0].glibc < w[1].glibc && w[0].glibcxx < w[1].glibcxx);
        }
    }

    #[test]
    fn postgres_permission_bits() {
        let f = |uid, gid, mode| FileOwner { uid, gid, mode }.postgres_bits();
        assert_eq!(f(26, 0, 0o600), 6);
        assert_eq!(f(0, 26, 0o640), 4);
        assert_eq!(f(0, 0, 0o600), 0);
        assert_eq!(f(0, 0, 0o644), 4);
        assert_eq!(f(65532, 65532, 0o751), 1);
    }
}
