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

/// The measured search rate, and the batch limit it gives.
#[derive(Debug, Clone)]
pub(crate) struct Pace {
    /// The timeout a batch's search should stay well within.
    timeout: Option<Duration>,
    /// The configured largest batch.
    max_batch_bytes: usize,
    /// Bytes per second, as measured so far (`None`: nothing measured).
    rate: Option<f64>,
}

impl Pace {
    /// A pace with nothing measured yet: the limit is `max_batch_bytes`.
    pub fn new(timeout: Option<Duration>, max_batch_bytes: usize) -> Pace {
        Pace {
            timeout,
            max_batch_bytes,
            rate: None,
        }
    }

    /// Counts a search of `bytes` that took `took`.
    pub fn observe(&mut self, bytes: usize, took: Duration) {
        if bytes < MEASURED_FROM || took.is_zero() {
            return;
        }
        let rate = bytes as f64 / took.as_secs_f64();
        self.rate = Some(match self.rate {
            None => rate,
            // A slower search counts at once (the next batch must not time
            // out); a faster one raises the rate gradually.
            Some(old) if rate < old => rate,
            Some(old) => old + WEIGHT * (rate - old),
        });
    }

    /// Counts a search of `bytes` that outlived the timeout.
    pub fn observe_timeout(&mut self, bytes: usize) {
        if let Some(timeout) = self.timeout {
            self.observe(bytes.max(MEASURED_FROM), timeout);
        }
    }

    /// The most bytes the current batch should hold.
    pub fn batch_limit(&self) -> usize {
        match (self.timeout, self.rate) {
            (Some(timeout), Some(rate)) => {
                let within = (rate * timeout.as_secs_f64() / 4.0) as usize;
                within.clamp(FLOOR.min(self.max_batch_bytes), self.max_batch_bytes)
            }
            (Some(_), None) => PROBE.min(self.max_batch_bytes),
            (None, _) => self.max_batch_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    #[test]
    fn slow_searches_shrink_the_batch_to_a_quarter_of_the_timeout() {
        let mut pace = Pace::new(Some(Duration::from_secs(10)), 4 * MIB);
        assert_eq!(pace.batch_limit(), PROBE, "nothing measured yet");
        // 0.3 MB/s: a 4 MiB batch would take 14 s.
        pace.observe(3 * MIB, Duration::from_secs(10));
        let limit = pace.batch_limit();
        assert!((700_000..900_000).contains(&limit), "{limit}");
        // Fast again: the limit grows back, gradually, up to the maximum.
        pace.observe(4 * MIB, Duration::from_millis(40));
        assert!(pace.batch_limit() > limit && pace.batch_limit() <= 4 * MIB);
        for _ in 0..40 {
            pace.observe(4 * MIB, Duration::from_millis(40));
        }
        assert_eq!(pace.batch_limit(), 4 * MIB);
    }

    #[test]
    fn a_search_that_timed_out_shrinks_the_batch() {
        let mut pace = Pace::new(Some(Duration::from_secs(10)), 4 * MIB);
        pace.observe(4 * MIB, Duration::from_millis(100));
        assert_eq!(pace.batch_limit(), 4 * MIB);
        pace.observe_timeout(4 * MIB);
        assert_eq!(pace.batch_limit(), MIB);
    }

    #[test]
    fn the_limit_has_a_floor_and_small_or_untimed_batches_do_not_count() {
        let mut pace = Pace::new(Some(Duration::from_secs(1)), 4 * MIB);
        pace.observe(100, Duration::from_secs(5));
        assert_eq!(pace.batch_limit(), PROBE, "too small to measure");
        pace.observe(MIB, Duration::from_secs(100));
        assert_eq!(pace.batch_limit(), FLOOR);
        let mut untimed = Pace::new(None, 4 * MIB);
        untimed.observe(MIB, Duration::from_secs(100));
        assert_eq!(untimed.batch_limit(), 4 * MIB);
    }
}
