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

/// Whether `cc` runs. Without it a test says so on stderr and is skipped, except under
/// `CI=true` or with `CNPG_EXT_HARNESS_REQUIRE_CC` set, where the skip is a failure (the one
/// rule of every test of this project: see the harness's `tests/common.rs`, `cannot_run`).
fn have_cc() -> bool {
    let ok = Command::new("cc")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        let ci = std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
        let required = std::env::var("CNPG_EXT_HARNESS_REQUIRE_CC")
            .is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false"));
        assert!(
            !ci && !required,
            "cannot run: no C compiler `cc` on PATH to build the test's shared objects (a skip is a failure under CI=true or CNPG_EXT_HARNESS_REQUIRE_CC)"
        );
        eprintln!(
            "SKIPPED: no C compiler `cc` on PATH; this test needs one to build shared objects; CI=true or CNPG_EXT_HARNESS_REQUIRE_CC=1 fails instead"
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
    let st = Command::new("cc")
        .args(["-shared", "-fPIC", "-O0", "-o"])
        .arg(out)
        .arg(&c)
        .args(extra)
        .status()
        .unwrap();
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
            (
                cnpg_ext_images::LABEL_BASE_NAME,
                "ghcr.io/cloudnative-pg/postgresql:18-minimal-trixie",
            ),
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
    let (machine, name): (u16, &str) = if cfg!(target_arch = "aarch64") {
        (62, "x86-64")
    } else {
        (183, "aarch64")
    };
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
        arch: if cfg!(target_arch = "aarch64") {
            "amd64".into()
        } else {
            "arm64".into()
        },
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
    assert_error(
        &e.lint(),
        codes::MISSING_MODULE,
        Some("share/extension/greet.control"),
    );
}

#[test]
fn needed_library_nothing_provides() {
    if !have_cc() {
        return;
    }
    let e = Ext::good();
    let deps = e.tmp.path().join("deps");
    cc_so(
        &deps.join("libgreetdep.so.1"),
        "int dep(void) { return 1; }\n",
        &["-Wl,-soname,libgreetdep.so.1"],
    );
    std::os::unix::fs::symlink("libgreetdep.so.1", deps.join("libgreetdep.so")).unwrap();
    let src = format!("{MODULE_C}\nint dep(void);\nint use_dep(void) {{ return dep(); }}\n");
    let l = format!("-L{}", deps.display());
    cc_so(&e.tree.join("lib/greet.so"), &src, &[&l, "-lgreetdep"]);
    let r = e.lint();
    assert_error(&r, codes::MISSING_NEEDED_LIBRARY, Some("lib/greet.so"));
    assert!(r.to_text().contains("libgreetdep.so.1"));
    // Shipping it in system/ fixes it.
    std::fs::create_dir_all(e.tree.join("system")).unwrap();
    std::fs::copy(
        deps.join("libgreetdep.so.1"),
        e.tree.join("system/libgreetdep.so.1"),
    )
    .unwrap();
    let r = e.lint();
    assert!(r.findings.is_empty(), "{}", r.to_text());
    // So does the base library list.
    std::fs::remove_dir_all(e.tree.join("system")).unwrap();
    let mut o = LintOptions::default();
    o.base_libs
        .extend(&BaseLibs::from_names(["libgreetdep.so.1"]));
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
    assert_error(
        &e.lint(),
        codes::MISSING_INSTALL_SCRIPT,
        Some("share/extension/greet.control"),
    );
    std::fs::write(
        e.tree.join("share/extension/greet--1.0--2.0.sql"),
        "SELECT 1;\n",
    )
    .unwrap();
    let r = e.lint();
    assert!(!r.has(codes::MISSING_INSTALL_SCRIPT), "{}", r.to_text());
    // The sql.version label (1.0) no longer matches default_version: warning only.
    assert!(
        r.has(codes::SQL_VERSION_MISMATCH) && !r.has_errors(),
        "{}",
        r.to_text()
    );
}

#[test]
fn root_user() {
    if !have_cc() {
        return;
    }
    for user in ["0:0", "root", ""] {
        let mut e = Ext::good();
        e.opts.user = user.into();
        assert_error(&e.lint(), codes::ROOT_USER, None);
    }
}

#[test]
fn missing_pg_magic_and_bad_control() {
    if !have_cc() {
        return;
    }
    let e = Ext::good();
    cc_so(
        &e.tree.join("lib/helper.so"),
        "int helper(void) { return 0; }\n",
        &[],
    );
    std::fs::write(
        e.tree.join("share/extension/broken.control"),
        "default_version = '1.0\n",
    )
    .unwrap();
    let r = e.lint();
    assert_error(&r, codes::MISSING_PG_MAGIC, Some("lib/helper.so"));
    assert_error(
        &r,
        codes::CONTROL_PARSE_ERROR,
        Some("share/extension/broken.control"),
    );
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
    let o = LintOptions {
        pg_major: 17,
        ..LintOptions::default()
    };
    let r = e.lint_with(&o);
    assert_error(&r, codes::PG_MAJOR_MISMATCH, None);
    assert_error(&r, codes::MISSING_LABEL, None);
    let w = r
        .findings
        .iter()
        .find(|f| f.code == codes::UNEXPECTED_TOP_LEVEL_ENTRY)
        .expect("warning");
    assert_eq!(
        (w.severity, w.path.as_deref()),
        (Severity::Warning, Some("bin"))
    );
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
        format: ReportFormat::Json,
        base_libs: None,
        pg_install: None,
    };
    assert_eq!(
        run(lint_cmd(out.clone(), 18)),
        0,
        "derived labels make a clean image"
    );
    assert_eq!(run(lint_cmd(out.clone(), 17)), 1);
    assert_eq!(run(lint_cmd(e.tmp.path().join("nope"), 18)), 2);
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
    cc_so(
        &inst.join("lib/libpqish.so.5"),
        "int pq(void) { return 5; }\n",
        &["-Wl,-soname,libpqish.so.5"],
    );
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
