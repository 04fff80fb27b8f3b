//! The writer thread is supervised. Reproduces what killed it on main: a log line written
//! while stderr is gone makes tracing's fallback `eprintln!` panic on the writer thread; every
//! upload then answered 503 until restart while nothing said why.
//!
//! A global tracing subscriber (this test binary only) panics on the event writer's thread
//! while `PANICS_LEFT` > 0, as that `eprintln!` does.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use camledger_eventstore::{append, Ledger, LedgerConfig, NewEvent};

mod common;
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata};

static PANICS_LEFT: AtomicUsize = AtomicUsize::new(0);
static NEXT_SPAN: AtomicUsize = AtomicUsize::new(1);

struct PanickingOnWriterThread;

impl PanickingOnWriterThread {
    fn maybe_panic(&self) {
        if std::thread::current().name() == Some("camledger-event-writer")
            && PANICS_LEFT.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
        {
            panic!("failed printing to stderr: Broken pipe (os error 32)");
        }
    }
}

impl tracing::Subscriber for PanickingOnWriterThread {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        self.maybe_panic();
        Id::from_u64(NEXT_SPAN.fetch_add(1, Ordering::Relaxed) as u64)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, _: &Event<'_>) {
        self.maybe_panic();
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

fn install() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| tracing::subscriber::set_global_default(PanickingOnWriterThread).expect("one subscriber"));
}

fn event(n: u64) -> NewEvent {
    common::new_event("cam-1", vec![n as u8; 100 + n as usize])
}

/// Both scenarios in one test: the panics counter is global to this binary.
#[tokio::test]
async fn a_panicking_writer_restarts_or_reports_unavailable_with_its_cause() {
    install();
    let dir = tempfile::tempdir().expect("temp dir");
    let ledger = Ledger::open(dir.path(), LedgerConfig::default()).expect("opens");
    let writer = ledger.start_writer().expect("writer starts");
    writer.append(event(1)).await.expect("append");
    assert_eq!(writer.health(), Ok(()));

    // One panic: the batch in flight fails, the writer is rebuilt from disk and carries on.
    PANICS_LEFT.store(1, Ordering::SeqCst);
    let failed = writer.append(event(2)).await;
    assert!(matches!(failed, Err(append::Error::Unavailable)), "{failed:?}");
    let mut next = None;
    for _ in 0..100 {
        match writer.append(event(3)).await {
            Ok(appended) => {
                next = Some(appended);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let next = next.expect("the restarted writer appends");
    assert_eq!(next.seq, 2, "gapless after the panic: the failed batch published nothing");
    assert_eq!(writer.restarts(), 1);
    assert_eq!(writer.health(), Ok(()));

    // A writer that keeps panicking stays down, and says why.
    PANICS_LEFT.store(usize::MAX, Ordering::SeqCst);
    for n in 0..20 {
        let _ = writer.append(event(10 + n)).await;
        if writer.health().is_err_and(|e| e.cause.contains("not restarted")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let down = writer.health().expect_err("unavailable");
    assert!(down.cause.contains("failed printing to stderr"), "{down}");
    assert!(down.cause.contains("not restarted"), "{down}");
    let refused = writer.append(event(99)).await;
    assert!(matches!(refused, Err(append::Error::Unavailable)), "{refused:?}");
    PANICS_LEFT.store(0, Ordering::SeqCst);
    writer.shutdown().await;

    // A new writer (the process restarted) starts clean from the ledger on disk.
    let writer = ledger.start_writer().expect("writer starts again");
    assert_eq!(writer.append(event(100)).await.expect("append").seq, 3);
    writer.shutdown().await;
}
