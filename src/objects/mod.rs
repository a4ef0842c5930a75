//! Files inside flows: the bodies of HTTP/1.x messages and the attachments
//! of SMTP messages, each a stream of its own (a *file* stream), so that
//! rules written for files (headers at offset 0, `filesize`, `pe`) see the
//! file and not the protocol around it.
//!
//! [`ObjectExtractor`] takes each direction's bytes in stream order (from
//! [`crate::pcap::FlowTable`] or any reassembler) and tells the caller what
//! it found as [`ObjectEvent`]s: an object started, decoded bytes of it, an
//! object ended with its size and whether it was cut. Nothing here scans;
//! the caller feeds the objects to a scanner or the engine as streams named
//! by [`object_uuid`].
//!
//! One module per step: [`http`] frames HTTP/1.x messages (`httparse` for
//! heads; `Content-Length`, chunked, or until the close), [`smtp`] follows
//! an SMTP client's commands to its `DATA` and parses the message
//! (`mail-parser`: MIME, base64, quoted-printable), [`decode`] undoes
//! `Content-Encoding` under a size cap. A direction's protocol is told by
//! its first line, not its port. Bounds: a message head, an SMTP message
//! and an object's decoded size are capped ([`ObjectLimits`]); past a cap,
//! or on bytes that do not parse, the object ends marked cut with the
//! reason and the direction's own summary says what stopped its parsing:
//! other objects and other flows go on.

pub mod decode;
pub mod http;
pub mod smtp;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

use serde::Serialize;
use uuid::Uuid;

use decode::BodyDecoder;
pub use decode::Cut;

/// Bounds on what one direction's objects may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectLimits {
    /// Largest object, decoded; past it the object ends cut
    /// ([`Cut::SizeCap`]).
    pub max_object_bytes: u64,
    /// Largest HTTP message head or SMTP command line.
    pub max_head_bytes: usize,
    /// Largest SMTP message (it is parsed whole).
    pub max_message_bytes: usize,
    /// Most HTTP requests a connection may have waiting for responses.
    pub max_pending_requests: usize,
}

impl Default for ObjectLimits {
    fn default() -> Self {
        ObjectLimits {
            max_object_bytes: 64 << 20,
            max_head_bytes: 64 << 10,
            max_message_bytes: 64 << 20,
            max_pending_requests: 1024,
        }
    }
}

/// The protocol that carried an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// An HTTP/1.x request or response body.
    Http,
    /// An attachment of a message sent with SMTP.
    Smtp,
}

/// What is known of an object when it starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObjectInfo {
    /// Its stream id ([`object_uuid`]).
    #[serde(skip)]
    pub stream: Uuid,
    /// The stream id of the direction that carried it.
    pub flow: Uuid,
    /// The protocol that carried it.
    pub protocol: Protocol,
    /// Its number among its direction's objects, from 0.
    pub index: u32,
    /// Its `Content-Type`, when given.
    pub content_type: Option<String>,
    /// Its file name: `Content-Disposition`'s (or a MIME part's) name, or
    /// the last segment of the request's path.
    pub file_name: Option<String>,
    /// The request target it was sent to or fetched from (HTTP).
    pub uri: Option<String>,
    /// The `Content-Encoding` its bytes are still in, when yaraflow does
    /// not decode it (`br`, `zstd`, ...).
    pub encoding: Option<String>,
}

impl ObjectInfo {
    /// What the object says of itself as a file: its name, its path (the
    /// request target's, without the query) and its content type; the
    /// values of the file externals its stream's rules read
    /// ([`crate::FileInfo::externals`]).
    pub fn file_info(&self) -> crate::FileInfo {
        let path = self.uri.as_deref().map(|uri| {
            let path = uri.split(['?', '#']).next().unwrap_or_default();
            // An absolute-form target (`http://host/a.exe`, to proxies).
            match url::Url::parse(path) {
                Ok(url) if url.has_host() => url.path().to_string(),
                _ => path.to_string(),
            }
        });
        crate::FileInfo {
            name: self.file_name.clone(),
            path: path.filter(|p| !p.is_empty()),
            content_type: self.content_type.clone(),
        }
    }
}

/// An object, once it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObjectSummary {
    /// What was known when it started.
    #[serde(flatten)]
    pub info: ObjectInfo,
    /// Its size, decoded: the bytes its stream received.
    pub size: u64,
    /// Why its bytes stop short of its end, if they do.
    pub cut: Option<Cut>,
    /// What went wrong, if anything did.
    pub error: Option<String>,
}

/// What the extractor found in a direction's bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum ObjectEvent {
    /// An object starts: a new stream.
    Started(ObjectInfo),
    /// Decoded bytes of an object, following the previous ones.
    Data(Uuid, Vec<u8>),
    /// An object ended; no more events for its stream.
    Ended(ObjectSummary),
}

/// What the extractor made of a direction, once it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DirectionObjects {
    /// The protocol its first line told.
    pub protocol: Protocol,
    /// Objects it carried.
    pub objects: u32,
    /// What stopped its parsing before its end, if anything did.
    pub error: Option<String>,
}

/// The stream id of a direction's `index`-th object: UUID v5 of the
/// decimal index in the namespace of the direction's stream id.
pub fn object_uuid(flow: Uuid, index: u32) -> Uuid {
    Uuid::new_v5(&flow, index.to_string().as_bytes())
}

/// A connection, whichever direction is asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Connection(SocketAddr, SocketAddr);

impl Connection {
    fn of(src: SocketAddr, dst: SocketAddr) -> Connection {
        match src <= dst {
            true => Connection(src, dst),
            false => Connection(dst, src),
        }
    }
}

/// A request that waits for its response: what the response's framing
/// and file name depend on.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PendingRequest {
    method: String,
    uri: String,
}

/// A connection's state shared by its two directions.
#[derive(Default)]
struct ConnectionState {
    /// Its directions open in the extractor (0 to 2).
    open: u8,
    /// Requests sent, oldest first, whose responses have not started.
    requests: VecDeque<PendingRequest>,
}

/// How a direction's bytes are parsed.
enum Parser {
    /// Its first line is not complete yet.
    Undecided(Vec<u8>),
    Http(http::HttpDirection),
    Smtp(smtp::SmtpClient),
    /// Neither protocol, or parsing stopped: bytes pass by.
    Off,
}

/// One direction's state.
struct DirectionState {
    connection: Connection,
    parser: Parser,
    protocol: Option<Protocol>,
    objects: u32,
    error: Option<String>,
}

/// What a parser needs of its direction and connection to start, feed and
/// end objects.
pub(crate) struct Objects<'a> {
    flow: Uuid,
    count: &'a mut u32,
    limits: &'a ObjectLimits,
    requests: &'a mut VecDeque<PendingRequest>,
    out: &'a mut Vec<ObjectEvent>,
}

impl Objects<'_> {
    /// Starts the direction's next object.
    fn start(&mut self, protocol: Protocol, mut info: ObjectFields) -> OpenObject {
        let index = *self.count;
        *self.count += 1;
        let encoding = info.encoding.take();
        let decoded = encoding.as_deref().is_none_or(decode::decodes);
        let info = ObjectInfo {
            stream: object_uuid(self.flow, index),
            flow: self.flow,
            protocol,
            index,
            content_type: info.content_type,
            file_name: info.file_name,
            uri: info.uri,
            encoding: encoding.clone().filter(|_| !decoded),
        };
        self.out.push(ObjectEvent::Started(info.clone()));
        OpenObject {
            info,
            decoder: BodyDecoder::new(encoding.as_deref(), self.limits.max_object_bytes),
            size: 0,
        }
    }
}

/// The fields of an object that its protocol's headers tell.
#[derive(Debug, Default)]
pub(crate) struct ObjectFields {
    content_type: Option<String>,
    file_name: Option<String>,
    uri: Option<String>,
    encoding: Option<String>,
}

/// An object between its start and its end.
pub(crate) struct OpenObject {
    info: ObjectInfo,
    decoder: BodyDecoder,
    size: u64,
}

impl OpenObject {
    /// Decodes body bytes and passes them on.
    fn push(&mut self, bytes: &[u8], out: &mut Vec<ObjectEvent>) {
        let decoded = self.decoder.push(bytes);
        self.emit(decoded, out);
    }

    /// Ends the object; `cut` when its bytes stopped short (the decoder's
    /// own cut counts too).
    fn end(mut self, cut: Option<Cut>, error: Option<String>, out: &mut Vec<ObjectEvent>) {
        if cut.is_none() {
            let last = self.decoder.finish();
            self.emit(last, out);
        }
        out.push(ObjectEvent::Ended(ObjectSummary {
            cut: self.decoder.cut().or(cut),
            error: self.decoder.error().map(str::to_string).or(error),
            size: self.size,
            info: self.info,
        }));
    }

    fn emit(&mut self, decoded: Vec<u8>, out: &mut Vec<ObjectEvent>) {
        if !decoded.is_empty() {
            self.size += decoded.len() as u64;
            out.push(ObjectEvent::Data(self.info.stream, decoded));
        }
    }
}

/// Finds the files inside many directions' bytes.
pub struct ObjectExtractor {
    limits: ObjectLimits,
    directions: HashMap<Uuid, DirectionState>,
    connections: HashMap<Connection, ConnectionState>,
}

/// Longest first line the extractor waits for before it gives up on a
/// direction.
const MAX_FIRST_LINE: usize = 8 << 10;

impl ObjectExtractor {
    /// An extractor with these bounds.
    pub fn new(limits: ObjectLimits) -> ObjectExtractor {
        ObjectExtractor {
            limits,
            directions: HashMap::new(),
            connections: HashMap::new(),
        }
    }

    /// A direction opened. `handshake` says it opened with a SYN: a new
    /// connection, so requests left from an older one on the same
    /// addresses are forgotten.
    pub fn opened(&mut self, flow: Uuid, src: SocketAddr, dst: SocketAddr, handshake: bool) {
        let connection = Connection::of(src, dst);
        let shared = self.connections.entry(connection).or_default();
        if handshake {
            shared.requests.clear();
        }
        if let Some(old) = self.directions.get(&flow) {
            // The same direction opened again (a caller's retry): it
            // counts once.
            debug_assert_eq!(old.connection, connection);
        } else {
            shared.open = shared.open.saturating_add(1);
        }
        let state = DirectionState {
            connection,
            parser: Parser::Undecided(Vec::new()),
            protocol: None,
            objects: 0,
            error: None,
        };
        self.directions.insert(flow, state);
    }

    /// Bytes of a direction, in stream order; the objects they hold go to
    /// `out`. Bytes of a direction never opened are ignored.
    pub fn data(&mut self, flow: Uuid, bytes: &[u8], out: &mut Vec<ObjectEvent>) {
        let Some(state) = self.directions.get_mut(&flow) else {
            return;
        };
        if let Parser::Undecided(held) = &mut state.parser {
            let cut = bytes.len().min(MAX_FIRST_LINE);
            let mut first = std::mem::take(held);
            first.extend_from_slice(&bytes[..cut]);
            let (parser, protocol) = match decide(&first) {
                Decision::Wait => {
                    state.parser = Parser::Undecided(first);
                    return;
                }
                Decision::Neither => {
                    state.parser = Parser::Off;
                    return;
                }
                Decision::Smtp => (Parser::Smtp(smtp::SmtpClient::new()), Protocol::Smtp),
                Decision::Http(side) => {
                    (Parser::Http(http::HttpDirection::new(side)), Protocol::Http)
                }
            };
            (state.parser, state.protocol) = (parser, Some(protocol));
            let connections = &mut self.connections;
            feed(state, connections, &self.limits, flow, &first, out);
            feed(state, connections, &self.limits, flow, &bytes[cut..], out);
            return;
        }
        feed(state, &mut self.connections, &self.limits, flow, bytes, out);
    }

    /// A direction ended: its open object ends (cut if its framing says
    /// more was due), and what the direction carried is returned, `None`
    /// for a direction that was neither HTTP nor SMTP.
    pub fn ended(&mut self, flow: Uuid, out: &mut Vec<ObjectEvent>) -> Option<DirectionObjects> {
        let mut state = self.directions.remove(&flow)?;
        let shared = self.connections.entry(state.connection).or_default();
        let mut objects = Objects {
            flow,
            count: &mut state.objects,
            limits: &self.limits,
            requests: &mut shared.requests,
            out,
        };
        match std::mem::replace(&mut state.parser, Parser::Off) {
            Parser::Http(mut http) => http.finish(&mut objects),
            Parser::Smtp(mut smtp) => smtp.finish(&mut objects),
            Parser::Undecided(_) | Parser::Off => {}
        }
        shared.open = shared.open.saturating_sub(1);
        if shared.open == 0 {
            self.connections.remove(&state.connection);
        }
        Some(DirectionObjects {
            protocol: state.protocol?,
            objects: state.objects,
            error: state.error,
        })
    }

    /// Directions being followed (open, and not yet ended).
    pub fn directions(&self) -> usize {
        self.directions.len()
    }
}

/// Feeds bytes to a direction's parser; a parser that stops records why.
fn feed(
    state: &mut DirectionState,
    connections: &mut HashMap<Connection, ConnectionState>,
    limits: &ObjectLimits,
    flow: Uuid,
    bytes: &[u8],
    out: &mut Vec<ObjectEvent>,
) {
    if bytes.is_empty() || matches!(state.parser, Parser::Undecided(_) | Parser::Off) {
        return;
    }
    let shared = connections.entry(state.connection).or_default();
    let mut objects = Objects {
        flow,
        count: &mut state.objects,
        limits,
        requests: &mut shared.requests,
        out,
    };
    let stopped = match &mut state.parser {
        Parser::Http(http) => http.feed(bytes, &mut objects),
        Parser::Smtp(smtp) => smtp.feed(bytes, &mut objects),
        Parser::Undecided(_) | Parser::Off => Ok(()),
    };
    if let Err(error) = stopped {
        state.error.get_or_insert(error);
        state.parser = Parser::Off;
    }
}

/// How many of `bytes` reach up to and including the first line feed (all
/// of them if there is none), and whether the line is complete.
fn line_end(bytes: &[u8]) -> (usize, bool) {
    match memchr::memchr(b'\n', bytes) {
        Some(at) => (at + 1, true),
        None => (bytes.len(), false),
    }
}

/// Tells a direction's protocol from its first line.
fn decide(first: &[u8]) -> Decision {
    let Some(end) = memchr::memchr(b'\n', first) else {
        return match first.len() >= MAX_FIRST_LINE || !could_be_a_first_line(first) {
            true => Decision::Neither,
            false => Decision::Wait,
        };
    };
    let line = first[..end].strip_suffix(b"\r").unwrap_or(&first[..end]);
    if smtp::is_greeting(line) {
        Decision::Smtp
    } else if let Some(side) = http::side_of_first_line(line) {
        Decision::Http(side)
    } else {
        Decision::Neither
    }
}

/// What a direction's first bytes say about its protocol.
enum Decision {
    /// Its first line is not complete yet.
    Wait,
    /// Neither HTTP nor SMTP.
    Neither,
    /// An HTTP/1.x request or status line.
    Http(http::Side),
    /// An SMTP client's greeting.
    Smtp,
}

/// Whether an incomplete first line may still become HTTP's or SMTP's:
/// printable ASCII so far (binary directions are dropped at once).
fn could_be_a_first_line(first: &[u8]) -> bool {
    first
        .iter()
        .all(|&b| b == b'\r' || b == b'\t' || (0x20..0x7f).contains(&b))
}

#[cfg(test)]
mod tests;
