//! The images of a run: built from fixture recipes, read from OCI layouts/archives or pulled
//! from their registry (into the digest-keyed cache), once per run, each unpacked (hardened) into a root filesystem that backends mount from.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cnpg_ext_images::{BuildOptions, ImageError, UnpackOptions};
use cnpg_ext_model::scenario::{ImageOrigin, ImageSpec};
use cnpg_ext_pg::PgInstall;
use serde::Serialize;

use crate::error::HarnessError;
use crate::images::pull::Registries;
use crate::plumbing::fsutil;

#[derive(Debug, Clone, Serialize)]
pub(crate) struct StoredImage {
    pub reference: String,
    pub origin: ImageOrigin,
    /// OCI image layout directory (built fixtures, pulled images) or the archive/layout given.
    pub source: PathBuf,
    pub manifest_digest: String,
    /// Digest of the image's config: what an engine names the image by (its id).
    pub config_digest: String,
    #[serde(skip)]
    pub rootfs: PathBuf,
    /// Its registry was named with `--insecure-registry` (an engine pulling it must not
    /// verify TLS).
    #[serde(skip)]
    pub insecure_registry: bool,
    /// Regular files of the image, relative, sorted.
    #[serde(skip)]
    pub files: Vec<String>,
    /// Extension control names shipped (`<name>.control` anywhere in the image).
    pub extensions: Vec<String>,
    /// Module basenames shipped (`<name>.so`).
    pub modules: Vec<String>,
    /// Compatibility findings read from the image's binaries and file modes
    /// ([`cnpg_ext_images::lint::codes::COMPAT`]); recorded, never fatal here: a
    /// scenario may use a broken image on purpose.
    pub compat: Vec<cnpg_ext_images::lint::Finding>,
    /// What the binaries say (PostgreSQL major, glibc needs, architectures).
    pub binaries: cnpg_ext_images::lint::Binaries,
}

#[derive(Debug, Default)]
pub(crate) struct ImageStore {
    images: BTreeMap<String, StoredImage>,
}

impl ImageStore {
    /// Builds or reads every image in `specs` (deduplicated by reference) under `dir`.
    pub(crate) fn prepare(
        specs: &[ImageSpec],
        pg: &PgInstall,
        dir: &Path,
        registries: &Registries,
    ) -> Result<ImageStore, HarnessError> {
        let mut store = ImageStore::default();
        for (n, spec) in specs.iter().enumerate() {
            if let Some(existing) = store.images.get(&spec.reference) {
                if existing.origin != spec.origin {
                    return Err(HarnessError::Input(format!(
                        "image `{}` is given two different sources ({:?} and {:?}); one reference, one image",
                        spec.reference, existing.origin, spec.origin
                    )));
                }
                continue;
            }
            let work = dir.join(n.to_string());
            std::fs::create_dir_all(&work)
                .map_err(|e| HarnessError::Environment(format!("{}: {e}", work.display())))?;
            let source = match &spec.origin {
                ImageOrigin::Fixture(recipe) => build_fixture(recipe, &spec.reference, pg, &work)?,
                ImageOrigin::Oci(path) => path.clone(),
                ImageOrigin::Pull => registries.pull_blocking(&spec.reference, true)?.layout,
            };
            let rootfs = work.join("rootfs");
            let unpacked = cnpg_ext_images::unpack(&source, &rootfs, &UnpackOptions::default())
                .map_err(|e| HarnessError::Input(format!("image `{}` ({}): {e}", spec.reference, source.display())))?;
            let (compat, binaries) = compat_findings(&rootfs, &unpacked, &spec.reference, pg);
            let files = fsutil::list_files(&rootfs);
            let stem = |f: &String, suffix: &str| -> Option<String> {
                let name = Path::new(f).file_name()?.to_string_lossy().into_owned();
                name.strip_suffix(suffix).map(str::to_string)
            };
            let mut extensions: Vec<String> = files.iter().filter_map(|f| stem(f, ".control")).collect();
            let mut modules: Vec<String> = files.iter().filter_map(|f| stem(f, ".so")).collect();
            // Modules the control files name, shipped or not (certify reports the missing).
            modules
                .extend(files.iter().filter(|f| f.ends_with(".control")).flat_map(|f| named_modules(&rootfs.join(f))));
            extensions.sort();
            extensions.dedup();
            modules.sort();
            modules.dedup();
            store.images.insert(
                spec.reference.clone(),
                StoredImage {
                    reference: spec.reference.clone(),
                    origin: spec.origin.clone(),
                    source,
                    insecure_registry: spec.origin == ImageOrigin::Pull && registries.is_insecure(&spec.reference),
                    manifest_digest: unpacked.manifest_digest,
                    config_digest: unpacked.config_digest,
                    rootfs,
                    files,
                    extensions,
                    modules,
                    compat,
                    binaries,
                },
            );
        }
        Ok(store)
    }

    pub(crate) fn get(&self, reference: &str) -> Option<&StoredImage> {
        self.images.get(reference)
    }

    pub(crate) fn all(&self) -> impl Iterator<Item = &StoredImage> {
        self.images.values()
    }
}

/// The compatibility part of the linter on an unpacked image: the PostgreSQL major its
/// modules are built for against the run's, glibc needs against the distribution its tag
/// names (else stated unknown), architecture of its ELF files against this host's, and file
/// access for uid 26 under the conventional `share`, `lib` and `system` directories.
fn compat_findings(
    rootfs: &Path,
    unpacked: &cnpg_ext_images::UnpackedImage,
    reference: &str,
    pg: &PgInstall,
) -> (Vec<cnpg_ext_images::lint::Finding>, cnpg_ext_images::lint::Binaries) {
    use cnpg_ext_images::lint::{codes, lint_tree_full, LintOptions};
    let opts = LintOptions { pg_major: pg.version.major, ..LintOptions::default() };
    let names = [reference.to_string()];
    let (findings, binaries) = lint_tree_full(rootfs, &unpacked.config, &names, Some(&unpacked.ownership), &opts);
    let compat = findings.into_iter().filter(|f| codes::COMPAT.contains(&f.code.as_str())).collect();
    (compat, binaries)
}

/// Module basenames a control file refers to (`module_pathname = '$libdir/vector'` → `vector`).
fn named_modules(control: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(control) else { return Vec::new() };
    let Ok(parsed) = cnpg_ext_images::control::parse_control(&text) else { return Vec::new() };
    parsed.module().map(str::to_string).into_iter().collect()
}

/// Built fixture images are reproducible (same inputs, same digest), so a warm run reuses
/// them from the cache, keyed by every input: recipe files, reference, PostgreSQL, compiler.
fn build_fixture(recipe: &Path, reference: &str, pg: &PgInstall, work: &Path) -> Result<PathBuf, HarnessError> {
    let cache = cnpg_ext_pg::ProvisionOptions::from_env().cache_dir.map(|c| c.join("fixtures"));
    let key = fixture_key(recipe, reference, pg);
    if let (Some(cache), Some(key)) = (&cache, &key) {
        let hit = cache.join(key);
        if hit.join("index.json").is_file() {
            return Ok(hit);
        }
    }
    let layout = build_fixture_uncached(recipe, reference, pg, work)?;
    if let (Some(cache), Some(key)) = (cache, key) {
        // Best effort: a cache that cannot be written only costs time.
        let staging = cache.join(format!(".{key}.{}", std::process::id()));
        if std::fs::create_dir_all(&cache).is_ok()
            && fsutil::link_or_copy_tree(&layout, &staging).is_ok()
            && std::fs::rename(&staging, cache.join(&key)).is_err()
        {
            let _ = fsutil::remove_tree(&staging);
        }
    }
    Ok(layout)
}

fn fixture_key(recipe: &Path, reference: &str, pg: &PgInstall) -> Option<String> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for part in [
        "fixture-v1",
        reference,
        &pg.version.text,
        &pg.bindir.display().to_string(),
        &std::env::var("CC").unwrap_or_default(),
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let mut files: Vec<_> =
        walkdir::WalkDir::new(recipe).follow_links(true).into_iter().collect::<Result<_, _>>().ok()?;
    files.sort_by(|a, b| a.path().cmp(b.path()));
    for f in files.iter().filter(|f| f.file_type().is_file()) {
        h.update(f.path().strip_prefix(recipe).ok()?.to_string_lossy().as_bytes());
        h.update([0]);
        h.update(std::fs::read(f.path()).ok()?);
        h.update([0]);
    }
    Some(hex::encode(h.finalize()))
}

fn build_fixture_uncached(
    recipe: &Path,
    reference: &str,
    pg: &PgInstall,
    work: &Path,
) -> Result<PathBuf, HarnessError> {
    let tree = work.join("tree");
    let built = cnpg_ext_images::fixture::build_fixture(recipe, &pg.fixture_target(), &tree).map_err(|e| match e {
        ImageError::Fixture { .. } => HarnessError::Input(e.to_string()),
        // No C compiler, I/O: the machine, not the recipe.
        _ => HarnessError::Environment(e.to_string()),
    })?;
    let mut opts = BuildOptions::new(reference);
    opts.labels = built.labels.clone();
    let layout = work.join("oci");
    cnpg_ext_images::build_layout(&tree, &opts, &layout)
        .map_err(|e| HarnessError::Input(format!("building image `{reference}` from {}: {e}", recipe.display())))?;
    Ok(layout)
}
