//! The results bundle: one `.tar.gz` holding what a run, a matrix or a certification
//! produced and what it ran, with a documented layout (docs/report-schema.md → Bundle):
//!
//! ```text
//! bundle.json        manifest: what ran, the verdict, environment, image digests, every file + sha256
//! command.txt        the exact command line, shell-quoted
//! environment.json   versions: harness, PostgreSQL, CNPG modelled, Kubernetes, engine, kernel, OS
//! images.json        every image used: reference, manifest digest, where it came from
//! reports/…          the report directory as written (report.json, junit.xml, summary.md, index.html, cells/…, logs/…)
//! <scenario paths>   each scenario directory as run, at its path relative to the scenarios' root
//! <fixture paths>    each fixture recipe the scenarios build, at its path relative to the same root
//! ```
//!
//! Scenarios and fixtures keep their relative places, so a scenario's `fixture: ../../fixtures/x`
//! resolves inside an unpacked bundle as it did in the repository.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::Digest;

/// Marks a bundle manifest.
pub const BUNDLE_KIND: &str = "cnpg-ext-harness/bundle";
pub const BUNDLE_SCHEMA_VERSION: u32 = 1;
pub const MANIFEST: &str = "bundle.json";
/// Where the report directory goes inside a bundle.
pub const REPORTS: &str = "reports";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BundleImage {
    pub reference: String,
    pub manifest_digest: String,
    /// `fixture <path in the bundle>`, `archive <path>` or `pull`.
    pub origin: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BundleScenario {
    pub id: String,
    /// The scenario directory inside the bundle.
    pub dir: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BundleFile {
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BundleManifest {
    pub kind: String,
    pub schema_version: u32,
    pub created_at: String,
    pub harness_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_revision: Option<String>,
    /// `run`, `matrix` or `certify`.
    pub of: String,
    /// The verdict as the command ended: `passed`, `failed`, `flaky`, … (and its exit code).
    pub verdict: String,
    pub exit_code: i32,
    pub command: Vec<String>,
    pub environment: BTreeMap<String, String>,
    pub images: Vec<BundleImage>,
    pub scenarios: Vec<BundleScenario>,
    pub files: Vec<BundleFile>,
}

/// What goes into a bundle, gathered by the command that ran.
#[derive(Debug, Default)]
pub struct BundleInput {
    pub of: String,
    pub verdict: String,
    pub exit_code: i32,
    pub command: Vec<String>,
    pub environment: BTreeMap<String, String>,
    pub images: Vec<BundleImage>,
    /// The report directory, copied under `reports/`.
    pub report_dir: PathBuf,
    /// `(id, scenario directory)` of every scenario run.
    pub scenarios: Vec<(String, PathBuf)>,
    /// Fixture recipe directories the scenarios build.
    pub fixtures: Vec<PathBuf>,
    /// Other inputs (a matrix file), each at its path relative to the root.
    pub extra: Vec<PathBuf>,
}

/// The directory the scenarios' and fixtures' relative places are kept from: the deepest
/// common ancestor of every scenario's parent's parent and every fixture.
fn common_root(paths: &[PathBuf]) -> PathBuf {
    let mut root: Option<PathBuf> = None;
    for p in paths {
        root = Some(match root {
            None => p.clone(),
            Some(r) => {
                let mut out = PathBuf::new();
                for (a, b) in r.components().zip(p.components()) {
                    if a != b {
                        break;
                    }
                    out.push(a);
                }
                out
            }
        });
    }
    root.unwrap_or_else(|| PathBuf::from("/"))
}

/// `a/b/../c` → `a/c`, without touching the file system.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

fn rel(root: &Path, p: &Path) -> String {
    p.strip_prefix(root)
        .unwrap_or(p)
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// Files of `dir` (following no symlinks out of it), sorted, as `(path in bundle, source)`.
fn files_of(dir: &Path, prefix: &str) -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = walkdir::WalkDir::new(dir)
        .follow_links(true)
        .sort_by_file_name()
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| {
            let r = e.path().strip_prefix(dir).ok()?.to_string_lossy().into_owned();
            let path = if prefix.is_empty() {
                r
            } else if r.is_empty() {
                prefix.to_string()
            } else {
                format!("{prefix}/{r}")
            };
            Some((path, e.path().to_path_buf()))
        })
        .collect();
    out.sort();
    out
}

/// The files `write` makes itself, besides the ones its manifest lists.
pub const GENERATED: [&str; 4] = [MANIFEST, "command.txt", "environment.json", "images.json"];

/// Writes the bundle to `out`; returns its manifest.
pub fn write(input: &BundleInput, out: &Path) -> Result<BundleManifest, String> {
    // Lexically: a scenario copy may reach its fixtures through a symlink, and
    // `../../fixtures/x` must resolve inside the bundle as it did beside the scenario.
    let canon = |p: &Path| -> Result<PathBuf, String> {
        let abs = std::path::absolute(p).map_err(|e| format!("{}: {e}", p.display()))?;
        if !abs.exists() {
            return Err(format!("{}: does not exist", abs.display()));
        }
        Ok(normalize(&abs))
    };
    let scen: Vec<(String, PathBuf)> =
        input.scenarios.iter().map(|(id, d)| Ok((id.clone(), canon(d)?))).collect::<Result<_, String>>()?;
    let fixtures: Vec<PathBuf> = input.fixtures.iter().map(|f| canon(f)).collect::<Result<_, String>>()?;
    let extra: Vec<PathBuf> = input.extra.iter().map(|f| canon(f)).collect::<Result<_, String>>()?;
    let mut anchors: Vec<PathBuf> =
        scen.iter().map(|(_, d)| d.parent().and_then(Path::parent).unwrap_or(d).to_path_buf()).collect();
    anchors.extend(fixtures.iter().cloned());
    anchors.extend(extra.iter().filter_map(|e| e.parent().map(Path::to_path_buf)));
    let root = common_root(&anchors);

    let mut entries: Vec<(String, PathBuf)> = files_of(&input.report_dir, REPORTS);
    let mut scenarios = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (id, d) in &scen {
        let r = rel(&root, d);
        scenarios.push(BundleScenario { id: id.clone(), dir: r.clone() });
        if seen.insert(r.clone()) {
            entries.extend(files_of(d, &r));
        }
    }
    for f in &fixtures {
        let r = rel(&root, f);
        if seen.insert(r.clone()) {
            entries.extend(files_of(f, &r));
        }
    }
    for e in &extra {
        entries.push((rel(&root, e), e.clone()));
    }
    for (p, _) in &entries {
        if GENERATED.contains(&p.as_str()) {
            return Err(format!("{p}: a scenario or fixture file would overwrite the bundle's own {p}"));
        }
    }
    let mut files = Vec::new();
    let mut blobs: Vec<(String, Vec<u8>)> = Vec::new();
    for (p, src) in &entries {
        let bytes = std::fs::read(src).map_err(|e| format!("{}: {e}", src.display()))?;
        files.push(BundleFile {
            path: p.clone(),
            bytes: bytes.len() as u64,
            sha256: hex::encode(sha2::Sha256::digest(&bytes)),
        });
        blobs.push((p.clone(), bytes));
    }
    let command_txt =
        input.command.iter().map(|a| crate::plumbing::shell::shell_quote(a)).collect::<Vec<_>>().join(" ") + "\n";
    let env_json = serde_json::to_vec_pretty(&input.environment).map_err(|e| e.to_string())?;
    let images_json = serde_json::to_vec_pretty(&input.images).map_err(|e| e.to_string())?;
    let manifest = BundleManifest {
        kind: BUNDLE_KIND.into(),
        schema_version: BUNDLE_SCHEMA_VERSION,
        created_at: chrono::Utc::now().to_rfc3339(),
        harness_version: env!("CARGO_PKG_VERSION").into(),
        git_revision: crate::plumbing::shell::git_revision(),
        of: input.of.clone(),
        verdict: input.verdict.clone(),
        exit_code: input.exit_code,
        command: input.command.clone(),
        environment: input.environment.clone(),
        images: input.images.clone(),
        scenarios,
        files,
    };
    let manifest_json = serde_json::to_vec_pretty(&manifest).map_err(|e| e.to_string())?;
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    let tmp = out.with_extension("partial");
    let result = (|| -> std::io::Result<()> {
        let file = std::fs::File::create(&tmp)?;
        let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
        let mut tar = tar::Builder::new(gz);
        let mut add = |path: &str, data: &[u8]| -> std::io::Result<()> {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(0);
            h.set_cksum();
            tar.append_data(&mut h, path, data)
        };
        add(MANIFEST, &manifest_json)?;
        add("command.txt", command_txt.as_bytes())?;
        add("environment.json", &env_json)?;
        add("images.json", &images_json)?;
        for (p, bytes) in &blobs {
            add(p, bytes)?;
        }
        tar.into_inner()?.finish()?.flush()
    })();
    match result.and_then(|()| std::fs::rename(&tmp, out)) {
        Ok(()) => Ok(manifest),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(format!("cannot write the bundle {}: {e}", out.display()))
        }
    }
}

/// A bundle read into memory (bundles hold reports and recipes, not images).
#[derive(Debug)]
pub struct Bundle {
    pub manifest: BundleManifest,
    pub files: BTreeMap<String, Vec<u8>>,
}

impl Bundle {
    pub fn open(path: &Path) -> Result<Bundle, String> {
        let f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(f));
        let mut files = BTreeMap::new();
        let entries = tar.entries().map_err(|e| format!("{}: not a .tar.gz bundle: {e}", path.display()))?;
        for e in entries {
            let mut e = e.map_err(|e| format!("{}: not a .tar.gz bundle: {e}", path.display()))?;
            let name = e.path().map_err(|e| e.to_string())?.to_string_lossy().into_owned();
            let mut buf = Vec::new();
            e.read_to_end(&mut buf).map_err(|e| format!("{}: {name}: {e}", path.display()))?;
            files.insert(name, buf);
        }
        let raw = files.get(MANIFEST).ok_or_else(|| {
            format!("{}: no {MANIFEST}: not a cnpg-ext-harness bundle (write one with --bundle)", path.display())
        })?;
        let manifest: BundleManifest =
            serde_json::from_slice(raw).map_err(|e| format!("{}: {MANIFEST}: {e}", path.display()))?;
        if manifest.kind != BUNDLE_KIND {
            return Err(format!("{}: {MANIFEST}: kind `{}`, not `{BUNDLE_KIND}`", path.display(), manifest.kind));
        }
        for f in &manifest.files {
            let data =
                files.get(&f.path).ok_or_else(|| format!("{}: {} is listed but missing", path.display(), f.path))?;
            if hex::encode(sha2::Sha256::digest(data)) != f.sha256 {
                return Err(format!("{}: {} does not match its sha256 in {MANIFEST}", path.display(), f.path));
            }
        }
        Ok(Bundle { manifest, files })
    }

    /// The report at `reports/report.json`.
    pub fn report_json(&self) -> Option<&[u8]> {
        self.files.get(&format!("{REPORTS}/report.json")).map(Vec::as_slice)
    }

    /// Writes every file under `dest` (paths were checked to stay inside it).
    pub fn extract(&self, dest: &Path) -> Result<(), String> {
        for (name, data) in &self.files {
            let p = Path::new(name);
            if p.components().any(|c| !matches!(c, Component::Normal(_))) {
                return Err(format!("{name}: a bundle path must stay inside the bundle"));
            }
            let to = dest.join(p);
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
            }
            std::fs::write(&to, data).map_err(|e| format!("{}: {e}", to.display()))?;
        }
        Ok(())
    }
}

/// Versions of what ran here: kernel and OS (the rest comes from the report).
pub fn host_environment() -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    if let Ok(release) = std::fs::read_to_string("/proc/sys/kernel/osrelease") {
        env.insert("kernel".into(), format!("{} {}", release.trim(), std::env::consts::ARCH));
    }
    if let Ok(os) = std::fs::read_to_string("/etc/os-release") {
        if let Some(name) = os.lines().find_map(|l| l.strip_prefix("PRETTY_NAME=")) {
            env.insert("os".into(), name.trim_matches('"').to_string());
        }
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_round_trips_and_keeps_relative_places() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        for (p, t) in [
            ("repo/scenarios/a/scenario.yaml", "images: [{fixture: ../../fixtures/f}]"),
            ("repo/scenarios/a/cluster.yaml", "kind: Cluster"),
            ("repo/fixtures/f/fixture.yaml", "name: f"),
            ("out/report.json", "{}"),
            ("out/cells/x/output.log", "log"),
        ] {
            std::fs::create_dir_all(r.join(p).parent().unwrap()).unwrap();
            std::fs::write(r.join(p), t).unwrap();
        }
        let input = BundleInput {
            of: "run".into(),
            verdict: "failed".into(),
            exit_code: 1,
            command: vec!["cnpg-ext-harness".into(), "run".into(), "a b".into()],
            report_dir: r.join("out"),
            scenarios: vec![("a".into(), r.join("repo/scenarios/a"))],
            fixtures: vec![r.join("repo/fixtures/f")],
            ..BundleInput::default()
        };
        let out = r.join("b.tar.gz");
        write(&input, &out).unwrap();
        let b = Bundle::open(&out).unwrap();
        let names: Vec<&str> = b.files.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "bundle.json",
                "command.txt",
                "environment.json",
                "fixtures/f/fixture.yaml",
                "images.json",
                "reports/cells/x/output.log",
                "reports/report.json",
                "scenarios/a/cluster.yaml",
                "scenarios/a/scenario.yaml"
            ]
        );
        assert_eq!(b.files["command.txt"], b"cnpg-ext-harness run 'a b'\n");
        assert_eq!(b.manifest.scenarios[0].dir, "scenarios/a");
        assert_eq!(b.manifest.verdict, "failed");
        let dest = r.join("x");
        b.extract(&dest).unwrap();
        assert!(dest.join("scenarios/a").join("../../fixtures/f/fixture.yaml").is_file());
    }

    #[test]
    fn a_tampered_bundle_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("out")).unwrap();
        std::fs::write(r.join("out/report.json"), "{}").unwrap();
        let out = r.join("b.tar.gz");
        let m = write(&BundleInput { of: "run".into(), report_dir: r.join("out"), ..BundleInput::default() }, &out)
            .unwrap();
        // Rewrite with a changed report but the old manifest.
        let file = std::fs::File::create(&out).unwrap();
        let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(file, flate2::Compression::default()));
        for (p, d) in [(MANIFEST, serde_json::to_vec(&m).unwrap()), ("reports/report.json", b"{\"x\":1}".to_vec())] {
            let mut h = tar::Header::new_gnu();
            h.set_size(d.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            tar.append_data(&mut h, p, d.as_slice()).unwrap();
        }
        tar.into_inner().unwrap().finish().unwrap();
        let err = Bundle::open(&out).unwrap_err();
        assert!(err.contains("reports/report.json does not match its sha256"), "{err}");
        std::fs::write(&out, b"not gzip").unwrap();
        assert!(Bundle::open(&out).unwrap_err().contains("not a .tar.gz bundle"));
    }
}
