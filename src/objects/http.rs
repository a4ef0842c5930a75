//! HTTP/1.x message framing, one direction at a time: requests from a
//! client, responses from a server, each body an object.
//!
//! Heads are parsed with `httparse` once their blank line arrived (found
//! by a search that resumes where it stopped, so a head dribbled byte by
//! byte costs its length, not its square). Bodies are framed as RFC 9112
//! says: chunked transfer coding, else `Content-Length`, else (responses
//! only) until the connection closes. A response's framing depends on its
//! request (`HEAD` has no body, a `CONNECT` that succeeds turns the
//! connection into a tunnel), so requests are queued per connection, in
//! order, for pipelined responses to take.
//!
//! What stops a direction: a head that does not parse or exceeds its cap,
//! an invalid `Content-Length`, a malformed chunk, an upgrade or a tunnel
//! (the bytes after them are not HTTP). The object open at that point ends
//! marked cut; the direction's error says why.

use super::{Cut, ObjectFields, Objects, OpenObject, PendingRequest, Protocol};

/// Which side of the conversation a direction carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Requests (its first line is a request line).
    Client,
    /// Responses (its first line is a status line).
    Server,
}

/// Whether a first line is an HTTP/1.x request or status line, and which.
pub fn side_of_first_line(line: &[u8]) -> Option<Side> {
    if line.starts_with(b"HTTP/1.") {
        return Some(Side::Server);
    }
    let mut words = line.split(|&b| b == b' ');
    let method = words.next()?;
    let valid_method = !method.is_empty()
        && method.len() <= 24
        && method.iter().all(|b| b.is_ascii_uppercase() || *b == b'-');
    let version = line.rsplit(|&b| b == b' ').next()?;
    (valid_method && words.next().is_some() && version.starts_with(b"HTTP/1."))
        .then_some(Side::Client)
}

/// How the current body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// This many bytes are still due.
    Length(u64),
    /// Chunked transfer coding, at this step.
    Chunked(ChunkStep),
    /// The body runs to the end of the direction.
    UntilClose,
}

/// Where a chunked body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkStep {
    /// Reading a chunk-size line.
    Size,
    /// This many bytes of chunk data are still due.
    Data(u64),
    /// Reading the line break after a chunk's data.
    DataEnd,
    /// Reading trailer lines, up to the blank one.
    Trailers,
}

/// Where a direction is.
enum State {
    /// Reading a message head.
    Head,
    /// Reading a body, which is an object.
    Body(Framing, Box<OpenObject>),
    /// The direction's bytes after this message are not HTTP (an upgrade
    /// or a tunnel).
    Done,
}

/// One direction's HTTP parser.
pub struct HttpDirection {
    side: Side,
    state: State,
    /// The message head, or the chunk line, read so far.
    line: Vec<u8>,
    /// Where the search for the head's end resumes.
    searched: usize,
    /// The last request asked to switch protocols: bytes that do not
    /// parse as a head after it are the new protocol's, not an error.
    upgrading: bool,
}

impl HttpDirection {
    /// A parser for a direction that carries `side`'s messages.
    pub fn new(side: Side) -> HttpDirection {
        HttpDirection {
            side,
            state: State::Head,
            line: Vec::new(),
            searched: 0,
            upgrading: false,
        }
    }

    /// Parses the direction's next bytes. `Err` says why parsing stopped
    /// (the open object ended, cut).
    pub(crate) fn feed(
        &mut self,
        mut bytes: &[u8],
        objects: &mut Objects<'_>,
    ) -> Result<(), String> {
        while !bytes.is_empty() {
            let used = match self.step(bytes, objects) {
                Ok(used) => used,
                Err(error) => {
                    self.abandon(objects, &error);
                    return Err(error);
                }
            };
            bytes = &bytes[used..];
        }
        Ok(())
    }

    /// The direction ended: a body that runs to the close ends complete,
    /// any other open body ends cut.
    pub(crate) fn finish(&mut self, objects: &mut Objects<'_>) {
        if let State::Body(framing, object) = std::mem::replace(&mut self.state, State::Done) {
            let cut = (framing != Framing::UntilClose).then_some(Cut::FlowEnded);
            object.end(cut, None, objects.out);
        }
    }

    /// Ends the open object, cut, when parsing stops.
    fn abandon(&mut self, objects: &mut Objects<'_>, error: &str) {
        if let State::Body(_, object) = std::mem::replace(&mut self.state, State::Done) {
            object.end(Some(Cut::Malformed), Some(error.to_string()), objects.out);
        }
    }

    /// Takes what it can of `bytes`; returns how many it used.
    fn step(&mut self, bytes: &[u8], objects: &mut Objects<'_>) -> Result<usize, String> {
        match &mut self.state {
            State::Head => self.read_head(bytes, objects),
            State::Done => Ok(bytes.len()),
            State::Body(Framing::UntilClose, object) => {
                object.push(bytes, objects.out);
                Ok(bytes.len())
            }
            State::Body(Framing::Length(due), object) => {
                let used = bytes.len().min(usize::try_from(*due).unwrap_or(usize::MAX));
                object.push(&bytes[..used], objects.out);
                *due -= used as u64;
                if *due == 0 {
                    self.end_body(objects);
                }
                Ok(used)
            }
            State::Body(Framing::Chunked(_), _) => self.read_chunked(bytes, objects),
        }
    }

    /// Ends the current body, complete; the next message's head follows.
    fn end_body(&mut self, objects: &mut Objects<'_>) {
        if let State::Body(_, object) = std::mem::replace(&mut self.state, State::Head) {
            object.end(None, None, objects.out);
        }
    }

    /// Reads a message head up to its blank line, then parses it.
    fn read_head(&mut self, bytes: &[u8], objects: &mut Objects<'_>) -> Result<usize, String> {
        if self.line.is_empty() {
            // Blank lines between messages are allowed (RFC 9112, 2.2).
            let blank = bytes
                .iter()
                .take_while(|&&b| b == b'\r' || b == b'\n')
                .count();
            if blank > 0 {
                return Ok(blank);
            }
        }
        let room = objects
            .limits
            .max_head_bytes
            .saturating_sub(self.line.len());
        let take = bytes.len().min(room);
        let before = self.line.len();
        self.line.extend_from_slice(&bytes[..take]);
        let Some(end) = head_end(&self.line, self.searched) else {
            self.searched = self.line.len().saturating_sub(3);
            if self.line.len() >= objects.limits.max_head_bytes {
                return Err(format!(
                    "a message head longer than {} bytes",
                    objects.limits.max_head_bytes
                ));
            }
            return Ok(take);
        };
        self.line.truncate(end);
        self.searched = 0;
        let head = std::mem::take(&mut self.line);
        let parsed = match self.side {
            Side::Client => self.start_request(&head, objects),
            Side::Server => self.start_response(&head, objects),
        };
        self.line = head;
        self.line.clear();
        match parsed {
            Err(_) if self.upgrading => self.state = State::Done,
            parsed => parsed?,
        }
        Ok(end - before)
    }

    /// Parses a request head; queues the request and starts its body.
    fn start_request(&mut self, head: &[u8], objects: &mut Objects<'_>) -> Result<(), String> {
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut request = httparse::Request::new(&mut headers);
        parse_status(request.parse(head))?;
        let method = request.method.unwrap_or_default().to_string();
        let uri = request.path.unwrap_or_default().to_string();
        let fields = Fields(request.headers);
        let framing = fields.framing()?.unwrap_or(Framing::Length(0));
        let tunnel = method.eq_ignore_ascii_case("CONNECT");
        self.upgrading = fields.get("upgrade").is_some();
        if objects.requests.len() < objects.limits.max_pending_requests {
            objects.requests.push_back(PendingRequest {
                method,
                uri: uri.clone(),
            });
        }
        let object = ObjectFields {
            file_name: fields.disposition_file_name(),
            uri: Some(uri),
            ..fields.object_fields()
        };
        self.start_body(framing, object, objects);
        if tunnel && matches!(self.state, State::Head) {
            self.state = State::Done;
        }
        Ok(())
    }

    /// Parses a response head; pairs it with its request and starts its
    /// body.
    fn start_response(&mut self, head: &[u8], objects: &mut Objects<'_>) -> Result<(), String> {
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut response = httparse::Response::new(&mut headers);
        parse_status(response.parse(head))?;
        let status = response.code.unwrap_or_default();
        if (100..200).contains(&status) && status != 101 {
            // An interim response: its request waits for the final one.
            return Ok(());
        }
        let request = objects.requests.pop_front();
        let method = request.as_ref().map_or("GET", |r| r.method.as_str());
        if status == 101 || (method.eq_ignore_ascii_case("CONNECT") && (200..300).contains(&status))
        {
            self.state = State::Done;
            return Ok(());
        }
        let fields = Fields(response.headers);
        let bodiless = method.eq_ignore_ascii_case("HEAD") || status == 204 || status == 304;
        let framing = match bodiless {
            true => Framing::Length(0),
            false => fields.framing()?.unwrap_or(Framing::UntilClose),
        };
        let uri = request.map(|r| r.uri);
        let object = ObjectFields {
            file_name: fields
                .disposition_file_name()
                .or_else(|| uri.as_deref().and_then(file_name_of_path)),
            uri,
            ..fields.object_fields()
        };
        self.start_body(framing, object, objects);
        Ok(())
    }

    /// Starts the body a head announced, unless it has none.
    fn start_body(&mut self, framing: Framing, fields: ObjectFields, objects: &mut Objects<'_>) {
        if framing != Framing::Length(0) {
            let object = objects.start(Protocol::Http, fields);
            self.state = State::Body(framing, Box::new(object));
        }
    }

    /// Reads chunked transfer coding: size lines, data, trailers.
    fn read_chunked(&mut self, bytes: &[u8], objects: &mut Objects<'_>) -> Result<usize, String> {
        let State::Body(Framing::Chunked(step), object) = &mut self.state else {
            unreachable!("read_chunked runs in a chunked body");
        };
        if let ChunkStep::Data(due) = step {
            let used = bytes.len().min(usize::try_from(*due).unwrap_or(usize::MAX));
            object.push(&bytes[..used], objects.out);
            *due -= used as u64;
            if *due == 0 {
                *step = ChunkStep::DataEnd;
            }
            return Ok(used);
        }
        let (used, complete) = take_line(&mut self.line, bytes, 4096)?;
        if !complete {
            return Ok(used);
        }
        let line = std::mem::take(&mut self.line);
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        match *step {
            ChunkStep::Size => {
                *step = match chunk_size(text)? {
                    0 => ChunkStep::Trailers,
                    size => ChunkStep::Data(size),
                }
            }
            ChunkStep::DataEnd if text.is_empty() => *step = ChunkStep::Size,
            ChunkStep::DataEnd => return Err("a chunk's data runs past its size".to_string()),
            ChunkStep::Trailers if text.is_empty() => self.end_body(objects),
            ChunkStep::Trailers | ChunkStep::Data(_) => {}
        }
        Ok(used)
    }
}

/// Appends `bytes` up to the first line feed to `line`; returns the bytes
/// used and whether the line is complete.
fn take_line(line: &mut Vec<u8>, bytes: &[u8], max: usize) -> Result<(usize, bool), String> {
    let (used, complete) = super::line_end(bytes);
    line.extend_from_slice(&bytes[..used]);
    if line.len() > max {
        return Err(format!("a chunk line longer than {max} bytes"));
    }
    Ok((used, complete))
}

/// A chunk-size line's size (hex digits, maybe followed by extensions).
fn chunk_size(line: &[u8]) -> Result<u64, String> {
    let digits = line.split(|&b| b == b';').next().unwrap_or_default();
    let digits = std::str::from_utf8(digits).unwrap_or_default().trim();
    match digits.len() {
        1..=15 => u64::from_str_radix(digits, 16).ok(),
        _ => None,
    }
    .ok_or_else(|| {
        format!(
            "a malformed chunk size line {:?}",
            String::from_utf8_lossy(line)
        )
    })
}

/// The end of a head (after its blank line), searching from `from`.
fn head_end(bytes: &[u8], from: usize) -> Option<usize> {
    memchr::memchr_iter(b'\n', &bytes[from..]).find_map(|at| {
        let rest = &bytes[from + at + 1..];
        match rest.first() {
            Some(b'\n') => Some(from + at + 2),
            Some(b'\r') if rest.get(1) == Some(&b'\n') => Some(from + at + 3),
            _ => None,
        }
    })
}

fn parse_status(parsed: httparse::Result<usize>) -> Result<(), String> {
    match parsed {
        Ok(httparse::Status::Complete(_)) => Ok(()),
        Ok(httparse::Status::Partial) => Err("an incomplete message head".to_string()),
        Err(err) => Err(format!("a malformed message head ({err})")),
    }
}

/// A head's header fields.
struct Fields<'h, 'b>(&'h [httparse::Header<'b>]);

impl Fields<'_, '_> {
    /// The first value of a field, as text.
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .map(str::trim)
    }

    /// The body framing the head announces, `None` if it names none.
    fn framing(&self) -> Result<Option<Framing>, String> {
        if let Some(codings) = self.get("transfer-encoding") {
            let last = codings.rsplit(',').next().unwrap_or_default().trim();
            if last.eq_ignore_ascii_case("chunked") {
                return Ok(Some(Framing::Chunked(ChunkStep::Size)));
            }
            return Ok(Some(Framing::UntilClose));
        }
        let lengths: Vec<&str> = self
            .0
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("content-length"))
            .filter_map(|h| std::str::from_utf8(h.value).ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        let Some(first) = lengths.first() else {
            return Ok(None);
        };
        match first.parse::<u64>() {
            Ok(length) if lengths.iter().all(|l| l == first) => Ok(Some(Framing::Length(length))),
            _ => Err(format!(
                "an invalid Content-Length {:?}",
                lengths.join(", ")
            )),
        }
    }

    /// `Content-Type` and `Content-Encoding`.
    fn object_fields(&self) -> ObjectFields {
        ObjectFields {
            content_type: self.get("content-type").map(str::to_string),
            encoding: self.get("content-encoding").map(str::to_string),
            ..ObjectFields::default()
        }
    }

    /// The file name `Content-Disposition` gives, if any.
    fn disposition_file_name(&self) -> Option<String> {
        let value = self.get("content-disposition")?;
        value.split(';').find_map(|param| {
            let (key, name) = param.split_once('=')?;
            let key = key.trim().to_ascii_lowercase();
            let name = name.trim().trim_matches('"');
            match key.as_str() {
                "filename" if !name.is_empty() => Some(name.to_string()),
                "filename*" => name.rsplit('\'').next().map(percent_decoded),
                _ => None,
            }
        })
    }
}

/// The last segment of a request target's path, percent-decoded, if not
/// empty.
fn file_name_of_path(uri: &str) -> Option<String> {
    let path = uri.split(['?', '#']).next().unwrap_or_default();
    let last = path.rsplit('/').next().unwrap_or_default();
    (!last.is_empty()).then(|| percent_decoded(last))
}

fn percent_decoded(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}
