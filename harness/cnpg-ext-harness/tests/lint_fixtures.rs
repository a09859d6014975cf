//! `image lint` passes on every fixture image, built exactly as the scenarios build them.

mod common;

use cnpg_ext_images::elf::BaseLibs;
use cnpg_ext_images::lint::{lint, LintOptions};
use cnpg_ext_images::BuildOptions;

#[rstest::rstest]
#[case::pgvector("pgvector", &["share"], &["lib"])]
#[case::cube("cube", &["share"], &["lib"])]
#[case::earthdistance("earthdistance", &["share"], &["lib"])]
#[case::custom_path("custom-path", &["opt/ctl"], &["opt/modules"])]
#[case::greet("greet", &["share"], &["lib"])]
#[case::toolbox("toolbox", &["tbx_core/share", "tbx_text/share"], &["tbx_core/lib", "tbx_text/lib"])]
#[case::pairbase("pairbase", &["share"], &["lib"])]
#[case::pairdist("pairdist", &["share"], &["lib"])]
#[case::upgrade_1_0("upgrade-1.0", &["share"], &["lib"])]
#[case::upgrade_1_1("upgrade-1.1", &["share"], &["lib"])]
#[case::preload("preload", &["share"], &["lib"])]
#[case::envprobe("envprobe", &["share"], &["lib"])]
fn fixture_images_lint_clean(#[case] name: &str, #[case] control: &[&str], #[case] libs: &[&str]) {
    let pg = cnpg_ext_harness::run::locate_postgres(None).expect("PostgreSQL 18");
    let work = tempfile::tempdir().unwrap();
    let built = cnpg_ext_images::fixture::build_fixture(
        &common::repo().join("fixtures").join(name),
        &pg.fixture_target(),
        &work.path().join("tree"),
    )
    .unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut opts = BuildOptions::new(format!("example.com/{name}:1-18-bookworm"));
    opts.labels = built.labels.clone();
    let layout = work.path().join("oci");
    cnpg_ext_images::build_layout(&work.path().join("tree"), &opts, &layout).unwrap();

    let mut lo = LintOptions {
        extension_control_path: control.iter().map(|s| s.to_string()).collect(),
        dynamic_library_path: libs.iter().map(|s| s.to_string()).collect(),
        ..LintOptions::default()
    };
    lo.base_libs.extend(&BaseLibs::from_pg_install(&pg.bindir.join("..")).unwrap_or_else(|_| BaseLibs::glibc()));
    let report = lint(&layout, &lo).unwrap();
    assert!(!report.has_errors(), "{name}:\n{}", report.to_text());
}
