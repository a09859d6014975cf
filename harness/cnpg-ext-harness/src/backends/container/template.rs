//! The operand's initdb template copied out of the image, owned files and directories for
//! the postgres uid, and the probe that the operand image runs at all.

use std::path::{Path, PathBuf};

use super::argv::{self, ImageMount, LABEL_RUN};
use super::engine::{strings, Engine, EngineKind};
use super::operand;

/// Copies the data directory template out of the operand image into `dest/pgdata`.
pub(super) fn extract_template(
    engine: &Engine,
    run_id: &str,
    op: &operand::Operand,
    dest: &Path,
) -> Result<(), String> {
    use std::process::{Command, Stdio};
    if engine.kind == EngineKind::Podman {
        // Rootful podman mounts the image on the host: copy straight from it.
        if let Ok(out) = engine.run_sync(&strings(&["image", "mount", &op.image])) {
            let mounted = PathBuf::from(out.trim());
            let copied = copy_tree_owned(&mounted.join(argv::PGDATA.trim_start_matches('/')), &dest.join("pgdata"));
            engine.run_quiet(&strings(&["image", "unmount", &op.image]));
            match copied {
                Ok(()) if dest.join("pgdata/PG_VERSION").is_file() => return Ok(()),
                Ok(()) => return Err(format!("{} has no data directory template at {}", op.image, argv::PGDATA)),
                Err(e) => {
                    tracing::debug!("copying the template from the mounted image: {e}");
                    let _ = crate::plumbing::fsutil::remove_tree(dest);
                }
            }
        }
    }
    let name = argv::sanitize(&format!("{run_id}-template"));
    let (owner_key, owner) = crate::plumbing::supervisor::owner_label();
    let mut create = strings(&[
        "create",
        "--name",
        &name,
        "--label",
        &format!("{LABEL_RUN}={run_id}"),
        "--label",
        &format!("{owner_key}={owner}"),
    ]);
    create.push(op.image.clone());
    create.push(op.program("postgres"));
    engine.run_sync(&create)?;
    std::fs::create_dir_all(dest).map_err(|e| format!("{}: {e}", dest.display()))?;
    let result = (|| -> Result<(), String> {
        let mut cp = Command::new(&engine.program)
            .args(&engine.global)
            .args(["cp", &format!("{name}:{}", argv::PGDATA), "-"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        let tar = Command::new("tar")
            .args(["-x", "--numeric-owner", "--same-owner", "--same-permissions", "-C"])
            .arg(dest)
            .stdin(cp.stdout.take().expect("piped"))
            .output()
            .map_err(|e| format!("cannot run tar: {e}"))?;
        let cp = cp.wait_with_output().map_err(|e| e.to_string())?;
        if !cp.status.success() || !tar.status.success() {
            return Err(format!(
                "copying the template out of {}: {}{}",
                op.image,
                String::from_utf8_lossy(&cp.stderr).trim(),
                String::from_utf8_lossy(&tar.stderr).trim()
            ));
        }
        if !dest.join("pgdata/PG_VERSION").is_file() {
            return Err(format!("{} has no data directory template at {}", op.image, argv::PGDATA));
        }
        Ok(())
    })();
    engine.run_quiet(&strings(&["rm", "-f", &name]));
    result
}

/// Copies a tree keeping modes and owners (we are root).
pub(super) fn copy_tree_owned(src: &Path, dst: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let mut dirs = Vec::new();
    for entry in walkdir::WalkDir::new(src).follow_links(false) {
        let entry = entry.map_err(std::io::Error::other)?;
        let rel = entry.path().strip_prefix(src).map_err(std::io::Error::other)?;
        let target = dst.join(rel);
        let meta = entry.path().symlink_metadata()?;
        let ft = meta.file_type();
        if ft.is_dir() {
            std::fs::create_dir_all(&target)?;
            dirs.push((target.clone(), meta.mode()));
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
        std::os::unix::fs::lchown(&target, Some(meta.uid()), Some(meta.gid()))?;
    }
    for (d, mode) in dirs.into_iter().rev() {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode & 0o7777))?;
    }
    Ok(())
}

/// One short container with an image mount: the engine and runtime really can do it.
pub(super) fn probe(engine: &Engine, run_id: &str, op: &operand::Operand) -> Result<(), String> {
    let source = op.image.clone();
    let name = argv::sanitize(&format!("{run_id}-probe"));
    let labels = vec![(LABEL_RUN.to_string(), run_id.to_string()), crate::plumbing::supervisor::owner_label()];
    let mut args = argv::oneoff_run_args(
        engine.kind,
        &engine.run_flags,
        &name,
        &labels,
        false,
        &op.image,
        &[op.program("postgres"), "--version".into()],
    );
    args.insert(1, "--rm".into());
    let image_at = args.iter().position(|a| a == &op.image).expect("image in args");
    let m = ImageMount { reference: source, destination: "/cnpg-ext-harness-probe".into() };
    args.insert(image_at, argv::image_mount_arg(engine.kind, &m));
    args.insert(image_at, "--mount".into());
    let out = engine.run_sync(&args)?;
    if !out.contains("PostgreSQL") {
        return Err(format!("`postgres --version` in the operand image printed {out:?}"));
    }
    Ok(())
}
