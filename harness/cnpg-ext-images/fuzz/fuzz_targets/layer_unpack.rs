//! Apply arbitrary bytes as a layer (plain tar, or gzip when the input
//! starts with the gzip magic) into a fresh directory inside a sandbox, and
//! check nothing appeared next to it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let sandbox = tempfile::tempdir().expect("tempdir");
    let root = sandbox.path().join("root");
    std::fs::create_dir(&root).expect("root");
    let _ = cnpg_ext_images::fuzz_apply_layer(data, &root);
    let names: Vec<_> = std::fs::read_dir(sandbox.path())
        .expect("read sandbox")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(
        names,
        vec![std::ffi::OsString::from("root")],
        "wrote outside the root"
    );
});
