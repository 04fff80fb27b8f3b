//! `camledger push`: upload files as a camera would.
//!
//! Each file gets one random `Idempotency-Key` that every retry reuses, so an answer lost on
//! the way back (timeout, reset connection, 5xx) never creates a second event.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use camledger_processor::admission;
use serde::Deserialize;

#[derive(Clone, Debug, clap::Args)]
pub struct PushArgs {
    /// Base URL of the camledger server, e.g. http://127.0.0.1:8080
    #[arg(long, env = "CAMLEDGER_SERVER", value_parser = parse_server_url)]
    pub server: String,
    /// Camera token (as printed by `camledger cameras add`).
    #[arg(long, env = "CAMLEDGER_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Capture time sent as X-Captured-At (RFC 3339).
    #[arg(long, env = "CAMLEDGER_CAPTURED_AT")]
    pub captured_at: Option<String>,
    /// Retries per file after the first attempt (transient failures only).
    #[arg(long, env = "CAMLEDGER_RETRIES", default_value_t = 5)]
    pub retries: u32,
    /// Seconds to wait for one answer.
    #[arg(long, env = "CAMLEDGER_TIMEOUT_SECS", default_value_t = 30)]
    pub timeout_secs: u64,
    /// Image files to upload, in order.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

/// A usage error (exit 2) unless `s` is an http:// or https:// URL with a host.
fn parse_server_url(s: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(s).map_err(|e| format!("{e}: give a URL such as http://127.0.0.1:8080"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!("{s:?} is not an http:// or https:// URL (e.g. http://127.0.0.1:8080)"));
    }
    Ok(s.to_owned())
}

#[derive(Debug, Deserialize)]
struct Answer {
    seq: u64,
    id: String,
    sha256: String,
    duplicate_of: Option<u64>,
}

/// Uploads every file; returns an error naming the files that failed.
pub async fn run(args: PushArgs) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(args.timeout_secs.max(1)))
        .build()
        .context("building the HTTP client")?;
    let url = format!("{}/v1/images", args.server.trim_end_matches('/'));
    let mut failed = Vec::new();
    for file in &args.files {
        match push_one(&client, &url, &args, file).await {
            Ok(answer) => {
                let duplicate = answer.duplicate_of.map_or(String::new(), |d| format!(" duplicate_of={d}"));
                println!("{} seq={} id={} sha256={}{duplicate}", file.display(), answer.seq, answer.id, answer.sha256);
            }
            Err(e) => {
                eprintln!("{}: {e:#}", file.display());
                failed.push(file.display().to_string());
            }
        }
    }
    if !failed.is_empty() {
        bail!("{} of {} files were not uploaded: {}", failed.len(), args.files.len(), failed.join(", "));
    }
    Ok(())
}

async fn push_one(client: &reqwest::Client, url: &str, args: &PushArgs, file: &PathBuf) -> anyhow::Result<Answer> {
    let bytes = tokio::fs::read(file).await.with_context(|| format!("reading {}", file.display()))?;
    let content_type = admission::sniff(&bytes).map_or("application/octet-stream", |f| f.media_type());
    let key = hex::encode(rand::random::<[u8; 16]>());
    let mut attempt = 0u32;
    loop {
        let mut request = client
            .post(url)
            .bearer_auth(&args.token)
            .header("content-type", content_type)
            .header("idempotency-key", &key)
            .body(bytes.clone());
        if let Some(at) = &args.captured_at {
            request = request.header("x-captured-at", at);
        }
        let transient = match request.send().await {
            Ok(response) => {
                let status = response.status();
                if status.is_success() {
                    return response.json::<Answer>().await.context("reading the server's answer");
                }
                let body = response.text().await.unwrap_or_default();
                let retryable = status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429;
                if !retryable {
                    bail!("refused with {status}: {body}");
                }
                format!("{status}: {body}")
            }
            Err(e) => crate::error_chain::std_error_message(&e),
        };
        if attempt >= args.retries {
            bail!("gave up after {} attempts; last failure: {transient}", attempt + 1);
        }
        attempt += 1;
        let backoff = Duration::from_millis(200u64.saturating_mul(1 << attempt.min(6)));
        tracing::warn!(file = %file.display(), attempt, error = %transient, "retrying with the same Idempotency-Key");
        tokio::time::sleep(backoff).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_url_needs_an_http_scheme_and_a_host() {
        for good in ["http://127.0.0.1:8080", "https://cam.example/", "http://[::1]:80"] {
            assert_eq!(parse_server_url(good).as_deref(), Ok(good));
        }
        for bad in ["127.0.0.1:8080", "localhost:8080", "ftp://host/", "http//host", ""] {
            assert!(parse_server_url(bad).is_err(), "{bad}");
        }
    }
}
