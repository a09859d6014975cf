//! Shared by the integration tests: repository paths, running the binary, finding processes.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cnpg-ext-harness"));
    c.current_dir(repo()).arg("--verbose").env_remove("PG_CONFIG");
    c
}

pub fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("run the harness binary")
}

pub fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// A work-directory parent only this test uses, so leftovers can be attributed.
pub fn workdir_parent(name: &str) -> tempfile::TempDir {
    let d = tempfile::Builder::new().prefix(&format!("cnpg-ext-test-{name}-")).tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

/// pids of live (non-zombie) processes whose command line mentions `needle`.
pub fn processes_mentioning(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        let zombie = std::fs::read_to_string(e.path().join("stat"))
            .map(|s| s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
            .unwrap_or(true);
        if !zombie && cmd.contains(needle) {
            out.push(pid);
        }
    }
    out
}

/// A copy of one scenario in a scratch repository layout (with `fixtures/` linked), so the
/// copy can be edited without touching the real one.
pub fn scenario_copy(id: &str) -> (tempfile::TempDir, PathBuf) {
    let root = tempfile::Builder::new().prefix("cnpg-ext-copy-").tempdir().unwrap();
    std::os::unix::fs::symlink(repo().join("fixtures"), root.path().join("fixtures")).unwrap();
    let dest = root.path().join("scenarios").join(id);
    std::fs::create_dir_all(&dest).unwrap();
    for f in std::fs::read_dir(repo().join("scenarios").join(id)).unwrap().flatten() {
        std::fs::copy(f.path(), dest.join(f.file_name())).unwrap();
    }
    (root, dest)
}

/// The one skip rule of every test of this project (`cnpg_ext_testutil`).
#[allow(unused_imports)]
pub use cnpg_ext_testutil::cannot_run;
