//! Extension image trees built from declarative fixtures (`fixtures/<name>/fixture.yaml`),
//! against a PostgreSQL described by [`TargetPg`] (its directories, server headers and major
//! version; `cnpg-ext-pg` makes one from an install with `PgInstall::fixture_target`).
//!
//! # Recipe format (`fixture.yaml`)
//!
//! ```yaml
//! description: free text                    # optional
//! image:
//!   name: pgvector                          # first word of org.opencontainers.image.title
//!   os: ${host_os}                          # label ...image.base.os (default ${host_os})
//!   sql_version: ${control:vector}          # label ...image.sql.version
//! labels:                                   # optional extra labels (not the four above)
//!   org.example.note: anything
//! steps:                                    # run in order; all paths are relative
//!   - copy_from_install:                    # files of the PostgreSQL install
//!       dir: sharedir                       # sharedir | pkglibdir | libdir | bindir
//!       glob: extension/vector--*.sql       # glob below that directory (files only)
//!       to: share/extension                 # destination directory in the tree
//!   - copy:                                 # static files of the fixture directory
//!       from: licenses/README.txt           # glob below the fixture directory
//!       to: licenses
//!   - compile:                              # cc -fPIC -shared -O2 -Wall -Werror=implicit-function-declaration
//!                                           #    -I<includedir_server> -I<fixture dir> ...
//!       sources: [greet.c]                  # below the fixture directory
//!       output: lib/greet.so                # path in the tree
//!       soname: libgreet.so.1               # optional: -Wl,-soname,<soname>
//!       link: [system/libgreet.so.1]        # optional: libraries built earlier in this tree,
//!                                           #   linked as -L<dir> -l:<file>, never with an rpath
//!       cflags: [-DGREETING=1]              # optional extra compiler flags
//! ```
//!
//! Label values (and `image.*`) may use `${pg_major}`, `${host_os}` (`VERSION_CODENAME` of
//! `/etc/os-release`, e.g. `bookworm`) and `${control:<name>}` (the `default_version` of
//! `<name>.control` anywhere in the built tree). `io.cloudnativepg.image.base.pgmajor` is always
//! the major version of the PostgreSQL the tree was built against, and, as the extension
//! containers project labels its images, `io.cloudnativepg.image.base.name` is the operand image
//! the extension is built for (`ghcr.io/cloudnative-pg/postgresql:<major>-minimal-<os>`) and
//! `org.opencontainers.image.title` is `<name> <sql_version> <major> <os>`. Unknown fields are errors;
//! every error ([`ImageError::Fixture`]) names the recipe file and the field (e.g.
//! `steps[2].compile.sources[0]`). The compiler is `$CC` or `cc`.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

use crate::source::normalize_rel;
use crate::{control, util, ImageError};
use crate::{LABEL_BASE_NAME, LABEL_BASE_OS, LABEL_BASE_PGMAJOR, LABEL_SQL_VERSION, LABEL_TITLE};

/// File name of a recipe inside a fixture directory.
pub const RECIPE_FILE: &str = "fixture.yaml";

/// The PostgreSQL a fixture is built against: all a recipe reads of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetPg {
    /// `copy_from_install.dir: sharedir` (`pg_config --sharedir`).
    pub sharedir: PathBuf,
    /// `copy_from_install.dir: pkglibdir`.
    pub pkglibdir: PathBuf,
    /// `copy_from_install.dir: libdir`.
    pub libdir: PathBuf,
    /// `copy_from_install.dir: bindir`.
    pub bindir: PathBuf,
    /// Server headers, the `-I` of every `compile` step (`pg_config --includedir-server`).
    pub includedir_server: PathBuf,
    /// Major version: the `pgmajor` label and `${pg_major}`.
    pub major: u32,
}

/// A built extension image tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixtureTree {
    pub root: PathBuf,
    pub labels: BTreeMap<String, String>,
    /// Control names (`<name>.control` anywhere in the tree), sorted.
    pub extensions: Vec<String>,
    /// Module basenames (`<name>.so` anywhere in the tree, without `.so`), sorted.
    pub modules: Vec<String>,
}

/// The fixtures shipped in this repository (`<repo>/fixtures`).
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

/// Sub-directories of `root` that contain a `fixture.yaml`, sorted.
pub fn list_fixtures(root: &Path) -> Result<Vec<PathBuf>, ImageError> {
    let mut out: Vec<PathBuf> = fs::read_dir(root)
        .map_err(|e| ImageError::io(root, e))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join(RECIPE_FILE).is_file())
        .collect();
    out.sort();
    Ok(out)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Recipe {
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
    image: ImageSpec,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    steps: Vec<Step>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImageSpec {
    name: String,
    #[serde(default)]
    os: Option<String>,
    sql_version: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Step {
    CopyFromInstall(CopyFromInstall),
    Copy(CopyStatic),
    Compile(Compile),
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum InstallDir {
    Sharedir,
    Pkglibdir,
    Libdir,
    Bindir,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CopyFromInstall {
    dir: InstallDir,
    glob: String,
    to: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CopyStatic {
    from: String,
    to: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Compile {
    sources: Vec<String>,
    output: String,
    #[serde(default)]
    soname: Option<String>,
    #[serde(default)]
    link: Vec<String>,
    #[serde(default)]
    cflags: Vec<String>,
}

struct Ctx<'a> {
    file: PathBuf,
    fixture_dir: &'a Path,
    pg: &'a TargetPg,
    tree: PathBuf,
}

impl Ctx<'_> {
    fn err(&self, field: impl Into<String>, message: impl Into<String>) -> ImageError {
        ImageError::Fixture { file: self.file.clone(), field: field.into(), message: message.into() }
    }

    fn rel(&self, field: &str, value: &str) -> Result<PathBuf, ImageError> {
        safe_relative(value).ok_or_else(|| self.err(field, format!("{value:?} must be a relative path without '..'")))
    }
}

/// A relative path that stays inside its base: no root, no `..`, not empty.
fn safe_relative(p: &str) -> Option<PathBuf> {
    normalize_rel(p).map(PathBuf::from)
}

fn parse_recipe(file: &Path) -> Result<Recipe, ImageError> {
    let text = fs::read_to_string(file).map_err(|e| ImageError::io(file, e))?;
    let mut path = String::new();
    let res: Result<Recipe, serde_saphyr::Error> = serde_saphyr::with_deserializer_from_str(&text, |de| {
        serde_path_to_error::deserialize(de).map_err(|e| {
            path = e.path().to_string();
            e.into_inner()
        })
    });
    res.map_err(|e| ImageError::Fixture {
        file: file.to_path_buf(),
        field: if path.is_empty() || path == "." { "(top level)".into() } else { path },
        message: e.to_string(),
    })
}

/// Builds the image tree of the fixture in `fixture_dir` into `out_tree` (absent or empty),
/// against the PostgreSQL `pg` (headers, files copied from the install, `pgmajor` label).
///
/// [`ImageError::Fixture`] is a broken recipe (or sources that do not compile): invalid input.
/// Every other error is the machine's: no C compiler ([`ImageError::ToolMissing`]), I/O.
pub fn build_fixture(fixture_dir: &Path, pg: &TargetPg, out_tree: &Path) -> Result<FixtureTree, ImageError> {
    let file = fixture_dir.join(RECIPE_FILE);
    if !file.is_file() {
        return Err(ImageError::Fixture { file, field: "(file)".into(), message: "no fixture recipe here".into() });
    }
    let recipe = parse_recipe(&file)?;
    if !util::absent_or_empty(out_tree).map_err(|e| ImageError::io(out_tree, e))? {
        return Err(ImageError::io(
            out_tree,
            std::io::Error::new(std::io::ErrorKind::AlreadyExists, "fixture output directory is not empty"),
        ));
    }
    create_dir_all(out_tree)?;
    let ctx = Ctx { file, fixture_dir, pg, tree: out_tree.to_path_buf() };
    validate(&ctx, &recipe)?;
    if recipe.steps.is_empty() {
        return Err(ctx.err("steps", "at least one step is needed"));
    }
    for (i, step) in recipe.steps.iter().enumerate() {
        match step {
            Step::CopyFromInstall(c) => copy_from_install(&ctx, i, c)?,
            Step::Copy(c) => copy_static(&ctx, i, c)?,
            Step::Compile(c) => compile(&ctx, i, c)?,
        }
    }

    let (extensions, modules) = scan_tree(out_tree)?;
    let labels = labels(&ctx, &recipe)?;
    make_readable(out_tree)?;
    Ok(FixtureTree { root: out_tree.to_path_buf(), labels, extensions, modules })
}

fn validate(ctx: &Ctx, r: &Recipe) -> Result<(), ImageError> {
    if r.image.name.split_whitespace().count() != 1 {
        return Err(ctx.err("image.name", "must be one word (the extension's name, first word of the image title)"));
    }
    for key in r.labels.keys() {
        if [LABEL_BASE_NAME, LABEL_BASE_PGMAJOR, LABEL_BASE_OS, LABEL_SQL_VERSION, LABEL_TITLE].contains(&key.as_str())
        {
            return Err(
                ctx.err(format!("labels.{key}"), "set through image.name/os/sql_version (pgmajor is automatic)")
            );
        }
    }
    for (i, step) in r.steps.iter().enumerate() {
        match step {
            Step::CopyFromInstall(c) => {
                ctx.rel(&format!("steps[{i}].copy_from_install.glob"), &c.glob)?;
                ctx.rel(&format!("steps[{i}].copy_from_install.to"), &c.to)?;
            }
            Step::Copy(c) => {
                ctx.rel(&format!("steps[{i}].copy.from"), &c.from)?;
                ctx.rel(&format!("steps[{i}].copy.to"), &c.to)?;
            }
            Step::Compile(c) => {
                let f = |s: &str| format!("steps[{i}].compile.{s}");
                if c.sources.is_empty() {
                    return Err(ctx.err(f("sources"), "at least one source file is needed"));
                }
                for (j, s) in c.sources.iter().enumerate() {
                    let p = ctx.rel(&f(&format!("sources[{j}]")), s)?;
                    if !ctx.fixture_dir.join(&p).is_file() {
                        return Err(ctx.err(
                            f(&format!("sources[{j}]")),
                            format!("{s} does not exist in {}", ctx.fixture_dir.display()),
                        ));
                    }
                }
                let out = ctx.rel(&f("output"), &c.output)?;
                let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                if !(name.ends_with(".so") || name.contains(".so.")) {
                    return Err(
                        ctx.err(f("output"), format!("{:?} must be a shared library name (*.so or *.so.N)", c.output))
                    );
                }
                if let Some(so) = &c.soname {
                    if so.is_empty() || so.contains('/') || so.contains(char::is_whitespace) {
                        return Err(ctx.err(f("soname"), format!("{so:?} is not a valid soname")));
                    }
                }
                for (j, l) in c.link.iter().enumerate() {
                    ctx.rel(&f(&format!("link[{j}]")), l)?;
                }
            }
        }
    }
    Ok(())
}

fn install_dir(pg: &TargetPg, d: InstallDir) -> &Path {
    match d {
        InstallDir::Sharedir => &pg.sharedir,
        InstallDir::Pkglibdir => &pg.pkglibdir,
        InstallDir::Libdir => &pg.libdir,
        InstallDir::Bindir => &pg.bindir,
    }
}

/// Files matching `pattern` below `base`, sorted.
fn glob_files(ctx: &Ctx, field: &str, base: &Path, pattern: &str) -> Result<Vec<PathBuf>, ImageError> {
    let full = format!("{}/{}", glob::Pattern::escape(&base.to_string_lossy()), pattern);
    let paths = glob::glob(&full).map_err(|e| ctx.err(field, format!("invalid glob {pattern:?}: {e}")))?;
    let mut files = Vec::new();
    for p in paths {
        let p = p.map_err(|e| ImageError::io(e.path().to_path_buf(), e.into()))?;
        if p.is_file() {
            files.push(p);
        }
    }
    if files.is_empty() {
        return Err(ctx.err(field, format!("{pattern:?} matched no files in {}", base.display())));
    }
    files.sort();
    Ok(files)
}

fn copy_into(ctx: &Ctx, files: &[PathBuf], to: &str) -> Result<(), ImageError> {
    let dir = ctx.tree.join(safe_relative(to).expect("validated"));
    create_dir_all(&dir)?;
    for f in files {
        let dst = dir.join(f.file_name().expect("file has a name"));
        fs::copy(f, &dst).map_err(|e| ImageError::io(&dst, e))?;
    }
    Ok(())
}

fn copy_from_install(ctx: &Ctx, i: usize, c: &CopyFromInstall) -> Result<(), ImageError> {
    let base = install_dir(ctx.pg, c.dir);
    let files = glob_files(ctx, &format!("steps[{i}].copy_from_install.glob"), base, &c.glob)?;
    copy_into(ctx, &files, &c.to)
}

fn copy_static(ctx: &Ctx, i: usize, c: &CopyStatic) -> Result<(), ImageError> {
    let files = glob_files(ctx, &format!("steps[{i}].copy.from"), ctx.fixture_dir, &c.from)?;
    copy_into(ctx, &files, &c.to)
}

fn compile(ctx: &Ctx, i: usize, c: &Compile) -> Result<(), ImageError> {
    let field = format!("steps[{i}].compile");
    let out = ctx.tree.join(safe_relative(&c.output).expect("validated"));
    if let Some(parent) = out.parent() {
        create_dir_all(parent)?;
    }
    let cc = std::env::var_os("CC").filter(|v| !v.is_empty()).unwrap_or_else(|| "cc".into());
    let mut cmd = Command::new(&cc);
    cmd.args(["-fPIC", "-shared", "-O2", "-Wall", "-Werror=implicit-function-declaration"]);
    cmd.arg("-I").arg(&ctx.pg.includedir_server);
    cmd.arg("-I").arg(ctx.fixture_dir);
    cmd.args(&c.cflags);
    if let Some(so) = &c.soname {
        cmd.arg(format!("-Wl,-soname,{so}"));
    }
    cmd.arg("-o").arg(&out);
    for s in &c.sources {
        cmd.arg(ctx.fixture_dir.join(s));
    }
    for (j, l) in c.link.iter().enumerate() {
        let lib = ctx.tree.join(safe_relative(l).expect("validated"));
        if !lib.is_file() {
            return Err(ctx.err(
                format!("{field}.link[{j}]"),
                format!("{l} is not in the tree (libraries must be built by an earlier step)"),
            ));
        }
        let dir = lib.parent().expect("has parent");
        let name = lib.file_name().expect("has name").to_string_lossy();
        cmd.arg(format!("-L{}", dir.display())).arg(format!("-l:{name}"));
    }
    cmd.env_remove("LD_RUN_PATH");
    let output = cmd.output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            ImageError::ToolMissing(format!(
                "C compiler {:?} (needed to build fixture {}; install gcc, e.g. apt-get install gcc, or set CC)",
                cc,
                ctx.file.display()
            ))
        } else {
            ImageError::io(PathBuf::from(&cc), e)
        }
    })?;
    if !output.status.success() {
        return Err(ctx.err(
            field,
            format!(
                "compiling {} failed ({}): {}\n{}",
                c.output,
                output.status,
                util::describe(&cmd),
                String::from_utf8_lossy(&output.stderr).trim_end()
            ),
        ));
    }
    Ok(())
}

fn scan_tree(tree: &Path) -> Result<(Vec<String>, Vec<String>), ImageError> {
    let mut exts = Vec::new();
    let mut mods = Vec::new();
    for e in walkdir::WalkDir::new(tree).sort_by_file_name() {
        let e = e.map_err(|e| ImageError::io(e.path().unwrap_or(tree).to_path_buf(), e.into()))?;
        if !e.file_type().is_file() {
            continue;
        }
        let name = e.file_name().to_string_lossy();
        if let Some(n) = name.strip_suffix(".control") {
            exts.push(n.to_string());
        } else if let Some(n) = name.strip_suffix(".so") {
            mods.push(n.to_string());
        }
    }
    exts.sort();
    exts.dedup();
    mods.sort();
    mods.dedup();
    Ok((exts, mods))
}

fn make_readable(tree: &Path) -> Result<(), ImageError> {
    let chmod = |path: &Path, mode: u32| {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|e| ImageError::io(path, e))
    };
    for e in walkdir::WalkDir::new(tree).into_iter().flatten() {
        if e.file_type().is_dir() {
            chmod(e.path(), 0o755)?;
        } else if e.file_type().is_file() {
            let mode = e.metadata().map(|m| m.permissions().mode()).unwrap_or(0o644);
            if mode & 0o444 != 0o444 {
                chmod(e.path(), (mode | 0o444) & 0o7777)?;
            }
        }
    }
    Ok(())
}

fn create_dir_all(path: &Path) -> Result<(), ImageError> {
    fs::create_dir_all(path).map_err(|e| ImageError::io(path, e))
}

fn labels(ctx: &Ctx, r: &Recipe) -> Result<BTreeMap<String, String>, ImageError> {
    let mut out = BTreeMap::new();
    let major = ctx.pg.major;
    let os = expand(ctx, "image.os", r.image.os.as_deref().unwrap_or("${host_os}"))?;
    let name = expand(ctx, "image.name", &r.image.name)?;
    let sql_version = expand(ctx, "image.sql_version", &r.image.sql_version)?;
    out.insert(LABEL_BASE_NAME.to_string(), format!("ghcr.io/cloudnative-pg/postgresql:{major}-minimal-{os}"));
    out.insert(LABEL_TITLE.to_string(), format!("{name} {sql_version} {major} {os}"));
    out.insert(LABEL_BASE_PGMAJOR.to_string(), major.to_string());
    out.insert(LABEL_BASE_OS.to_string(), os);
    out.insert(LABEL_SQL_VERSION.to_string(), sql_version);
    for (k, v) in &r.labels {
        out.insert(k.clone(), expand(ctx, &format!("labels.{k}"), v)?);
    }
    Ok(out)
}

/// Expands `${pg_major}`, `${host_os}`, `${control:<name>}`.
fn expand(ctx: &Ctx, field: &str, value: &str) -> Result<String, ImageError> {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or_else(|| ctx.err(field, format!("unterminated '${{' in {value:?}")))?;
        let key = &after[..end];
        let v = if key == "pg_major" {
            ctx.pg.major.to_string()
        } else if key == "host_os" {
            host_os()
        } else if let Some(name) = key.strip_prefix("control:") {
            control_default_version(&ctx.tree, name).ok_or_else(|| {
                ctx.err(
                    field,
                    format!("${{control:{name}}}: no {name}.control with a default_version in the built tree"),
                )
            })?
        } else {
            return Err(ctx.err(
                field,
                format!("unknown placeholder ${{{key}}} (known: ${{pg_major}}, ${{host_os}}, ${{control:<name>}})"),
            ));
        };
        out.push_str(&v);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    if out.trim().is_empty() {
        return Err(ctx.err(field, "must not be empty"));
    }
    Ok(out)
}

/// `VERSION_CODENAME` of /etc/os-release (e.g. `bookworm`), else `ID`, else `linux`.
pub fn host_os() -> String {
    let text = fs::read_to_string("/etc/os-release").unwrap_or_default();
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k).and_then(|r| r.strip_prefix('=')))
            .map(|v| v.trim().trim_matches('"').to_string())
            .filter(|v| !v.is_empty())
    };
    get("VERSION_CODENAME").or_else(|| get("ID")).unwrap_or_else(|| "linux".into())
}

/// `default_version` of `<name>.control` anywhere below `tree` (read with
/// [`control::parse_control`]; `None` for a control file PostgreSQL would not read either).
pub fn control_default_version(tree: &Path, name: &str) -> Option<String> {
    let file = format!("{name}.control");
    let path = walkdir::WalkDir::new(tree)
        .into_iter()
        .flatten()
        .find(|e| e.file_type().is_file() && e.file_name().to_string_lossy() == file)?
        .into_path();
    let text = fs::read_to_string(path).ok()?;
    control::parse_control(&text).ok()?.default_version().map(str::to_string)
}

#[cfg(test)]
mod tests;
