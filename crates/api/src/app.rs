//! Build, then run: [`Application::build`] opens the ledger, the registry and binds the
//! socket (port 0 allowed); [`Application::run`] serves until the shutdown future resolves,
//! then drains in-flight requests and the writer's last batch.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::{DefaultBodyLimit, MatchedPath};
use axum::http::{Request, StatusCode};
use axum::Router;
use camledger_eventstore::{EventWriter, Ledger, LedgerConfig};
use camledger_processor::admission::Limits;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::config::ServeConfig;
use crate::error::ApiError;
use crate::listener::CappedListener;
use crate::registry::Registry;
use crate::routes;
use camledger_backup::schedule::ScheduleStatus;
use tokio::sync::watch;

/// What every handler can reach.
pub(crate) struct AppState {
    pub(crate) ledger: Ledger,
    pub(crate) writer: EventWriter,
    pub(crate) registry: Registry,
    pub(crate) limits: Limits,
    pub(crate) max_body_bytes: usize,
    pub(crate) body_timeout: Duration,
    /// Present when scheduled snapshots are on (`--snapshot-interval`).
    pub(crate) snapshots: Option<watch::Receiver<ScheduleStatus>>,
}

/// How the scheduled snapshots run; started by [`Application::run`].
struct SnapshotSchedule {
    data_dir: std::path::PathBuf,
    store: camledger_backup::Store,
    key: camledger_backup::BackupKey,
    interval: Duration,
    status: watch::Sender<ScheduleStatus>,
}

pub struct Application {
    listener: CappedListener,
    router: Router,
    state: Arc<AppState>,
    grace: Duration,
    schedule: Option<SnapshotSchedule>,
    judging: Option<crate::processing::Judging>,
}

impl Application {
    pub async fn build(config: ServeConfig) -> anyhow::Result<Self> {
        let data_dir = &config.data.data_dir;
        std::fs::create_dir_all(data_dir).with_context(|| format!("creating data dir {}", data_dir.display()))?;
        let ledger_config = LedgerConfig {
            node_name: config.node_name(),
            max_batch: config.max_batch.max(1),
            fail_fsync_after: config.fail_fsync_after,
            ..LedgerConfig::default()
        };
        let ledger = {
            let dir = data_dir.clone();
            tokio::task::spawn_blocking(move || Ledger::open(&dir, ledger_config))
                .await
                .context("opening the ledger panicked")?
                .with_context(|| format!("opening the ledger in {}", data_dir.display()))?
        };
        let writer = {
            let ledger = ledger.clone();
            tokio::task::spawn_blocking(move || ledger.start_writer())
                .await
                .context("starting the event writer panicked")?
                .context("starting the event writer")?
        };
        let registry = Registry::open(data_dir).await.context("opening the camera registry")?;
        let limits = Limits { max_pixels: config.max_pixels, ..Limits::default() };
        let schedule = match config.snapshot_interval {
            Some(interval) => {
                let url =
                    config.database_url.clone().unwrap_or_else(|| crate::snapshots::default_database_url(data_dir));
                // Fail at start-up, not an hour later, when the database is wrong.
                let store = crate::snapshots::connect(&url).await?;
                let key = config.backup_key.load_or_create(data_dir)?;
                let (status, _) = watch::channel(ScheduleStatus::default());
                Some(SnapshotSchedule { data_dir: data_dir.clone(), store, key, interval, status })
            }
            None => None,
        };
        let workers = config.workers();
        let judging = if workers > 0 {
            Some(config.judge.load(workers).context("in-process judging (--workers 0 turns it off)")?)
        } else {
            None
        };
        let state = Arc::new(AppState {
            ledger,
            writer,
            registry,
            limits,
            max_body_bytes: config.max_body_bytes,
            body_timeout: config.request_timeout(),
            snapshots: schedule.as_ref().map(|s| s.status.subscribe()),
        });
        let tcp =
            tokio::net::TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
        let listener =
            CappedListener::new(tcp, config.max_connections, Duration::from_secs(config.idle_timeout_secs.max(1)));
        let router = router(Arc::clone(&state), &config);
        Ok(Self { listener, router, state, grace: Duration::from_secs(config.shutdown_grace_secs), schedule, judging })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound TCP listener has a local address")
    }

    /// Serves until `shutdown` resolves; then stops accepting, finishes in-flight requests
    /// (for at most the grace period) and lets the writer make its last batch durable.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let stop_background = tokio_util::sync::CancellationToken::new();
        let snapshots = self.schedule.map(|s| {
            let stop = stop_background.clone();
            tokio::spawn(async move {
                let options = camledger_backup::SnapshotOptions::default();
                camledger_backup::schedule::run_schedule(
                    &s.store,
                    &s.key,
                    &s.data_dir,
                    &options,
                    s.interval,
                    &s.status,
                    stop.cancelled_owned(),
                )
                .await;
                s.store.close().await;
            })
        });
        let worker = self.judging.map(|judging| {
            let (ledger, stop) = (self.state.ledger.clone(), stop_background.clone());
            tokio::spawn(async move {
                // A failing worker stops judging, not ingest: log it loudly and keep serving.
                if let Err(e) = crate::processing::run_worker(ledger, judging, stop).await {
                    tracing::error!(
                        error = format!("{e:#}"),
                        "verdict worker failed; ingest continues, judging stopped"
                    );
                }
            })
        });
        let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
        let graceful = async move {
            shutdown.await;
            tracing::info!("shutdown requested: no new connections, finishing in-flight requests");
            let _ = stopping_tx.send(());
        };
        let serve = axum::serve(self.listener, self.router.into_make_service()).with_graceful_shutdown(graceful);
        let grace = self.grace;
        let served = tokio::spawn(async move { serve.await });
        tokio::pin!(served);
        tokio::select! {
            result = &mut served => result.context("server task panicked")?.context("serving HTTP")?,
            _ = async {
                let _ = stopping_rx.await;
                tokio::time::sleep(grace).await;
            } => {
                tracing::warn!(grace_secs = grace.as_secs(), "in-flight requests did not finish within the grace period");
                served.abort();
            }
        }
        stop_background.cancel();
        if let Some(task) = worker {
            if tokio::time::timeout(grace, task).await.is_err() {
                tracing::warn!("the verdict worker did not stop within the grace period");
            }
        }
        if let Some(task) = snapshots {
            if tokio::time::timeout(grace, task).await.is_err() {
                tracing::warn!("the snapshot scheduler did not stop within the grace period");
            }
        }
        self.state.writer.clone().shutdown().await;
        self.state.registry.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

fn router(state: Arc<AppState>, config: &ServeConfig) -> Router {
    Router::new()
        .merge(routes::health::router())
        .merge(routes::images::router())
        .merge(routes::events::router())
        .fallback(|| async { ApiError::not_found("no such route") })
        // Bodies are limited by the upload handler itself (with a JSON 413); this only
        // lifts axum's 2 MiB default for the multipart extractor.
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            config.request_timeout() + Duration::from_secs(5),
        ))
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
            let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned());
            tracing::info_span!(
                "http",
                method = %request.method(),
                route = route.as_deref().unwrap_or("unmatched"),
                principal = tracing::field::Empty,
            )
        }))
        .with_state(state)
}
