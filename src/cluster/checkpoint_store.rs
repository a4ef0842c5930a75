//! Where a partition's checkpoint lives: inline in its key-value entry
//! when it is small, in the object store when it is not, with the
//! key-value entry then holding a reference to the object.
//!
//! The key-value entry stays the one place that says which checkpoint is
//! current, and its revision stays the fencing token: a large checkpoint
//! is first written as an object, then the entry is updated
//! (compare-and-set) to point at it. Each writer has two objects per
//! partition, `p.<p>.<writer>.a` and `.b`, and writes the one its entry
//! does not point at: a writer fenced out (its update refused) only ever
//! overwrites an object of its own that no entry points at, never the
//! current one, and names are reused, so a busy partition does not leave
//! a deleted object's marker per checkpoint. The objects of former
//! writers are deleted by the next owner, once it has fenced them out:
//! it lists the partition's objects off its loop ([`list_objects`]) and
//! deletes every one that is neither its own nor current
//! ([`CheckpointStore::delete_orphans`]).
//!
//! ```text
//! reference entry:
//! 0..4    magic "YFCR"
//! 4..6    format version, u16 LE
//! 6..14   checksum: the first 8 bytes of BLAKE3 over bytes 14..
//! 14..    postcard body: object name, its length in bytes
//! ```

use async_nats::jetstream::{kv, object_store::ObjectStore};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::AsyncReadExt;

use super::config::ClusterConfig;
use super::error::ClusterError;
use crate::store::codec::Frame;

const REFERENCE: Frame = Frame {
    magic: b"YFCR",
    version: 1,
    header_len: 14,
    what: "a yaraflow checkpoint reference",
};

/// An object holding a checkpoint, as its key-value entry names it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct ObjectRef {
    /// The object's name in the checkpoint object store.
    pub name: String,
    /// Its length in bytes.
    pub len: u64,
}

impl ObjectRef {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        REFERENCE.start(&mut out);
        out.extend_from_slice(&postcard::to_stdvec(self).expect("a reference serializes"));
        Frame::seal(&mut out);
        out
    }

    /// The reference in a key-value entry, if the entry is one.
    fn decode(entry: &[u8]) -> Option<Result<ObjectRef, String>> {
        if !entry.starts_with(REFERENCE.magic) {
            return None;
        }
        let decoded = REFERENCE.check(entry).and_then(|()| {
            postcard::from_bytes(&entry[REFERENCE.header_len..])
                .map_err(|e| format!("reference does not decode: {e}"))
        });
        Some(decoded)
    }
}

/// A checkpoint as read: its bytes, the entry's revision, and the object
/// holding it when it is not inline.
#[derive(Default)]
pub(crate) struct Stored {
    /// The checkpoint's bytes (none: no checkpoint, or one deleted).
    pub bytes: Option<Bytes>,
    /// The key-value entry's revision (none: no entry yet).
    pub revision: Option<u64>,
    /// The object the entry points at.
    pub object: Option<ObjectRef>,
}

/// The checkpoints of a deployment: the key-value bucket (current
/// checkpoint or a reference, per partition) and the object store.
pub(crate) struct CheckpointStore {
    pub entries: kv::Store,
    pub objects: ObjectStore,
    /// Largest checkpoint kept inline in its entry.
    pub inline_limit: usize,
    /// Largest checkpoint read or written.
    pub max_bytes: usize,
}

impl CheckpointStore {
    /// Reads partition `p`'s current checkpoint.
    pub async fn read(&self, partition: u32) -> Result<Stored, ClusterError> {
        let Some(entry) = self.entry(partition).await? else {
            return Ok(Stored::default());
        };
        let revision = Some(entry.revision);
        if entry.operation != kv::Operation::Put {
            return Ok(Stored {
                revision,
                ..Stored::default()
            });
        }
        let Some(reference) = ObjectRef::decode(&entry.value) else {
            return Ok(Stored {
                bytes: Some(entry.value),
                revision,
                object: None,
            });
        };
        let reference =
            reference.map_err(|reason| ClusterError::Checkpoint { partition, reason })?;
        let bytes = self.fetch(partition, &reference).await?;
        Ok(Stored {
            bytes: Some(bytes),
            revision,
            object: Some(reference),
        })
    }

    async fn fetch(&self, partition: u32, reference: &ObjectRef) -> Result<Bytes, ClusterError> {
        let bad = |reason: String| ClusterError::Checkpoint { partition, reason };
        if reference.len > self.max_bytes as u64 {
            return Err(bad(format!(
                "its object {} holds {} bytes, more than max_checkpoint_bytes ({})",
                reference.name, reference.len, self.max_bytes
            )));
        }
        let what = || format!("reading checkpoint object {}", reference.name);
        let object = self
            .objects
            .get(&reference.name)
            .await
            .map_err(|e| ClusterError::js(what(), e))?;
        let mut bytes = Vec::with_capacity(reference.len as usize);
        object
            .take(reference.len + 1)
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| ClusterError::js(what(), e))?;
        if bytes.len() as u64 != reference.len {
            return Err(bad(format!(
                "object {} holds {} bytes, its reference says {}",
                reference.name,
                bytes.len(),
                reference.len
            )));
        }
        Ok(bytes.into())
    }

    /// Writes partition `p`'s checkpoint, by `writer`, over the entry at
    /// `revision` (none: there is no entry yet). Gives the entry's new
    /// revision and the object now holding the checkpoint, if any;
    /// `current` is the object the entry points at (the writer's other
    /// object is the one written). After an error the entry may or may not
    /// have moved (a lost acknowledgement): the caller must read it again
    /// before it writes again.
    pub async fn write(
        &self,
        partition: u32,
        writer: &str,
        bytes: Vec<u8>,
        revision: Option<u64>,
        current: Option<&ObjectRef>,
    ) -> Result<(u64, Option<ObjectRef>), ClusterError> {
        let key = ClusterConfig::partition_key(partition);
        let (entry, object) = match bytes.len() <= self.inline_limit {
            true => (bytes, None),
            false => {
                let name = free_object(partition, writer, current);
                let object = self.put_object(name, &bytes).await?;
                (object.encode(), Some(object))
            }
        };
        let revision = self.write_entry(&key, entry.into(), revision).await?;
        Ok((revision, object))
    }

    async fn put_object(&self, name: String, bytes: &[u8]) -> Result<ObjectRef, ClusterError> {
        let mut reader = bytes;
        self.objects
            .put(name.as_str(), &mut reader)
            .await
            .map_err(|e| ClusterError::js(format!("writing checkpoint object {name}"), e))?;
        Ok(ObjectRef {
            name,
            len: bytes.len() as u64,
        })
    }

    async fn write_entry(
        &self,
        key: &str,
        value: Bytes,
        revision: Option<u64>,
    ) -> Result<u64, ClusterError> {
        let written = match revision {
            Some(revision) => self.entries.update(key, value, revision).await,
            None => self
                .entries
                .create(key, value)
                .await
                .map_err(|e| kv::UpdateError::with_source(kv::UpdateErrorKind::Other, e)),
        };
        written.map_err(|e| ClusterError::js(format!("writing checkpoint {key}"), e))
    }

    /// The revision of partition `p`'s entry now (none: no entry).
    pub async fn revision(&self, partition: u32) -> Result<Option<u64>, ClusterError> {
        Ok(self.entry(partition).await?.map(|e| e.revision))
    }

    async fn entry(&self, partition: u32) -> Result<Option<kv::Entry>, ClusterError> {
        let key = ClusterConfig::partition_key(partition);
        self.entries
            .entry(&key)
            .await
            .map_err(|e| ClusterError::js(format!("reading checkpoint {key}"), e))
    }

    /// Deletes the objects `names` of partition `p` but `current` and
    /// those of `writer`: the orphans [`list_objects`] found, once the
    /// partition's owner has checked that `current` is what its entry
    /// points at. How many were deleted.
    pub async fn delete_orphans(
        &self,
        partition: u32,
        writer: &str,
        names: &[String],
        current: Option<&ObjectRef>,
    ) -> usize {
        let own = writer_prefix(partition, writer);
        let mut deleted = 0;
        for name in names {
            if current.is_some_and(|c| &c.name == name) || name.starts_with(&own) {
                continue;
            }
            if self.objects.delete(name).await.is_ok() {
                deleted += 1;
            }
        }
        deleted
    }
}

/// The names of partition `p`'s checkpoint objects (lists the whole
/// store: a worker asks only when it claims a partition that had an
/// owner, off its loop).
pub(crate) async fn list_objects(
    objects: ObjectStore,
    partition: u32,
) -> Result<Vec<String>, ClusterError> {
    let prefix = object_prefix(partition);
    let mut listing = objects
        .list()
        .await
        .map_err(|e| ClusterError::js("listing checkpoint objects", e))?;
    let mut names = Vec::new();
    while let Some(info) = listing.next().await {
        let info = info.map_err(|e| ClusterError::js("listing checkpoint objects", e))?;
        if info.name.starts_with(&prefix) && !info.deleted {
            names.push(info.name);
        }
    }
    Ok(names)
}

/// The object `writer` writes partition `p`'s next checkpoint to: of its
/// two, the one the entry does not point at.
fn free_object(partition: u32, writer: &str, current: Option<&ObjectRef>) -> String {
    let first = format!("{}a", writer_prefix(partition, writer));
    match current.is_some_and(|c| c.name == first) {
        true => format!("{}b", writer_prefix(partition, writer)),
        false => first,
    }
}

/// The start of the names of `writer`'s objects of partition `p`.
fn writer_prefix(partition: u32, writer: &str) -> String {
    format!("{}{writer}.", object_prefix(partition))
}

/// The start of the names of partition `p`'s checkpoint objects.
fn object_prefix(partition: u32) -> String {
    format!("{}.", ClusterConfig::partition_key(partition))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reference_round_trips_and_is_told_from_a_checkpoint() {
        let reference = ObjectRef {
            name: "p.3.0123abcd".into(),
            len: 5 << 20,
        };
        let entry = reference.encode();
        assert_eq!(ObjectRef::decode(&entry).unwrap().unwrap(), reference);
        let inline = super::super::Checkpoint::default().encode();
        assert!(ObjectRef::decode(&inline).is_none());
        for at in 0..entry.len() {
            let mut bad = entry.clone();
            bad[at] ^= 0x10;
            // A flip in the magic makes it no reference at all (and no
            // checkpoint either: its decoding refuses it).
            if let Some(decoded) = ObjectRef::decode(&bad) {
                assert!(decoded.is_err(), "flip at {at}");
            }
        }
    }

    #[test]
    fn object_names_are_per_partition_and_writer_and_alternate() {
        assert_eq!(object_prefix(7), "p.7.");
        assert!(!format!("{}x", object_prefix(17)).starts_with(&object_prefix(1)));
        let first = free_object(3, "w1", None);
        assert_eq!(first, "p.3.w1.a");
        let reference = |name: &str| ObjectRef {
            name: name.into(),
            len: 1,
        };
        assert_eq!(free_object(3, "w1", Some(&reference(&first))), "p.3.w1.b");
        assert_eq!(free_object(3, "w1", Some(&reference("p.3.w1.b"))), first);
        // Another writer's current object is never the one written.
        assert_eq!(free_object(3, "w2", Some(&reference(&first))), "p.3.w2.a");
        assert!(free_object(3, "w1", None).starts_with(&writer_prefix(3, "w1")));
        assert!(!writer_prefix(3, "w1").starts_with(&writer_prefix(3, "w")));
    }
}
