//! Parse arbitrary bytes as index.json / manifest / config / docker
//! manifest.json documents.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cnpg_ext_images::fuzz_parse_documents(data);
});
