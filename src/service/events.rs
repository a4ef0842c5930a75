//! `GET /v1/events` (match events) and `GET /v1/events/closed` (streams
//! the engine closed on its own, with their final verdicts) as server-sent
//! events.
//!
//! Each connection is one engine subscription; each event is one `data:`
//! line of JSON (a [`crate::MatchEvent`], or a [`crate::engine::ClosedEvent`]).
//! A comment line every [`KEEP_ALIVE`] keeps idle connections (and proxies)
//! alive and finds subscribers that vanished without closing their
//! connection (the write fails); one that closes its connection is noticed
//! at once (the server keeps no half-closed connections). The stream ends
//! when the client goes away or the engine shuts down.
//!
//! At most `ApiState::max_subscribers` subscriptions (both kinds together)
//! are open at once: each costs a connection and a queue, and a client
//! opening them in a loop must not exhaust either. Past it: 503
//! `too_many_subscribers`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use bytes::Bytes;

use super::error::ApiError;
use super::state::ApiState;
use crate::engine::Subscription;

/// How often an idle event stream gets a comment line.
pub const KEEP_ALIVE: Duration = Duration::from_secs(5);

pub(crate) async fn events(state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    let slot = Slot::take(&state)?;
    Ok(sse(state.engine.subscribe(), slot))
}

pub(crate) async fn closed(state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    let slot = Slot::take(&state)?;
    Ok(sse(state.engine.subscribe_closes(), slot))
}

/// One of the `max_subscribers` places, given back when the event stream
/// is dropped (its connection closed).
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(state: &ApiState) -> Result<Slot, ApiError> {
        let max = state.max_subscribers;
        let taken = state
            .subscribers
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            });
        match taken {
            Ok(_) => Ok(Slot(state.subscribers.clone())),
            Err(_) => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_subscribers",
                format!(
                    "{max} event subscriptions are open (max_event_subscribers); close one or raise the limit"
                ),
            )),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn sse<T: serde::Serialize + 'static>(subscription: Subscription<T>, slot: Slot) -> HttpResponse {
    let stream =
        futures_util::stream::unfold((subscription, slot), |(subscription, slot)| async move {
            let frame = match tokio::time::timeout(KEEP_ALIVE, subscription.recv()).await {
                Ok(Some(event)) => match serde_json::to_string(&event) {
                    Ok(json) => format!("data: {json}\n\n"),
                    Err(error) => format!(": an event could not be written: {error}\n\n"),
                },
                Ok(None) => return None,
                Err(_) => ": keep-alive\n\n".to_string(),
            };
            Some((
                Ok::<_, std::convert::Infallible>(Bytes::from(frame)),
                (subscription, slot),
            ))
        });
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .streaming(stream)
}
