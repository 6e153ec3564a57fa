//! The HTTP endpoint: `/metrics` (OpenMetrics to scrapers that ask for it, the
//! classic Prometheus text format otherwise) and `/healthz` (200 while the program is
//! attached and the event reader runs; its body says `degraded: …` while a sink is
//! stalled, which holds up reporting but not enforcement).

use std::sync::Arc;

use prometheus_client::{
    encoding::{prometheus_text, text::encode},
    registry::Registry,
};

use super::Metrics;

/// Serves `/metrics` and `/healthz` on `addr` until the task is dropped.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
) -> std::io::Result<()> {
    use axum::{Router, http::StatusCode, http::header::CONTENT_TYPE, routing::get};

    let mut registry = Registry::default();
    registry.register_collector(Box::new(metrics.clone()));
    let registry = Arc::new(registry);
    let health = metrics.clone();
    let app = Router::new()
        .route(
            "/metrics",
            get(move |headers: axum::http::HeaderMap| {
                let registry = registry.clone();
                async move {
                    // OpenMetrics for scrapers that ask for it (Prometheus does), the
                    // classic text format (0.0.4) for everything else (curl, promtool).
                    let openmetrics = headers
                        .get(axum::http::header::ACCEPT)
                        .and_then(|v| v.to_str().ok())
                        .is_some_and(|v| v.contains("application/openmetrics-text"));
                    let mut body = String::new();
                    let (result, content_type) = if openmetrics {
                        (
                            encode(&mut body, &registry),
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )
                    } else {
                        (
                            prometheus_text::encode(&mut body, &registry),
                            "text/plain; version=0.0.4; charset=utf-8",
                        )
                    };
                    match result {
                        Ok(()) => (StatusCode::OK, [(CONTENT_TYPE, content_type)], body),
                        Err(_) => (
                            StatusCode::INTERNAL_SERVER_ERROR,
                            [(CONTENT_TYPE, "text/plain; charset=utf-8")],
                            "encoding failed\n".into(),
                        ),
                    }
                }
            }),
        )
        .route(
            "/healthz",
            get(move || {
                let ok = health.healthy();
                let degraded = health.degraded();
                async move {
                    if !ok {
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            "not enforcing\n".to_owned(),
                        )
                    } else if degraded.is_empty() {
                        (StatusCode::OK, "ok\n".to_owned())
                    } else {
                        (StatusCode::OK, format!("degraded: {degraded}\n"))
                    }
                }
            }),
        );
    axum::serve(listener, app).await
}
