//! `/metrics`: Prometheus (OpenMetrics text) counters of requests, bytes, rejected uploads,
//! rollbacks and reconciliation.

use agentpkg_model::ErrorCode;
use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{HttpResponse, web};
use agentpkg_packagemgr::ManagerMetrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::{Admin, ApiError, ApiState};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    /// The matched route pattern (`/api/v1/packages/{id}`), never the raw path, so that
    /// the number of series stays bounded.
    route: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

type Durations = Family<RouteLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.5 ms to ~16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// The API's metrics and the registry they are exported from.
pub struct ApiMetrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: Durations,
    uploaded_bytes: Counter,
    downloaded_bytes: Counter,
    uploads_rejected: Family<ReasonLabels, Counter>,
    rollout_tick_seconds: Histogram,
    rollout_tick_rows: Histogram,
}

impl ApiMetrics {
    /// Creates the API's metrics and registers them, with the package manager's and the
    /// storage gauges of `stats`, in one registry.
    pub fn new(
        manager: &ManagerMetrics,
        stats: &agentpkg_stats::Statistics,
        mirror: &agentpkg_mirror::MirrorMetrics,
    ) -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let durations: Durations = Family::new_with_constructor(latency_histogram);
        let uploaded_bytes = Counter::default();
        let downloaded_bytes = Counter::default();
        let uploads_rejected = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route (until the response head; bodies stream after)",
            durations.clone(),
        );
        registry.register(
            "agentpkg_uploaded_bytes",
            "Bytes of published packages",
            uploaded_bytes.clone(),
        );
        registry.register(
            "agentpkg_downloaded_bytes",
            "Bytes of package downloads and ranges served",
            downloaded_bytes.clone(),
        );
        registry.register(
            "agentpkg_uploads_rejected",
            "Uploads refused, by error code (conflict, checksum_mismatch, payload_too_large, invalid_field, …)",
            uploads_rejected.clone(),
        );
        // 0.25 ms to ~8 s; 1 to 65 536 rows.
        let rollout_tick_seconds = Histogram::new(exponential_buckets(0.000_25, 1.5, 26));
        let rollout_tick_rows = Histogram::new(exponential_buckets(1.0, 2.0, 17));
        registry.register(
            "agentpkg_rollout_tick_seconds",
            "Time the rollout engine took to evaluate every moving rollout once (on this replica, while it holds the engine's lease)",
            rollout_tick_seconds.clone(),
        );
        registry.register(
            "agentpkg_rollout_tick_rows",
            "Database rows the rollout engine read per tick",
            rollout_tick_rows.clone(),
        );
        manager.register(&mut registry);
        stats.register(&mut registry);
        mirror.register(&mut registry);
        Self {
            rollout_tick_seconds,
            rollout_tick_rows,
            registry,
            requests,
            durations,
            uploaded_bytes,
            downloaded_bytes,
            uploads_rejected,
        }
    }

    /// The metrics in OpenMetrics text format.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        encode(&mut out, &self.registry)?;
        Ok(out)
    }

    fn observe(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                method: method.to_owned(),
                route: route.to_owned(),
                status: status.to_string(),
            })
            .inc();
        self.durations
            .get_or_create(&RouteLabels {
                method: method.to_owned(),
                route: route.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Records what rollout engine ticks cost (for [`agentpkg_fleet::Fleet::with_tick_observer`]).
    pub fn rollout_tick_observer(&self) -> agentpkg_fleet::TickObserver {
        let (seconds, rows) = (
            self.rollout_tick_seconds.clone(),
            self.rollout_tick_rows.clone(),
        );
        std::sync::Arc::new(move |took, read| {
            seconds.observe(took.as_secs_f64());
            #[allow(clippy::cast_precision_loss)]
            rows.observe(read as f64);
        })
    }

    pub(crate) fn uploaded(&self, bytes: u64) {
        self.uploaded_bytes.inc_by(bytes);
    }

    pub(crate) fn downloaded(&self, bytes: u64) {
        self.downloaded_bytes.inc_by(bytes);
    }

    pub(crate) fn rejected(&self, code: ErrorCode) {
        self.uploads_rejected
            .get_or_create(&ReasonLabels {
                reason: code.as_str().to_owned(),
            })
            .inc();
    }
}

/// The method as a label: one of the standard methods, or `other`. Any token is a valid
/// HTTP method, so labelling by the raw one would let clients create series without end.
fn method_label(method: &actix_web::http::Method) -> String {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT",
    ];
    let method = method.as_str();
    if KNOWN.contains(&method) {
        method.to_owned()
    } else {
        "other".to_owned()
    }
}

/// Middleware counting and timing every request by its route pattern.
pub async fn track_requests(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let state = req.app_data::<web::Data<ApiState>>().cloned();
    let method = method_label(req.method());
    let started = Instant::now();
    let res = next.call(req).await?;
    if let Some(state) = state {
        let route = res
            .request()
            .match_pattern()
            .unwrap_or_else(|| "unmatched".to_owned());
        state
            .metrics
            .observe(&method, &route, res.status().as_u16(), started.elapsed());
    }
    Ok(res)
}

fn exposition(state: &ApiState) -> Result<HttpResponse, ApiError> {
    state.packages.refresh_metrics();
    let body = state.metrics.render().map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(body))
}

/// Prometheus metrics
///
/// OpenMetrics text: requests and latency by route and status, bytes uploaded and
/// downloaded, rejected uploads by reason, rollbacks, storage and database latency, pool
/// usage. On the API port it needs the admin role; `metrics.bind` serves it without
/// authentication on an address of its own.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "The metrics", content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8", body = String),
    ),
)]
pub(crate) async fn metrics(
    _admin: Admin,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    exposition(&state)
}

/// `GET /metrics` on the separate metrics listener (`metrics.bind`), which has no
/// authentication: bind it where only the scraper can reach it.
pub(crate) async fn metrics_unauthenticated(
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    exposition(&state)
}

#[cfg(test)]
mod tests {
    use actix_web::http::Method;

    use super::method_label;

    #[test]
    fn unknown_methods_share_one_label() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::DELETE), "DELETE");
        for token in ["QUERY", "BREW", "X1", "get"] {
            assert_eq!(
                method_label(&Method::from_bytes(token.as_bytes()).unwrap()),
                "other"
            );
        }
    }
}
