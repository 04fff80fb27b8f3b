//! Worker tests against a real ledger (real git via gix, checked with the stock `git` CLI) and
//! the real ONNX Runtime with the tiny fixture model.

use std::path::Path;
use std::process::Command;

use camledger_eventstore::LedgerConfig;
use image::{Rgb, RgbImage};

use super::*;
use crate::classifier::{Model, OnnxRuntime, DEFAULT_DYLIB};
use crate::phash::Hasher;
use crate::testutil::{alter, encode_jpeg, scene, Alteration};
use crate::verdict::{BLANK, DUPLICATE, NEAR_DUPLICATE};

fn runtime() -> OnnxRuntime {
    let path = std::env::var_os("CAMLEDGER_ORT_DYLIB")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(DEFAULT_DYLIB));
    OnnxRuntime::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

fn tiny_classifiers(threads: usize) -> Vec<Classifier> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny.manifest.json");
    let model = Arc::new(Model::load(&manifest).expect("fixture model"));
    classifiers(&runtime(), &model, threads).expect("sessions")
}

/// The tiny model's opinion is not what these tests are about: a threshold above 1 keeps it
/// from ever firing, so the expected reasons come from duplicates and blank frames alone.
fn config(batch: usize) -> WorkerConfig {
    let mut config = WorkerConfig { batch, ..WorkerConfig::default() };
    config.judge.thresholds.classifier = 2.0;
    config
}

/// The opening both replay tests share: cam-1 sends a scene and its text-stamped copy (a near
/// duplicate), cam-2 a saturated red frame (classifier spam at the default threshold).
fn a_scene_its_stamped_copy_and_a_red_frame(a: &RgbImage) -> Vec<(&'static str, Vec<u8>)> {
    let red = RgbImage::from_fn(640, 480, |x, y| Rgb([250, (x % 50) as u8, (y % 40) as u8]));
    vec![
        ("cam-1", encode_jpeg(a, 90)),
        ("cam-1", encode_jpeg(&alter(a, Alteration::TextStamped), 90)),
        ("cam-2", encode_jpeg(&red, 90)),
    ]
}

async fn append_all(ledger: &Ledger, images: &[(&str, Vec<u8>)]) {
    let writer = ledger.start_writer().expect("writer starts");
    for (camera, bytes) in images {
        let admitted = crate::admission::admit(bytes, &Default::default()).expect("fixtures are valid");
        writer
            .append(admitted.into_event((*camera).to_owned(), bytes::Bytes::from(bytes.clone()), None, None))
            .await
            .expect("append is durable");
    }
    writer.shutdown().await;
}

fn run_to_end(worker: &mut Worker) -> usize {
    let mut total = 0;
    loop {
        match worker.step().expect("step succeeds") {
            0 => return total,
            n => total += n,
        }
    }
}

fn reasons(ledger: &Ledger, seq: u64) -> (Vec<String>, Option<u64>) {
    let stored = ledger.verdict(seq).expect("readable").unwrap_or_else(|| panic!("event {seq} has no verdict"));
    (stored.verdict.reasons, stored.verdict.near_duplicate_of)
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git").arg("--git-dir").arg(dir).args(args).output().expect("git runs");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_judges_every_event_once_and_stock_git_shows_the_notes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ledger = Ledger::open(dir.path(), LedgerConfig::default()).expect("ledger opens");
    let a = scene(11, 800, 600);
    append_all(
        &ledger,
        &[
            ("cam-1", encode_jpeg(&a, 90)),
            ("cam-1", encode_jpeg(&a, 90)),
            ("cam-2", encode_jpeg(&alter(&a, Alteration::Cropped3), 90)),
            ("cam-1", encode_jpeg(&scene(12, 800, 600), 90)),
            ("cam-3", encode_jpeg(&RgbImage::from_pixel(800, 600, Rgb([2, 2, 2])), 90)),
        ],
    )
    .await;

    let mut worker = Worker::start(ledger.clone(), config(2), tiny_classifiers(2)).expect("worker starts");
    assert_eq!(run_to_end(&mut worker), 5);
    assert_eq!(worker.step().expect("caught up"), 0, "nothing is judged twice");

    let s = |v: &[&str]| v.iter().map(|r| (*r).to_owned()).collect::<Vec<_>>();
    assert_eq!(reasons(&ledger, 1), (vec![], None));
    assert_eq!(reasons(&ledger, 2), (s(&[DUPLICATE, NEAR_DUPLICATE]), Some(1)));
    assert_eq!(reasons(&ledger, 3).0, s(&[NEAR_DUPLICATE]));
    assert_eq!(reasons(&ledger, 4), (vec![], None));
    assert_eq!(reasons(&ledger, 5).0, s(&[BLANK]));
    let model = ledger.verdict(1).expect("readable").expect("judged").verdict.model_sha256;
    assert_eq!(model, tiny_classifiers(1)[0].model().sha256());
    assert_eq!(ledger.verify_verdicts(|_, _| {}).expect("verdict chain verifies"), 5);

    let log = git(&ledger.git_dir(), &["log", "--notes=verdicts", "refs/heads/events"]);
    assert_eq!(log.matches("Verdict: spam").count(), 3, "{log}");
    assert_eq!(log.matches("Verdict: ok").count(), 2, "{log}");
    git(&ledger.git_dir(), &["fsck", "--full", "--strict"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_worker_resumes_at_the_checkpoint_and_remembers_earlier_images() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ledger = Ledger::open(dir.path(), LedgerConfig::default()).expect("ledger opens");
    let a = scene(21, 640, 480);
    append_all(&ledger, &[("cam-1", encode_jpeg(&a, 90)), ("cam-1", encode_jpeg(&scene(22, 640, 480), 90))]).await;
    let mut first = Worker::start(ledger.clone(), config(8), tiny_classifiers(1)).expect("worker starts");
    assert_eq!(run_to_end(&mut first), 2);
    drop(first);

    append_all(&ledger, &[("cam-9", encode_jpeg(&alter(&a, Alteration::Brightened10), 85))]).await;
    let mut second = Worker::start(ledger.clone(), config(8), tiny_classifiers(2)).expect("worker restarts");
    assert_eq!(second.next_seq(), 3, "resumes after the checkpoint");
    assert_eq!(run_to_end(&mut second), 1, "only the new event is judged");
    assert_eq!(reasons(&ledger, 3), (vec![NEAR_DUPLICATE.to_owned()], Some(1)), "the rebuilt index knows seq 1");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_workers_at_once_write_exactly_one_verdict_per_event() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ledger = Ledger::open(dir.path(), LedgerConfig::default()).expect("ledger opens");
    let images: Vec<(&str, Vec<u8>)> = (0..12)
        .map(|i| {
            // Every third image repeats an earlier one, so the index state matters.
            let seed = if i % 3 == 2 { 30 + i - 2 } else { 30 + i };
            ("cam-1", encode_jpeg(&alter(&scene(seed, 320, 240), Alteration::Reencoded), 80 + i as u8))
        })
        .collect();
    append_all(&ledger, &images).await;

    let written: Vec<usize> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let ledger = ledger.clone();
                scope.spawn(move || {
                    let mut worker = Worker::start(ledger, config(3), tiny_classifiers(1)).expect("worker starts");
                    run_to_end(&mut worker)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("worker thread")).collect()
    });

    let chain = git(&ledger.git_dir(), &["log", "--format=%s", "refs/heads/verdicts"]);
    assert_eq!(ledger.verify_verdicts(|_, _| {}).expect("verdict chain verifies"), 12, "{chain}");
    assert_eq!(chain.lines().count(), 12, "one verdict commit per event:\n{chain}");
    // Verdicts are deterministic (same content, node and second give the same commit id), so
    // a racing worker may "win" with the identical commit the other already wrote; gix treats
    // that ref update as a no-op. Every event is judged, and the chain holds each verdict once.
    assert!(written.iter().sum::<usize>() >= 12, "{written:?}");
    for seq in 1..=12u64 {
        let (reasons, near) = reasons(&ledger, seq);
        if seq % 3 == 0 {
            assert_eq!(near, Some(seq - 2), "event {seq} repeats {}: {reasons:?}", seq - 2);
        } else {
            assert!(!reasons.contains(&DUPLICATE.to_owned()), "event {seq}: {reasons:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replay_reproduces_every_recorded_verdict() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ledger = Ledger::open(dir.path(), LedgerConfig::default()).expect("ledger opens");
    let a = scene(41, 640, 480);
    let mut events = a_scene_its_stamped_copy_and_a_red_frame(&a);
    events.extend([
        ("cam-2", encode_jpeg(&RgbImage::from_pixel(640, 480, Rgb([128, 128, 128])), 90)),
        ("cam-1", encode_jpeg(&scene(42, 640, 480), 90)),
        ("cam-1", encode_jpeg(&a, 90)),
    ]);
    append_all(&ledger, &events).await;
    // The classifier counts here: the default threshold, so the red frame is classifier spam.
    let worker_config = WorkerConfig { batch: 4, ..WorkerConfig::default() };
    let mut worker = Worker::start(ledger.clone(), worker_config.clone(), tiny_classifiers(2)).expect("worker starts");
    assert_eq!(run_to_end(&mut worker), 6);

    let mut classifier = tiny_classifiers(1).pop().expect("one classifier");
    for from in [1, 4] {
        let (rows, summary) =
            crate::replay::replay(&ledger, from, None, &worker_config.judge, &mut classifier, |_, _| {})
                .expect("replays");
        assert_eq!(summary.events, 7 - from, "from {from}");
        assert_eq!(summary.agreements, summary.events, "from {from}: {rows:#?}");
        assert!(!summary.has_differences());
    }
    let (rows, _) =
        crate::replay::replay(&ledger, 1, None, &worker_config.judge, &mut classifier, |_, _| {}).expect("replays");
    assert!(rows[2].recomputed.reasons.contains(&crate::verdict::CLASSIFIER.to_owned()), "{:?}", rows[2]);

    // A laxer blank threshold flips the blank verdict, and the replay says so; another
    // classifier threshold does not: each verdict is replayed with the threshold it records.
    let mut laxer = worker_config.judge.clone();
    laxer.thresholds.blank = 2.0;
    laxer.thresholds.classifier = 2.0;
    let (rows, summary) = crate::replay::replay(&ledger, 1, None, &laxer, &mut classifier, |_, _| {}).expect("replays");
    assert!(!rows[3].agrees && summary.has_differences(), "the blank frame differs: {summary:?}");
    assert!(rows[2].agrees, "the classifier verdict is judged at its recorded threshold: {:?}", rows[2]);
}

#[tokio::test(flavor = "multi_thread")]
async fn verdicts_written_before_thresholds_and_scenes_were_recorded_replay_exactly() {
    let images: Vec<(&str, Vec<u8>)> = (0..12u64)
        .map(|i| {
            let red = RgbImage::from_fn(320, 240, |x, y| Rgb([250, ((x + 7 * i as u32) % 50) as u8, (y % 40) as u8]));
            // The tiny model calls red spam: the scene frames are cooled to stay below 0.5.
            let scene = alter(&scene(70, 320, 240), Alteration::Brightened10);
            let cool = RgbImage::from_fn(320, 240, |x, y| {
                let [r, g, b] = scene.get_pixel(x, y).0;
                Rgb([r / 4, g, b])
            });
            let image = if i % 4 == 3 { red } else { cool };
            ("cam-1", encode_jpeg(&image, 80 + i as u8))
        })
        .collect();
    let judged = tempfile::tempdir().expect("temp dir");
    let judged = Ledger::open(judged.path(), LedgerConfig::default()).expect("ledger opens");
    append_all(&judged, &images).await;
    let worker_config = WorkerConfig { batch: 5, ..WorkerConfig::default() };
    let mut worker = Worker::start(judged.clone(), worker_config.clone(), tiny_classifiers(1)).expect("starts");
    assert_eq!(run_to_end(&mut worker), 12);
    let recorded: Vec<StoredVerdictRecord> =
        (1..=12).map(|seq| judged.verdict(seq).expect("readable").expect("judged").verdict).collect();
    assert!(recorded.iter().any(|v| v.scores.contains_key(crate::scene::SCENE_DISTANCE)), "{recorded:#?}");
    assert!(recorded.iter().any(|v| v.reasons.contains(&crate::verdict::CLASSIFIER.to_owned())), "{recorded:#?}");

    // The same events with the verdicts an earlier build wrote: no threshold, no scene.
    let old = tempfile::tempdir().expect("temp dir");
    let old = Ledger::open(old.path(), LedgerConfig::default()).expect("ledger opens");
    append_all(&old, &images).await;
    let stripped: Vec<StoredVerdictRecord> = recorded
        .iter()
        .map(|v| {
            let mut v = v.clone();
            v.event_id = old.event(v.event_seq).expect("event").id;
            v.scores.retain(|k, _| !crate::verdict::LATER_SCORES.contains(&k.as_str()));
            v
        })
        .collect();
    old.append_verdicts(&stripped).expect("old verdicts land");
    // Whatever the replay is told, the manifest's threshold (what they were made under) applies.
    let mut other = worker_config.judge.clone();
    other.thresholds.classifier = 0.01;
    let mut classifier = tiny_classifiers(1).pop().expect("one classifier");
    for from in [1, 7] {
        let (rows, summary) =
            crate::replay::replay(&old, from, None, &other, &mut classifier, |_, _| {}).expect("replays");
        assert_eq!(summary.agreements, 13 - from, "from {from}: {rows:#?}");
    }
    // Verdicts that record their threshold are replayed with it, not with the configured one.
    let (_, summary) = crate::replay::replay(&judged, 1, None, &other, &mut classifier, |_, _| {}).expect("replays");
    assert_eq!(summary.agreements, 12, "{summary:?}");
}

fn shipped_model(manifest: &str) -> Arc<Model> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models").join(manifest);
    Arc::new(Model::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

/// A model change never rewrites history: verdicts judged with the previous default model
/// (kept under `models/v1.0.0/`) replay exactly with it, and replaying them with the current
/// default model reports every changed score or flip instead of passing silently.
#[tokio::test(flavor = "multi_thread")]
async fn verdicts_of_the_previous_default_model_replay_with_it_and_a_new_model_reports_changes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ledger = Ledger::open(dir.path(), LedgerConfig::default()).expect("ledger opens");
    let mut events = a_scene_its_stamped_copy_and_a_red_frame(&scene(71, 640, 480));
    events.push(("cam-1", encode_jpeg(&scene(72, 640, 480), 90)));
    append_all(&ledger, &events).await;
    let previous = shipped_model("v1.0.0/default.manifest.json");
    let current = shipped_model("default.manifest.json");
    assert_ne!(previous.sha256(), current.sha256());
    let previous_config =
        WorkerConfig { batch: 4, judge: judge::Config::for_model(&previous), ..WorkerConfig::default() };
    let mut worker = Worker::start(
        ledger.clone(),
        previous_config.clone(),
        classifiers(&runtime(), &previous, 1).expect("sessions"),
    )
    .expect("worker starts");
    assert_eq!(run_to_end(&mut worker), 4);
    let recorded = ledger.verdict(1).expect("readable").expect("judged").verdict.model_sha256;
    assert_eq!(recorded, previous.sha256(), "the verdict names the model that made it");

    let mut with_previous = classifiers(&runtime(), &previous, 1).expect("session").pop().expect("one");
    let (rows, summary) =
        crate::replay::replay(&ledger, 1, None, &previous_config.judge, &mut with_previous, |_, _| {})
            .expect("replays");
    assert_eq!((summary.events, summary.agreements), (4, 4), "{rows:#?}");

    let mut with_current = classifiers(&runtime(), &current, 1).expect("session").pop().expect("one");
    let (rows, summary) =
        crate::replay::replay(&ledger, 1, None, &judge::Config::for_model(&current), &mut with_current, |_, _| {})
            .expect("replays");
    assert_eq!(summary.events, 4);
    assert!(summary.has_differences() && summary.agreements < 4, "{summary:?}\n{rows:#?}");
    for row in &rows {
        let old = row.recorded.as_ref().expect("judged").scores.get(crate::verdict::CLASSIFIER);
        let new = row.recomputed.scores.get(crate::verdict::CLASSIFIER);
        let changed = match (old, new) {
            (Some(a), Some(b)) => (a - b).abs() > crate::replay::SCORE_TOLERANCE,
            (a, b) => a != b,
        };
        if changed {
            assert!(!row.agrees, "a changed classifier score is reported: {row:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_running_worker_picks_up_new_events_and_stops_when_cancelled() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ledger = Ledger::open(dir.path(), LedgerConfig::default()).expect("ledger opens");
    let worker =
        Worker::start(ledger.clone(), config(8), tiny_classifiers(1)).expect("worker starts on an empty ledger");
    let cancel = CancellationToken::new();
    let running = tokio::spawn(worker.run(cancel.clone()));

    append_all(
        &ledger,
        &[("cam-1", encode_jpeg(&scene(51, 320, 240), 90)), ("cam-1", encode_jpeg(&scene(52, 320, 240), 90))],
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while ledger.verdict_head().expect("readable").map_or(0, |h| h.event_seq) < 2 {
        assert!(tokio::time::Instant::now() < deadline, "the worker did not judge the new events");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cancel.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(10), running).await.expect("stops promptly");
    stopped.expect("no panic").expect("clean stop");
}

/// A verdict as a processor of another kind would write it by hand, for seq `seq`.
fn planted_verdict(ledger: &Ledger, seq: u64, perceptual_hash: Option<String>) -> StoredVerdictRecord {
    StoredVerdictRecord {
        event_seq: seq,
        event_id: ledger.event(seq).expect("event exists").id,
        spam: false,
        reasons: vec![],
        scores: Default::default(),
        near_duplicate_of: None,
        model_sha256: "ab".repeat(32),
        processor_version: "planted/1".to_owned(),
        perceptual_hash,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_starting_worker_takes_hashes_from_the_verdicts_and_decodes_only_where_none_is_recorded() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ledger = Ledger::open(dir.path(), LedgerConfig::default()).expect("ledger opens");
    let (a, b, c) = (scene(61, 640, 480), scene(62, 640, 480), scene(63, 640, 480));
    let hash = |image: &RgbImage, quality: u8| {
        hash_only(&encode_jpeg(image, quality), &judge::Config::default()).expect("decodes")
    };
    append_all(&ledger, &[("cam-1", encode_jpeg(&a, 90)), ("cam-1", encode_jpeg(&b, 90))]).await;
    // Event 1's verdict records the hash of picture C (not its own image A); event 2's records
    // no hash at all, as verdicts written before the field existed.
    ledger
        .append_verdicts(&[
            planted_verdict(&ledger, 1, Some(Hasher::default().record(hash(&c, 90)))),
            planted_verdict(&ledger, 2, None),
        ])
        .expect("planted verdicts land");

    append_all(&ledger, &[("cam-2", encode_jpeg(&c, 85)), ("cam-2", encode_jpeg(&b, 85))]).await;
    let mut worker = Worker::start(ledger.clone(), config(8), tiny_classifiers(2)).expect("worker starts");
    assert_eq!(run_to_end(&mut worker), 2);
    assert_eq!(reasons(&ledger, 3), (vec![NEAR_DUPLICATE.to_owned()], Some(1)), "the recorded hash was used");
    assert_eq!(reasons(&ledger, 4), (vec![NEAR_DUPLICATE.to_owned()], Some(2)), "a missing hash was recomputed");
    let recorded = ledger.verdict(3).expect("readable").expect("judged").verdict.perceptual_hash;
    assert_eq!(recorded, Some(Hasher::default().record(hash(&c, 85))), "new verdicts record their hash");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_worker_rebuilds_every_cameras_scene_from_the_verdicts() {
    let images: Vec<(&str, Vec<u8>)> = (0..22u64)
        .map(|i| {
            let camera = if i % 2 == 0 { "cam-1" } else { "cam-2" };
            let seed = if i % 2 == 0 { 80 } else { 81 };
            let image = if i == 20 { scene(82, 320, 240) } else { scene(seed, 320, 240) };
            (camera, encode_jpeg(&alter(&image, Alteration::Brightened10), 70 + i as u8))
        })
        .collect();
    let images = &images;
    let judge = |ledger: Ledger, stop_after: Option<u64>| async move {
        append_all(&ledger, &images[..stop_after.unwrap_or(22) as usize]).await;
        let mut worker = Worker::start(ledger.clone(), config(4), tiny_classifiers(1)).expect("starts");
        run_to_end(&mut worker);
        drop(worker);
        if let Some(n) = stop_after {
            append_all(&ledger, &images[n as usize..]).await;
            let mut worker = Worker::start(ledger.clone(), config(4), tiny_classifiers(1)).expect("restarts");
            assert_eq!(run_to_end(&mut worker), 22 - n as usize);
        }
        (1..=22).map(|seq| ledger.verdict(seq).expect("readable").expect("judged").verdict.scores).collect::<Vec<_>>()
    };
    let (a, b) = (tempfile::tempdir().expect("temp dir"), tempfile::tempdir().expect("temp dir"));
    let straight = judge(Ledger::open(a.path(), LedgerConfig::default()).expect("opens"), None).await;
    let restarted = judge(Ledger::open(b.path(), LedgerConfig::default()).expect("opens"), Some(15)).await;
    assert_eq!(straight, restarted);
    let distances: Vec<Option<f64>> = straight.iter().map(|s| s.get(crate::scene::SCENE_DISTANCE).copied()).collect();
    assert!(distances[..crate::scene::MIN_FRAMES * 2].iter().all(Option::is_none), "{distances:?}");
    let near = distances[21].expect("cam-2 has its scene");
    let far = distances[20].expect("cam-1 has its scene");
    assert!(near <= 10.0 && far > 16.0, "{distances:?}");
}

#[cfg(target_os = "linux")]
#[test]
fn analysis_threads_run_nicer_than_the_server_and_leave_its_threads_alone() {
    use rustix::process::getpriority_process;
    let nice_of_this_thread = || getpriority_process(Some(rustix::thread::gettid())).expect("own nice value");
    let server = nice_of_this_thread();
    let judge = std::thread::scope(|scope| {
        spawn_judge(scope, || (std::thread::current().name().map(str::to_owned), nice_of_this_thread()))
            .expect("spawn")
            .join()
            .expect("join")
    });
    assert_eq!(judge, (Some(JUDGE_THREAD.to_owned()), (server + JUDGE_NICE).min(19)));
    assert_eq!(nice_of_this_thread(), server, "the calling thread keeps its priority");
}
