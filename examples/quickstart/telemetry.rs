//! `GET /metrics`: the crate's counters and its store latency in Prometheus text, with
//! `METRICS=1` (and the crate's `metrics` feature). The `metrics` facade records them; the
//! Prometheus recorder installed here renders them on each scrape.

use actix_web::{web, HttpResponse};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::json;

/// The Prometheus recorder's handle, if `METRICS=1` installed one.
pub(crate) struct Metrics(Option<PrometheusHandle>);

/// Installs the Prometheus recorder as the process's `metrics` recorder when `METRICS=1`.
pub(crate) fn from_env() -> std::io::Result<Metrics> {
    if std::env::var("METRICS").as_deref() != Ok("1") {
        return Ok(Metrics(None));
    }
    let handle = PrometheusBuilder::new()
        .install_recorder()
        .map_err(std::io::Error::other)?;
    println!("metrics: GET /metrics");
    Ok(Metrics(Some(handle)))
}

/// The metrics in Prometheus text format; `404` without `METRICS=1`.
pub(crate) async fn metrics(metrics: web::Data<Metrics>) -> HttpResponse {
    match &metrics.0 {
        Some(handle) => {
            // Histograms keep their samples until upkeep folds them in.
            handle.run_upkeep();
            HttpResponse::Ok()
                .content_type("text/plain; version=0.0.4")
                .body(handle.render())
        }
        None => HttpResponse::NotFound().json(json!({ "error": "not_found" })),
    }
}
