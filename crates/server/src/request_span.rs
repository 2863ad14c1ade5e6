//! The span every request runs in, and its id returned to the client.
//!
//! A request's span fields are formatted for the log when the span opens, whether or not
//! anything is logged in it, so it carries only what an operator matches log lines by: the
//! method, the path (never the query, which may carry a credential) and the request's id.
//! tracing-actix-web's default span adds a dozen more (host, scheme, user agent, client
//! address, the route found by matching the path once more before routing): about 5 % of
//! a cached package read's CPU.

use actix_web::HttpMessage;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use tracing::Span;
use tracing_actix_web::{RequestId, RootSpanBuilder};

/// Opens each request's span (see the module's documentation).
pub(crate) struct RequestSpan;

impl RootSpanBuilder for RequestSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        let id = request.extensions().get::<RequestId>().copied();
        tracing::info_span!(
            "HTTP request",
            http.method = %request.method(),
            http.path = request.path(),
            request_id = id.map(tracing::field::display),
        )
    }

    /// Nothing is logged in the span once the response is made, so the status is not
    /// recorded in it (the metrics count requests by route and status; an answer of 500
    /// logs its cause where it is made).
    fn on_request_end<B: MessageBody>(
        _span: Span,
        _outcome: &Result<ServiceResponse<B>, actix_web::Error>,
    ) {
    }
}

/// Returns the id of the request's log span as `X-Request-Id`, so a client's report can be
/// matched with the server's log lines.
pub(crate) async fn request_id_header(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let id = req.extensions().get::<RequestId>().copied();
    let mut res = next.call(req).await?;
    if let Some(id) = id
        && let Ok(value) = actix_web::http::header::HeaderValue::from_str(&id.to_string())
    {
        res.headers_mut().insert(
            actix_web::http::header::HeaderName::from_static("x-request-id"),
            value,
        );
    }
    Ok(res)
}
