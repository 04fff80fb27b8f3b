//! `camledger bench ratelimit`: what the per-camera token buckets cost each upload, at
//! 10,000 cameras, beside what every upload already pays to authenticate (one registry
//! lookup), in one run on the same machine.

use std::time::Instant;

use anyhow::Context;

use crate::ratelimit::{Buckets, Rate, RateLimit};
use crate::registry::Registry;

#[derive(Debug, clap::Args)]
pub struct RateLimitBenchArgs {
    /// Cameras, each with a token and a bucket.
    #[arg(long, default_value_t = 10_000)]
    pub cameras: usize,
    /// Bucket checks per thread.
    #[arg(long, default_value_t = 2_000_000)]
    pub checks: usize,
    /// Registry lookups (the reference).
    #[arg(long, default_value_t = 20_000)]
    pub lookups: usize,
}

pub(crate) async fn run(args: RateLimitBenchArgs) -> anyhow::Result<()> {
    let cameras = args.cameras.max(1);
    let dir = tempfile::tempdir()?;
    println!("camledger bench ratelimit: {cameras} cameras, {} cores", crate::config::cores());

    // The reference: authentication, which every upload does before its bucket is checked.
    let registry = Registry::open(dir.path()).await.context("creating a registry")?;
    let mut tokens = Vec::with_capacity(cameras);
    for i in 0..cameras {
        tokens.push(registry.add_camera(&format!("cam-{i}")).await?);
    }
    let started = Instant::now();
    for i in 0..args.lookups {
        let who = registry.authenticate(&tokens[(i * 7919) % cameras]).await?;
        anyhow::ensure!(who.is_some(), "a known token did not authenticate");
    }
    let lookup_ns = started.elapsed().as_nanos() as f64 / args.lookups.max(1) as f64;

    // Token buckets: every core checks cameras round-robin, as thousands of cameras would.
    let buckets = std::sync::Arc::new(Buckets::new(Some(RateLimit::new(Rate(1000.0), None))));
    let names: std::sync::Arc<Vec<String>> = std::sync::Arc::new((0..cameras).map(|i| format!("cam-{i}")).collect());
    let threads = crate::config::cores();
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (buckets, names, checks) = (buckets.clone(), names.clone(), args.checks);
            std::thread::spawn(move || {
                let mut refused = 0u64;
                for i in 0..checks {
                    let camera = &names[(i.wrapping_mul(7919) + t) % names.len()];
                    refused += u64::from(buckets.take(camera, None, 1).is_err());
                }
                refused
            })
        })
        .collect();
    let mut refused = 0;
    for h in handles {
        refused += h.join().map_err(|_| anyhow::anyhow!("a bench thread panicked"))?;
    }
    let elapsed = started.elapsed();
    let total = (args.checks * threads) as f64;
    let check_ns = elapsed.as_nanos() as f64 * threads as f64 / total;
    println!(
        "registry lookup (reference): {lookup_ns:>9.0} ns per upload\n\
         bucket check:                {check_ns:>9.0} ns per upload (CPU time, {threads} threads contending; \
         {:.0} checks/s in all; {refused} refused)\n\
         ratio: the rate limit adds {:.3}x of the authentication's cost; buckets held: {}",
        total / elapsed.as_secs_f64(),
        check_ns / lookup_ns,
        buckets.tracked()
    );
    Ok(())
}
