//! What the live dashboard keeps in memory: sign-in sessions, the live feed's channel and
//! the thumbnail cache. A leaf: it imports no other module of this crate; `state` holds one
//! [`Dashboard`], the handlers in `routes::{dashboard, stream, thumbnails}` use it.
//!
//! Sessions: `POST /login` trades a reader token for a random session id (32 bytes from the
//! OS generator, base64url) sent as an HttpOnly, SameSite=Strict cookie. Only the SHA-256 of
//! the id is kept, with the SHA-256 of the token it was made from (what the registry stores
//! too), so every request asks the registry again: revoking the token ends its sessions at
//! once. Sessions expire after [`SESSION_TTL`]; at most [`MAX_SESSIONS`] live at once (the
//! one closest to expiry makes room), so sign-ins cannot grow memory without bound.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::{broadcast, Semaphore};
use tokio_util::sync::CancellationToken;

/// The headers of every page and file served to a browser (the dashboard and the API docs):
/// its Content-Security-Policy and cache policy, and no sniffing, framing or referrer.
pub(crate) fn browser_headers(csp: &'static str, cache: &'static str) -> [(axum::http::HeaderName, &'static str); 5] {
    use axum::http::header;
    [
        (header::CACHE_CONTROL, cache),
        (header::CONTENT_SECURITY_POLICY, csp),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
    ]
}

/// Name of the session cookie.
pub(crate) const COOKIE: &str = "camledger_session";
/// How long a session lasts after sign-in (absolute, not sliding).
pub(crate) const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// Most sessions held at once.
pub(crate) const MAX_SESSIONS: usize = 10_000;
/// Messages the live feed keeps for subscribers that read slowly; one ring shared by all of
/// them (a subscriber that falls further behind is told to resync instead).
pub(crate) const LIVE_BUFFER: usize = 1024;
/// Most `GET /v1/stream` subscribers at once (more: 503 busy).
pub(crate) const MAX_STREAMS: usize = 64;
/// Bytes of encoded thumbnails kept in memory.
pub(crate) const THUMBNAIL_CACHE_BYTES: usize = 16 * 1024 * 1024;
/// Thumbnails decoded at once (decoding is CPU work on the blocking pool).
pub(crate) const THUMBNAIL_DECODES: usize = 2;

/// Everything the dashboard's routes share.
pub(crate) struct Dashboard {
    pub(crate) sessions: Sessions,
    /// Events, verdicts and heads as the read model gains them (see `routes::stream`).
    pub(crate) live: broadcast::Sender<Arc<LiveMessage>>,
    /// Cancelled when shutdown begins: open streams end so that connections can drain.
    pub(crate) stopping: CancellationToken,
    pub(crate) stream_slots: Arc<Semaphore>,
    pub(crate) thumbnails: ThumbnailCache,
    pub(crate) thumbnail_decodes: Arc<Semaphore>,
}

impl Dashboard {
    pub(crate) fn new() -> Dashboard {
        Dashboard {
            sessions: Sessions::new(SESSION_TTL, MAX_SESSIONS),
            live: broadcast::channel(LIVE_BUFFER).0,
            stopping: CancellationToken::new(),
            stream_slots: Arc::new(Semaphore::new(MAX_STREAMS)),
            thumbnails: ThumbnailCache::new(THUMBNAIL_CACHE_BYTES),
            thumbnail_decodes: Arc::new(Semaphore::new(THUMBNAIL_DECODES)),
        }
    }
}

/// One message of the live feed, serialised once for every subscriber.
#[derive(Debug)]
pub(crate) struct LiveMessage {
    /// The SSE event name: `event`, `verdict`, `heads` or `resync`.
    pub(crate) kind: &'static str,
    /// The camera of the event (`None` for `heads` and `resync`, which everyone gets).
    pub(crate) camera: Option<String>,
    /// The data line for auditors and admins.
    pub(crate) data: String,
    /// The data line for the event's own camera (another camera's seqs masked), when it
    /// differs from `data`.
    pub(crate) own_data: Option<String>,
}

/// Sign-in sessions, by the SHA-256 of their id.
pub(crate) struct Sessions {
    inner: Mutex<HashMap<[u8; 32], Session>>,
    ttl: Duration,
    max: usize,
}

#[derive(Clone, Copy)]
struct Session {
    token_hash: [u8; 32],
    expires: Instant,
}

fn id_hash(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

impl Sessions {
    pub(crate) fn new(ttl: Duration, max: usize) -> Sessions {
        Sessions { inner: Mutex::new(HashMap::new()), ttl, max: max.max(1) }
    }

    /// Starts a session for the token whose SHA-256 is `token_hash`; returns its id (the
    /// cookie's value, never stored).
    pub(crate) fn create(&self, token_hash: [u8; 32]) -> String {
        let id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
        let now = Instant::now();
        let mut sessions = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        sessions.retain(|_, s| s.expires > now);
        if sessions.len() >= self.max {
            if let Some(oldest) = sessions.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| *k) {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(id_hash(&id), Session { token_hash, expires: now + self.ttl });
        id
    }

    /// The SHA-256 of the token behind session `id`, while it lasts.
    pub(crate) fn token_hash(&self, id: &str) -> Option<[u8; 32]> {
        let mut sessions = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let key = id_hash(id);
        match sessions.get(&key) {
            Some(s) if s.expires > Instant::now() => Some(s.token_hash),
            Some(_) => {
                sessions.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Ends session `id` (nothing when there is none).
    pub(crate) fn end(&self, id: &str) {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner).remove(&id_hash(id));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

/// The value of cookie `name` in a request's `Cookie` headers.
pub(crate) fn cookie<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// Encoded thumbnails by event seq (events never change, so entries never go stale), with
/// the camera each belongs to; the oldest insertions leave first once the bytes exceed the
/// budget.
pub(crate) struct ThumbnailCache {
    inner: Mutex<CacheInner>,
    budget: usize,
}

#[derive(Default)]
struct CacheInner {
    entries: HashMap<u64, (String, Bytes)>,
    order: VecDeque<u64>,
    bytes: usize,
}

impl ThumbnailCache {
    pub(crate) fn new(budget: usize) -> ThumbnailCache {
        ThumbnailCache { inner: Mutex::new(CacheInner::default()), budget }
    }

    /// The camera and the thumbnail of event `seq`, when cached.
    pub(crate) fn get(&self, seq: u64) -> Option<(String, Bytes)> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner).entries.get(&seq).cloned()
    }

    pub(crate) fn put(&self, seq: u64, camera: String, thumbnail: Bytes) {
        if thumbnail.len() > self.budget {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if inner.entries.contains_key(&seq) {
            return;
        }
        inner.bytes += thumbnail.len();
        inner.entries.insert(seq, (camera, thumbnail));
        inner.order.push_back(seq);
        while inner.bytes > self.budget {
            let Some(old) = inner.order.pop_front() else { break };
            if let Some((_, bytes)) = inner.entries.remove(&old) {
                inner.bytes -= bytes.len();
            }
        }
    }

    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner).bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_id_is_random_and_only_its_hash_is_kept() {
        let sessions = Sessions::new(Duration::from_secs(60), 10);
        let (a, b) = (sessions.create([1; 32]), sessions.create([1; 32]));
        assert_ne!(a, b);
        assert_eq!(a.len(), 43, "32 random bytes, base64url");
        assert_eq!(sessions.token_hash(&a), Some([1; 32]));
        assert!(!sessions.inner.lock().unwrap().keys().any(|k| k == a.as_bytes()));
        sessions.end(&a);
        assert_eq!(sessions.token_hash(&a), None);
        assert_eq!(sessions.token_hash(&b), Some([1; 32]));
        assert_eq!(sessions.token_hash("not-a-session"), None);
    }

    #[test]
    fn sessions_expire_and_never_exceed_the_cap() {
        let expired = Sessions::new(Duration::ZERO, 10);
        let id = expired.create([2; 32]);
        assert_eq!(expired.token_hash(&id), None);
        let capped = Sessions::new(Duration::from_secs(60), 3);
        let first = capped.create([3; 32]);
        for _ in 0..10 {
            capped.create([3; 32]);
        }
        assert_eq!(capped.len(), 3);
        assert_eq!(capped.token_hash(&first), None, "the oldest session made room");
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut headers = axum::http::HeaderMap::new();
        headers.append("cookie", "a=1; camledger_session=abc ; b=2".parse().unwrap());
        assert_eq!(cookie(&headers, COOKIE), Some("abc"));
        assert_eq!(cookie(&headers, "c"), None);
        headers.clear();
        headers.append("cookie", "camledger_session=".parse().unwrap());
        assert_eq!(cookie(&headers, COOKIE), None);
    }

    #[test]
    fn the_thumbnail_cache_stays_within_its_budget() {
        let cache = ThumbnailCache::new(100);
        for seq in 1..=10 {
            cache.put(seq, "cam".into(), Bytes::from(vec![0; 30]));
        }
        assert!(cache.bytes() <= 100);
        assert!(cache.get(1).is_none(), "the oldest left first");
        assert_eq!(cache.get(10).map(|(c, b)| (c, b.len())), Some(("cam".into(), 30)));
        cache.put(11, "cam".into(), Bytes::from(vec![0; 101]));
        assert!(cache.get(11).is_none(), "larger than the whole budget: not kept");
    }
}
