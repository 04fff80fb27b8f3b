//! The anchor store on the real MariaDB and on SQLite: checkpoints go in only when they
//! extend the previous one, and a row changed in the database is never trusted.

mod common;

use camledger_backup::{AnchorError, AnchorStore};
use camledger_eventstore::sign::{AllowedSigners, SigningKey};
use camledger_eventstore::{Ledger, LedgerConfig};

use common::MariaDb;

struct Fixture {
    dir: tempfile::TempDir,
    key: SigningKey,
    signers: AllowedSigners,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate(&dir.path().join("key"), "k").unwrap();
        let signers = AllowedSigners::only(&key);
        Fixture { dir, key, signers }
    }

    fn data(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    fn ledger(&self) -> Ledger {
        Ledger::open(&self.data(), LedgerConfig::default()).unwrap()
    }

    fn note(&self, time: i64) -> String {
        self.ledger().current_checkpoint(time).unwrap().sign(&self.key)
    }
}

/// Anchors two checkpoints, then shows every refusal; returns the store for the caller's
/// tampering checks.
async fn appends_extend_and_refuse_what_does_not(url: &str, fx: &Fixture) -> AnchorStore {
    let store = AnchorStore::connect(url).await.expect("the anchor store opens");
    common::ingest(&fx.data(), 1, 6, 300).await;
    let first = store.append(&fx.note(100), &fx.ledger(), &fx.signers).await.expect("the first checkpoint");
    assert_eq!(first.checkpoint.events_seq, 6);
    common::ingest(&fx.data(), 7, 2, 300).await;
    let second = store.append(&fx.note(200), &fx.ledger(), &fx.signers).await.expect("a later checkpoint");

    let origin = "camledger/camledger.local";
    let latest = store.latest(origin, Some(&fx.signers)).await.unwrap().expect("a latest checkpoint");
    assert_eq!(latest, second);
    let all = store.list(Some(origin), Some(&fx.signers)).await.unwrap();
    assert_eq!(all.iter().map(|c| c.checkpoint.events_seq).collect::<Vec<_>>(), [6, 8]);
    assert_eq!(store.origins().await.unwrap(), [origin]);

    let earlier_time = store.append(&fx.note(150), &fx.ledger(), &fx.signers).await.unwrap_err();
    assert!(matches!(earlier_time, AnchorError::NotExtending { .. }), "{earlier_time}");

    // Roll the ledger back with stock git: the ledger's own checkpoint no longer extends.
    let third_event =
        common::git(&fx.data(), &["rev-list", "--reverse", "refs/heads/events"]).lines().nth(2).unwrap().to_owned();
    let head = common::git(&fx.data(), &["rev-parse", "refs/heads/events"]);
    common::git(&fx.data(), &["update-ref", "refs/heads/events", &third_event]);
    let err = store.append(&fx.note(300), &fx.ledger(), &fx.signers).await.unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, AnchorError::NotExtending { .. }), "{message}");
    assert!(message.contains("events seq 3") && message.contains("events seq 8"), "{message}");
    assert!(message.contains(&head), "names the previous head: {message}");

    let stranger = SigningKey::generate(&fx.dir.path().join("stranger"), "s").unwrap();
    let forged = fx.ledger().current_checkpoint(400).unwrap().sign(&stranger);
    assert!(matches!(store.append(&forged, &fx.ledger(), &fx.signers).await, Err(AnchorError::InvalidNote(_))));
    common::git(&fx.data(), &["update-ref", "refs/heads/events", &head]);
    store
}

#[tokio::test]
async fn mariadb_anchors_checkpoints_and_refuses_a_rewritten_row() {
    let db = MariaDb::create();
    let fx = Fixture::new();
    let store = appends_extend_and_refuse_what_does_not(&db.url(), &fx).await;

    // The refused appends locked the latest row (`FOR UPDATE`); they released it before
    // returning. This runs with no await in between, so a rollback merely queued on the
    // dropped transaction would still hold the lock here, and this update would time out.
    db.sql("SET SESSION innodb_lock_wait_timeout = 2; UPDATE checkpoints SET note = note WHERE id = 2");

    db.sql("UPDATE checkpoints SET events_seq = 99 WHERE id = 1");
    let err = store.list(None, Some(&fx.signers)).await.unwrap_err();
    assert!(matches!(err, AnchorError::Tampered { id: 1, .. }), "{err}");

    db.sql("UPDATE checkpoints SET events_seq = 6, note = REPLACE(note, '\\n6\\n', '\\n5\\n') WHERE id = 1");
    let err = store.list(None, Some(&fx.signers)).await.unwrap_err();
    assert!(err.to_string().contains("row 1"), "{err}");

    db.sql("UPDATE checkpoints SET note = 'x' WHERE id = 2");
    let err = store.latest("camledger/camledger.local", None).await.unwrap_err();
    assert!(matches!(err, AnchorError::Tampered { id: 2, .. }), "malformed even without signers: {err}");
    let err = store.append(&fx.note(500), &fx.ledger(), &fx.signers).await.unwrap_err();
    assert!(matches!(err, AnchorError::Tampered { id: 2, .. }), "a tampered latest row blocks appends: {err}");
    store.close().await;
}

#[tokio::test]
async fn sqlite_anchors_checkpoints_the_same_way() {
    let fx = Fixture::new();
    let url = format!("sqlite://{}", fx.dir.path().join("anchors.sqlite").display());
    let store = appends_extend_and_refuse_what_does_not(&url, &fx).await;
    store.close().await;

    let reopened = AnchorStore::connect(&url).await.unwrap();
    let report = camledger_backup::anchor::verify_ledger(&reopened, &fx.ledger(), &fx.signers, None).await.unwrap();
    assert_eq!((report.checkpoints, report.latest.map(|c| c.events_seq)), (2, Some(8)));
    reopened.close().await;
}
