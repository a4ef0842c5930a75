//! The stream store: stream contexts on disk, for eviction and restarts.
//!
//! A [`ContextStore`] is one `redb` database file holding one entry per
//! stored stream (its [`StreamContext`], serialized by `store/codec.rs`) and the
//! fingerprint of the rules the contexts were made with. The engine's
//! shards share it: they write the contexts they evict from memory and, at
//! checkpoints, the contexts that changed; they read a stream's entry back
//! when a chunk or a query for it arrives.
//!
//! Why `redb`: a pure-Rust embedded key-value store (no C library to build),
//! a single file, ACID transactions with a choice of durability per
//! commit, copy-on-write B-trees that survive a crash at any point (a
//! commit is either whole or absent), and a page cache whose size we set
//! (`StoreConfig::cache_bytes`, 64 MiB by default: it comes on top of the
//! resident bound, and does not grow behind it). An LSM store (`fjall`) would take small writes faster,
//! but its background compaction threads and write amplification buy
//! little here: eviction and checkpoints write in large batches, one
//! transaction each.
//!
//! Durability: every write is one transaction committed with
//! `Durability::Immediate` (fsync). What a committed transaction holds is
//! what a producer may count on after a crash of yaraflow, or of the
//! machine: its streams' *durable offsets*.
//!
//! A context is only meaningful with the rules it was made with (its tail
//! length, head and replay spans depend on them): each entry carries a tag
//! of the rules' [`crate::RuleSet::fingerprint`], and the engine refuses
//! to start on a store that holds streams of other rules
//! ([`StoreError::RulesChanged`]) unless told to discard them. A damaged
//! entry fails that stream alone ([`StoreError::Corrupt`]).

pub(crate) mod codec;

use std::path::{Path, PathBuf};

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use uuid::Uuid;

use crate::error::StoreError;
use crate::stream::StreamContext;
pub use codec::{rules_tag, RulesTag};

const CONTEXTS: TableDefinition<u128, &[u8]> = TableDefinition::new("contexts");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const FORMAT_KEY: &str = "format_version";

/// What to do, at start, with stored streams made with other rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnRulesChange {
    /// Refuse to start ([`StoreError::RulesChanged`]).
    #[default]
    Refuse,
    /// Drop those streams (their producers resend them from offset 0).
    Discard,
}

/// A stored stream, as listed by [`ContextStore::entries`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredEntry {
    /// The stream.
    pub stream: Uuid,
    /// Its offset when written: its durable offset.
    pub bytes: u64,
    /// When it last received data, in milliseconds since the epoch.
    pub last_seen_ms: u64,
    /// The rules it was made with.
    pub rules: RulesTag,
}

/// What [`ContextStore::entries`] found.
#[derive(Debug, Default)]
pub struct Listing {
    /// The stored streams whose entries are whole.
    pub entries: Vec<StoredEntry>,
    /// The streams whose entries are damaged, with why.
    pub damaged: Vec<(Uuid, StoreError)>,
}

/// The on-disk store of stream contexts (see the module docs).
pub struct ContextStore {
    db: redb::Database,
    path: PathBuf,
}

impl std::fmt::Debug for ContextStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContextStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl ContextStore {
    /// Opens (or creates) the store at `path`, with a page cache of
    /// `cache_bytes`. Fails if another process has it open, or if it was
    /// written in another entry format.
    pub fn open(path: &Path, cache_bytes: usize) -> Result<ContextStore, StoreError> {
        guarded(path, || Self::open_unguarded(path, cache_bytes))
    }

    fn open_unguarded(path: &Path, cache_bytes: usize) -> Result<ContextStore, StoreError> {
        let db = redb::Builder::new()
            .set_cache_size(cache_bytes)
            .create(path)
            .map_err(|e| StoreError::Open {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        let store = ContextStore {
            db,
            path: path.to_path_buf(),
        };
        store.check_format()?;
        Ok(store)
    }

    /// The file the store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates the tables, and checks (or records) the entry format.
    fn check_format(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(failed)?;
        {
            let mut meta = txn.open_table(META).map_err(failed)?;
            txn.open_table(CONTEXTS).map_err(failed)?;
            let version = codec::FORMAT_VERSION.to_le_bytes();
            let format = meta
                .get(FORMAT_KEY)
                .map_err(failed)?
                .map(|v| v.value().to_vec());
            match format {
                Some(format) if format != version => {
                    return Err(StoreError::Version {
                        path: self.path.clone(),
                        found: format!("{format:?}"),
                        supported: codec::FORMAT_VERSION,
                    })
                }
                Some(_) => {}
                None => {
                    meta.insert(FORMAT_KEY, version.as_slice())
                        .map_err(failed)?;
                }
            }
        }
        txn.commit().map_err(failed)
    }

    /// Every stored stream, from the entries' headers, and the entries
    /// that are damaged (with why). A file whose table cannot list every
    /// entry it records (a page overwritten by another, or lost) is
    /// refused as damaged: its missing streams would otherwise look like
    /// streams never seen, and restart from 0 in silence.
    pub fn entries(&self) -> Result<Listing, StoreError> {
        guarded(&self.path, || self.entries_unguarded())
    }

    fn entries_unguarded(&self) -> Result<Listing, StoreError> {
        let txn = self.db.begin_read().map_err(failed)?;
        let table = txn.open_table(CONTEXTS).map_err(failed)?;
        let recorded = table.len().map_err(failed)?;
        let (mut good, mut bad) = (Vec::new(), Vec::new());
        let mut previous = None;
        for item in table.iter().map_err(failed)? {
            let (key, value) = item.map_err(failed)?;
            if previous.is_some_and(|p| p >= key.value()) {
                return Err(self.damaged("its stream entries are out of order"));
            }
            previous = Some(key.value());
            let stream = Uuid::from_u128(key.value());
            match codec::header(value.value()) {
                Ok(header) => good.push(StoredEntry {
                    stream,
                    bytes: header.bytes,
                    last_seen_ms: header.last_seen_ms,
                    rules: header.rules,
                }),
                Err(reason) => bad.push((stream, StoreError::Corrupt { stream, reason })),
            }
        }
        let listed = (good.len() + bad.len()) as u64;
        if listed != recorded {
            return Err(self.damaged(&format!(
                "it records {recorded} stream entries but {listed} can be read: pages were overwritten or lost"
            )));
        }
        Ok(Listing {
            entries: good,
            damaged: bad,
        })
    }

    fn damaged(&self, reason: &str) -> StoreError {
        StoreError::Damaged {
            path: self.path.clone(),
            reason: reason.to_string(),
        }
    }

    /// Writes `contexts`, made with the rules tagged `rules` (replacing
    /// their earlier entries), and removes the entries of `removed`, in one
    /// durable transaction. Returns the bytes of the entries written.
    pub fn write<'a>(
        &self,
        contexts: impl IntoIterator<Item = &'a StreamContext>,
        rules: RulesTag,
        removed: &[Uuid],
    ) -> Result<u64, StoreError> {
        guarded(&self.path, || {
            self.write_unguarded(contexts, rules, removed)
        })
    }

    fn write_unguarded<'a>(
        &self,
        contexts: impl IntoIterator<Item = &'a StreamContext>,
        rules: RulesTag,
        removed: &[Uuid],
    ) -> Result<u64, StoreError> {
        let txn = self.db.begin_write().map_err(failed)?;
        let mut written = 0;
        {
            let mut table = txn.open_table(CONTEXTS).map_err(failed)?;
            // Removals first: a stream closed and opened again since the
            // last write is removed, then written anew.
            for stream in removed {
                table.remove(stream.as_u128()).map_err(failed)?;
            }
            // In key order: B-tree inserts then touch each page once.
            let mut contexts: Vec<&StreamContext> = contexts.into_iter().collect();
            contexts.sort_unstable_by_key(|c| c.id.as_u128());
            let mut entry = Vec::new();
            for context in contexts {
                entry.clear();
                codec::encode(context, rules, &mut entry);
                written += entry.len() as u64;
                table
                    .insert(context.id.as_u128(), entry.as_slice())
                    .map_err(failed)?;
            }
        }
        txn.commit().map_err(failed)?;
        Ok(written)
    }

    /// The stored context of `stream` and the tag of its rules, if there is
    /// one. The entry stays (it is the stream's durable state until a newer
    /// one is written).
    pub fn read(&self, stream: Uuid) -> Result<Option<(StreamContext, RulesTag)>, StoreError> {
        // A damaged page fails this stream's read alone.
        guarded(&self.path, || self.read_unguarded(stream)).map_err(|error| match error {
            StoreError::Damaged { reason, .. } => StoreError::Corrupt { stream, reason },
            other => other,
        })
    }

    fn read_unguarded(
        &self,
        stream: Uuid,
    ) -> Result<Option<(StreamContext, RulesTag)>, StoreError> {
        let txn = self.db.begin_read().map_err(failed)?;
        let table = txn.open_table(CONTEXTS).map_err(failed)?;
        let Some(value) = table.get(stream.as_u128()).map_err(failed)? else {
            return Ok(None);
        };
        codec::decode(stream, value.value())
            .map(Some)
            .map_err(|reason| StoreError::Corrupt { stream, reason })
    }

    /// Streams stored now.
    pub fn len(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(failed)?;
        let table = txn.open_table(CONTEXTS).map_err(failed)?;
        table.len().map_err(failed)
    }

    /// Whether no stream is stored.
    pub fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.len()? == 0)
    }

    /// Size of the store's file.
    pub fn file_bytes(&self) -> u64 {
        std::fs::metadata(&self.path).map_or(0, |m| m.len())
    }

    /// Overwrites the raw entry of `stream` (tests of damaged entries,
    /// through `crate::test_support`).
    pub(crate) fn write_raw(&self, stream: Uuid, entry: &[u8]) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(failed)?;
        txn.open_table(CONTEXTS)
            .map_err(failed)?
            .insert(stream.as_u128(), entry)
            .map_err(failed)?;
        txn.commit().map_err(failed)
    }
}

/// Runs a store operation, turning a panic into [`StoreError::Damaged`]:
/// redb 4 panics on some damaged files ("Malformed allocator state", a
/// slice index out of range) where an error would be due, and a damaged
/// file must not take the process (or a shard and its streams) down.
///
/// Such a panic is expected and becomes an error that names the damage, so
/// its text and backtrace are not printed: a panic hook, installed on first
/// use, stays silent while this thread is inside `guarded` and hands every
/// other panic to the hook it replaced.
fn guarded<T>(path: &Path, work: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
    quiet_guarded_panics();
    let outer = GUARDED.with(|g| g.replace(true));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
    GUARDED.with(|g| g.set(outer));
    outcome.unwrap_or_else(|payload| {
        let reason = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "the store's reader failed".into());
        Err(StoreError::Damaged {
            path: path.to_path_buf(),
            reason,
        })
    })
}

thread_local! {
    /// Whether this thread runs a store operation under [`guarded`].
    static GUARDED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Installs, once per process, the panic hook [`guarded`] relies on.
fn quiet_guarded_panics() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !GUARDED.with(|g| g.get()) {
                previous(info);
            }
        }));
    });
}

/// A failed store operation.
fn failed(error: impl Into<redb::Error>) -> StoreError {
    StoreError::Io(error.into().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::{HeadKeep, Retention, StreamMode};

    const TAG: RulesTag = *b"rules-01";

    fn context(id: u128, data: &[u8]) -> StreamContext {
        let mut context =
            StreamContext::new(Uuid::from_u128(id), StreamMode::Chunks, 1, Retention::Off);
        context.record(
            data,
            &Default::default(),
            &HeadKeep::first(4),
            1_700_000_000_000,
        );
        context
    }

    fn open(dir: &tempfile::TempDir) -> ContextStore {
        ContextStore::open(&dir.path().join("s.redb"), 1 << 20).unwrap()
    }

    #[test]
    fn written_contexts_read_back_and_removals_remove() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let (a, b) = (context(1, b"first"), context(2, b"second one"));
        let written = store.write([&a, &b], TAG, &[]).unwrap();
        assert!(written > 0);
        assert_eq!(store.read(a.id).unwrap(), Some((a.clone(), TAG)));
        let listing = store.entries().unwrap();
        let mut offsets: Vec<(Uuid, u64)> = listing
            .entries
            .iter()
            .map(|e| (e.stream, e.bytes))
            .collect();
        offsets.sort();
        assert_eq!(offsets, [(a.id, 5), (b.id, 10)]);
        // A removal and a rewrite of the same stream in one write: the
        // rewrite wins.
        store.write([&b], TAG, &[a.id, b.id]).unwrap();
        assert_eq!(store.read(a.id).unwrap(), None);
        assert_eq!(store.len().unwrap(), 1);
    }

    #[test]
    fn damaged_entries_are_listed_apart_and_fail_their_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let good = context(1, b"good");
        store.write([&good], TAG, &[]).unwrap();
        let bad = Uuid::from_u128(2);
        store
            .write_raw(bad, b"YFSC\x01\x00 not a real entry at all, long enough")
            .unwrap();
        let listing = store.entries().unwrap();
        assert_eq!(listing.entries.len(), 1);
        assert_eq!(listing.damaged.len(), 1);
        assert_eq!(listing.damaged[0].0, bad);
        let error = store.read(bad).unwrap_err().to_string();
        assert!(
            error.contains(&format!("stream {bad} is damaged")),
            "{error}"
        );
        assert!(store.read(good.id).unwrap().is_some());
    }

    #[test]
    fn another_format_or_a_non_store_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        {
            let store = ContextStore::open(&path, 1 << 20).unwrap();
            let txn = store.db.begin_write().unwrap();
            txn.open_table(META)
                .unwrap()
                .insert(FORMAT_KEY, [9u8, 0].as_slice())
                .unwrap();
            txn.commit().unwrap();
        }
        let error = ContextStore::open(&path, 1 << 20).unwrap_err().to_string();
        assert!(error.contains("entry format"), "{error}");
        let garbage = dir.path().join("garbage");
        std::fs::write(&garbage, vec![0x5a; 8192]).unwrap();
        let error = ContextStore::open(&garbage, 1 << 20)
            .unwrap_err()
            .to_string();
        assert!(error.contains("cannot open the stream store"), "{error}");
    }
}
