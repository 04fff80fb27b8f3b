//! Webhooks: `serve` POSTs each new event and verdict to the URLs registered with
//! `camledger webhooks add`, signed, in seq order per hook, at least once.
//!
//! - The ledger is the source: a hook's task reads the heads and then event/verdict `N` from
//!   git with the ledger's own readers, so what is delivered is exactly what git holds, and a
//!   verdict written by `camledger worker` in another process is delivered too.
//! - Each hook keeps one checkpoint per kind in the registry (`webhooks.events_seq`,
//!   `verdicts_seq`): seq `N` is POSTed, and only after a 2xx does the checkpoint move to `N`
//!   (compare-and-swap on the old value). A crash between the 2xx and the update delivers `N`
//!   again after the restart: at least once, with the same delivery id
//!   (`<hook>-<kind>-<seq>`), on which receivers dedupe.
//! - Strictly in order per hook and kind: `N + 1` is not sent before `N` was answered 2xx.
//!   Events and verdicts of one hook go out interleaved by seq (event `N` before verdict `N`).
//! - A failure (no answer, a non-2xx status) is retried after 1 s, doubling up to 5 minutes,
//!   with jitter; every hook has its own task, so a dead receiver delays only its own hook.
//! - A running server reloads the hook list every [`RELOAD`] (add and remove from another
//!   process take effect within about 2 s) and wakes on the read model's progress, polling
//!   git every [`IDLE_POLL`] in case the projector is off.
//! - Requests: connect and total timeouts of 10 s, no redirects followed, the response body
//!   never read (only the status counts). Plain `http` only: this build has no TLS client.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use camledger_eventstore::Ledger;
use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::{json, Value};
use sha2::Sha256;
use sqlx::Row;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{DataDirArg, ListArgs, OutputFormat};
use crate::datadir::{open_ledger, require_ledger_dir};
use crate::evaluate::UsageError;
use crate::readmodel::Projected;
use crate::registry::{now_rfc3339, Registry};

/// How often a running server reads the hook list again.
pub(crate) const RELOAD: Duration = Duration::from_secs(1);
/// How often an idle hook reads the heads when nothing wakes it.
pub(crate) const IDLE_POLL: Duration = Duration::from_secs(1);
/// Connect timeout and total timeout of one delivery.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// First retry delay; doubles per failure up to [`MAX_BACKOFF`].
pub(crate) const FIRST_BACKOFF: Duration = Duration::from_secs(1);
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Attempts kept per hook for `webhooks deliveries`.
pub(crate) const KEPT_ATTEMPTS: i64 = 100;
/// Longest URL accepted.
const MAX_URL: usize = 2048;

/// What a hook delivers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Event,
    Verdict,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Event => "event",
            Kind::Verdict => "verdict",
        }
    }
}

/// The kinds of a hook, as `--events` takes them and the `kinds` column stores them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kinds {
    pub events: bool,
    pub verdicts: bool,
}

impl Kinds {
    pub fn as_str(self) -> &'static str {
        match (self.events, self.verdicts) {
            (true, true) => "event,verdict",
            (true, false) => "event",
            _ => "verdict",
        }
    }
}

impl FromStr for Kinds {
    type Err = Error;
    fn from_str(text: &str) -> Result<Self, Error> {
        let mut kinds = Kinds { events: false, verdicts: false };
        for part in text.split(',') {
            match part.trim() {
                "event" | "events" => kinds.events = true,
                "verdict" | "verdicts" => kinds.verdicts = true,
                _ => return Err(Error::InvalidKinds(text.chars().take(100).collect())),
            }
        }
        Ok(kinds)
    }
}

/// A hook's shared secret: signs every body; never printed (`Debug` masks it, no `Display`).
#[derive(Clone, PartialEq, Eq)]
pub struct HookSecret(String);

impl HookSecret {
    /// A new random secret (`whsec_` and 64 hex digits).
    pub fn generate() -> Self {
        Self(format!("whsec_{}", hex::encode(rand::random::<[u8; 32]>())))
    }

    /// The secret itself, for the one line that shows a generated secret once.
    pub fn reveal(&self) -> &str {
        &self.0
    }

    /// `sha256=<hex HMAC-SHA256(secret, body)>`, the `X-Camledger-Signature` value.
    pub fn signature(&self, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.0.as_bytes()).expect("HMAC takes keys of any length");
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }
}

impl fmt::Debug for HookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HookSecret(********)")
    }
}

impl FromStr for HookSecret {
    type Err = Error;
    fn from_str(text: &str) -> Result<Self, Error> {
        if !(16..=256).contains(&text.len()) || !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::InvalidSecret);
        }
        Ok(Self(text.to_owned()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `add` with a URL that is not plain `http://host/…` without credentials. CLI exit 2.
    /// (The URL is not echoed: it may hold the credentials being refused.)
    #[error("invalid webhook URL: {why}")]
    InvalidUrl { why: &'static str },
    /// `--events` other than event, verdict or both. CLI exit 2.
    #[error("invalid --events {0:?}: use event, verdict or event,verdict")]
    InvalidKinds(String),
    /// `--secret` too short, too long or not printable ASCII. CLI (clap) exit 2.
    #[error("invalid --secret: use 16-256 printable ASCII characters without spaces")]
    InvalidSecret,
    /// `remove` of an unknown id. CLI exit 1.
    #[error("no webhook {0:?}")]
    NotFound(String),
    /// The registry database failed. CLI exit 1; the delivery task logs it and retries.
    #[error("webhook registry database: {0}")]
    Database(#[from] sqlx::Error),
    /// A stored row no longer parses (edited by hand). Logged; the hook is skipped.
    #[error("webhook {id}: stored {what} is invalid")]
    Corrupt { id: String, what: &'static str },
}

impl Error {
    /// Whether the command line should exit 2 (bad input) rather than 1.
    fn is_usage(&self) -> bool {
        matches!(self, Error::InvalidUrl { .. } | Error::InvalidKinds(_) | Error::InvalidSecret)
    }
}

/// Checks a hook URL: `http`, a host, no credentials, no fragment, at most 2048 bytes.
pub fn parse_url(text: &str) -> Result<reqwest::Url, Error> {
    let bad = |why| Error::InvalidUrl { why };
    if text.len() > MAX_URL {
        return Err(bad("longer than 2048 bytes"));
    }
    let url = reqwest::Url::parse(text).map_err(|_| bad("not an absolute URL"))?;
    match url.scheme() {
        "http" => {}
        "https" => return Err(bad("https needs TLS, which this build lacks; use a local TLS-terminating proxy")),
        _ => return Err(bad("use http://")),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("credentials do not belong in the URL; the body is signed with --secret"));
    }
    if url.fragment().is_some() {
        return Err(bad("a fragment is never sent; drop the #…"));
    }
    Ok(url)
}

/// One registered hook, as the delivery task uses it.
#[derive(Clone, Debug)]
pub(crate) struct Hook {
    pub id: String,
    pub url: reqwest::Url,
    pub kinds: Kinds,
    pub secret: HookSecret,
    pub events_seq: u64,
    pub verdicts_seq: u64,
}

/// One row of `webhooks list`: the secret masked.
#[derive(Clone, Debug, Serialize)]
pub struct HookInfo {
    pub id: String,
    pub url: String,
    pub events: String,
    pub secret: &'static str,
    pub created_at: String,
    /// Last event seq delivered (2xx).
    pub events_seq: u64,
    /// Last verdict (event seq) delivered (2xx).
    pub verdicts_seq: u64,
}

/// One row of `webhooks deliveries`.
#[derive(Clone, Debug, Serialize)]
pub struct Attempt {
    pub hook: String,
    pub delivery: String,
    pub kind: String,
    pub seq: u64,
    /// 1 for the first try of this delivery, 2 for the first retry, …
    pub attempt: u32,
    pub at: String,
    pub status: Option<u16>,
    /// Why it failed; `None`: delivered.
    pub error: Option<String>,
}

/// Registers a hook; returns its id (`wh-` and 8 hex digits).
pub async fn add(
    registry: &Registry,
    url: &reqwest::Url,
    kinds: Kinds,
    secret: &HookSecret,
    start: Projected,
) -> Result<String, Error> {
    let id = format!("wh-{}", hex::encode(rand::random::<[u8; 4]>()));
    sqlx::query(
        "INSERT INTO webhooks (id, url, kinds, secret, created_at, events_seq, verdicts_seq) \
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&id)
    .bind(url.as_str())
    .bind(kinds.as_str())
    .bind(&secret.0)
    .bind(now_rfc3339())
    .bind(seq_i64(start.events_seq))
    .bind(seq_i64(start.verdicts_seq))
    .execute(registry.pool())
    .await?;
    Ok(id)
}

fn seq_i64(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

pub async fn remove(registry: &Registry, id: &str) -> Result<(), Error> {
    let mut tx = registry.pool().begin().await?;
    sqlx::query("DELETE FROM webhook_attempts WHERE hook = ?").bind(id).execute(&mut *tx).await?;
    let done = sqlx::query("DELETE FROM webhooks WHERE id = ?").bind(id).execute(&mut *tx).await?;
    if done.rows_affected() == 0 {
        return Err(Error::NotFound(id.chars().take(100).collect()));
    }
    tx.commit().await?;
    Ok(())
}

pub async fn list(registry: &Registry) -> Result<Vec<HookInfo>, Error> {
    let rows = sqlx::query("SELECT id, url, kinds, created_at, events_seq, verdicts_seq FROM webhooks ORDER BY id")
        .fetch_all(registry.pool())
        .await?;
    rows.into_iter()
        .map(|r| {
            Ok(HookInfo {
                id: r.try_get(0)?,
                url: r.try_get(1)?,
                events: r.try_get(2)?,
                secret: "********",
                created_at: r.try_get(3)?,
                events_seq: r.try_get::<i64, _>(4)?.max(0) as u64,
                verdicts_seq: r.try_get::<i64, _>(5)?.max(0) as u64,
            })
        })
        .collect()
}

/// Every hook with what it needs to deliver (a row that no longer parses is logged and left out).
pub(crate) async fn load(registry: &Registry) -> Result<Vec<Hook>, Error> {
    let rows = sqlx::query("SELECT id, url, kinds, secret, events_seq, verdicts_seq FROM webhooks ORDER BY id")
        .fetch_all(registry.pool())
        .await?;
    let mut hooks = Vec::with_capacity(rows.len());
    for r in rows {
        let id: String = r.try_get(0)?;
        let parsed = (|| {
            let corrupt = |what| Error::Corrupt { id: id.clone(), what };
            Ok::<_, Error>(Hook {
                id: id.clone(),
                url: parse_url(&r.try_get::<String, _>(1)?).map_err(|_| corrupt("url"))?,
                kinds: r.try_get::<String, _>(2)?.parse().map_err(|_| corrupt("kinds"))?,
                secret: r.try_get::<String, _>(3)?.parse().map_err(|_| corrupt("secret"))?,
                events_seq: r.try_get::<i64, _>(4)?.max(0) as u64,
                verdicts_seq: r.try_get::<i64, _>(5)?.max(0) as u64,
            })
        })();
        match parsed {
            Ok(hook) => hooks.push(hook),
            Err(e) => tracing::error!(error = %e, "webhook skipped"),
        }
    }
    Ok(hooks)
}

/// The last attempts, newest first: of one hook or of all, only failures when `failed`.
pub async fn attempts(
    registry: &Registry,
    hook: Option<&str>,
    failed: bool,
    limit: u32,
) -> Result<Vec<Attempt>, Error> {
    let rows = sqlx::query(
        "SELECT hook, delivery, kind, seq, attempt, at, status, error FROM webhook_attempts \
         WHERE (?1 IS NULL OR hook = ?1) AND (?2 = 0 OR error IS NOT NULL) ORDER BY id DESC LIMIT ?3",
    )
    .bind(hook)
    .bind(failed)
    .bind(i64::from(limit))
    .fetch_all(registry.pool())
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(Attempt {
                hook: r.try_get(0)?,
                delivery: r.try_get(1)?,
                kind: r.try_get(2)?,
                seq: r.try_get::<i64, _>(3)?.max(0) as u64,
                attempt: u32::try_from(r.try_get::<i64, _>(4)?).unwrap_or(u32::MAX),
                at: r.try_get(5)?,
                status: r.try_get::<Option<i64>, _>(6)?.and_then(|s| u16::try_from(s).ok()),
                error: r.try_get(7)?,
            })
        })
        .collect()
}

/// How one POST ended.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Outcome {
    Delivered(u16),
    Failed { status: Option<u16>, error: String },
}

/// Records an attempt and, when delivered, moves the hook's checkpoint for `kind` from
/// `seq - 1` to `seq`, in one transaction. `Ok(false)`: the hook is gone or its checkpoint
/// moved under us (removed, or added again); the caller stops and the hook is reloaded.
pub(crate) async fn record(
    registry: &Registry,
    hook: &str,
    kind: Kind,
    seq: u64,
    attempt: u32,
    outcome: &Outcome,
) -> Result<bool, Error> {
    let mut tx = registry.pool().begin().await?;
    let (status, error) = match outcome {
        Outcome::Delivered(status) => (Some(*status), None),
        Outcome::Failed { status, error } => (*status, Some(error.as_str())),
    };
    let exists = sqlx::query(
        "INSERT INTO webhook_attempts (hook, delivery, kind, seq, attempt, at, status, error) \
         SELECT id, ?, ?, ?, ?, ?, ?, ? FROM webhooks WHERE id = ?",
    )
    .bind(delivery_id(hook, kind, seq))
    .bind(kind.as_str())
    .bind(seq_i64(seq))
    .bind(i64::from(attempt))
    .bind(now_rfc3339())
    .bind(status.map(i64::from))
    .bind(error)
    .bind(hook)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if !exists {
        return Ok(false);
    }
    sqlx::query(
        "DELETE FROM webhook_attempts WHERE hook = ?1 AND id <= \
         (SELECT id FROM webhook_attempts WHERE hook = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
    )
    .bind(hook)
    .bind(KEPT_ATTEMPTS)
    .execute(&mut *tx)
    .await?;
    if matches!(outcome, Outcome::Delivered(_)) {
        let sql = match kind {
            Kind::Event => "UPDATE webhooks SET events_seq = ?1 WHERE id = ?2 AND events_seq = ?3",
            Kind::Verdict => "UPDATE webhooks SET verdicts_seq = ?1 WHERE id = ?2 AND verdicts_seq = ?3",
        };
        let moved = sqlx::query(sql)
            .bind(seq_i64(seq))
            .bind(hook)
            .bind(seq_i64(seq - 1))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if moved != 1 {
            return Ok(false);
        }
    }
    tx.commit().await?;
    Ok(true)
}

/// The delivery id receivers dedupe on: the same for every retry of one seq.
pub fn delivery_id(hook: &str, kind: Kind, seq: u64) -> String {
    format!("{hook}-{}-{seq}", kind.as_str())
}

/// The delay after `failures` failures in a row: 1 s doubling, capped at 5 minutes, then
/// scaled by `jitter` (0..1) into its upper half so that hooks failing together spread out.
pub(crate) fn backoff(failures: u32, jitter: f64) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    let full = FIRST_BACKOFF.saturating_mul(1 << exponent).min(MAX_BACKOFF);
    full.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// What to send next for a hook after its checkpoints `at`, against the heads `heads`: the
/// lower seq first, the event before the verdict of the same seq.
pub(crate) fn next_due(kinds: Kinds, at: Projected, heads: Projected) -> Option<(Kind, u64)> {
    let event = (kinds.events && at.events_seq < heads.events_seq).then_some(at.events_seq + 1);
    let verdict = (kinds.verdicts && at.verdicts_seq < heads.verdicts_seq).then_some(at.verdicts_seq + 1);
    match (event, verdict) {
        (Some(e), Some(v)) if v < e => Some((Kind::Verdict, v)),
        (Some(e), _) => Some((Kind::Event, e)),
        (None, Some(v)) => Some((Kind::Verdict, v)),
        (None, None) => None,
    }
}

/// The heads of the ledger: last event seq, last judged event seq.
async fn heads(ledger: &Ledger) -> anyhow::Result<Projected> {
    let ledger = ledger.clone();
    tokio::task::spawn_blocking(move || {
        Ok(Projected {
            events_seq: ledger.head()?.map_or(0, |h| h.seq),
            verdicts_seq: ledger.verdict_head()?.map_or(0, |h| h.event_seq),
        })
    })
    .await
    .context("reading the heads")?
}

/// The body of delivery `delivery`: `{"delivery", "kind", "seq", "commit", "event"|"verdict"}`
/// with `event.json` / `verdict.json` as git holds them.
pub(crate) async fn body(ledger: &Ledger, delivery: &str, kind: Kind, seq: u64) -> anyhow::Result<Vec<u8>> {
    let ledger = ledger.clone();
    let (commit, stored): (String, Vec<u8>) = tokio::task::spawn_blocking(move || match kind {
        Kind::Event => {
            let event = ledger.event(seq)?;
            Ok::<_, anyhow::Error>((event.id, event.record.to_canonical_json()))
        }
        Kind::Verdict => {
            let verdict = ledger.verdict(seq)?.with_context(|| format!("no verdict on event {seq}"))?;
            Ok((verdict.id, verdict.verdict.to_canonical_json()))
        }
    })
    .await
    .context("reading the ledger")??;
    let stored: Value = serde_json::from_slice(&stored).context("parsing the stored JSON")?;
    let mut body = json!({ "delivery": delivery, "kind": kind.as_str(), "seq": seq, "commit": commit });
    body[kind.as_str()] = stored;
    Ok(serde_json::to_vec(&body).expect("serialising a JSON value into memory cannot fail"))
}

/// The client every delivery uses: timeouts, no redirects, no proxy from the environment.
pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(REQUEST_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .user_agent(concat!("camledger-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("a client with timeouts and no TLS always builds")
}

/// POSTs one signed body; only the status is looked at (the response body is never read).
pub(crate) async fn post(client: &reqwest::Client, hook: &Hook, kind: Kind, delivery: &str, body: Vec<u8>) -> Outcome {
    let signature = hook.secret.signature(&body);
    let sent = client
        .post(hook.url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("x-camledger-signature", signature)
        .header("x-camledger-delivery", delivery)
        .header("x-camledger-event", kind.as_str())
        .body(body)
        .send()
        .await;
    match sent {
        Ok(response) if response.status().is_success() => Outcome::Delivered(response.status().as_u16()),
        Ok(response) => {
            let status = response.status();
            Outcome::Failed { status: Some(status.as_u16()), error: format!("HTTP {status}") }
        }
        Err(e) => {
            let error = crate::error_chain::error_message(&anyhow::Error::new(e.without_url()));
            Outcome::Failed { status: None, error: error.chars().take(500).collect() }
        }
    }
}

/// Sleeps `delay`; `false` when `stop` came first.
async fn pause(delay: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        () = stop.cancelled() => false,
        () = tokio::time::sleep(delay) => true,
    }
}

/// Delivers one hook until it is removed (or its row changes under it) or `stop`.
async fn deliver(
    hook: Hook,
    registry: Registry,
    ledger: Ledger,
    client: reqwest::Client,
    mut projected: watch::Receiver<Projected>,
    stop: CancellationToken,
) {
    let mut at = Projected { events_seq: hook.events_seq, verdicts_seq: hook.verdicts_seq };
    let mut failures: u32 = 0;
    while !stop.is_cancelled() {
        let due = match heads(&ledger).await {
            Ok(heads) => next_due(hook.kinds, at, heads),
            Err(e) => {
                tracing::warn!(hook = %hook.id, error = format!("{e:#}"), "webhook: reading the ledger failed");
                if !pause(IDLE_POLL, &stop).await {
                    return;
                }
                continue;
            }
        };
        let Some((kind, seq)) = due else {
            // Woken by the projector's progress; the poll covers a projector that is off.
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(IDLE_POLL) => {}
                // A closed channel (no projector) leaves only the poll.
                changed = projected.changed() => if changed.is_err() && !pause(IDLE_POLL, &stop).await {
                    return;
                },
            }
            continue;
        };
        let delivery = delivery_id(&hook.id, kind, seq);
        let outcome = match body(&ledger, &delivery, kind, seq).await {
            Ok(body) => tokio::select! {
                () = stop.cancelled() => return,
                outcome = post(&client, &hook, kind, &delivery, body) => outcome,
            },
            Err(e) => Outcome::Failed { status: None, error: format!("reading seq {seq}: {e:#}") },
        };
        let delivered = matches!(outcome, Outcome::Delivered(_));
        let attempt = failures.saturating_add(1);
        failures = if delivered { 0 } else { attempt };
        match record(&registry, &hook.id, kind, seq, attempt, &outcome).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                // The checkpoint did not move: the same seq goes again (at least once).
                tracing::warn!(hook = %hook.id, error = %e, "webhook: recording a delivery failed");
                if !pause(IDLE_POLL, &stop).await {
                    return;
                }
                continue;
            }
        }
        if delivered {
            match kind {
                Kind::Event => at.events_seq = seq,
                Kind::Verdict => at.verdicts_seq = seq,
            }
        } else {
            let delay = backoff(failures, rand::random::<f64>());
            if let Outcome::Failed { status, error } = &outcome {
                tracing::warn!(hook = %hook.id, %delivery, ?status, error, retry_in_ms = delay.as_millis() as u64,
                    "webhook delivery failed");
            }
            if !pause(delay, &stop).await {
                return;
            }
        }
    }
}

/// The delivery task of `serve`: one task per hook, the list reloaded every [`RELOAD`],
/// until `stop`.
pub(crate) async fn run(
    registry: Registry,
    ledger: Ledger,
    projected: watch::Receiver<Projected>,
    stop: CancellationToken,
) {
    let client = client();
    let mut running: HashMap<String, (CancellationToken, JoinHandle<()>)> = HashMap::new();
    loop {
        match load(&registry).await {
            Ok(hooks) => {
                running.retain(|id, (token, task)| {
                    let keep = !task.is_finished() && hooks.iter().any(|h| &h.id == id);
                    if !keep {
                        token.cancel();
                    }
                    keep
                });
                for hook in hooks {
                    if running.contains_key(&hook.id) {
                        continue;
                    }
                    let token = stop.child_token();
                    let id = hook.id.clone();
                    let task = tokio::spawn(deliver(
                        hook,
                        registry.clone(),
                        ledger.clone(),
                        client.clone(),
                        projected.clone(),
                        token.clone(),
                    ));
                    running.insert(id, (token, task));
                }
            }
            Err(e) => tracing::warn!(error = %e, "webhook: reading the hook list failed"),
        }
        if !pause(RELOAD, &stop).await {
            break;
        }
    }
    for (_, (token, task)) in running {
        token.cancel();
        let _ = task.await;
    }
}

/// `camledger webhooks …`
#[derive(Debug, clap::Subcommand)]
pub enum WebhooksCommand {
    /// Register a URL that `serve` POSTs new events and/or verdicts to (signed, in seq
    /// order, at least once); a running server picks it up within about 2 s.
    Add {
        /// Where to POST: http://host[:port]/path, without user:password.
        url: String,
        /// What to deliver: event, verdict or event,verdict.
        #[arg(long, env = "CAMLEDGER_WEBHOOK_EVENTS", default_value = "event,verdict")]
        events: String,
        /// Key of the X-Camledger-Signature HMAC (16-256 printable characters); default: a new
        /// random one, printed once.
        #[arg(long, env = "CAMLEDGER_WEBHOOK_SECRET", hide_env_values = true)]
        secret: Option<HookSecret>,
        /// Deliver from this event seq on (default: only what comes after the current heads).
        #[arg(long, env = "CAMLEDGER_WEBHOOK_FROM_SEQ")]
        from_seq: Option<u64>,
        #[command(flatten)]
        data: DataDirArg,
    },
    /// List hooks with their checkpoints (the secret masked).
    List(ListArgs),
    /// Remove a hook; a running server stops delivering to it within about 2 s.
    Remove {
        id: String,
        #[command(flatten)]
        data: DataDirArg,
    },
    /// The latest delivery attempts, newest first (the last 100 per hook are kept).
    Deliveries {
        /// Only this hook.
        #[arg(long, env = "CAMLEDGER_WEBHOOK")]
        hook: Option<String>,
        /// Only failed attempts.
        #[arg(long, env = "CAMLEDGER_FAILED")]
        failed: bool,
        /// Show at most this many.
        #[arg(long, env = "CAMLEDGER_LIMIT", default_value_t = 50)]
        limit: u32,
        #[command(flatten)]
        data: DataDirArg,
        #[arg(long, env = "CAMLEDGER_FORMAT", value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
}

fn usage(e: Error) -> anyhow::Error {
    if e.is_usage() {
        UsageError(e.to_string()).into()
    } else {
        e.into()
    }
}

async fn open_registry(data: &DataDirArg) -> anyhow::Result<Registry> {
    require_ledger_dir(data)?;
    Registry::open(&data.data_dir).await.context("opening the camera registry")
}

/// Runs one `webhooks` subcommand.
pub async fn command(action: WebhooksCommand) -> anyhow::Result<()> {
    match action {
        WebhooksCommand::Add { url, events, secret, from_seq, data } => {
            let url = parse_url(&url).map_err(usage)?;
            let kinds: Kinds = events.parse().map_err(usage)?;
            let registry = open_registry(&data).await?;
            let start = match from_seq {
                Some(seq) => {
                    let at = seq.saturating_sub(1);
                    Projected { events_seq: at, verdicts_seq: at }
                }
                None => heads(&open_ledger(&data)?).await?,
            };
            let generated = secret.is_none();
            let secret = secret.unwrap_or_else(HookSecret::generate);
            let id = add(&registry, &url, kinds, &secret, start).await?;
            registry.close().await;
            println!(
                "delivers {} to {url} after events seq {} and verdicts seq {}",
                kinds.as_str(),
                start.events_seq,
                start.verdicts_seq
            );
            if generated {
                println!("secret (shown once; receivers check X-Camledger-Signature with it): {}", secret.reveal());
            }
            println!("added webhook {id}");
        }
        WebhooksCommand::List(ListArgs { data, format }) => {
            let registry = open_registry(&data).await?;
            let hooks = list(&registry).await?;
            registry.close().await;
            match format {
                OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&hooks)?),
                OutputFormat::Text => {
                    for h in hooks {
                        println!(
                            "{}\t{}\t{}\tsecret {}\tevents seq {}\tverdicts seq {}\tcreated {}",
                            h.id, h.url, h.events, h.secret, h.events_seq, h.verdicts_seq, h.created_at
                        );
                    }
                }
            }
        }
        WebhooksCommand::Remove { id, data } => {
            let registry = open_registry(&data).await?;
            remove(&registry, &id).await?;
            registry.close().await;
            println!("removed webhook {id}");
        }
        WebhooksCommand::Deliveries { hook, failed, limit, data, format } => {
            let registry = open_registry(&data).await?;
            let rows = attempts(&registry, hook.as_deref(), failed, limit).await?;
            registry.close().await;
            match format {
                OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
                OutputFormat::Text => {
                    for a in rows {
                        let result = match &a.error {
                            None => format!("delivered {}", a.status.unwrap_or(200)),
                            Some(error) => format!("failed: {error}"),
                        };
                        println!("{}\t{}\tattempt {}\t{}\t{result}", a.at, a.delivery, a.attempt, a.hook);
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2 (a 4-byte key: below our minimum, but HMAC is the same).
        let secret = HookSecret("Jefe".into());
        assert_eq!(
            secret.signature(b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn a_secret_never_prints() {
        let secret: HookSecret = "correct-horse-battery-staple".parse().unwrap();
        assert!(!format!("{secret:?}").contains("horse"));
        assert!("short".parse::<HookSecret>().is_err());
        assert!("sixteen chars ok".parse::<HookSecret>().is_err(), "spaces are refused");
        assert!(HookSecret::generate().reveal().starts_with("whsec_"));
    }

    #[test]
    fn only_plain_http_urls_without_credentials_are_accepted() {
        assert!(parse_url("http://127.0.0.1:8080/hook?x=1").is_ok());
        for bad in [
            "ftp://example.com/",
            "https://example.com/",
            "http://user:pw@example.com/",
            "http://user@example.com/",
            "http://example.com/#frag",
            "example.com/hook",
            "file:///etc/passwd",
            "",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
        assert!(parse_url(&format!("http://h/{}", "a".repeat(3000))).is_err());
    }

    #[test]
    fn events_are_event_verdict_or_both() {
        assert_eq!("event,verdict".parse::<Kinds>().unwrap(), Kinds { events: true, verdicts: true });
        assert_eq!("verdict".parse::<Kinds>().unwrap().as_str(), "verdict");
        for bad in ["", "event,", "push", "event;verdict"] {
            assert!(bad.parse::<Kinds>().is_err(), "{bad}");
        }
    }

    #[test]
    fn backoff_doubles_from_one_second_up_to_five_minutes_with_jitter() {
        assert_eq!(backoff(1, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(2, 1.0), Duration::from_secs(2));
        assert_eq!(backoff(4, 1.0), Duration::from_secs(8));
        assert_eq!(backoff(1, 0.0), Duration::from_millis(500));
        assert_eq!(backoff(30, 1.0), MAX_BACKOFF);
        assert_eq!(backoff(u32::MAX, 1.0), MAX_BACKOFF);
    }

    #[test]
    fn the_lower_seq_goes_first_and_the_event_before_its_verdict() {
        let both = Kinds { events: true, verdicts: true };
        let p = |e, v| Projected { events_seq: e, verdicts_seq: v };
        assert_eq!(next_due(both, p(3, 1), p(5, 4)), Some((Kind::Verdict, 2)));
        assert_eq!(next_due(both, p(3, 3), p(5, 4)), Some((Kind::Event, 4)));
        assert_eq!(next_due(both, p(5, 3), p(5, 4)), Some((Kind::Verdict, 4)));
        assert_eq!(next_due(both, p(5, 4), p(5, 4)), None);
        let events = Kinds { events: true, verdicts: false };
        assert_eq!(next_due(events, p(5, 0), p(5, 4)), None);
    }

    #[tokio::test]
    async fn the_checkpoint_moves_only_on_delivery_and_attempts_stay_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path()).await.unwrap();
        let url = parse_url("http://127.0.0.1:9/").unwrap();
        let kinds = Kinds { events: true, verdicts: false };
        let secret = HookSecret::generate();
        let id = add(&registry, &url, kinds, &secret, Projected { events_seq: 2, verdicts_seq: 0 }).await.unwrap();
        let failed = Outcome::Failed { status: Some(500), error: "HTTP 500".into() };
        for attempt in 1..=(KEPT_ATTEMPTS as u32 + 20) {
            assert!(record(&registry, &id, Kind::Event, 3, attempt, &failed).await.unwrap());
        }
        assert_eq!(list(&registry).await.unwrap()[0].events_seq, 2);
        assert!(record(&registry, &id, Kind::Event, 3, 1, &Outcome::Delivered(200)).await.unwrap());
        assert_eq!(list(&registry).await.unwrap()[0].events_seq, 3);
        // A stale task delivering seq 3 again cannot move the checkpoint back or past a gap.
        assert!(!record(&registry, &id, Kind::Event, 3, 1, &Outcome::Delivered(200)).await.unwrap());
        assert_eq!(attempts(&registry, Some(&id), false, 1000).await.unwrap().len(), KEPT_ATTEMPTS as usize);
        let failures = attempts(&registry, None, true, 1000).await.unwrap();
        assert_eq!(failures[0].delivery, format!("{id}-event-3"));
        assert_eq!(failures[0].status, Some(500));
        remove(&registry, &id).await.unwrap();
        assert!(!record(&registry, &id, Kind::Event, 4, 1, &Outcome::Delivered(200)).await.unwrap());
        assert!(matches!(remove(&registry, &id).await, Err(Error::NotFound(_))));
    }
}
