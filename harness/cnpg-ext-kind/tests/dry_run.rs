//! `--dry-run` for every scenario of the repository against the oldest and the newest
//! release line the harness models: every scenario renders, and one that relies on what
//! 1.29 added (`bin_path`, `env`, extensions from an image catalog) carries the finding
//! that CloudNativePG 1.28 ignores it, written next to its manifests.

use std::path::{Path, PathBuf};

use cnpg_ext_kind::render::render_dry_run;
use cnpg_ext_kind::KindOptions;
use cnpg_ext_model::scenario::Scenario;
use cnpg_ext_model::CnpgVersion;

fn scenarios() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("scenario.yaml").is_file())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 10, "scenarios under {}: {dirs:?}", root.display());
    dirs
}

/// Scenarios that use what 1.29 added: read from the manifests, not listed by hand.
fn uses_1_29_fields(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .any(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            text.contains("bin_path:") || text.contains("\n        env:") || text.contains("ImageCatalog")
        })
}

#[test]
fn every_scenario_renders_for_1_28_and_1_30_with_the_ignored_finding_on_1_28() {
    let mut newer_only = Vec::new();
    for version in ["1.28.2", "1.30.0"] {
        let cnpg: CnpgVersion = version.parse().unwrap();
        let opts = KindOptions { cnpg_version: cnpg, ..Default::default() };
        for dir in scenarios() {
            let scenario =
                Scenario::load(&dir, cnpg).unwrap_or_else(|e| panic!("{} for {version}: {e}", dir.display()));
            let out = tempfile::tempdir().unwrap();
            let files = render_dry_run(&scenario, &opts, out.path())
                .unwrap_or_else(|e| panic!("{} for {version}: {e}", dir.display()));
            let sdir = out.path().join(&scenario.id);
            assert!(
                files.iter().any(|f| f.starts_with(&sdir) && f.to_string_lossy().contains("-apply-cluster-")),
                "{} for {version}: no Cluster rendered: {files:?}",
                dir.display()
            );
            let findings = sdir.join("findings.txt");
            let expect_finding = version == "1.28.2" && uses_1_29_fields(&dir);
            if expect_finding {
                newer_only.push(scenario.id.clone());
                let text = std::fs::read_to_string(&findings)
                    .unwrap_or_else(|e| panic!("{} for {version}: {}: {e}", dir.display(), findings.display()));
                assert!(text.contains("ignored by CloudNativePG 1.28.2"), "{}: {text}", dir.display());
                assert!(files.contains(&findings), "{files:?}");
            } else {
                assert!(
                    !findings.exists(),
                    "{} for {version}: {}",
                    dir.display(),
                    std::fs::read_to_string(&findings).unwrap()
                );
            }
        }
    }
    newer_only.sort();
    assert_eq!(newer_only, ["bin-path-and-env", "image-catalog"]);
}
