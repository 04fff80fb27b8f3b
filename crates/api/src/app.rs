//! Build, then run: [`Application::build`] opens the ledger, the registry and binds the
//! socket (port 0 allowed); [`Application::run`] serves until the shutdown future resolves,
//! then drains in-flight requests and the writer's last batch.
//!
//! Connections are served by hyper's HTTP/1 server directly (not `axum::serve`) because it
//! needs a timer for the absolute header-read deadline (`--header-timeout-secs`), which
//! `axum::serve` does not set.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::{DefaultBodyLimit, MatchedPath, State};
use axum::http::{Request, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use camledger_eventstore::{Ledger, LedgerConfig};
use camledger_processor::admission::Limits;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::trace::TraceLayer;

use crate::config::ServeConfig;
use crate::error::ApiError;
use crate::listener::CappedListener;
use crate::registry::Registry;
use crate::routes;
use crate::state::{AppState, WriterHealth};
use camledger_backup::schedule::ScheduleStatus;
use tokio::sync::watch;

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
    /// `--metrics-listen`: `/metrics` without a token.
    metrics_listener: Option<(CappedListener, Router)>,
    state: Arc<AppState>,
    grace: Duration,
    header_timeout: Duration,
    schedule: Option<SnapshotSchedule>,
    judging: Option<crate::processing::Judging>,
    checkpoint_interval: Duration,
    projector_off: bool,
    quarantine_after: Option<crate::quarantine::Policy>,
}

impl Application {
    pub async fn build(config: ServeConfig) -> anyhow::Result<Self> {
        // Everything that can be checked without the data dir is checked first: a wrong flag
        // or a missing library must not leave a new, empty ledger behind.
        anyhow::ensure!(
            config.max_inflight_bytes >= config.max_body_bytes,
            "--max-inflight-bytes ({}) must be at least --max-body-bytes ({})",
            config.max_inflight_bytes,
            config.max_body_bytes
        );
        anyhow::ensure!(
            config.max_inflight_bytes <= Semaphore::MAX_PERMITS && u32::try_from(config.max_body_bytes).is_ok(),
            "--max-inflight-bytes or --max-body-bytes is too large"
        );
        let workers = config.workers();
        let judging = if workers > 0 {
            Some(config.judge.load(workers).context("in-process judging (--workers 0 turns it off)")?)
        } else {
            None
        };
        config.signing_key.check_given()?;
        crate::datadir::prepare_ledger_dir(&config.data)?;
        let data_dir = &config.data.data_dir;
        let signing_key = config.signing_key.load_or_create(data_dir)?;
        let metrics = Arc::new(crate::metrics::Metrics::new(config.snapshot_interval.is_some()));
        let ledger_config = LedgerConfig {
            node_name: config.node_name()?,
            signing_key: Some(Arc::clone(&signing_key)),
            observer: Some(Arc::clone(&metrics) as Arc<dyn camledger_eventstore::observe::Observer>),
            max_batch: config.max_batch.max(1),
            fail_fsync_after: config.fail_fsync_after,
            idempotency_retention: config.idempotency_retention,
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
        if config.anchor.is_default() {
            tracing::warn!(
                "checkpoints go to sqlite://<data-dir>/anchors.sqlite; in production keep the anchor store outside \
                 the data dir, on another machine (--anchor-url mysql://…)"
            );
        }
        // Fail at start-up when the anchor store cannot be reached (2 s for MariaDB).
        let anchors =
            Arc::new(crate::anchors::Anchoring::open(&config.anchor.url(data_dir), ledger.clone(), signing_key).await?);
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
        let read_model =
            crate::readmodel::ReadModel::open_for(data_dir, config.read_model.read_model_url.as_deref()).await?;
        let git = crate::state::GitService::new(&config, ledger.git_dir());
        // Quarantines as git records them; a crash after a quarantine's commit loses nothing.
        let quarantined = crate::quarantine::Quarantined::default();
        let actions = quarantined.load(&ledger).context("reading refs/heads/cameras")?;
        tracing::info!(actions, "camera actions read");
        let state = Arc::new(AppState {
            ledger,
            writer,
            registry,
            limits,
            max_body_bytes: config.max_body_bytes,
            body_timeout: config.request_timeout(),
            snapshots: schedule.as_ref().map(|s| s.status.subscribe()),
            body_budget: Arc::new(Semaphore::new(config.max_inflight_bytes)),
            max_parts: config.max_parts.max(1),
            admission_slots: Arc::new(Semaphore::new(crate::config::cores().max(2) * 2)),
            writer_health: WriterHealth::default(),
            anchors,
            git,
            read_model,
            rate_limits: crate::ratelimit::Buckets::new(config.rate_limit()),
            quarantined,
            metrics,
            dashboard: crate::dashboard::Dashboard::new(),
        });
        let tcp =
            tokio::net::TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
        let listener =
            CappedListener::new(tcp, config.max_connections, Duration::from_secs(config.idle_timeout_secs.max(1)));
        let router = router(Arc::clone(&state), &config);
        let metrics_listener = match config.metrics_listen {
            Some(addr) => {
                let tcp = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding --metrics-listen {addr}"))?;
                // A scraper needs one or two connections; the cap keeps a stray client from
                // holding many.
                let listener = CappedListener::new(tcp, 16, Duration::from_secs(config.idle_timeout_secs.max(1)));
                Some((listener, routes::metrics::unauthenticated_router(Arc::clone(&state))))
            }
            None => None,
        };
        Ok(Self {
            listener,
            router,
            metrics_listener,
            state,
            grace: Duration::from_secs(config.shutdown_grace_secs),
            header_timeout: config.header_timeout(),
            schedule,
            judging,
            checkpoint_interval: config.checkpoint_interval,
            projector_off: config.projector_off,
            quarantine_after: config.quarantine_after,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound TCP listener has a local address")
    }

    /// The `--metrics-listen` address, once bound (port 0 allowed).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .map(|(listener, _)| listener.local_addr().expect("a bound TCP listener has a local address"))
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
        let checkpoints = {
            let anchors = Arc::clone(&self.state.anchors);
            let snapshots = self.state.snapshots.clone();
            tokio::spawn(anchors.run(self.checkpoint_interval, snapshots, stop_background.clone()))
        };
        let worker = self.judging.map(|judging| {
            let (ledger, stop) = (self.state.ledger.clone(), stop_background.clone());
            let observer = Arc::clone(&self.state.metrics) as Arc<dyn camledger_processor::worker::Observer>;
            tokio::spawn(async move {
                // A failing worker stops judging, not ingest: log it loudly and keep serving.
                if let Err(e) = crate::processing::run_worker(ledger, judging, Some(observer), stop).await {
                    tracing::error!(
                        error = format!("{e:#}"),
                        "verdict worker failed; ingest continues, judging stopped"
                    );
                }
            })
        });
        // Off the write path: reads git on the blocking pool, writes only the read model.
        let projector = (!self.projector_off).then(|| {
            tokio::spawn(crate::readmodel::project::run(
                Arc::clone(&self.state.read_model),
                self.state.ledger.clone(),
                stop_background.clone(),
            ))
        });
        let quarantine = tokio::spawn(crate::quarantine::run(
            self.state.ledger.clone(),
            self.state.quarantined.clone(),
            self.quarantine_after,
            stop_background.clone(),
        ));
        let live = tokio::spawn(routes::stream::feed(Arc::clone(&self.state), stop_background.clone()));
        let webhooks = tokio::spawn(crate::webhooks::run(
            self.state.registry.clone(),
            self.state.ledger.clone(),
            self.state.read_model.subscribe(),
            stop_background.clone(),
        ));
        let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
        // Also ends the dashboard's open streams, which would otherwise hold their
        // connections until the grace period runs out.
        let stop_serving = self.state.dashboard.stopping.clone();
        {
            let stop_serving = stop_serving.clone();
            tokio::spawn(async move {
                shutdown.await;
                tracing::info!("shutdown requested: no new connections, finishing in-flight requests");
                stop_serving.cancel();
                let _ = stopping_tx.send(());
            });
        }
        let metrics_serving = self
            .metrics_listener
            .map(|(listener, router)| tokio::spawn(serve(listener, router, self.header_timeout, stop_serving.clone())));
        let serving = serve(self.listener, self.router, self.header_timeout, stop_serving);
        let grace = self.grace;
        let served = tokio::spawn(serving);
        tokio::pin!(served);
        tokio::select! {
            result = &mut served => result.context("server task panicked")?,
            _ = async {
                let _ = stopping_rx.await;
                tokio::time::sleep(grace).await;
            } => {
                tracing::warn!(grace_secs = grace.as_secs(), "in-flight requests did not finish within the grace period");
                served.abort();
            }
        }
        if let Some(task) = metrics_serving {
            if tokio::time::timeout(grace, task).await.is_err() {
                tracing::warn!("the metrics listener did not stop within the grace period");
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
        let _ = checkpoints.await;
        let _ = live.await;
        let _ = webhooks.await;
        let _ = quarantine.await;
        if let Some(task) = projector {
            if tokio::time::timeout(grace, task).await.is_err() {
                tracing::warn!("the read model projector did not stop within the grace period");
            }
        }
        self.state.read_model.close().await;
        self.state.writer.clone().shutdown().await;
        // The last checkpoint covers the writer's last batch and the worker's last verdicts.
        self.state.anchors.checkpoint_logged(false, "shutdown").await;
        self.state.anchors.close().await;
        self.state.registry.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Accepts connections (within the listener's cap) and serves each with hyper's HTTP/1
/// server until `stop`; then stops accepting and lets every open connection finish its
/// request in flight (hyper's graceful shutdown closes idle keep-alive connections at once).
async fn serve(mut listener: CappedListener, router: Router, header_timeout: Duration, stop: CancellationToken) {
    let mut http = hyper::server::conn::http1::Builder::new();
    // The header deadline is absolute: it runs from the moment hyper waits for a request
    // head (a new connection, or keep-alive after the previous answer) until the head is
    // complete, however the bytes trickle in.
    http.timer(TokioTimer::new()).header_read_timeout(header_timeout);
    let connections = TaskTracker::new();
    loop {
        let (io, _peer) = tokio::select! {
            accepted = axum::serve::Listener::accept(&mut listener) => accepted,
            () = stop.cancelled() => break,
        };
        let connection = http.serve_connection(TokioIo::new(io), TowerToHyperService::new(router.clone()));
        let stop = stop.clone();
        connections.spawn(async move {
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                // Header timeouts, resets, malformed requests: the client's business.
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// The backstop deadline for every request, answered as JSON (tower-http's `TimeoutLayer`
/// answers an empty body). Uploads enforce their own deadline first and answer what landed.
async fn request_deadline(State(limit): State<Duration>, request: Request<axum::body::Body>, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!("the request did not finish within {} s", limit.as_secs()),
        )
        .into_response(),
    }
}

fn router(state: Arc<AppState>, config: &ServeConfig) -> Router {
    routes::router()
        .fallback(|| async { ApiError::not_found("no such route") })
        // Bodies are limited by the upload handler itself (with a JSON 413); this only
        // lifts axum's 2 MiB default for the multipart extractor.
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            config.request_timeout() + crate::routes::images::APPEND_GRACE + Duration::from_secs(5),
            request_deadline,
        ))
        .layer(axum::middleware::from_fn_with_state(Arc::clone(&state), routes::metrics::track))
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
