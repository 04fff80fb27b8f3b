//! Prometheus metrics: one registry per [`crate::Application`], served as text by
//! `GET /metrics` (`routes::metrics`).
//!
//! Three kinds of sources, so that no library crate depends on this one or on a metrics
//! library:
//! - counted where it happens in this crate: uploads (`routes::images`), HTTP requests (a
//!   middleware, labelled with the route template, never the raw path);
//! - reported by the libraries through their observer traits, which [`Metrics`] implements:
//!   fsyncs and writer batches ([`camledger_eventstore::observe::Observer`]), verdicts and
//!   their analysis time ([`camledger_processor::worker::Observer`]);
//! - read at scrape time ([`Metrics::set_gauges`]): head seqs, verdict lag, the read model's
//!   position, pack count, the scheduled snapshots' status. Nothing to keep in step, and a
//!   scrape costs a few `stat`s and ref reads.
//!
//! Every histogram has explicit buckets (below), chosen from what was measured on this
//! machine kind: fsyncs of 0.5-50 ms, batches of 1-512 requests, analyses of 0.1-20 ms.
//! Label values come from fixed sets (status codes, route templates, methods, verdict
//! reasons), so a hostile client cannot grow the registry.

use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The `Content-Type` of the exposition (Prometheus text format 0.0.4).
pub(crate) const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Seconds of one fsync(2)/fdatasync(2).
const FSYNC_SECONDS: [f64; 13] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0];
/// Seconds to write and make durable one writer batch.
const BATCH_SECONDS: [f64; 13] = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0];
/// Append requests in one writer batch (`--max-batch` is 256 by default).
const BATCH_SIZE: [f64; 11] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0];
/// Seconds to analyse one image (decode, hashes, blank check, classifier).
const JUDGE_SECONDS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];
/// Seconds from a request's arrival to its response head.
const HTTP_SECONDS: [f64; 14] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SpamLabels {
    spam: bool,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: &'static str,
    route: String,
    status: u16,
}

fn http_histogram() -> Histogram {
    Histogram::new(HTTP_SECONDS)
}

/// What the process knows at scrape time; [`Metrics::set_gauges`] publishes it.
#[derive(Debug, Default)]
pub(crate) struct Observed {
    pub(crate) events_head_seq: u64,
    pub(crate) verdicts_head_seq: u64,
    pub(crate) read_model_events_seq: u64,
    pub(crate) read_model_verdicts_seq: u64,
    pub(crate) packs: u64,
    /// With `--snapshot-interval`: the newest snapshot known (unix seconds, stored bytes) and
    /// the failed attempts since the last success.
    pub(crate) snapshot: Option<(Option<(f64, u64)>, u32)>,
}

/// The scheduled snapshots' gauges, registered only with `--snapshot-interval` (a server
/// without scheduled snapshots has no "last snapshot" to alert on).
#[derive(Debug, Default)]
struct SnapshotGauges {
    last_time: Gauge<f64, AtomicU64>,
    last_bytes: Gauge,
    failures: Gauge,
}

/// The registry and a handle on every metric in it.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    uploads: Family<StatusLabels, Counter>,
    verdicts: Family<SpamLabels, Counter>,
    spam: Family<ReasonLabels, Counter>,
    judge_seconds: Histogram,
    fsync_seconds: Histogram,
    batch_seconds: Histogram,
    batch_size: Histogram,
    http_seconds: Family<HttpLabels, Histogram, fn() -> Histogram>,
    events_head: Gauge,
    verdicts_head: Gauge,
    verdict_lag: Gauge,
    read_model_events: Gauge,
    read_model_verdicts: Gauge,
    packs: Gauge<i64, AtomicI64>,
    snapshots: Option<SnapshotGauges>,
    /// One scrape at a time: gauges are set, then encoded, as one step.
    scrape: Mutex<()>,
}

impl Metrics {
    /// A registry with every metric at zero; `snapshots_scheduled` adds the snapshot gauges.
    pub(crate) fn new(snapshots_scheduled: bool) -> Self {
        let mut registry = Registry::with_prefix("camledger");
        let m = Metrics {
            uploads: Family::default(),
            verdicts: Family::default(),
            spam: Family::default(),
            judge_seconds: Histogram::new(JUDGE_SECONDS),
            fsync_seconds: Histogram::new(FSYNC_SECONDS),
            batch_seconds: Histogram::new(BATCH_SECONDS),
            batch_size: Histogram::new(BATCH_SIZE),
            http_seconds: Family::new_with_constructor(http_histogram as fn() -> Histogram),
            events_head: Gauge::default(),
            verdicts_head: Gauge::default(),
            verdict_lag: Gauge::default(),
            read_model_events: Gauge::default(),
            read_model_verdicts: Gauge::default(),
            packs: Gauge::default(),
            snapshots: snapshots_scheduled.then(SnapshotGauges::default),
            scrape: Mutex::new(()),
            registry: Registry::default(),
        };
        registry.register(
            "uploads",
            "Images answered by POST /v1/images, by HTTP status of each image (a multipart part counts \
             alone; a request refused as a whole counts once)",
            m.uploads.clone(),
        );
        registry.register(
            "verdicts",
            "Verdicts appended by this process's workers, by spam; rate() is the judge rate",
            m.verdicts.clone(),
        );
        registry.register("spam", "Spam verdicts appended by this process's workers, by reason", m.spam.clone());
        registry.register(
            "judge_duration_seconds",
            "Seconds to analyse one image for its verdict (decode, hashes, blank check, classifier)",
            m.judge_seconds.clone(),
        );
        registry.register(
            "fsync_duration_seconds",
            "Seconds of each fsync or fdatasync on the write path",
            m.fsync_seconds.clone(),
        );
        registry.register(
            "batch_duration_seconds",
            "Seconds to write one writer batch and make it durable",
            m.batch_seconds.clone(),
        );
        registry.register("batch_size", "Append requests in one writer batch", m.batch_size.clone());
        registry.register(
            "http_request_duration_seconds",
            "Seconds from a request's arrival to its response head, by method, route template and status",
            m.http_seconds.clone(),
        );
        registry.register("events_head_seq", "Seq of the newest event (refs/heads/events)", m.events_head.clone());
        registry.register(
            "verdicts_head_seq",
            "Seq of the newest judged event (refs/heads/verdicts)",
            m.verdicts_head.clone(),
        );
        registry.register("verdict_lag_events", "Events not yet judged", m.verdict_lag.clone());
        registry.register(
            "read_model_events_seq",
            "Newest event seq projected into the read model",
            m.read_model_events.clone(),
        );
        registry.register(
            "read_model_verdicts_seq",
            "Newest judged event seq projected into the read model",
            m.read_model_verdicts.clone(),
        );
        registry.register("packs", "Pack files in the ledger repository", m.packs.clone());
        if let Some(s) = &m.snapshots {
            registry.register(
                "last_snapshot_timestamp_seconds",
                "Unix time of the newest snapshot (0: none yet)",
                s.last_time.clone(),
            );
            registry.register(
                "last_snapshot_stored_bytes",
                "Stored (compressed) bytes of the newest snapshot",
                s.last_bytes.clone(),
            );
            registry.register(
                "snapshot_failures_in_a_row",
                "Failed scheduled snapshot attempts since the last success",
                s.failures.clone(),
            );
        }
        // Both series from the start, so that a judge rate of zero is a zero, not a gap.
        for spam in [false, true] {
            let _ = m.verdicts.get_or_create(&SpamLabels { spam });
        }
        Metrics { registry, ..m }
    }

    /// One image answered by the upload route with `status`.
    pub(crate) fn upload(&self, status: u16) {
        self.uploads.get_or_create(&StatusLabels { status }).inc();
    }

    /// One request answered: `route` is the matched route template (`/v1/events/{seq}`) or
    /// `unmatched`, never the raw path.
    pub(crate) fn http_request(&self, method: &axum::http::Method, route: &str, status: u16, took: Duration) {
        let labels = HttpLabels { method: method_label(method), route: route.to_owned(), status };
        self.http_seconds.get_or_create(&labels).observe(took.as_secs_f64());
    }

    /// Publishes what was read at scrape time and encodes the whole registry.
    pub(crate) fn scrape(&self, observed: &Observed) -> String {
        let _one_at_a_time = self.scrape.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let gauge = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
        self.events_head.set(gauge(observed.events_head_seq));
        self.verdicts_head.set(gauge(observed.verdicts_head_seq));
        self.verdict_lag.set(gauge(observed.events_head_seq.saturating_sub(observed.verdicts_head_seq)));
        self.read_model_events.set(gauge(observed.read_model_events_seq));
        self.read_model_verdicts.set(gauge(observed.read_model_verdicts_seq));
        self.packs.set(gauge(observed.packs));
        if let (Some(gauges), Some((last, failures))) = (&self.snapshots, observed.snapshot) {
            if let Some((at, bytes)) = last {
                gauges.last_time.set(at);
                gauges.last_bytes.set(gauge(bytes));
            }
            gauges.failures.set(i64::from(failures));
        }
        let mut text = String::with_capacity(16 * 1024);
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
            .expect("writing into a String cannot fail");
        text
    }
}

/// The method as a label: the standard ones by name, anything else `other` (hyper accepts
/// any token as a method; a label per token would let clients grow the registry).
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

impl camledger_eventstore::observe::Observer for Metrics {
    fn fsync(&self, took: Duration) {
        self.fsync_seconds.observe(took.as_secs_f64());
    }

    fn batch(&self, requests: usize, took: Duration) {
        self.batch_size.observe(requests as f64);
        self.batch_seconds.observe(took.as_secs_f64());
    }
}

impl camledger_processor::worker::Observer for Metrics {
    fn judged(&self, analysis: Duration, spam: bool, reasons: &[String]) {
        self.judge_seconds.observe(analysis.as_secs_f64());
        self.verdicts.get_or_create(&SpamLabels { spam }).inc();
        if spam {
            for reason in reasons {
                self.spam.get_or_create(&ReasonLabels { reason: reason.clone() }).inc();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use camledger_eventstore::observe::Observer as _;
    use camledger_processor::worker::Observer as _;

    #[test]
    fn observations_show_up_in_the_text_with_their_buckets() {
        let metrics = Metrics::new(false);
        metrics.upload(201);
        metrics.upload(201);
        metrics.upload(415);
        metrics.fsync(Duration::from_millis(3));
        metrics.batch(7, Duration::from_millis(12));
        metrics.judged(Duration::from_millis(4), true, &["blank".to_owned()]);
        metrics.http_request(&axum::http::Method::GET, "/v1/events/{seq}", 200, Duration::from_millis(2));
        let text = metrics.scrape(&Observed { events_head_seq: 9, verdicts_head_seq: 4, ..Observed::default() });
        for line in [
            "camledger_uploads_total{status=\"201\"} 2",
            "camledger_uploads_total{status=\"415\"} 1",
            "camledger_spam_total{reason=\"blank\"} 1",
            "camledger_verdicts_total{spam=\"true\"} 1",
            "camledger_batch_size_bucket{le=\"4\"} 0",
            "camledger_batch_size_bucket{le=\"8\"} 1",
            "camledger_verdicts_total{spam=\"false\"} 0",
            "camledger_fsync_duration_seconds_count 1",
            "camledger_verdict_lag_events 5",
            "camledger_http_request_duration_seconds_count{method=\"GET\",route=\"/v1/events/{seq}\",status=\"200\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} missing from:\n{text}");
        }
        assert!(!text.contains("snapshot"), "no snapshot gauges without scheduled snapshots");
    }

    #[test]
    fn unknown_methods_share_one_label() {
        let method = axum::http::Method::from_bytes(b"BREW").unwrap();
        assert_eq!(method_label(&method), "other");
        assert_eq!(method_label(&axum::http::Method::POST), "POST");
    }
}
