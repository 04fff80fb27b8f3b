//! Tracing set-up for the binary: human-readable or JSON lines on stderr, filtered by
//! `CAMLEDGER_LOG` (or `RUST_LOG`), default `info` (`warn` for benchmarks, whose output is the report).
//!
//! Logging never fails a request: a log line that cannot be written (stderr closed, a full
//! disk behind a redirect) is dropped. tracing's own fallback for a failed write is an
//! `eprintln!`, which panics when stderr is gone — inside a handler that turned a committed
//! upload into a connection reset — so it is switched off and the writer swallows errors.

use std::io::{IsTerminal, Write};

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
    // Colour only for a person at a terminal: a log file or journal gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| LossyStderr)
        .with_ansi(std::io::stderr().is_terminal())
        .log_internal_errors(false);
    // A second init (tests calling into the library) is harmless: keep the first.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// stderr that drops what it cannot write instead of reporting an error.
struct LossyStderr;

impl Write for LossyStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // One locked write_all per line keeps concurrent lines whole.
        let _ = std::io::stderr().lock().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}
