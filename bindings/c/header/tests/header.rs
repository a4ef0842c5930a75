//! The committed header (`include/yaraflow.h`) is what cbindgen makes of
//! `src/lib.rs` today. `YARAFLOW_BLESS=1 cargo test -p yaraflow-c-header --test
//! header` rewrites it after a change to the API.

use std::path::Path;

#[test]
fn the_committed_header_is_generated_from_the_source() {
    // This crate sits in bindings/c/header; the C API is its parent.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bindings/c");
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_config(config)
        .with_src(dir.join("src/lib.rs"))
        .generate()
        .expect("cbindgen parses src/lib.rs")
        .write(&mut generated);
    let path = dir.join("include/yaraflow.h");
    if std::env::var_os("YARAFLOW_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("write the header");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == String::from_utf8(generated).expect("UTF-8"),
        "include/yaraflow.h is out of date: run YARAFLOW_BLESS=1 cargo test -p yaraflow-c-header --test header"
    );
}
