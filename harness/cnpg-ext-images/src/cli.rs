//! `image build|unpack|lint` subcommands (wired by the harness binary as
//! `cnpg-ext-harness image <sub>`).
//!
//! Exit codes: 0 success (lint: no error findings), 1 lint error findings,
//! 2 unreadable or invalid input (one `error:` line on stderr).

use crate::elf::BaseLibs;
use crate::lint::{lint, LintOptions};
use crate::{
    build_layout, control, unpack, write_docker_archive, write_oci_archive, BuildOptions, ImageError, Platform,
    UnpackOptions, DEFAULT_MAX_ENTRIES, DEFAULT_MAX_TOTAL_BYTES,
};
use cnpg_ext_exit::Exit;
use std::path::{Path, PathBuf};

/// Output format of `image build`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BuildFormat {
    /// OCI image layout directory.
    Oci,
    /// Tar of an OCI image layout.
    OciArchive,
    /// `docker save` tar (for `docker load`, `podman load`, `kind load image-archive`).
    DockerArchive,
}

/// Output format of `image lint`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    Text,
    Json,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected key=value, got {s:?}")),
    }
}

/// Image subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ImageCommand {
    /// Build a reproducible FROM-scratch extension image from a directory tree
    /// (lib/, share/extension/, system/, licenses/).
    Build {
        /// Root of the image filesystem.
        tree: PathBuf,
        /// Image reference, e.g. ghcr.io/org/pgvector:0.8.1-18-trixie.
        #[arg(long)]
        tag: String,
        /// Output path (directory for --format oci, else a tar file).
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
        #[arg(long, value_enum, default_value_t = BuildFormat::Oci)]
        format: BuildFormat,
        /// Config label key=value (repeatable; overrides the derived ones).
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// PostgreSQL major, written to io.cloudnativepg.image.base.pgmajor.
        #[arg(long, default_value_t = 18)]
        pg_major: u32,
        /// OS distribution, written to io.cloudnativepg.image.base.os.
        #[arg(long, default_value = "trixie")]
        os: String,
        /// Architecture (default: host).
        #[arg(long)]
        arch: Option<String>,
        /// Config User.
        #[arg(long, default_value = "65532:65532")]
        user: String,
    },
    /// Unpack an image (OCI layout, OCI archive or docker-archive) safely.
    Unpack {
        image: PathBuf,
        /// Destination directory (must not exist).
        dest: PathBuf,
        /// Platform os/arch[/variant] to pick from a multi-platform image.
        #[arg(long)]
        platform: Option<Platform>,
        /// Cap on total uncompressed file bytes.
        #[arg(long, default_value_t = DEFAULT_MAX_TOTAL_BYTES)]
        max_bytes: u64,
        /// Cap on the number of layer entries.
        #[arg(long, default_value_t = DEFAULT_MAX_ENTRIES)]
        max_entries: u64,
    },
    /// Lint an extension image. Exit 0 clean (warnings and infos allowed), 1 errors,
    /// 2 unreadable image or invalid option.
    Lint {
        image: PathBuf,
        #[arg(long, default_value_t = 18)]
        pg_major: u32,
        /// Expected architecture (default: host).
        #[arg(long)]
        arch: Option<String>,
        /// Operand distribution (bullseye, bookworm, trixie): the glibc and
        /// libstdc++ symbol versions the binaries need are judged against it.
        /// Default: from --image-name's tag, else the image's own tag, else unknown.
        #[arg(long)]
        os: Option<String>,
        /// The Cluster's imageName (operand image); its tag suffix names the
        /// distribution (e.g. ghcr.io/cloudnative-pg/postgresql:18-minimal-trixie).
        #[arg(long)]
        image_name: Option<String>,
        /// Missing io.cloudnativepg.image.* labels are errors (default: warnings).
        #[arg(long)]
        require_labels: bool,
        /// The CNPG operand image flavour (minimal, standard): an extension it already ships
        /// is reported shadowed.
        #[arg(long, default_value = "minimal")]
        operand: String,
        #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
        format: ReportFormat,
        /// File of base-image library names, one per line (replaces the glibc default).
        #[arg(long)]
        base_libs: Option<PathBuf>,
        /// Add the DT_NEEDED closure of this PostgreSQL install to the base libraries.
        #[arg(long)]
        pg_install: Option<PathBuf>,
    },
}

fn fail(e: &ImageError) -> Exit {
    eprintln!("error: {e}; {}", e.hint());
    Exit::Invalid
}

/// Run a subcommand; returns the process exit code.
pub fn run(cmd: ImageCommand) -> Exit {
    match cmd {
        ImageCommand::Build { tree, tag, output, format, labels, pg_major, os, arch, user } => {
            let mut opts = BuildOptions::new(tag);
            opts.user = user;
            if let Some(a) = arch {
                opts.arch = crate::normalize_arch(&a);
            }
            opts.labels.insert(crate::LABEL_BASE_PGMAJOR.into(), pg_major.to_string());
            opts.labels.insert(crate::LABEL_BASE_OS.into(), os.clone());
            opts.labels.insert(
                crate::LABEL_BASE_NAME.into(),
                format!("ghcr.io/cloudnative-pg/postgresql:{pg_major}-minimal-{os}"),
            );
            if let Some(v) = tree_default_version(&tree) {
                opts.labels.insert(crate::LABEL_SQL_VERSION.into(), v);
            }
            opts.labels.extend(labels);
            match build_cmd(&tree, &opts, &output, format) {
                Ok(digest) => {
                    println!("built {} {digest} -> {}", opts.reference, output.display());
                    Exit::Passed
                }
                Err(e) => fail(&e),
            }
        }
        ImageCommand::Unpack { image, dest, platform, max_bytes, max_entries } => {
            let opts = UnpackOptions { platform, max_total_bytes: max_bytes, max_entries };
            match unpack(&image, &dest, &opts) {
                Ok(u) => {
                    println!(
                        "unpacked {} ({} entries, {} bytes) -> {}",
                        u.manifest_digest,
                        u.entries,
                        u.bytes,
                        dest.display()
                    );
                    Exit::Passed
                }
                Err(e) => fail(&e),
            }
        }
        ImageCommand::Lint {
            image,
            pg_major,
            arch,
            os,
            image_name,
            require_labels,
            operand,
            format,
            base_libs,
            pg_install,
        } => {
            let opts =
                match lint_options(pg_major, arch, os, image_name, require_labels, operand, base_libs, pg_install) {
                    Ok(o) => o,
                    Err(why) => {
                        eprintln!("error: {why}");
                        return Exit::Invalid;
                    }
                };
            match lint(&image, &opts) {
                Ok(report) => {
                    match format {
                        ReportFormat::Text => print!("{}", report.to_text()),
                        ReportFormat::Json => println!("{}", report.to_json()),
                    }
                    Exit::from_passed(!report.has_errors())
                }
                Err(e) => fail(&e),
            }
        }
    }
}

/// `image lint`'s flags as [`LintOptions`], or why they are refused (one line).
#[allow(clippy::too_many_arguments)] // one parameter per flag, in the order `ImageCommand::Lint` has them
fn lint_options(
    pg_major: u32,
    arch: Option<String>,
    os: Option<String>,
    image_name: Option<String>,
    require_labels: bool,
    operand: String,
    base_libs: Option<PathBuf>,
    pg_install: Option<PathBuf>,
) -> Result<LintOptions, String> {
    if !crate::compat::OPERAND_FLAVORS.contains(&operand.as_str()) {
        return Err(format!("--operand {operand:?}: use minimal or standard"));
    }
    if let Some(o) = &os {
        if crate::compat::distro(o).is_none() {
            return Err(format!(
                "--os {o:?} is not a known operand distribution; use one of {}",
                crate::compat::distro_names()
            ));
        }
    }
    let mut opts =
        LintOptions { pg_major, os, operand_image: image_name, require_labels, operand, ..LintOptions::default() };
    if let Some(a) = arch {
        opts.arch = crate::normalize_arch(&a);
    }
    if let Some(f) = base_libs {
        let t = std::fs::read_to_string(&f)
            .map_err(|e| format!("{}: {e}; pass a readable file of library names, one per line", f.display()))?;
        opts.base_libs = BaseLibs::from_list(&t);
    }
    if let Some(d) = pg_install {
        let b = BaseLibs::from_pg_install(&d)
            .map_err(|e| format!("{}: {e}; pass the PostgreSQL install prefix (pg_config --bindir/..)", d.display()))?;
        opts.base_libs.extend(&b);
    }
    Ok(opts)
}

/// `default_version` of the first primary control file in `share/extension`.
fn tree_default_version(tree: &Path) -> Option<String> {
    let dir = tree.join("share/extension");
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir).ok()?.flatten().map(|e| e.path()).collect();
    names.sort();
    names.into_iter().find_map(|p| {
        let n = p.file_name()?.to_str()?;
        if !n.ends_with(".control") || n.contains("--") {
            return None;
        }
        let c = control::parse_control(&std::fs::read_to_string(&p).ok()?).ok()?;
        c.default_version().map(String::from)
    })
}

fn build_cmd(tree: &Path, opts: &BuildOptions, output: &Path, format: BuildFormat) -> Result<String, ImageError> {
    match format {
        BuildFormat::Oci => Ok(build_layout(tree, opts, output)?.manifest_digest),
        BuildFormat::OciArchive | BuildFormat::DockerArchive => {
            let tmp = tempfile::tempdir().map_err(|e| ImageError::io(std::env::temp_dir(), e))?;
            let layout = tmp.path().join("layout");
            let built = build_layout(tree, opts, &layout)?;
            if format == BuildFormat::OciArchive {
                write_oci_archive(&layout, output)?;
            } else {
                write_docker_archive(&layout, &opts.reference, output)?;
            }
            Ok(built.manifest_digest)
        }
    }
}
