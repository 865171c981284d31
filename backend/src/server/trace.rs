//! Request logging: one span per request, named by the route template
//! (`/v1/check`, never the raw URI), with the status and duration logged
//! when the response is ready. Health checks log at debug level so probes do
//! not flood the log. Headers are never logged, so tokens stay out.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument as _;

/// Wraps a request in a span keyed by its route template.
pub async fn trace_request(matched: Option<MatchedPath>, request: Request, next: Next) -> Response {
    let route = matched
        .as_ref()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let method = request.method().clone();
    let quiet = route == "/health";
    let span = if quiet {
        tracing::debug_span!("request", %method, route)
    } else {
        tracing::info_span!("request", %method, route)
    };

    let started = Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    span.in_scope(|| {
        if quiet {
            tracing::debug!(status, elapsed_ms, "finished request");
        } else {
            tracing::info!(status, elapsed_ms, "finished request");
        }
    });
    response
}
