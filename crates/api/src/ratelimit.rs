//! Per-camera rate limits: a token bucket per camera (`--rate-limit N/s`, `--burst M`),
//! overridden for one camera by `camledger cameras limit ID N/s`.
//!
//! A bucket holds at most `burst` tokens and refills at `per_sec`; each event a request would
//! write takes one. A request that finds too few answers 429 with `Retry-After` (the seconds
//! until enough tokens are back) before anything is written. A leaf module: it imports nothing
//! of the crate.
//!
//! Cost: one mutex of 64 shards and one hash lookup per request; no allocation once a camera
//! has a bucket. Memory: one entry per camera that uploaded recently (cameras are bounded by
//! the registry); buckets that have refilled completely are dropped, since a full bucket and
//! no bucket mean the same.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Events per second and the most a camera may send at once.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    pub per_sec: f64,
    pub burst: u32,
}

impl RateLimit {
    /// `rate` with `burst`, or twice the per-second rate (at least 1) when no burst is given.
    pub fn new(rate: Rate, burst: Option<u32>) -> Self {
        let burst = burst.unwrap_or_else(|| (rate.0 * 2.0).ceil().clamp(1.0, f64::from(u32::MAX)) as u32);
        Self { per_sec: rate.0, burst: burst.max(1) }
    }
}

impl std::fmt::Display for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}, burst {}", Rate(self.per_sec), self.burst)
    }
}

/// A rate as an operator writes it: `10/s`, `600/m`, `3600/h` (a bare number is per second).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate(pub f64);

impl FromStr for Rate {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (number, per) = text.split_once('/').unwrap_or((text, "s"));
        let n: f64 = number
            .trim()
            .parse()
            .ok()
            .filter(|n: &f64| n.is_finite() && *n > 0.0)
            .ok_or_else(|| format!("{text:?} is not a rate like 10/s, 600/m or 3600/h (a positive number)"))?;
        let seconds = match per.trim() {
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            other => return Err(format!("{text:?}: unknown unit {other:?}; use /s, /m or /h")),
        };
        Ok(Rate(n / seconds))
    }
}

/// In the largest unit that makes it at least 1: `10/s`, `6/m`, `1/h`.
impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (n, unit) = match self.0 {
            r if r >= 1.0 => (r, "s"),
            r if r * 60.0 >= 1.0 => (r * 60.0, "m"),
            r => (r * 3600.0, "h"),
        };
        let rounded = (n * 1000.0).round() / 1000.0;
        write!(f, "{rounded}/{unit}")
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Refused {
    /// Too few tokens now; enough are back after this long.
    Wait(Duration),
    /// The request needs more tokens than the bucket can ever hold.
    OverBurst { burst: u32 },
}

const SHARDS: usize = 64;
/// A shard drops its full buckets after this many takes.
const SWEEP_EVERY: u32 = 4096;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
    /// The limit it was last taken under (a camera's own limit can change).
    limit: RateLimit,
}

impl Bucket {
    fn is_full_at(&self, now: Instant) -> bool {
        self.tokens + now.saturating_duration_since(self.at).as_secs_f64() * self.limit.per_sec
            >= f64::from(self.limit.burst)
    }
}

#[derive(Default)]
struct Shard {
    buckets: HashMap<Box<str>, Bucket>,
    takes: u32,
}

/// The buckets of every camera, and the default limit.
pub struct Buckets {
    default: Option<RateLimit>,
    hasher: RandomState,
    shards: Box<[Mutex<Shard>]>,
}

impl Buckets {
    pub fn new(default: Option<RateLimit>) -> Self {
        Self { default, hasher: RandomState::new(), shards: (0..SHARDS).map(|_| Mutex::default()).collect() }
    }

    /// The limit in force for a camera: its own, else the default (`None`: unlimited).
    pub fn limit_for(&self, own: Option<RateLimit>) -> Option<RateLimit> {
        own.or(self.default)
    }

    /// Takes `n` tokens from `camera`'s bucket, or none and says how long to wait.
    pub fn take(&self, camera: &str, own: Option<RateLimit>, n: u32) -> Result<(), Refused> {
        self.fits(own, n)?;
        let Some(limit) = self.limit_for(own) else { return Ok(()) };
        self.take_at(camera, limit, n, Instant::now())
    }

    /// Whether a request of `n` events can ever pass (at most the burst).
    pub fn fits(&self, own: Option<RateLimit>, n: u32) -> Result<(), Refused> {
        match self.limit_for(own) {
            Some(limit) if n > limit.burst => Err(Refused::OverBurst { burst: limit.burst }),
            _ => Ok(()),
        }
    }

    fn take_at(&self, camera: &str, limit: RateLimit, n: u32, now: Instant) -> Result<(), Refused> {
        let shard = &self.shards[(self.hasher.hash_one(camera) % SHARDS as u64) as usize];
        let mut shard = shard.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        shard.takes = shard.takes.wrapping_add(1);
        if shard.takes.is_multiple_of(SWEEP_EVERY) {
            // A bucket full again is the same as no bucket: drop it (bounds memory to the
            // cameras active within the last `burst / per_sec` seconds).
            shard.buckets.retain(|_, b| !b.is_full_at(now));
        }
        let burst = f64::from(limit.burst);
        let bucket = match shard.buckets.get_mut(camera) {
            Some(bucket) => bucket,
            None => shard.buckets.entry(camera.into()).or_insert(Bucket { tokens: burst, at: now, limit }),
        };
        bucket.limit = limit;
        bucket.tokens =
            (bucket.tokens + now.saturating_duration_since(bucket.at).as_secs_f64() * limit.per_sec).min(burst);
        bucket.at = now;
        let wanted = f64::from(n);
        if bucket.tokens >= wanted {
            bucket.tokens -= wanted;
            Ok(())
        } else {
            Err(Refused::Wait(Duration::from_secs_f64((wanted - bucket.tokens) / limit.per_sec)))
        }
    }

    /// Drops every bucket that has refilled by `now` (each shard also does this every
    /// [`SWEEP_EVERY`] takes).
    #[cfg(test)]
    fn sweep(&self, now: Instant) {
        for shard in self.shards.iter() {
            shard.lock().unwrap_or_else(std::sync::PoisonError::into_inner).buckets.retain(|_, b| !b.is_full_at(now));
        }
    }

    /// Cameras holding a bucket now (for tests and the benchmark).
    pub fn tracked(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(std::sync::PoisonError::into_inner).buckets.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(per_sec: f64, burst: u32) -> RateLimit {
        RateLimit { per_sec, burst }
    }

    #[test]
    fn rates_parse_as_operators_write_them() {
        assert_eq!("10/s".parse::<Rate>(), Ok(Rate(10.0)));
        assert_eq!("600/m".parse::<Rate>(), Ok(Rate(10.0)));
        assert_eq!("3600/h".parse::<Rate>(), Ok(Rate(1.0)));
        assert_eq!("2.5".parse::<Rate>(), Ok(Rate(2.5)));
        for bad in ["0/s", "-1/s", "ten/s", "5/d", "NaN", "inf/s", ""] {
            assert!(bad.parse::<Rate>().is_err(), "{bad:?} parsed");
        }
        assert_eq!(RateLimit::new(Rate(10.0), None), limit(10.0, 20));
        assert_eq!(RateLimit::new(Rate(0.1), None), limit(0.1, 1));
        assert_eq!(RateLimit::new("3600/h".parse().unwrap(), Some(5)).to_string(), "1/s, burst 5");
        assert_eq!("1/h".parse::<Rate>().unwrap().to_string(), "1/h");
        assert_eq!("90/m".parse::<Rate>().unwrap().to_string(), "1.5/s");
    }

    #[test]
    fn a_camera_gets_its_burst_then_the_rate() {
        let buckets = Buckets::new(Some(limit(2.0, 3)));
        let t0 = Instant::now();
        let l = limit(2.0, 3);
        for _ in 0..3 {
            assert_eq!(buckets.take_at("cam-1", l, 1, t0), Ok(()));
        }
        let Err(Refused::Wait(wait)) = buckets.take_at("cam-1", l, 1, t0) else { panic!("a fourth event passed") };
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-9, "{wait:?}");
        // Another camera has its own bucket.
        assert_eq!(buckets.take_at("cam-2", l, 1, t0), Ok(()));
        // Half a second later one token is back, not two.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(buckets.take_at("cam-1", l, 1, t1), Ok(()));
        assert!(buckets.take_at("cam-1", l, 1, t1).is_err());
    }

    #[test]
    fn a_request_takes_all_its_tokens_or_none() {
        let buckets = Buckets::new(None);
        let l = limit(1.0, 4);
        let t0 = Instant::now();
        assert_eq!(buckets.take_at("cam-1", l, 3, t0), Ok(()));
        assert!(buckets.take_at("cam-1", l, 2, t0).is_err());
        // The refused request took nothing: the last token is still there.
        assert_eq!(buckets.take_at("cam-1", l, 1, t0), Ok(()));
    }

    #[test]
    fn more_than_the_burst_is_refused_for_good_and_no_limit_means_none() {
        let limited = Buckets::new(Some(limit(10.0, 5)));
        assert_eq!(limited.take("cam-1", None, 6), Err(Refused::OverBurst { burst: 5 }));
        // A camera's own limit replaces the default.
        assert_eq!(limited.take("cam-1", Some(limit(100.0, 50)), 6), Ok(()));
        let unlimited = Buckets::new(None);
        for _ in 0..10_000 {
            assert_eq!(unlimited.take("cam-1", None, 100), Ok(()));
        }
        assert_eq!(unlimited.tracked(), 0);
    }

    #[test]
    fn buckets_that_refilled_are_forgotten() {
        let buckets = Buckets::new(None);
        let l = limit(1000.0, 10);
        let t0 = Instant::now();
        for i in 0..10_000 {
            let _ = buckets.take_at(&format!("cam-{i}"), l, 1, t0);
        }
        assert_eq!(buckets.tracked(), 10_000);
        // One camera keeps sending: its bucket stays below full.
        let busy = limit(1.0, 10);
        for _ in 0..10 {
            buckets.take_at("cam-busy", busy, 1, t0).unwrap();
        }
        // A second later every other bucket is full again, and a sweep drops it.
        buckets.sweep(t0 + Duration::from_secs(1));
        assert_eq!(buckets.tracked(), 1);
    }
}
