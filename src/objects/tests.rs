//! The extractor on hand-written conversations, fed whole and byte by
//! byte.

use std::io::Write;
use std::net::SocketAddr;

use super::*;

const CLIENT: &str = "10.0.0.1:40000";
const SERVER: &str = "10.0.0.2:80";

/// An object as the events told it: its summary and its bytes.
type Found = (ObjectSummary, Vec<u8>);

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

/// Runs a conversation (chunks of the client's and the server's
/// directions, in order) through an extractor, `piece` bytes at a time,
/// and returns each direction's objects and summary.
fn converse(
    parts: &[(bool, &[u8])],
    piece: usize,
    limits: ObjectLimits,
) -> [(Vec<Found>, Option<DirectionObjects>); 2] {
    let flows = [Uuid::from_u128(1), Uuid::from_u128(2)];
    let mut extractor = ObjectExtractor::new(limits);
    extractor.opened(flows[0], addr(CLIENT), addr(SERVER), true);
    extractor.opened(flows[1], addr(SERVER), addr(CLIENT), true);
    let mut events = Vec::new();
    for (from_server, bytes) in parts {
        for piece in bytes.chunks(piece) {
            extractor.data(flows[usize::from(*from_server)], piece, &mut events);
        }
    }
    let summaries = flows.map(|flow| extractor.ended(flow, &mut events));
    assert_eq!(extractor.directions(), 0);
    assert!(extractor.connections.is_empty(), "both directions ended");
    let [client, server] = summaries;
    [
        (objects_of(&events, flows[0]), client),
        (objects_of(&events, flows[1]), server),
    ]
}

/// The objects a direction's events told, checked for order: started,
/// data, ended, with matching ids.
fn objects_of(events: &[ObjectEvent], flow: Uuid) -> Vec<Found> {
    let mut found: Vec<Found> = Vec::new();
    let mut open: Option<(ObjectInfo, Vec<u8>)> = None;
    for event in events {
        match event {
            ObjectEvent::Started(info) if info.flow == flow => {
                assert!(open.is_none(), "one object at a time per direction");
                assert_eq!(info.stream, object_uuid(flow, info.index));
                assert_eq!(info.index as usize, found.len());
                open = Some((info.clone(), Vec::new()));
            }
            ObjectEvent::Data(id, bytes) => {
                if let Some((info, data)) = open.as_mut().filter(|(i, _)| i.stream == *id) {
                    assert!(!bytes.is_empty());
                    assert_eq!(info.stream, *id);
                    data.extend_from_slice(bytes);
                }
            }
            ObjectEvent::Ended(summary) if summary.info.flow == flow => {
                let (info, data) = open.take().expect("an ended object was started");
                assert_eq!(summary.info, info);
                assert_eq!(summary.size, data.len() as u64);
                found.push((summary.clone(), data));
            }
            _ => {}
        }
    }
    assert!(open.is_none(), "every object ended");
    found
}

/// Every way of feeding gives the same objects.
fn converse_every_way(parts: &[(bool, &[u8])]) -> [(Vec<Found>, Option<DirectionObjects>); 2] {
    let whole = converse(parts, usize::MAX, ObjectLimits::default());
    for piece in [1, 2, 3, 7, 64] {
        assert_eq!(
            converse(parts, piece, ObjectLimits::default()),
            whole,
            "{piece}"
        );
    }
    whole
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

#[test]
fn keep_alive_pipelined_head_chunked_and_gzip_responses() {
    let requests = b"GET /a/setup.exe?x=1 HTTP/1.1\r\nHost: h\r\n\r\n\
HEAD /b HTTP/1.1\r\nHost: h\r\n\r\n\
GET /c HTTP/1.1\r\nHost: h\r\n\r\n\
GET /d HTTP/1.1\r\nHost: h\r\n\r\n\
GET /e HTTP/1.1\r\nHost: h\r\n\r\n";
    let mut responses = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 6\r\n\r\nMZ\x90\0\x03\0\
HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n\
HTTP/1.1 100 Continue\r\n\r\n\
HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Disposition: attachment; filename=\"report.pdf\"\r\n\r\n\
5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n\
HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n"
        .to_vec();
    let zipped = gzip(b"decoded text");
    write!(
        responses,
        "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n\r\n",
        zipped.len()
    )
    .unwrap();
    responses.extend_from_slice(&zipped);
    let [(client, client_summary), (server, server_summary)] =
        converse_every_way(&[(false, requests), (true, &responses)]);
    assert!(client.is_empty());
    assert_eq!(client_summary.unwrap().protocol, Protocol::Http);
    let server_summary = server_summary.unwrap();
    assert_eq!((server_summary.objects, server_summary.error), (3, None));
    let bodies: Vec<&[u8]> = server.iter().map(|(_, d)| &d[..]).collect();
    assert_eq!(
        bodies,
        [&b"MZ\x90\0\x03\0"[..], b"hello, world", b"decoded text"]
    );
    let first = &server[0].0;
    assert_eq!(first.info.file_name.as_deref(), Some("setup.exe"));
    assert_eq!(first.info.uri.as_deref(), Some("/a/setup.exe?x=1"));
    assert_eq!(
        first.info.content_type.as_deref(),
        Some("application/octet-stream")
    );
    assert_eq!(server[1].0.info.file_name.as_deref(), Some("report.pdf"));
    assert_eq!(server[1].0.info.uri.as_deref(), Some("/c"));
    assert_eq!(server[2].0.info.uri.as_deref(), Some("/e"));
    assert!(server
        .iter()
        .all(|(s, _)| s.cut.is_none() && s.error.is_none()));
}

#[test]
fn request_bodies_and_bodies_until_close_are_objects() {
    let requests = b"POST /upload HTTP/1.1\r\nContent-Length: 4\r\nContent-Disposition: form-data; filename*=UTF-8''r%C3%A9sum%C3%A9.doc\r\n\r\nDATA";
    let responses = b"HTTP/1.0 200 OK\r\n\r\nbody until the close";
    let [(client, _), (server, _)] = converse_every_way(&[(false, requests), (true, responses)]);
    assert_eq!(client.len(), 1);
    assert_eq!(client[0].1, b"DATA");
    assert_eq!(client[0].0.info.file_name.as_deref(), Some("résumé.doc"));
    assert_eq!(server[0].1, b"body until the close");
    assert_eq!(server[0].0.cut, None);
}

#[test]
fn a_body_longer_than_its_flow_ends_cut() {
    let responses = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this";
    let [_, (server, summary)] =
        converse_every_way(&[(false, b"GET / HTTP/1.1\r\n\r\n"), (true, responses)]);
    assert_eq!(server[0].1, b"only this");
    assert_eq!(server[0].0.cut, Some(Cut::FlowEnded));
    assert_eq!(summary.unwrap().error, None);
}

#[test]
fn a_malformed_chunk_cuts_its_object_and_stops_the_direction_only() {
    let requests = b"POST /p HTTP/1.1\r\nContent-Length: 2\r\n\r\nok";
    let responses = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\nmore";
    let [(client, _), (server, summary)] =
        converse_every_way(&[(false, requests), (true, responses)]);
    assert_eq!(client[0].1, b"ok");
    assert_eq!(server[0].1, b"abc");
    assert_eq!(server[0].0.cut, Some(Cut::Malformed));
    assert!(summary.unwrap().error.unwrap().contains("chunk size"));
}

#[test]
fn bad_heads_and_lengths_stop_with_a_reason() {
    for (responses, reason) in [
        (
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n"[..],
            "Content-Length",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "Content-Length",
        ),
        (
            b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
            "malformed message head",
        ),
    ] {
        let [_, (server, summary)] =
            converse_every_way(&[(false, b"GET / HTTP/1.1\r\n\r\n"), (true, responses)]);
        assert!(server.is_empty());
        assert!(summary.unwrap().error.unwrap().contains(reason), "{reason}");
    }
    let limits = ObjectLimits {
        max_head_bytes: 100,
        ..ObjectLimits::default()
    };
    let long = format!("HTTP/1.1 200 OK\r\nX: {}\r\n\r\n", "a".repeat(200));
    let [_, (_, summary)] = converse(&[(true, long.as_bytes())], 1, limits);
    assert!(summary
        .unwrap()
        .error
        .unwrap()
        .contains("longer than 100 bytes"));
}

#[test]
fn a_gzip_bomb_is_cut_at_the_object_cap() {
    let bomb = gzip(&vec![0u8; 8 << 20]);
    let mut responses = format!(
        "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n\r\n",
        bomb.len()
    )
    .into_bytes();
    responses.extend_from_slice(&bomb);
    responses.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    let limits = ObjectLimits {
        max_object_bytes: 1 << 20,
        ..ObjectLimits::default()
    };
    let requests = b"GET /bomb HTTP/1.1\r\n\r\nGET /next HTTP/1.1\r\n\r\n";
    let [_, (server, summary)] = converse(&[(false, requests), (true, &responses)], 1460, limits);
    assert_eq!(server[0].0.size, 1 << 20);
    assert_eq!(server[0].0.cut, Some(Cut::SizeCap));
    assert_eq!(
        (server[1].1.as_slice(), server[1].0.cut),
        (&b"ok"[..], None)
    );
    assert_eq!(summary.unwrap().error, None);
}

#[test]
fn upgrades_tunnels_and_other_protocols_are_left_alone() {
    let requests =
        b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x85frame";
    let responses = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x02hi";
    let [(client, client_summary), (server, server_summary)] =
        converse_every_way(&[(false, requests), (true, responses)]);
    assert!(client.is_empty() && server.is_empty());
    assert_eq!(client_summary.unwrap().error, None);
    assert_eq!(server_summary.unwrap().error, None);
    let tls = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03";
    let [(client, summary), _] = converse_every_way(&[(false, tls)]);
    assert!(client.is_empty() && summary.is_none());
}

fn smtp_session(message: &[u8]) -> Vec<u8> {
    let mut session =
        b"EHLO client.example\r\nMAIL FROM:<a@example>\r\nRCPT TO:<b@example>\r\nDATA\r\n".to_vec();
    session.extend_from_slice(message);
    session
}

const MIME: &str = "From: a@example\r\nTo: b@example\r\nSubject: files\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n--XX\r\nContent-Type: text/plain\r\n\r\n.hello (a stuffed dot)\r\n--XX\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"eicar.com\"\r\nContent-Transfer-Encoding: base64\r\n\r\nWDVPIVAlQEFQWzRcUFpYNTQoUF4pN0NDKTd9JEVJQ0FSLVNUQU5EQVJELUFOVElWSVJVUy1URVNU\r\nLUZJTEUhJEgrSCo=\r\n--XX\r\nContent-Type: text/x-note; name=\"note.txt\"\r\nContent-Disposition: attachment; filename=\"note.txt\"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\na=3Db\r\n";

#[test]
fn smtp_attachments_are_decoded_objects() {
    let stuffed = MIME.replace("\r\n.hello", "\r\n..hello");
    let message = format!("{stuffed}--XX--\r\n.\r\nQUIT\r\n");
    let [(client, summary), (server, _)] = converse_every_way(&[
        (false, &smtp_session(message.as_bytes())),
        (true, b"220 hi\r\n"),
    ]);
    assert!(server.is_empty());
    assert_eq!(summary.unwrap().protocol, Protocol::Smtp);
    let names: Vec<_> = client
        .iter()
        .map(|(s, _)| s.info.file_name.clone().unwrap())
        .collect();
    assert_eq!(names, ["eicar.com", "note.txt"]);
    assert_eq!(
        client[0].1,
        &b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"[..]
    );
    assert_eq!(
        client[0].0.info.content_type.as_deref(),
        Some("application/octet-stream")
    );
    assert!(client[1].1.starts_with(b"a=b"));
    assert!(client
        .iter()
        .all(|(s, _)| s.cut.is_none() && s.error.is_none()));
}

#[test]
fn an_unended_mime_part_and_an_unended_message_are_cut() {
    let unclosed = format!("{MIME}\r\n.\r\n");
    let [(client, _), _] = converse_every_way(&[(false, &smtp_session(unclosed.as_bytes()))]);
    assert_eq!(client.last().unwrap().0.cut, Some(Cut::Malformed));
    assert!(client.last().unwrap().1.starts_with(b"a=b"), "decoded");
    assert!(client
        .last()
        .unwrap()
        .0
        .error
        .as_ref()
        .unwrap()
        .contains("closing boundary"));
    let [(client, _), _] = converse_every_way(&[(false, &smtp_session(MIME.as_bytes()))]);
    assert_eq!(client.len(), 2);
    assert!(client.iter().all(|(s, _)| s.cut == Some(Cut::FlowEnded)));
}

#[test]
fn starttls_ends_the_smtp_parsing() {
    let session = b"EHLO c\r\nSTARTTLS\r\n\x16\x03\x01DATA\r\n";
    let [(client, summary), _] = converse_every_way(&[(false, session)]);
    assert!(client.is_empty());
    assert_eq!(summary.unwrap().error, None);
}
