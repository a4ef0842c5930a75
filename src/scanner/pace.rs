//! How many bytes a batch may hold so that its search ends well within
//! `scan_timeout`.
//!
//! A batch search that outlives the timeout fails every stream with bytes
//! in it (each is then tried alone, and those left when the retries take
//! the timeout too are lost: see `MultiStreamScanner::flush_for`). How fast
//! YARA-X searches depends on the rules and the bytes far more than on
//! anything else: tens of MB/s for most sets on most traffic, but under
//! 1 MB/s for a set of thousands of rules on text whose atoms hit often.
//! With 4 MiB batches that is a timeout at every batch. So the scanner
//! measures how fast its searches go and caps the batch at what a quarter
//! of the timeout searches at that rate, never below a floor (a batch of a
//! few chunks has to go through) nor above `max_batch_bytes`. Until a
//! search was measured, batches stay at a probe size, so that the first
//! one cannot time out on slow rules; a search that timed out counts as
//! a rate of at most its bytes over the timeout.
//!
//! It also caps the matches a batch finds. YARA-X's block scanner copies
//! the bytes of every match it finds (its snippets) and, on every `scan()`
//! call, walks every match the batch found so far. Where a pattern matches
//! at almost every byte (yara-rules' `domain`, `/([\w\.-]+)/ wide ascii`,
//! on any text) a batch of a few MB held hundreds of MB of them. So the
//! scanner measures how many matches its searches find per byte, too, and
//! keeps a batch to what finds about [`MATCH_BUDGET`] of them. Long matches
//! weigh more than many: an open-ended regex over a run of letters matches
//! at every start, each match kilobytes long (a 256 KB batch of `/[a-z]+xyz/`
//! bait held 512 MB of snippets), so it also keeps a batch to what finds
//! about [`MATCHED_BYTES_BUDGET`] bytes of matches.
//!
//! Those measures follow the traffic, so a client can send plain bytes
//! until batches are large, then bait. What bounds that first batch is the
//! rule set: a batch holds at most [`MATCHED_BYTES_CEILING`] divided by the
//! longest match the search can find (never below the floor), which is
//! what it would hold with such a match at every byte.

use std::time::Duration;

/// Smallest batch limit: a few chunks, whatever the rate.
const FLOOR: usize = 64 << 10;
/// Batches smaller than this tell more about fixed costs than about the
/// rate: they do not count.
const MEASURED_FROM: usize = 16 << 10;
/// Weight of the newest measure in the running rate.
const WEIGHT: f64 = 0.25;
/// Largest batch before any search was measured.
const PROBE: usize = 256 << 10;
/// Matches a batch should find at most (see the module doc): a few MB of
/// YARA-X's snippets.
const MATCH_BUDGET: f64 = 64.0 * 1024.0;
/// Bytes of matches a batch should find at most (see the module doc).
const MATCHED_BYTES_BUDGET: f64 = 16.0 * 1024.0 * 1024.0;
/// Bytes of matches a batch could find at most, whatever its bytes: the
/// batch limit times the rule set's longest match (see the module doc).
const MATCHED_BYTES_CEILING: usize = 256 << 20;

/// What a batch's search found.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Finds {
    /// Matches.
    pub matches: usize,
    /// Their bytes, summed.
    pub matched_bytes: usize,
}

/// The measured search rate, and the batch limit it gives.
#[derive(Debug, Clone)]
pub(crate) struct Pace {
    /// The timeout a batch's search should stay well within.
    timeout: Option<Duration>,
    /// The configured largest batch.
    max_batch_bytes: usize,
    /// Bytes per second, as measured so far (`None`: nothing measured).
    rate: Option<f64>,
    /// Matches found per byte searched, as measured so far.
    density: Option<f64>,
    /// Bytes of matches found per byte searched, as measured so far.
    byte_density: Option<f64>,
}

impl Pace {
    /// A pace with nothing measured yet: the limit is `max_batch_bytes`.
    pub fn new(timeout: Option<Duration>, max_batch_bytes: usize) -> Pace {
        Pace {
            timeout,
            max_batch_bytes,
            rate: None,
            density: None,
            byte_density: None,
        }
    }

    /// The pace of a scanner of `rules` under `config`: its limits, and
    /// batches kept to what the rules' longest match allows.
    pub fn of(rules: &crate::RuleSet, config: &crate::ScannerConfig) -> Pace {
        Pace::new(config.scan_timeout, config.max_batch_bytes)
            .with_longest_match(rules.tail_plan().most())
    }

    /// The same pace with batches small enough that a match of
    /// `longest_match` bytes at every byte would stay within
    /// [`MATCHED_BYTES_CEILING`] (never below the floor).
    pub fn with_longest_match(mut self, longest_match: usize) -> Pace {
        let ceiling = (MATCHED_BYTES_CEILING / longest_match.max(1)).max(FLOOR);
        self.max_batch_bytes = self.max_batch_bytes.min(ceiling);
        self
    }

    /// The largest batch it ever allows.
    pub fn largest_batch(&self) -> usize {
        self.max_batch_bytes
    }

    /// Counts a search of `bytes` that took `took` and found `finds`.
    pub fn observe(&mut self, bytes: usize, took: Duration, finds: Finds) {
        if bytes < MEASURED_FROM || took.is_zero() {
            return;
        }
        let rate = bytes as f64 / took.as_secs_f64();
        // A slower search counts at once (the next batch must not time
        // out), and so do denser matches; the others gradually.
        self.rate = Some(running(self.rate, rate, |new, old| new < old));
        let denser = |new, old| new > old;
        let per_byte = |n: usize| n as f64 / bytes as f64;
        self.density = Some(running(self.density, per_byte(finds.matches), denser));
        let matched = per_byte(finds.matched_bytes);
        self.byte_density = Some(running(self.byte_density, matched, denser));
    }

    /// Counts a search of `bytes` that outlived the timeout.
    pub fn observe_timeout(&mut self, bytes: usize) {
        if let Some(timeout) = self.timeout {
            // What it found is not known: the density stays.
            let bytes = bytes.max(MEASURED_FROM);
            let at = |density: Option<f64>| (density.unwrap_or(0.0) * bytes as f64) as usize;
            let finds = Finds {
                matches: at(self.density),
                matched_bytes: at(self.byte_density),
            };
            self.observe(bytes, timeout, finds);
        }
    }

    /// The most bytes the current batch should hold.
    pub fn batch_limit(&self) -> usize {
        let by_time = match (self.timeout, self.rate) {
            (Some(timeout), Some(rate)) => (rate * timeout.as_secs_f64() / 4.0) as usize,
            (Some(_), None) => PROBE,
            (None, _) => self.max_batch_bytes,
        };
        let within = |budget: f64, density: Option<f64>| match density {
            Some(density) if density > 0.0 => (budget / density) as usize,
            _ => usize::MAX,
        };
        let by_matches =
            within(MATCH_BUDGET, self.density).min(within(MATCHED_BYTES_BUDGET, self.byte_density));
        // (Nothing measured, no density either: `by_time` is the probe or
        // the maximum, both above the floor.)
        by_time
            .min(by_matches)
            .clamp(FLOOR.min(self.max_batch_bytes), self.max_batch_bytes)
    }
}

/// A running measure: `new` counts at once when `at_once(new, old)`,
/// else by [`WEIGHT`].
fn running(old: Option<f64>, new: f64, at_once: impl Fn(f64, f64) -> bool) -> f64 {
    match old {
        None => new,
        Some(old) if at_once(new, old) => new,
        Some(old) => old + WEIGHT * (new - old),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    /// Short matches: one byte each.
    fn matches(matches: usize) -> Finds {
        Finds {
            matches,
            matched_bytes: matches,
        }
    }

    #[test]
    fn slow_searches_shrink_the_batch_to_a_quarter_of_the_timeout() {
        let mut pace = Pace::new(Some(Duration::from_secs(10)), 4 * MIB);
        assert_eq!(pace.batch_limit(), PROBE, "nothing measured yet");
        // 0.3 MB/s: a 4 MiB batch would take 14 s.
        pace.observe(3 * MIB, Duration::from_secs(10), matches(0));
        let limit = pace.batch_limit();
        assert!((700_000..900_000).contains(&limit), "{limit}");
        // Fast again: the limit grows back, gradually, up to the maximum.
        pace.observe(4 * MIB, Duration::from_millis(40), matches(0));
        assert!(pace.batch_limit() > limit && pace.batch_limit() <= 4 * MIB);
        for _ in 0..40 {
            pace.observe(4 * MIB, Duration::from_millis(40), matches(0));
        }
        assert_eq!(pace.batch_limit(), 4 * MIB);
    }

    #[test]
    fn dense_matches_shrink_the_batch_to_the_match_budget() {
        let mut pace = Pace::new(Some(Duration::from_secs(10)), 4 * MIB);
        // Fast, but a match every 1.3 bytes (a pattern matching every word
        // start, `wide ascii`).
        pace.observe(MIB, Duration::from_millis(100), matches(800_000));
        let limit = pace.batch_limit();
        let budget = (MATCH_BUDGET * MIB as f64 / 800_000.0) as usize;
        assert_eq!(limit, budget);
        // Never below the floor, however dense.
        pace.observe(MIB, Duration::from_millis(100), matches(50 * MIB));
        assert_eq!(pace.batch_limit(), FLOOR);
        // Sparse again: the limit grows back, gradually.
        pace.observe(MIB, Duration::from_millis(100), matches(0));
        assert_eq!(pace.batch_limit(), FLOOR);
        for _ in 0..80 {
            pace.observe(MIB, Duration::from_millis(10), matches(10));
        }
        assert_eq!(pace.batch_limit(), 4 * MIB);
        // A timeout keeps the density it had (its rate would allow 256 KB).
        pace.observe(MIB, Duration::from_millis(100), matches(800_000));
        pace.observe_timeout(MIB);
        assert_eq!(pace.batch_limit(), budget);
    }

    #[test]
    fn the_longest_match_caps_the_batch_before_anything_is_measured() {
        let cap = |longest| {
            let pace = Pace::new(None, 4 * MIB).with_longest_match(longest);
            pace.batch_limit()
        };
        // Literals: the configured maximum.
        assert_eq!(cap(40), 4 * MIB);
        // 1 KB patterns: 256 MiB of matches at most.
        assert_eq!(cap(1024), 256 << 10);
        // Open-ended regexes: the floor.
        assert_eq!(cap(16 << 10), FLOOR);
        assert_eq!(cap(1 << 20), FLOOR);
    }

    #[test]
    fn long_matches_shrink_the_batch_to_the_matched_bytes_budget() {
        let mut pace = Pace::new(Some(Duration::from_secs(10)), 4 * MIB);
        // Few matches, but 64 bytes of them per byte searched (kilobytes
        // each, starting at every byte of a run).
        let long = Finds {
            matches: 1000,
            matched_bytes: 64 * MIB,
        };
        pace.observe(MIB, Duration::from_millis(10), long);
        assert_eq!(pace.batch_limit(), 256 << 10);
        // A timeout keeps it too (its rate alone would allow 1 MiB).
        pace.observe_timeout(4 * MIB);
        assert_eq!(pace.batch_limit(), 256 << 10);
    }

    #[test]
    fn a_search_that_timed_out_shrinks_the_batch() {
        let mut pace = Pace::new(Some(Duration::from_secs(10)), 4 * MIB);
        pace.observe(4 * MIB, Duration::from_millis(100), matches(0));
        assert_eq!(pace.batch_limit(), 4 * MIB);
        pace.observe_timeout(4 * MIB);
        assert_eq!(pace.batch_limit(), MIB);
    }

    #[test]
    fn the_limit_has_a_floor_and_small_or_untimed_batches_do_not_count() {
        let mut pace = Pace::new(Some(Duration::from_secs(1)), 4 * MIB);
        pace.observe(100, Duration::from_secs(5), matches(0));
        assert_eq!(pace.batch_limit(), PROBE, "too small to measure");
        pace.observe(MIB, Duration::from_secs(100), matches(0));
        assert_eq!(pace.batch_limit(), FLOOR);
        let mut untimed = Pace::new(None, 4 * MIB);
        untimed.observe(MIB, Duration::from_secs(100), matches(0));
        assert_eq!(untimed.batch_limit(), 4 * MIB);
    }
}
