//! Backpressure: the bound on what is queued for one shard.
//!
//! Chunks travel to their shard with actix's `do_send`, which costs about
//! half a microsecond and waits for no reply (`send().await` costs ~55 us
//! when it wakes an idle thread). `do_send` ignores actix's mailbox
//! capacity, so the bound lives here: a producer takes a place in the
//! shard's [`MailboxGate`] (one message, its bytes) before it sends, and
//! the shard gives the place back when it takes the message. A producer
//! that finds the gate full waits, on a condition variable (blocking
//! callers) or a `tokio::sync::Notify` (async callers), for as long as the
//! configured bound allows, then gives up with `Overloaded`. Nothing is
//! dropped: a chunk is either queued or refused to its caller.
//!
//! The gate also closes the engine for shutdown without losing a chunk: a
//! place is taken and the gate's `sending` count raised under one lock, so
//! once [`MailboxGate::close`] returns, every chunk admitted before is in
//! the mailbox, ahead of the shutdown message.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Why a producer could not take a place.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The gate stayed full until the deadline.
    Full,
    /// The engine is shutting down.
    Closed,
}

#[derive(Default)]
struct GateState {
    messages: usize,
    bytes: usize,
    /// Producers between admission and the end of their `do_send`.
    sending: usize,
    closed: bool,
    blocking_waiters: usize,
    async_waiters: usize,
}

/// The queue bound of one shard.
pub(crate) struct MailboxGate {
    state: Mutex<GateState>,
    max_messages: usize,
    max_bytes: usize,
    freed: Condvar,
    freed_async: Notify,
}

/// A place taken in the gate, held while the message is sent. Once the
/// message is in the mailbox, [`Admission::delivered`] ends the send and
/// leaves the place to the shard, which frees it when it takes the
/// message; dropped otherwise (an error, a cancelled future), the place is
/// given back.
pub(crate) struct Admission<'g> {
    gate: &'g MailboxGate,
    bytes: usize,
    delivered: bool,
}

impl Admission<'_> {
    /// The message is in the mailbox.
    pub fn delivered(mut self) {
        self.delivered = true;
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        let mut state = self.gate.lock();
        state.sending -= 1;
        if !self.delivered {
            state.messages -= 1;
            state.bytes -= self.bytes;
            self.gate.wake(&state);
        }
        if state.closed && state.sending == 0 {
            self.gate.freed.notify_all();
            self.gate.freed_async.notify_waiters();
        }
    }
}

/// Counts an async waiter for as long as it waits, even if its future is
/// dropped.
struct AsyncWaiter<'g>(&'g MailboxGate);

impl<'g> AsyncWaiter<'g> {
    fn new(gate: &'g MailboxGate, state: &mut GateState) -> AsyncWaiter<'g> {
        state.async_waiters += 1;
        AsyncWaiter(gate)
    }
}

impl Drop for AsyncWaiter<'_> {
    fn drop(&mut self) {
        self.0.lock().async_waiters -= 1;
    }
}

impl MailboxGate {
    /// A gate admitting up to `max_messages` messages and `max_bytes` bytes.
    pub fn new(max_messages: usize, max_bytes: usize) -> MailboxGate {
        MailboxGate {
            state: Mutex::new(GateState::default()),
            max_messages: max_messages.max(1),
            max_bytes: max_bytes.max(1),
            freed: Condvar::new(),
            freed_async: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, GateState> {
        // The state is plain counters, valid even if a holder panicked.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a place if there is one.
    fn try_admit(&self, state: &mut GateState, bytes: usize) -> Result<bool, Refusal> {
        if state.closed {
            return Err(Refusal::Closed);
        }
        let empty = state.messages == 0;
        if !empty && (state.messages >= self.max_messages || state.bytes + bytes > self.max_bytes) {
            return Ok(false);
        }
        state.messages += 1;
        state.bytes += bytes;
        state.sending += 1;
        Ok(true)
    }

    /// Takes a place for a message of `bytes` bytes, blocking the thread
    /// while the gate is full, up to `patience` (`None`: forever).
    pub fn admit_blocking(
        &self,
        bytes: usize,
        patience: Option<Duration>,
    ) -> Result<Admission<'_>, Refusal> {
        let deadline = patience.map(|p| Instant::now() + p);
        let mut state = self.lock();
        loop {
            if self.try_admit(&mut state, bytes)? {
                return Ok(self.admission(bytes));
            }
            let wait = match deadline {
                Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => left,
                    _ => return Err(Refusal::Full),
                },
                None => Duration::from_secs(1),
            };
            state.blocking_waiters += 1;
            state = self
                .freed
                .wait_timeout(state, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            state.blocking_waiters -= 1;
        }
    }

    /// Takes a place for a message of `bytes` bytes, waiting (without
    /// blocking the thread) while the gate is full, up to `patience`. Needs
    /// a Tokio runtime with timers when `patience` is set.
    pub async fn admit_async(
        &self,
        bytes: usize,
        patience: Option<Duration>,
    ) -> Result<Admission<'_>, Refusal> {
        let deadline = patience.map(|p| tokio::time::Instant::now() + p);
        loop {
            let notified = self.freed_async.notified();
            tokio::pin!(notified);
            let waiter = {
                let mut state = self.lock();
                if self.try_admit(&mut state, bytes)? {
                    return Ok(self.admission(bytes));
                }
                if deadline.is_some_and(|d| d <= tokio::time::Instant::now()) {
                    return Err(Refusal::Full);
                }
                // Registered before the lock is released: a release between
                // here and the await still wakes this waiter.
                notified.as_mut().enable();
                AsyncWaiter::new(self, &mut state)
            };
            let timed_out = match deadline {
                Some(deadline) => tokio::time::timeout_at(deadline, notified).await.is_err(),
                None => {
                    notified.await;
                    false
                }
            };
            drop(waiter);
            if timed_out {
                // One last try: the place may have freed as time ran out.
                let mut state = self.lock();
                if self.try_admit(&mut state, bytes)? {
                    return Ok(self.admission(bytes));
                }
                return Err(Refusal::Full);
            }
        }
    }

    fn admission(&self, bytes: usize) -> Admission<'_> {
        Admission {
            gate: self,
            bytes,
            delivered: false,
        }
    }

    /// Gives back the place of a message the shard has taken.
    pub fn release(&self, bytes: usize) {
        let mut state = self.lock();
        state.messages = state.messages.saturating_sub(1);
        state.bytes = state.bytes.saturating_sub(bytes);
        self.wake(&state);
    }

    fn wake(&self, state: &GateState) {
        if state.blocking_waiters > 0 {
            self.freed.notify_all();
        }
        if state.async_waiters > 0 {
            self.freed_async.notify_waiters();
        }
    }

    /// Messages queued now.
    pub fn depth(&self) -> usize {
        self.lock().messages
    }

    /// Refuses new places from now on, and wakes every waiting producer
    /// (they get [`Refusal::Closed`]).
    pub fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        self.wake(&state);
    }

    /// After [`Self::close`]: returns once every admitted message has been
    /// handed to the mailbox (or given back).
    pub fn wait_until_sent_blocking(&self) {
        let mut state = self.lock();
        while state.sending > 0 {
            state = self
                .freed
                .wait_timeout(state, Duration::from_millis(10))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// [`Self::wait_until_sent_blocking`] for async callers: other tasks of
    /// the same thread may be the senders to wait for.
    pub async fn wait_until_sent(&self) {
        loop {
            let notified = self.freed_async.notified();
            tokio::pin!(notified);
            let waiter = {
                let mut state = self.lock();
                if state.sending == 0 {
                    return;
                }
                notified.as_mut().enable();
                AsyncWaiter::new(self, &mut state)
            };
            notified.await;
            drop(waiter);
        }
    }

    /// Whether [`Self::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_gate_refuses_after_the_patience_and_admits_after_a_release() {
        let gate = MailboxGate::new(2, 1 << 20);
        gate.admit_blocking(10, Some(Duration::ZERO))
            .unwrap()
            .delivered();
        gate.admit_blocking(10, Some(Duration::ZERO))
            .unwrap()
            .delivered();
        assert_eq!(gate.depth(), 2);
        let refused = gate.admit_blocking(10, Some(Duration::from_millis(5)));
        assert_eq!(refused.err(), Some(Refusal::Full));
        gate.release(10);
        assert!(gate.admit_blocking(10, Some(Duration::ZERO)).is_ok());
    }

    #[test]
    fn bytes_bound_the_gate_but_one_large_message_passes_alone() {
        let gate = MailboxGate::new(100, 100);
        gate.admit_blocking(60, Some(Duration::ZERO))
            .unwrap()
            .delivered();
        let refused = gate.admit_blocking(60, Some(Duration::ZERO));
        assert_eq!(refused.err(), Some(Refusal::Full));
        gate.release(60);
        gate.admit_blocking(500, Some(Duration::ZERO))
            .unwrap()
            .delivered();
        assert_eq!(gate.depth(), 1);
    }

    #[test]
    fn a_waiting_producer_wakes_when_the_shard_frees_a_place() {
        let gate = std::sync::Arc::new(MailboxGate::new(1, 1 << 20));
        gate.admit_blocking(1, None).unwrap().delivered();
        let freer = {
            let gate = gate.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                gate.release(1);
            })
        };
        assert!(gate.admit_blocking(1, None).is_ok());
        freer.join().unwrap();
    }

    #[test]
    fn a_closed_gate_refuses_and_wakes_waiters() {
        let gate = std::sync::Arc::new(MailboxGate::new(1, 1 << 20));
        gate.admit_blocking(1, None).unwrap().delivered();
        let waiter = {
            let gate = gate.clone();
            std::thread::spawn(move || gate.admit_blocking(1, None).err())
        };
        std::thread::sleep(Duration::from_millis(20));
        gate.close();
        gate.wait_until_sent_blocking();
        assert_eq!(waiter.join().unwrap(), Some(Refusal::Closed));
        let refused = gate.admit_blocking(1, None);
        assert_eq!(refused.err(), Some(Refusal::Closed));
    }

    #[test]
    fn an_admission_dropped_before_delivery_gives_its_place_back() {
        let gate = MailboxGate::new(1, 1 << 20);
        drop(gate.admit_blocking(7, None).unwrap());
        assert_eq!(gate.depth(), 0);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            gate.admit_async(1, None).await.unwrap().delivered();
            // A future cancelled while it waits leaves no trace.
            let waiting = gate.admit_async(1, None);
            let cancelled = tokio::time::timeout(Duration::from_millis(5), waiting).await;
            assert!(cancelled.is_err());
        });
        assert_eq!(gate.lock().async_waiters, 0);
        gate.release(1);
        assert_eq!(gate.depth(), 0);
        assert!(gate.admit_blocking(1, Some(Duration::ZERO)).is_ok());
    }

    #[test]
    fn async_producers_wait_then_get_in() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let gate = std::sync::Arc::new(MailboxGate::new(1, 1 << 20));
        gate.admit_blocking(1, None).unwrap().delivered();
        let freer = {
            let gate = gate.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                gate.release(1);
            })
        };
        rt.block_on(async {
            let timed_out = gate.admit_async(1, Some(Duration::from_millis(1))).await;
            assert_eq!(timed_out.err(), Some(Refusal::Full));
            assert!(gate.admit_async(1, None).await.is_ok());
        });
        freer.join().unwrap();
    }
}
