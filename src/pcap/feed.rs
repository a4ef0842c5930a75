//! Reassembled flows into the engine: each direction a stream, and each
//! file inside a direction ([`crate::objects`]) a stream of its own.
//!
//! [`FlowFeed`] is the bridge any reassembler uses, `yaraflow pcap` among
//! them: hand it [`FlowEvent`]s, get back the verdict of each direction
//! and each object that ended. Chunks go to the engine in bursts (one
//! message per shard for many streams), and the streams that ended in a
//! burst are closed after its chunks, all closes sent before the first
//! answer is awaited.

use bytes::Bytes;
use uuid::Uuid;

use super::flows::{FlowEvent, FlowSummary};
use crate::engine::BlockingHandle;
use crate::error::EngineError;
use crate::objects::{DirectionObjects, ObjectEvent, ObjectExtractor, ObjectLimits, ObjectSummary};
use crate::results::StreamResults;
use crate::rules::External;
use crate::stream::StreamMode;

/// Chunks (or ended streams) gathered before they go to the engine.
const BURST: usize = 64;
/// Largest chunk handed to the engine (reassembly can release more at
/// once).
const MAX_CHUNK: usize = 64 << 10;

/// A stream that ended: a direction or a file inside one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// A direction, with what its files were, if it carried HTTP or SMTP.
    Flow(FlowSummary, Option<DirectionObjects>),
    /// A file inside a direction.
    Object(ObjectSummary),
}

impl Ended {
    /// The stream id of what ended.
    pub fn stream(&self) -> Uuid {
        match self {
            Ended::Flow(summary, _) => summary.stream,
            Ended::Object(summary) => summary.info.stream,
        }
    }
}

/// What ended, and its stream's final results (`Ok(None)`: the engine did
/// not know the stream, which it had lost).
pub type Verdict = (Ended, Result<Option<StreamResults>, EngineError>);

/// Feeds flow events (and the files inside them) to the engine.
pub struct FlowFeed {
    handle: BlockingHandle,
    extractor: Option<ObjectExtractor>,
    burst: Vec<(Uuid, Bytes)>,
    /// Objects that started since the last burst, with their file
    /// externals: opened before the burst's chunks go.
    opened_files: Vec<(Uuid, Vec<External>)>,
    ended: Vec<Ended>,
    objects: Vec<ObjectEvent>,
}

impl FlowFeed {
    /// A feed into `handle`'s engine; with `objects`, the files inside
    /// HTTP and SMTP directions are streams too, within those bounds.
    pub fn new(handle: BlockingHandle, objects: Option<ObjectLimits>) -> FlowFeed {
        FlowFeed {
            handle,
            extractor: objects.map(ObjectExtractor::new),
            burst: Vec::new(),
            opened_files: Vec::new(),
            ended: Vec::new(),
            objects: Vec::new(),
        }
    }

    /// Acts on flow events (draining them); returns the verdicts of the
    /// streams that ended, whenever a burst went to the engine.
    pub fn take(&mut self, events: &mut Vec<FlowEvent>) -> Result<Vec<Verdict>, EngineError> {
        let mut verdicts = Vec::new();
        for event in events.drain(..) {
            self.event(event);
            let gathered = self.burst.len().max(self.ended.len());
            if gathered.max(self.opened_files.len()) >= BURST {
                verdicts.extend(self.flush()?);
            }
        }
        Ok(verdicts)
    }

    /// Sends what is gathered to the engine, closes the streams that
    /// ended, and returns their verdicts.
    pub fn flush(&mut self) -> Result<Vec<Verdict>, EngineError> {
        for (stream, externals) in self.opened_files.drain(..) {
            self.handle
                .open_stream(stream, StreamMode::Chunks, externals)?;
        }
        if !self.burst.is_empty() {
            self.handle.scan_chunks(std::mem::take(&mut self.burst))?;
        }
        let ended = std::mem::take(&mut self.ended);
        let streams: Vec<Uuid> = ended.iter().map(Ended::stream).collect();
        Ok(ended
            .into_iter()
            .zip(self.handle.close_streams(&streams))
            .collect())
    }

    fn event(&mut self, event: FlowEvent) {
        match event {
            FlowEvent::Opened(opened) => {
                if let Some(extractor) = &mut self.extractor {
                    let handshake = opened.role != super::Role::Unknown;
                    extractor.opened(opened.stream, opened.src, opened.dst, handshake);
                }
                // An empty chunk opens the stream: a direction that
                // carries no byte still gets its verdict (`not $a`).
                self.burst.push((opened.stream, Bytes::new()));
            }
            FlowEvent::Data(stream, bytes) => {
                if let Some(extractor) = &mut self.extractor {
                    extractor.data(stream, &bytes, &mut self.objects);
                }
                self.chunks(stream, bytes);
                self.object_events();
            }
            FlowEvent::Ended(summary) => {
                let objects = self
                    .extractor
                    .as_mut()
                    .and_then(|e| e.ended(summary.stream, &mut self.objects));
                self.object_events();
                self.ended.push(Ended::Flow(summary, objects));
            }
        }
    }

    /// Object events into chunks and ends.
    fn object_events(&mut self) {
        let mut events = std::mem::take(&mut self.objects);
        for event in events.drain(..) {
            match event {
                ObjectEvent::Started(info) => {
                    // Opened with what it is (its name, its type); the
                    // rules' file externals read it.
                    let externals = info.file_info().externals();
                    self.opened_files.push((info.stream, externals));
                }
                ObjectEvent::Data(stream, bytes) => self.chunks(stream, bytes),
                ObjectEvent::Ended(summary) => self.ended.push(Ended::Object(summary)),
            }
        }
        self.objects = events;
    }

    fn chunks(&mut self, stream: Uuid, bytes: Vec<u8>) {
        let bytes = Bytes::from(bytes);
        for at in (0..bytes.len()).step_by(MAX_CHUNK) {
            let end = (at + MAX_CHUNK).min(bytes.len());
            self.burst.push((stream, bytes.slice(at..end)));
        }
    }
}
