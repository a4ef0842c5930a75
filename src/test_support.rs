//! Internals the integration tests (`tests/`) reach, and nothing else.
//!
//! Not public API: hidden from the docs, and free to change with the code
//! it exposes. The library's own modules keep these items crate-private;
//! this module is the one door to them, so that a test's reach inside does
//! not make them part of what embedders may rely on.

use uuid::Uuid;

use crate::error::StoreError;
use crate::store::ContextStore;

/// The stream store's entry format (see `store/codec.rs`).
pub mod codec {
    pub use crate::store::codec::{decode, encode, FORMAT_VERSION};
}

/// Overwrites the raw entry of `stream` in `store` (tests of damaged
/// entries).
pub fn write_raw(store: &ContextStore, stream: Uuid, entry: &[u8]) -> Result<(), StoreError> {
    store.write_raw(stream, entry)
}
