//! `GET /v1/events` (match events) and `GET /v1/events/closed` (streams
//! the engine closed on its own, with their final verdicts) as server-sent
//! events.
//!
//! Each connection is one engine subscription; each event is one `data:`
//! line of JSON (a [`crate::MatchEvent`], or a [`crate::engine::ClosedEvent`]).
//! A comment line every 15 seconds keeps idle connections (and proxies)
//! alive. The stream ends when the client goes away or the engine shuts
//! down.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use bytes::Bytes;

use super::api::ApiState;
use crate::engine::Subscription;

const KEEP_ALIVE: Duration = Duration::from_secs(15);

pub(crate) async fn events(state: web::Data<ApiState>) -> HttpResponse {
    sse(state.engine.subscribe())
}

pub(crate) async fn closed(state: web::Data<ApiState>) -> HttpResponse {
    sse(state.engine.subscribe_closes())
}

fn sse<T: serde::Serialize + 'static>(subscription: Subscription<T>) -> HttpResponse {
    let stream = futures_util::stream::unfold(subscription, |subscription| async move {
        let frame = match tokio::time::timeout(KEEP_ALIVE, subscription.recv()).await {
            Ok(Some(event)) => {
                let json = serde_json::to_string(&event).expect("events serialize");
                format!("data: {json}\n\n")
            }
            Ok(None) => return None,
            Err(_) => ": keep-alive\n\n".to_string(),
        };
        Some((
            Ok::<_, std::convert::Infallible>(Bytes::from(frame)),
            subscription,
        ))
    });
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .streaming(stream)
}
