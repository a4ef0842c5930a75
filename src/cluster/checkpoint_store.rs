//! Where a partition's checkpoint lives: inline in its key-value entry
//! when it is small, in the object store when it is not, with the
//! key-value entry then holding a reference to the object.
//!
//! The key-value entry stays the one place that says which checkpoint is
//! current, and its revision stays the fencing token: a large checkpoint
//! is first written as an object under a name no other write uses, then
//! the entry is updated (compare-and-set) to point at it. A writer fenced
//! out between the two finds its update refused and deletes its object;
//! once an update lands, the object the entry pointed at before is
//! deleted. Only a crash between the two writes leaves an object nobody
//! points at: the worker that takes the partition over from the crashed
//! one lists the partition's objects ([`list_objects`], off its loop) and
//! deletes all but the current one ([`CheckpointStore::delete_orphans`]).
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
}

impl CheckpointStore {
    /// Reads partition `p`'s current checkpoint.
    pub async fn read(&self, partition: u32) -> Result<Stored, ClusterError> {
        let key = ClusterConfig::partition_key(partition);
        let entry = self
            .entries
            .entry(&key)
            .await
            .map_err(|e| ClusterError::js(format!("reading checkpoint {key}"), e))?;
        let Some(entry) = entry else {
            return Ok(Stored {
                bytes: None,
                revision: None,
                object: None,
            });
        };
        let revision = Some(entry.revision);
        if entry.operation != kv::Operation::Put {
            return Ok(Stored {
                bytes: None,
                revision,
                object: None,
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
        let what = || format!("reading checkpoint object {}", reference.name);
        let mut object = self
            .objects
            .get(&reference.name)
            .await
            .map_err(|e| ClusterError::js(what(), e))?;
        let mut bytes = Vec::with_capacity(usize::try_from(reference.len).unwrap_or(0));
        object
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| ClusterError::js(what(), e))?;
        if bytes.len() as u64 != reference.len {
            return Err(ClusterError::Checkpoint {
                partition,
                reason: format!(
                    "object {} holds {} bytes, its reference says {}",
                    reference.name,
                    bytes.len(),
                    reference.len
                ),
            });
        }
        Ok(bytes.into())
    }

    /// Writes partition `p`'s checkpoint over the entry at `revision`
    /// (none: there is no entry yet). Gives the entry's new revision and
    /// the object now holding the checkpoint, if any; `former` is the
    /// object the entry pointed at, deleted once the write lands.
    pub async fn write(
        &self,
        partition: u32,
        bytes: Vec<u8>,
        revision: Option<u64>,
        former: Option<&ObjectRef>,
    ) -> Result<(u64, Option<ObjectRef>), ClusterError> {
        let key = ClusterConfig::partition_key(partition);
        let (entry, object) = match bytes.len() <= self.inline_limit {
            true => (bytes, None),
            false => {
                let object = self.put_object(partition, &bytes).await?;
                (object.encode(), Some(object))
            }
        };
        match self.write_entry(&key, entry.into(), revision).await {
            Ok(revision) => {
                if let Some(former) = former.filter(|f| Some(*f) != object.as_ref()) {
                    self.delete_object(former).await;
                }
                Ok((revision, object))
            }
            Err(err) => {
                if let Some(object) = &object {
                    self.delete_object(object).await;
                }
                Err(err)
            }
        }
    }

    async fn put_object(&self, partition: u32, bytes: &[u8]) -> Result<ObjectRef, ClusterError> {
        let name = format!(
            "{}{}",
            object_prefix(partition),
            uuid::Uuid::new_v4().simple()
        );
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

    /// Deletes an object no entry points at any more (best effort: one
    /// left behind is swept by the partition's next claim).
    async fn delete_object(&self, object: &ObjectRef) {
        let _ = self.objects.delete(&object.name).await;
    }

    /// Deletes the objects `names` except `current`: the orphans
    /// [`list_objects`] found, once the partition's owner knows which
    /// object its entry points at now. How many were deleted.
    pub async fn delete_orphans(&self, names: &[String], current: Option<&ObjectRef>) -> usize {
        let mut deleted = 0;
        for name in names {
            if current.is_some_and(|c| &c.name == name) {
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
/// store: a worker asks only at takeovers, off its loop). Every one but
/// the object its entry points at is an orphan.
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
    fn object_names_are_per_partition() {
        assert_eq!(object_prefix(7), "p.7.");
        assert!(!format!("{}x", object_prefix(17)).starts_with(&object_prefix(1)));
    }
}
