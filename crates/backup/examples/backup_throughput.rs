//! Benchmark: snapshot and restore throughput against the stock baselines, in one run.
//!
//! ```text
//! cargo run --release -p camledger-backup --example backup_throughput -- [EVENTS=2000] [IMAGE_KIB=100]
//! ```
//!
//! Use `--release`: the dev profile builds dependencies with debug assertions, and gix's
//! per-object buffer zero-fill then runs with a bounds check per byte (perf showed it and
//! core's precondition checks at ~14% of the snapshot's client CPU).
//!
//! 1. Writes EVENTS random (incompressible) images through the real eventstore writer.
//! 2. Snapshot into a fresh MariaDB database (127.0.0.1:3306, root) with the default
//!    8 MiB chunks; raw MB/s and peak RSS of this process during the snapshot.
//! 3. Baseline: the stock `mariadb` client loads the very same compressed chunk files
//!    with `INSERT … LOAD_FILE()` in one transaction.
//! 4. Restore into a new dir; "restore" is fetch + check + decompress + index (until the
//!    proofs start), the proofs (`git fsck`, `Ledger::verify`) are timed separately.
//! 5. Baseline: `git index-pack` of the same pack file.
//!
//! `ZSTD_LEVEL=n` overrides the snapshot's zstd level (default 3).
//! `KEEP_DATA=1` keeps the ingested data dir in /tmp/camledger-bench-data and stops;
//! `BENCH_DATA=/tmp/camledger-bench-data` reuses it instead of ingesting.
//!
//! Prints ratios (ours / baseline throughput; ≥ 0.8 is the target) and peak RSS.
//! Peak RSS is read from `/proc/self/status` (VmHWM) after resetting it through
//! `/proc/self/clear_refs`, so each phase reports its own peak.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use camledger_backup::{NoProgress, Progress, SnapshotOptions, SnapshotOutcome, Store};
use camledger_eventstore::{Ledger, LedgerConfig, NewEvent};
use sqlx::Row;

fn mariadb(db: Option<&str>, sql: &str) -> String {
    let mut cmd = Command::new("mariadb");
    cmd.args(["-uroot", "-h127.0.0.1", "-P3306", "-N", "-B"]);
    if let Some(db) = db {
        cmd.arg(db);
    }
    let out = cmd.arg("-e").arg(sql).output().expect("the mariadb client is installed");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn reset_peak_rss() {
    // "5" resets the peak RSS counter (Linux >= 4.0).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

/// Samples RssAnon (heap and other anonymous memory, not the page cache or mmapped
/// pack files, which VmHWM includes) every 5 ms and keeps the peak.
struct AnonSampler {
    peak_kib: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl AnonSampler {
    fn start() -> AnonSampler {
        use std::sync::atomic::Ordering;
        let peak_kib = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (p, s) = (peak_kib.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
                if let Some(kib) = status
                    .lines()
                    .find_map(|l| l.strip_prefix("RssAnon:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                {
                    p.fetch_max(kib, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        AnonSampler { peak_kib, stop }
    }

    fn now_mib() -> f64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("RssAnon:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kib| kib / 1024.0)
    }

    fn stop_mib(self) -> f64 {
        use std::sync::atomic::Ordering;
        self.stop.store(true, Ordering::Relaxed);
        self.peak_kib.load(Ordering::Relaxed) as f64 / 1024.0
    }
}

fn image(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Records when the restore's proof phase starts.
#[derive(Default)]
struct PhaseClock {
    proving_started: Mutex<Option<Instant>>,
}

impl Progress for PhaseClock {
    fn start(&self, what: &str, _total: u64) {
        if what.contains("proving") {
            *self.proving_started.lock().expect("not poisoned") = Some(Instant::now());
        }
    }
    fn advance(&self, _n: u64) {}
    fn finish(&self) {}
}

/// user + system CPU seconds of a process so far (from /proc/PID/stat, clock ticks of 1/100 s).
fn cpu_s(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the ")" that ends the command name: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn mysqld_pid() -> String {
    std::fs::read_to_string("/run/mysqld/mysqld.pid").unwrap_or_default().trim().to_owned()
}

fn mb_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

fn time_cmd(cmd: &mut Command) -> (Duration, f64) {
    // /usr/bin/time -f %M prints the child's peak RSS in KiB on stderr's last line.
    let start = Instant::now();
    let out = cmd.output().expect("the command runs");
    let took = start.elapsed();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rss_kib =
        String::from_utf8_lossy(&out.stderr).lines().last().and_then(|l| l.trim().parse::<f64>().ok()).unwrap_or(0.0);
    (took, rss_kib / 1024.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let events: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(2000);
    let image_kib: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);

    let work = tempfile::Builder::new().prefix("camledger-bench-").tempdir().expect("temp dir");
    // mysqld must be able to read the chunk files for LOAD_FILE().
    std::fs::set_permissions(work.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let data = work.path().join("data");

    let start = Instant::now();
    if let Ok(existing) = std::env::var("BENCH_DATA") {
        // Reuse a data dir kept by an earlier run (KEEP_DATA=1).
        let status = Command::new("cp").arg("-a").arg(&existing).arg(&data).status().expect("cp");
        assert!(status.success());
    } else {
        {
            let ledger = Ledger::open(&data, LedgerConfig::default()).expect("open the ledger");
            let writer = ledger.start_writer().expect("start the writer");
            let mut pending = Vec::new();
            for seed in 0..events {
                let writer = writer.clone();
                pending.push(tokio::spawn(async move {
                    writer
                        .append(NewEvent {
                            camera: format!("cam-{}", seed % 8),
                            image: bytes::Bytes::from(image(seed, image_kib * 1024)),
                            media_type: "image/jpeg".into(),
                            extension: "jpg".into(),
                            width: 640,
                            height: 480,
                            exif: None,
                            captured_at: None,
                            idempotency_key: None,
                        })
                        .await
                        .expect("append")
                }));
                if pending.len() >= 256 {
                    for p in pending.drain(..) {
                        p.await.expect("append task");
                    }
                }
            }
            for p in pending {
                p.await.expect("append task");
            }
            writer.shutdown().await;
        }
    }
    if std::env::var("KEEP_DATA").is_ok() {
        let keep = PathBuf::from("/tmp/camledger-bench-data");
        let _ = std::fs::remove_dir_all(&keep);
        let status = Command::new("cp").arg("-a").arg(&data).arg(&keep).status().expect("cp");
        assert!(status.success());
        return;
    }
    println!("ingested {events} events of {image_kib} KiB in {:.1?}", start.elapsed());

    let db = format!("camledger_bench_{}", std::process::id());
    mariadb(None, &format!("DROP DATABASE IF EXISTS {db}; CREATE DATABASE {db}"));
    // BENCH_SOCKET=/run/mysqld/mysqld.sock talks to MariaDB over its unix socket instead of TCP.
    let url = match std::env::var("BENCH_SOCKET") {
        Ok(socket) => format!("mysql://root@localhost/{db}?socket={socket}"),
        Err(_) => format!("mysql://root@127.0.0.1:3306/{db}"),
    };
    let store = Store::connect(&url).await.expect("connect");

    // --- snapshot
    reset_peak_rss();
    let snap_anon_before = AnonSampler::now_mib();
    let anon = AnonSampler::start();
    let (client_cpu0, server_cpu0) = (cpu_s("self"), cpu_s(&mysqld_pid()));
    let start = Instant::now();
    let mut options = SnapshotOptions::default();
    if let Some(level) = std::env::var("ZSTD_LEVEL").ok().and_then(|l| l.parse().ok()) {
        options.zstd_level = level;
    }
    let outcome =
        camledger_backup::snapshot(&store, &bench_key(), &data, &options, &NoProgress).await.expect("snapshot");
    let snap_time = start.elapsed();
    let (snap_client_cpu, snap_server_cpu) = (cpu_s("self") - client_cpu0, cpu_s(&mysqld_pid()) - server_cpu0);
    let snap_rss = peak_rss_mib();
    let snap_anon = anon.stop_mib();
    let SnapshotOutcome::Created(info) = outcome else { panic!("a first snapshot is always created") };

    // --- baseline: the same chunk files through `INSERT … LOAD_FILE()`
    let chunk_dir = work.path().join("chunks");
    std::fs::create_dir(&chunk_dir).expect("mkdir");
    std::fs::set_permissions(&chunk_dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let pool = sqlx::mysql::MySqlPool::connect(&url).await.expect("connect");
    let mut script = String::from(
        "CREATE TABLE lf (snapshot_id BIGINT, artifact VARCHAR(16), seq INT, sha256 CHAR(64), bytes LONGBLOB, \
         PRIMARY KEY (snapshot_id, artifact, seq)) ENGINE=InnoDB;\nSTART TRANSACTION;\n",
    );
    let mut files: Vec<PathBuf> = Vec::new();
    let rows = sqlx::query("SELECT artifact, seq, sha256 FROM snapshot_chunks ORDER BY artifact, seq")
        .fetch_all(&pool)
        .await
        .expect("list chunks");
    for row in rows {
        let (artifact, seq, sha): (String, i32, String) = (row.get(0), row.get(1), row.get(2));
        let bytes: Vec<u8> = sqlx::query("SELECT bytes FROM snapshot_chunks WHERE artifact = ? AND seq = ?")
            .bind(&artifact)
            .bind(seq)
            .fetch_one(&pool)
            .await
            .expect("read a chunk")
            .get(0);
        let path = chunk_dir.join(format!("{artifact}-{seq}"));
        std::fs::write(&path, &bytes).expect("write a chunk file");
        script.push_str(&format!(
            "INSERT INTO lf VALUES (1, '{artifact}', {seq}, '{sha}', LOAD_FILE('{}'));\n",
            path.display()
        ));
        files.push(path);
    }
    script.push_str("COMMIT;\n");
    let script_path = work.path().join("load.sql");
    std::fs::write(&script_path, &script).expect("write the script");
    // Read the files once so both sides start from the page cache.
    for f in &files {
        let _ = std::fs::read(f);
    }
    let server_cpu0 = cpu_s(&mysqld_pid());
    let start = Instant::now();
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("mariadb -uroot -h127.0.0.1 -P3306 {db} < {}", script_path.display()))
        .status()
        .expect("mariadb runs");
    let lf_time = start.elapsed();
    let lf_server_cpu = cpu_s(&mysqld_pid()) - server_cpu0;
    assert!(status.success());
    let loaded: i64 =
        mariadb(Some(&db), "SELECT COALESCE(SUM(LENGTH(bytes)), 0) FROM lf").trim().parse().expect("a number");
    assert_eq!(loaded as u64, info.stored_bytes, "LOAD_FILE loaded every chunk");

    // --- second round in a fresh database, baseline after ours this time, so that
    // neither side always runs first (tablespace growth, redo log, page cache).
    let db2 = format!("{db}_2");
    mariadb(None, &format!("DROP DATABASE IF EXISTS {db2}; CREATE DATABASE {db2}"));
    let store2 = Store::connect(&url.replacen(&format!("/{db}"), &format!("/{db2}"), 1)).await.expect("connect");
    let start = Instant::now();
    camledger_backup::snapshot(&store2, &bench_key(), &data, &options, &NoProgress).await.expect("second snapshot");
    let snap_time2 = start.elapsed();
    store2.close().await;
    let start = Instant::now();
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("mariadb -uroot -h127.0.0.1 -P3306 {db2} < {}", script_path.display()))
        .status()
        .expect("mariadb runs");
    let lf_time2 = start.elapsed();
    assert!(status.success());
    // sqlx alone: the same chunk bytes from memory, one INSERT each, one transaction.
    let start_sqlx;
    let sqlx_time;
    {
        let pool2 = sqlx::mysql::MySqlPool::connect(&url.replacen(&format!("/{db}"), &format!("/{db2}"), 1))
            .await
            .expect("connect");
        sqlx::query("CREATE TABLE mem (seq INT PRIMARY KEY, sha256 CHAR(64), bytes LONGBLOB) ENGINE=InnoDB")
            .execute(&pool2)
            .await
            .expect("create");
        let chunks: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).expect("chunk file")).collect();
        start_sqlx = Instant::now();
        let mut tx = pool2.begin().await.expect("begin");
        for (seq, bytes) in chunks.iter().enumerate() {
            sqlx::query("INSERT INTO mem VALUES (?, ?, ?)")
                .bind(seq as i32)
                .bind("0".repeat(64))
                .bind(bytes.as_slice())
                .execute(&mut *tx)
                .await
                .expect("insert");
        }
        tx.commit().await.expect("commit");
        sqlx_time = start_sqlx.elapsed();
        pool2.close().await;
    }
    mariadb(None, &format!("DROP DATABASE {db2}"));

    // --- verify: fetch + check + decompress, no indexing (to see where restore time goes)
    let start = Instant::now();
    let verified = camledger_backup::verify(&store, &bench_key(), None, &NoProgress).await.expect("verify");
    let verify_time = start.elapsed();
    assert!(verified.is_clean());

    // --- restore
    let target = work.path().join("restored");
    let clock = PhaseClock::default();
    reset_peak_rss();
    let restore_anon_before = AnonSampler::now_mib();
    let anon = AnonSampler::start();
    let start = Instant::now();
    let report = camledger_backup::restore(&store, &bench_key(), &target, None, &clock).await.expect("restore");
    let total = start.elapsed();
    let restore_rss = peak_rss_mib();
    let restore_anon = anon.stop_mib();
    let proving = clock.proving_started.lock().expect("not poisoned").expect("the proof phase ran");
    let restore_time = proving.duration_since(start);
    let proof_time = total - restore_time;
    assert_eq!(report.events, events);

    // --- baseline: git index-pack of the same pack
    let pack_dir = target.join("ledger.git/objects/pack");
    let pack = std::fs::read_dir(&pack_dir)
        .expect("pack dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "pack"))
        .expect("a restored pack");
    let copy = work.path().join("baseline.pack");
    std::fs::copy(&pack, &copy).expect("copy the pack");
    let _ = std::fs::read(&copy);
    let (git_time, git_rss) = time_cmd(
        Command::new("/usr/bin/time")
            .args(["-f", "%M", "git", "index-pack", "-o"])
            .arg(work.path().join("baseline.idx"))
            .arg(&copy),
    );
    let pack_bytes = std::fs::metadata(&copy).expect("stat").len();

    let raw = info.raw_bytes;
    println!();
    println!(
        "snapshot: {} objects, raw {:.1} MB, stored {:.1} MB in {} chunks of <= 8 MiB",
        info.objects,
        raw as f64 / 1e6,
        info.stored_bytes as f64 / 1e6,
        files.len()
    );
    println!(
        "  camledger snapshot     {:>8.1?}  {:>7.1} MB/s raw   peak RSS {:.0} MiB, anon {:.0} -> peak {:.0} MiB",
        snap_time,
        mb_s(raw, snap_time),
        snap_rss,
        snap_anon_before,
        snap_anon
    );
    println!(
        "  mariadb LOAD_FILE()    {:>8.1?}  {:>7.1} MB/s        (same chunk files, one transaction)",
        lf_time,
        mb_s(info.stored_bytes, lf_time)
    );
    println!("  CPU seconds            ours: client {snap_client_cpu:.2} + mariadbd {snap_server_cpu:.2}; LOAD_FILE: mariadbd {lf_server_cpu:.2}");
    println!(
        "  camledger snapshot #2  {:>8.1?}  {:>7.1} MB/s raw   (fresh database, before the baseline)",
        snap_time2,
        mb_s(raw, snap_time2)
    );
    println!("  mariadb LOAD_FILE() #2 {:>8.1?}  {:>7.1} MB/s", lf_time2, mb_s(info.stored_bytes, lf_time2));
    println!(
        "  sqlx INSERT only       {:>8.1?}  {:>7.1} MB/s        (same chunks from memory, no packing)",
        sqlx_time,
        mb_s(info.stored_bytes, sqlx_time)
    );
    println!(
        "  ratio (ours/baseline)  {:.2}  (sum of both rounds)",
        (lf_time + lf_time2).as_secs_f64() / (snap_time + snap_time2).as_secs_f64()
    );
    println!("restore: {} events, chain {:?}", report.events, report.chain);
    println!("  camledger restore      {:>8.1?}  {:>7.1} MB/s pack  peak RSS {:.0} MiB, anon {:.0} -> peak {:.0} MiB (fetch, check, decompress, index)",
        restore_time, mb_s(pack_bytes, restore_time), restore_rss, restore_anon_before, restore_anon);
    println!("  proofs (fsck, verify)  {:>8.1?}", proof_time);
    println!(
        "  (snapshots verify: fetch, check, decompress without indexing: {:.1?}, {:.1} MB/s)",
        verify_time,
        mb_s(info.stored_bytes, verify_time)
    );
    println!(
        "  git index-pack         {:>8.1?}  {:>7.1} MB/s pack  peak RSS {:.0} MiB",
        git_time,
        mb_s(pack_bytes, git_time),
        git_rss
    );
    println!("  ratio (ours/baseline)  {:.2}", git_time.as_secs_f64() / restore_time.as_secs_f64());

    store.close().await;
    pool.close().await;
    mariadb(None, &format!("DROP DATABASE {db}"));
}

/// A fixed key: this example measures throughput, not key handling.
fn bench_key() -> camledger_backup::BackupKey {
    camledger_backup::BackupKey::from_bytes(vec![0x42; 32]).expect("32 bytes is long enough")
}
