//! Prometheus metrics, served on their own listener at `/metrics`.
//!
//! One registry per process; every collector is created here so names and labels are defined in
//! one place and documented by their help text.

use std::sync::Arc;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    pub transactions: IntCounterVec,
    pub txn_ack_seconds: Histogram,
    pub events_received: IntCounterVec,
    pub events_handled: IntCounterVec,
    pub bridge_latency: HistogramVec,
    pub hs_request_seconds: HistogramVec,
    pub hs_retries: IntCounterVec,
    pub as_query_seconds: HistogramVec,
    pub portals: IntGauge,
    pub portals_loaded: IntGauge,
    pub ghosts: IntGauge,
    pub logins_connected: IntGaugeVec,
    pub queue_depth: IntGauge,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

impl Metrics {
    pub fn new() -> Arc<Self> {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let histogram = |name: &str, help: &str, labels: &[&str]| {
            let h = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
                labels,
            )
            .expect("valid metric");
            registry
                .register(Box::new(h.clone()))
                .expect("unique metric");
            h
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let transactions = counter(
            "ferry_transactions_total",
            "Appservice transactions received, by outcome (stored, duplicate, rejected, unauthorized, failed)",
            &["outcome"],
        );
        let txn_ack_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "ferry_txn_ack_seconds",
                "Time to store and answer a transaction",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        registry
            .register(Box::new(txn_ack_seconds.clone()))
            .expect("unique metric");
        let events_received = counter(
            "ferry_events_received_total",
            "Matrix events received in transactions, by type",
            &["type"],
        );
        let events_handled = counter(
            "ferry_events_handled_total",
            "Events handled, by direction (matrix_to_remote, remote_to_matrix) and outcome",
            &["direction", "outcome"],
        );
        let bridge_latency = histogram(
            "ferry_bridge_latency_seconds",
            "Time from receiving an event to it being delivered on the other side, by direction",
            &["direction"],
        );
        let hs_request_seconds = histogram(
            "ferry_hs_request_seconds",
            "Homeserver request time including retries, by endpoint kind",
            &["kind"],
        );
        let hs_retries = counter(
            "ferry_hs_retries_total",
            "Homeserver requests retried, by reason (ratelimited, server_error, connection)",
            &["reason"],
        );
        let as_query_seconds = histogram(
            "ferry_as_query_seconds",
            "Time to answer homeserver user/room queries",
            &["endpoint"],
        );
        let portals = gauge("ferry_portals", "Portals with a Matrix room");
        let portals_loaded = gauge("ferry_portals_loaded", "Portal workers in memory");
        let ghosts = gauge("ferry_ghosts", "Ghost users known");
        let logins_connected = IntGaugeVec::new(
            Opts::new(
                "ferry_logins_connected",
                "Remote logins currently connected, by network",
            ),
            &["network"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(logins_connected.clone()))
            .expect("unique metric");
        let queue_depth = gauge(
            "ferry_portal_queue_depth",
            "Events queued in portal workers, all portals",
        );
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("unique metric");
        Arc::new(Self {
            registry,
            transactions,
            txn_ack_seconds,
            events_received,
            events_handled,
            bridge_latency,
            hs_request_seconds,
            hs_retries,
            as_query_seconds,
            portals,
            portals_loaded,
            ghosts,
            logins_connected,
            queue_depth,
        })
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(err) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::warn!(%err, "cannot encode metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }

    /// Serves `/metrics` until the process ends.
    pub async fn serve(self: Arc<Self>, listen: std::net::SocketAddr) -> std::io::Result<()> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        tracing::info!(%listen, "metrics listening");
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let metrics = self.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4",
                        )],
                        metrics.render(),
                    )
                }
            }),
        );
        axum::serve(listener, app).await
    }
}
