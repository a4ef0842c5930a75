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
        rng.fill(pool.as_mut_slice());
        plant(
            &mut pool,
            plants,
            spec.match_fraction,
            total / spec.streams.max(1),
            &mut rng,
        );
        let streams: Vec<(usize, u32)> = lengths
            .iter()
            .map(|&len| (rng.gen_range(0..=pool_len - len), len as u32))
            .collect();
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
        let data = self.stream(step.stream as usize);
        &data[step.offset as usize..(step.offset + step.len) as usize]
    }

    /// The bytes of one step, sharing the pool (no copy).
    pub fn chunk_bytes(&self, step: &Step) -> bytes::Bytes {
        let start = self.streams[step.stream as usize].0 + step.offset as usize;
        self.pool.slice(start..start + step.len as usize)
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
            let len = streams[stream as usize].1;
            let offset = next_offset[stream as usize];
            let step = (len - offset).min(chunk as u32);
            next_offset[stream as usize] = offset + step;
            Step {
                stream,
                offset,
                len: step,
                last: offset + step == len,
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
        }
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
    fn the_same_seed_gives_the_same_workload() {
        let a = Workload::generate(&spec(true), &[]);
        let b = Workload::generate(&spec(true), &[]);
        assert_eq!(a.schedule(), b.schedule());
        assert_eq!(a.stream(7), b.stream(7));
    }
}
