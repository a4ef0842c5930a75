//! SMTP, the client's direction: commands up to `DATA`, then the message up
//! to its lone `.` line (dot-stuffing undone), parsed whole by
//! `mail-parser` once it ended; each attachment (base64 and
//! quoted-printable decoded, nested messages included) is an object.
//!
//! A message is held until its end, up to
//! [`super::ObjectLimits::max_message_bytes`]; past that its bytes are
//! dropped and its attachments end cut. A multipart message whose closing
//! boundary never came (the sender stopped mid-part) has its last
//! attachment marked cut with the reason. `BDAT` (CHUNKING) is not
//! followed, and `STARTTLS` ends the parsing of its direction (what
//! follows is TLS).

use mail_parser::{MessageParser, MimeHeaders};

use super::{Cut, ObjectFields, Objects, Protocol};

/// Whether a first line is an SMTP client's greeting.
pub fn is_greeting(line: &[u8]) -> bool {
    let verb = line.get(..5).unwrap_or_default();
    [b"EHLO ", b"HELO ", b"LHLO "]
        .iter()
        .any(|g| verb.eq_ignore_ascii_case(&g[..]))
}

/// Where a client is.
enum State {
    /// Sending commands; the current line so far.
    Commands,
    /// Sending a message after `DATA`.
    Message,
    /// After `STARTTLS`: not SMTP any more.
    Done,
}

/// One SMTP client direction's parser.
pub struct SmtpClient {
    state: State,
    /// The current command line, or the held start of a message line.
    line: Vec<u8>,
    /// The current message, dot-stuffing undone.
    message: Vec<u8>,
    /// The current message outgrew its cap.
    message_cut: bool,
    /// Inside a message line (its start was passed on).
    mid_line: bool,
}

impl SmtpClient {
    /// A parser at the client's greeting.
    pub fn new() -> SmtpClient {
        SmtpClient {
            state: State::Commands,
            line: Vec::new(),
            message: Vec::new(),
            message_cut: false,
            mid_line: false,
        }
    }

    /// Parses the direction's next bytes. `Err` says why parsing stopped.
    pub(crate) fn feed(
        &mut self,
        mut bytes: &[u8],
        objects: &mut Objects<'_>,
    ) -> Result<(), String> {
        while !bytes.is_empty() {
            let (used, complete) = super::line_end(bytes);
            match self.state {
                State::Done => return Ok(()),
                State::Commands => self.command_bytes(&bytes[..used], complete, objects)?,
                State::Message => self.message_bytes(&bytes[..used], complete, objects),
            }
            bytes = &bytes[used..];
        }
        Ok(())
    }

    /// The direction ended: a message it was sending ends, cut.
    pub(crate) fn finish(&mut self, objects: &mut Objects<'_>) {
        if let State::Message = self.state {
            self.end_message(objects, Some(Cut::FlowEnded));
        }
    }

    fn command_bytes(
        &mut self,
        bytes: &[u8],
        complete: bool,
        objects: &mut Objects<'_>,
    ) -> Result<(), String> {
        self.line.extend_from_slice(bytes);
        if self.line.len() > objects.limits.max_head_bytes {
            return Err(format!(
                "an SMTP command line longer than {} bytes",
                objects.limits.max_head_bytes
            ));
        }
        if !complete {
            return Ok(());
        }
        let line = std::mem::take(&mut self.line);
        let command = line.trim_ascii();
        if command.eq_ignore_ascii_case(b"DATA") {
            self.state = State::Message;
        } else if command.eq_ignore_ascii_case(b"STARTTLS") {
            self.state = State::Done;
        }
        Ok(())
    }

    /// Takes a message's bytes, a line at most. A line's start is held
    /// while it may still be the lone `.` that ends the message.
    fn message_bytes(&mut self, bytes: &[u8], complete: bool, objects: &mut Objects<'_>) {
        if self.mid_line {
            self.append(bytes, objects);
            self.mid_line = !complete;
            return;
        }
        self.line.extend_from_slice(bytes);
        if self.line == b".\r\n" || self.line == b".\n" {
            self.line.clear();
            return self.end_message(objects, None);
        }
        if !complete && b".\r\n".starts_with(&self.line) {
            return;
        }
        let line = std::mem::take(&mut self.line);
        let unstuffed = line.strip_prefix(b".").unwrap_or(&line);
        self.append(unstuffed, objects);
        self.mid_line = !complete;
    }

    fn append(&mut self, bytes: &[u8], objects: &Objects<'_>) {
        let room = objects
            .limits
            .max_message_bytes
            .saturating_sub(self.message.len());
        if bytes.len() > room {
            self.message_cut = true;
        }
        self.message
            .extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    /// Parses the message and passes its attachments on as objects.
    fn end_message(&mut self, objects: &mut Objects<'_>, cut: Option<Cut>) {
        let message = std::mem::take(&mut self.message);
        let cut = cut.or(std::mem::take(&mut self.message_cut).then_some(Cut::SizeCap));
        self.state = State::Commands;
        self.line.clear();
        self.mid_line = false;
        let parser = MessageParser::default();
        let Some(parsed) = parser.parse(&message) else {
            return;
        };
        match closing_boundary_missing(&parsed, &message) {
            None => pass_attachments(&parsed, cut, false, objects),
            Some(closing) => {
                // mail-parser leaves a part that never ends undecoded:
                // close it so that its bytes decode, and mark it.
                let closed = [&message[..], format!("\r\n{closing}\r\n").as_bytes()].concat();
                if let Some(parsed) = parser.parse(&closed) {
                    pass_attachments(&parsed, cut, true, objects);
                }
            }
        }
    }
}

/// Passes a message's attachments on as objects; with `unclosed`, the
/// last one is marked cut (its MIME part had no closing boundary).
fn pass_attachments(
    parsed: &mail_parser::Message<'_>,
    cut: Option<Cut>,
    unclosed: bool,
    objects: &mut Objects<'_>,
) {
    let attachments: Vec<_> = parsed.attachments().collect();
    let last = attachments.len().saturating_sub(1);
    for (n, part) in attachments.into_iter().enumerate() {
        let fields = ObjectFields {
            content_type: part.content_type().map(|t| match t.subtype() {
                Some(sub) => format!("{}/{sub}", t.ctype()),
                None => t.ctype().to_string(),
            }),
            file_name: part.attachment_name().map(str::to_string),
            ..ObjectFields::default()
        };
        let mut object = objects.start(Protocol::Smtp, fields);
        object.push(part.contents(), objects.out);
        let (cut, error) = match (cut, unclosed && n == last) {
            (Some(cut), _) => (Some(cut), None),
            (None, true) => (
                Some(Cut::Malformed),
                Some("its MIME part has no closing boundary".to_string()),
            ),
            (None, false) => (None, None),
        };
        object.end(cut, error, objects.out);
    }
}

impl Default for SmtpClient {
    fn default() -> Self {
        SmtpClient::new()
    }
}

/// The closing `--boundary--` line a multipart message lacks, if it
/// lacks it.
fn closing_boundary_missing(parsed: &mail_parser::Message<'_>, raw: &[u8]) -> Option<String> {
    let boundary = parsed
        .root_part()
        .content_type()
        .filter(|t| t.ctype().eq_ignore_ascii_case("multipart"))
        .and_then(|t| t.attribute("boundary"))?;
    let closing = format!("--{boundary}--");
    memchr::memmem::find(raw, closing.as_bytes())
        .is_none()
        .then_some(closing)
}
