//! Tracing set-up for the binary: human-readable or JSON lines on stderr, filtered by
//! `CAMLEDGER_LOG` (or `RUST_LOG`), default `info` (`warn` for benchmarks, whose output is the report).

use tracing_subscriber::EnvFilter;

#[derive(Clone, Copy, Debug, Default, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

pub fn init(format: LogFormat, default_level: &str) {
    let filter = EnvFilter::try_from_env("CAMLEDGER_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    // A second init (tests calling into the library) is harmless: keep the first.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
