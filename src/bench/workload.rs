//! The benchmark's workload: many streams' bytes and the order their
//! chunks arrive in.
//!
//! A stream's bytes are a window of one shared pool of random bytes (a
//! window per stream, at a random place), so that ten million streams do
//! not need ten million buffers: memory holds the pool (at most 256 MiB)
//! and two integers per stream. Pattern bytes are planted in the pool at
//! random places, so the streams whose window covers one match (about
//! `match_fraction` of them) and the others match nothing: the figures are
//! those of a search that mostly finds nothing, as in production, plus the
//! cost of the matches that do happen.
//!
//! The pool's bytes are random by default ([`Traffic::Random`]), or
//! shaped like real traffic ([`Traffic::Http`], [`Traffic::Binary`]): real
//! rules' atoms are mostly text, and hit text far more often than random
//! bytes, so a scanner's figures on random bytes alone flatter it.
//!
//! The schedule is a uniformly random interleaving of every stream's
//! chunks that keeps each stream's own order: the scanner sees chunk k of
//! a stream only after chunk k-1, and between them the chunks of any other
//! streams.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// Largest pool of random bytes the streams are cut from.
const MAX_POOL: usize = 256 << 20;
/// Smallest pool (so that windows rarely coincide).
const MIN_POOL: usize = 16 << 20;

/// What to generate.
#[derive(Debug, Clone)]
pub struct WorkloadSpec {
    /// Concurrent streams.
    pub streams: usize,
    /// Bytes per chunk (the last chunk of a stream may be shorter).
    pub chunk_size: usize,
    /// Bytes over all streams (ignored with `short_streams`).
    pub total_bytes: u64,
    /// Many short streams instead: each 5 to 20 chunks long.
    pub short_streams: bool,
    /// Fraction of streams that should contain a planted pattern.
    pub match_fraction: f64,
    /// Seed of everything random.
    pub seed: u64,
    /// What the streams' bytes look like.
    pub traffic: Traffic,
    /// Plants go at the very start of about `match_fraction` of the
    /// streams (as a file's header does, for rules that read offset 0),
    /// cut to the stream's length, instead of at random places.
    pub plant_at_start: bool,
}

/// What the streams' bytes look like.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Traffic {
    /// Uniformly random bytes.
    #[default]
    Random,
    /// HTTP/1.1 requests and responses: request and status lines, headers,
    /// and bodies of HTML or JSON text.
    Http,
    /// Bytes shaped like executables: runs of zeros, small little-endian
    /// integers, ASCII and UTF-16 strings (API and file names), and random
    /// bytes for code.
    Binary,
}

impl Traffic {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Traffic::Random => "random",
            Traffic::Http => "http",
            Traffic::Binary => "binary",
        }
    }

    /// Fills `pool` with this kind of bytes.
    fn fill(self, pool: &mut [u8], rng: &mut StdRng) {
        match self {
            Traffic::Random => rng.fill(pool),
            Traffic::Http => fill_with(pool, rng, http_message),
            Traffic::Binary => fill_with(pool, rng, binary_piece),
        }
    }
}

/// Fills `pool` with pieces from `piece` (the last one cut to fit).
fn fill_with(pool: &mut [u8], rng: &mut StdRng, piece: fn(&mut StdRng, &mut Vec<u8>)) {
    let mut at = 0;
    let mut buffer = Vec::new();
    while at < pool.len() {
        buffer.clear();
        piece(rng, &mut buffer);
        let take = buffer.len().min(pool.len() - at);
        pool[at..at + take].copy_from_slice(&buffer[..take]);
        at += take;
    }
}

/// Words that HTML and JSON bodies are made of.
const WORDS: &[&str] = &[
    "the", "user", "account", "order", "status", "price", "item", "search", "result", "page",
    "login", "session", "token", "value", "name", "data", "update", "error", "message", "list",
    "image", "script", "content", "title", "style", "window", "document", "function", "return",
    "var", "class", "button", "form", "input", "submit", "https", "www", "example", "com", "api",
];

/// One HTTP request or response, headers and body.
fn http_message(rng: &mut StdRng, out: &mut Vec<u8>) {
    use std::io::Write;
    let word = |rng: &mut StdRng| WORDS[rng.gen_range(0..WORDS.len())];
    let json = rng.gen_bool(0.4);
    let mut body = Vec::new();
    let words = rng.gen_range(20..400);
    if json {
        body.push(b'{');
        for i in 0..words / 4 {
            let sep = if i == 0 { "" } else { "," };
            let _ = write!(body, "{sep}\"{}_{}\":", word(rng), word(rng));
            match rng.gen_range(0..3) {
                0 => write!(body, "{}", rng.gen_range(0..100_000)),
                1 => write!(body, "\"{} {}\"", word(rng), word(rng)),
                _ => write!(body, "{}", rng.gen_bool(0.5)),
            }
            .unwrap_or_default();
        }
        body.push(b'}');
    } else {
        body.extend_from_slice(b"<!DOCTYPE html><html><head><title>");
        let _ = write!(body, "{} {}</title></head><body>", word(rng), word(rng));
        for i in 0..words {
            match i % 16 {
                0 => body.extend_from_slice(b"<div class=\""),
                1 => body.extend_from_slice(b"\"><p>"),
                15 => body.extend_from_slice(b"</p></div>\n"),
                _ => {}
            }
            body.extend_from_slice(word(rng).as_bytes());
            body.push(b' ');
        }
        body.extend_from_slice(b"</body></html>\n");
    }
    let kind = if json {
        "application/json"
    } else {
        "text/html; charset=utf-8"
    };
    if rng.gen_bool(0.5) {
        let method = ["GET", "POST", "PUT"][rng.gen_range(0..3)];
        let _ = write!(
            out,
            "{method} /{}/{}?id={} HTTP/1.1\r\nHost: {}.example.com\r\nUser-Agent: Mozilla/5.0 (Windows NT 10.0; Win64; x64)\r\nAccept: */*\r\nCookie: session={:016x}\r\n",
            word(rng),
            word(rng),
            rng.gen_range(0..1_000_000),
            word(rng),
            rng.gen::<u64>()
        );
    } else {
        let _ = write!(
            out,
            "HTTP/1.1 200 OK\r\nServer: nginx\r\nCache-Control: no-cache\r\nSet-Cookie: id={:016x}; Path=/\r\n",
            rng.gen::<u64>()
        );
    }
    let _ = write!(
        out,
        "Content-Type: {kind}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    out.extend_from_slice(&body);
}

/// Names that executables' string tables hold.
const SYMBOLS: &[&str] = &[
    "GetProcAddress",
    "LoadLibraryA",
    "VirtualAlloc",
    "CreateFileW",
    "ReadFile",
    "WriteFile",
    "CloseHandle",
    "kernel32.dll",
    "user32.dll",
    "ntdll.dll",
    "RegOpenKeyExW",
    "malloc",
    "free",
    "memcpy",
    ".text",
    ".rdata",
    ".data",
    "C:\\Windows\\System32",
    "Microsoft Corporation",
    "GetModuleHandleW",
    "ExitProcess",
    "MessageBoxW",
    "InternetOpenA",
    "HttpSendRequestA",
];

/// One stretch of an executable-like file.
fn binary_piece(rng: &mut StdRng, out: &mut Vec<u8>) {
    match rng.gen_range(0..10) {
        // Padding and zeroed tables.
        0..=2 => out.resize(rng.gen_range(4..512), 0),
        // Small integers: offsets, sizes, counts.
        3..=4 => {
            for _ in 0..rng.gen_range(2..64) {
                out.extend_from_slice(&rng.gen_range(0u32..4096).to_le_bytes());
            }
        }
        // Strings, ASCII or UTF-16, zero-terminated.
        5..=6 => {
            let wide = rng.gen_bool(0.3);
            for _ in 0..rng.gen_range(1..12) {
                let symbol = SYMBOLS[rng.gen_range(0..SYMBOLS.len())];
                for &b in symbol.as_bytes() {
                    out.push(b);
                    if wide {
                        out.push(0);
                    }
                }
                out.extend_from_slice(if wide { &[0, 0] } else { &[0] });
            }
        }
        // Code: random bytes.
        _ => {
            let len = rng.gen_range(16..1024);
            let from = out.len();
            out.resize(from + len, 0);
            rng.fill(&mut out[from..]);
        }
    }
}

/// One chunk's place in the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// The stream's index.
    pub stream: u32,
    /// Offset of the chunk in the stream.
    pub offset: u32,
    /// Its length.
    pub len: u32,
    /// Whether it is the stream's last chunk.
    pub last: bool,
    /// Where its bytes start in the workload's pool: a contender reads
    /// them without looking the stream up, as a producer holding its
    /// chunk would (the lookup, a cache miss per chunk among 100,000
    /// streams, was 3% of the scanner's measured time).
    pub pool_at: usize,
}

/// Streams' bytes and the order their chunks arrive in.
pub struct Workload {
    pool: bytes::Bytes,
    /// (start in the pool, length) per stream.
    streams: Vec<(usize, u32)>,
    schedule: Vec<Step>,
    chunk_size: usize,
}

impl Workload {
    /// Generates a workload, planting each of `plants` (pattern bytes) in
    /// the pool as often as `match_fraction` asks.
    pub fn generate(spec: &WorkloadSpec, plants: &[Vec<u8>]) -> Workload {
        let mut rng = StdRng::seed_from_u64(spec.seed);
        let chunk = spec.chunk_size.max(1);
        let lengths: Vec<usize> = (0..spec.streams)
            .map(|_| match spec.short_streams {
                true => chunk * rng.gen_range(5..=20),
                false => (spec.total_bytes as usize / spec.streams.max(1)).max(1),
            })
            .collect();
        let longest = lengths.iter().copied().max().unwrap_or(1);
        let total: usize = lengths.iter().sum();
        let pool_len = total.clamp(MIN_POOL, MAX_POOL).max(2 * longest);
        let mut pool = vec![0u8; pool_len];
        spec.traffic.fill(&mut pool, &mut rng);
        if !spec.plant_at_start {
            plant(
                &mut pool,
                plants,
                spec.match_fraction,
                total / spec.streams.max(1),
                &mut rng,
            );
        }
        let streams: Vec<(usize, u32)> = lengths
            .iter()
            .map(|&len| (rng.gen_range(0..=pool_len - len), len as u32))
            .collect();
        if spec.plant_at_start {
            plant_at_starts(&mut pool, &streams, plants, spec.match_fraction, &mut rng);
        }
        let schedule = interleave(&streams, chunk, &mut rng);
        Workload {
            pool: pool.into(),
            streams,
            schedule,
            chunk_size: chunk,
        }
    }

    /// Number of streams.
    pub fn streams(&self) -> usize {
        self.streams.len()
    }

    /// Bytes over all streams.
    pub fn bytes(&self) -> u64 {
        self.streams.iter().map(|&(_, len)| u64::from(len)).sum()
    }

    /// The chunk size.
    pub fn chunk_size(&self) -> usize {
        self.chunk_size
    }

    /// A stream's whole data.
    pub fn stream(&self, index: usize) -> &[u8] {
        let (start, len) = self.streams[index];
        &self.pool[start..start + len as usize]
    }

    /// The bytes of one step.
    pub fn chunk(&self, step: &Step) -> &[u8] {
        &self.pool[step.pool_at..step.pool_at + step.len as usize]
    }

    /// The bytes of one step, sharing the pool (no copy).
    pub fn chunk_bytes(&self, step: &Step) -> bytes::Bytes {
        self.pool
            .slice(step.pool_at..step.pool_at + step.len as usize)
    }

    /// The step of `len` bytes from `offset` of stream `index` (not in the
    /// schedule, and not its stream's last).
    pub fn step_of(&self, index: usize, offset: usize, len: usize) -> Step {
        Step {
            stream: index as u32,
            offset: offset as u32,
            len: len as u32,
            last: false,
            pool_at: self.streams[index].0 + offset,
        }
    }

    /// Writes the workload for a peer outside Rust (`benches/peer/`):
    /// `pool.bin` (the bytes), `streams.bin` (per stream: start, length;
    /// u64 and u32, little-endian) and `schedule.bin` (per chunk: stream,
    /// offset, length as u32 little-endian, then 1 if it is the stream's
    /// last chunk, else 0).
    pub fn dump(&self, dir: &std::path::Path) -> std::io::Result<()> {
        use std::io::Write;
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("pool.bin"), &self.pool)?;
        let mut streams = std::io::BufWriter::new(std::fs::File::create(dir.join("streams.bin"))?);
        for &(start, len) in &self.streams {
            streams.write_all(&(start as u64).to_le_bytes())?;
            streams.write_all(&len.to_le_bytes())?;
        }
        streams.flush()?;
        let mut schedule =
            std::io::BufWriter::new(std::fs::File::create(dir.join("schedule.bin"))?);
        for step in &self.schedule {
            for word in [step.stream, step.offset, step.len] {
                schedule.write_all(&word.to_le_bytes())?;
            }
            schedule.write_all(&[u8::from(step.last)])?;
        }
        schedule.flush()
    }

    /// Every chunk, in arrival order.
    pub fn schedule(&self) -> &[Step] {
        &self.schedule
    }
}

/// Writes each plant at random places: as many as make about `fraction`
/// of the streams (of `stream_len` bytes, windows of the pool) hold one.
fn plant(pool: &mut [u8], plants: &[Vec<u8>], fraction: f64, stream_len: usize, rng: &mut StdRng) {
    let plants: Vec<&Vec<u8>> = plants
        .iter()
        .filter(|p| !p.is_empty() && p.len() < pool.len())
        .collect();
    if plants.is_empty() || fraction <= 0.0 {
        return;
    }
    // A plant lands in a stream when the stream's window covers it: with
    // probability about stream_len / pool_len for each stream.
    let count = (fraction * pool.len() as f64 / stream_len.max(1) as f64).ceil() as usize;
    for i in 0..count {
        let bytes = plants[i % plants.len()];
        let at = rng.gen_range(0..=pool.len() - bytes.len());
        pool[at..at + bytes.len()].copy_from_slice(bytes);
    }
}

/// Writes the plants at the start of about `fraction` of the streams (a
/// window of the pool each), one plant per stream in turn.
fn plant_at_starts(
    pool: &mut [u8],
    streams: &[(usize, u32)],
    plants: &[Vec<u8>],
    fraction: f64,
    rng: &mut StdRng,
) {
    let plants: Vec<&Vec<u8>> = plants.iter().filter(|p| !p.is_empty()).collect();
    if plants.is_empty() || fraction <= 0.0 || streams.is_empty() {
        return;
    }
    let count = ((fraction * streams.len() as f64).round() as usize).clamp(1, streams.len());
    let mut chosen: Vec<usize> = (0..streams.len()).collect();
    chosen.shuffle(rng);
    for (i, &stream) in chosen[..count].iter().enumerate() {
        let (start, len) = streams[stream];
        let bytes = plants[i % plants.len()];
        let n = bytes.len().min(len as usize);
        pool[start..start + n].copy_from_slice(&bytes[..n]);
    }
}

/// A uniformly random interleaving that keeps each stream's order.
fn interleave(streams: &[(usize, u32)], chunk: usize, rng: &mut StdRng) -> Vec<Step> {
    let mut order: Vec<u32> = Vec::new();
    for (index, &(_, len)) in streams.iter().enumerate() {
        let chunks = (len as usize).div_ceil(chunk);
        order.extend(std::iter::repeat_n(index as u32, chunks));
    }
    order.shuffle(rng);
    let mut next_offset = vec![0u32; streams.len()];
    order
        .into_iter()
        .map(|stream| {
            let (start, len) = streams[stream as usize];
            let offset = next_offset[stream as usize];
            let step = (len - offset).min(chunk as u32);
            next_offset[stream as usize] = offset + step;
            Step {
                stream,
                offset,
                len: step,
                last: offset + step == len,
                pool_at: start + offset as usize,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(short_streams: bool) -> WorkloadSpec {
        WorkloadSpec {
            streams: 300,
            chunk_size: 100,
            total_bytes: 300 * 1050,
            short_streams,
            match_fraction: 0.2,
            seed: 9,
            traffic: Traffic::Random,
            plant_at_start: false,
        }
    }

    #[test]
    fn http_traffic_is_requests_and_responses_and_binary_is_not_random() {
        let http = Workload::generate(
            &WorkloadSpec {
                traffic: Traffic::Http,
                ..spec(false)
            },
            &[],
        );
        // A stream is a window of the pool: all of them hold many messages.
        let data: Vec<u8> = (0..http.streams())
            .flat_map(|i| http.stream(i).to_vec())
            .collect();
        let text = data.iter().filter(|b| b.is_ascii()).count();
        assert_eq!(text, data.len(), "all text");
        let has = |needle: &[u8]| data.windows(needle.len()).any(|w| w == needle);
        assert!(has(b"HTTP/1.1") && has(b"\r\n\r\n") && has(b"Content-Length: "));
        let binary = Workload::generate(
            &WorkloadSpec {
                traffic: Traffic::Binary,
                ..spec(false)
            },
            &[],
        );
        let data: Vec<u8> = (0..binary.streams())
            .flat_map(|i| binary.stream(i).to_vec())
            .collect();
        let zeros = data.iter().filter(|&&b| b == 0).count();
        assert!(
            zeros * 5 > data.len(),
            "zero runs: {zeros} of {}",
            data.len()
        );
        assert!(data.windows(14).any(|w| w == b"GetProcAddress"));
        let random = Workload::generate(&spec(false), &[]);
        let zeros = random.stream(3).iter().filter(|&&b| b == 0).count();
        assert!(zeros * 50 < random.stream(3).len());
    }

    #[test]
    fn the_schedule_delivers_every_stream_once_in_order() {
        for short in [false, true] {
            let workload = Workload::generate(&spec(short), &[b"PLANTED".to_vec()]);
            let mut rebuilt: Vec<Vec<u8>> = vec![Vec::new(); workload.streams()];
            let mut lasts = 0;
            for step in workload.schedule() {
                let stream = &mut rebuilt[step.stream as usize];
                assert_eq!(stream.len(), step.offset as usize, "in order");
                assert!(step.len as usize <= workload.chunk_size());
                stream.extend_from_slice(workload.chunk(step));
                lasts += usize::from(step.last);
            }
            assert_eq!(lasts, workload.streams());
            for (index, data) in rebuilt.iter().enumerate() {
                assert_eq!(data.as_slice(), workload.stream(index));
            }
            let total: usize = rebuilt.iter().map(Vec::len).sum();
            assert_eq!(total as u64, workload.bytes());
        }
    }

    #[test]
    fn about_the_asked_fraction_of_streams_hold_a_plant() {
        let workload = Workload::generate(&spec(false), &[b"PLANTED-PATTERN".to_vec()]);
        let holding = (0..workload.streams())
            .filter(|&i| {
                workload
                    .stream(i)
                    .windows(15)
                    .any(|w| w == b"PLANTED-PATTERN")
            })
            .count();
        let fraction = holding as f64 / workload.streams() as f64;
        assert!((0.1..0.35).contains(&fraction), "{fraction}");
    }

    #[test]
    fn plants_at_start_open_the_asked_fraction_of_streams() {
        let spec = WorkloadSpec {
            plant_at_start: true,
            ..spec(false)
        };
        let workload = Workload::generate(&spec, &[b"MZ-PLANTED".to_vec()]);
        let starting = (0..workload.streams())
            .filter(|&i| workload.stream(i).starts_with(b"MZ-PLANTED"))
            .count();
        // 20% of 300 streams, give or take a later plant overwriting an
        // earlier one where windows overlap.
        assert!((55..=60).contains(&starting), "{starting}");
    }

    #[test]
    fn the_same_seed_gives_the_same_workload() {
        let a = Workload::generate(&spec(true), &[]);
        let b = Workload::generate(&spec(true), &[]);
        assert_eq!(a.schedule(), b.schedule());
        assert_eq!(a.stream(7), b.stream(7));
    }
}
