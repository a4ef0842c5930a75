//! Holds nothing: the check is `tests/header.rs`, which runs cbindgen on
//! the C API's source (`bindings/c/src/lib.rs`) and compares the result
//! with the committed `bindings/c/include/yaraflow.h`.
