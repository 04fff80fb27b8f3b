//! `camledger verify`: checks everything an auditor relies on (the rules live in
//! `camledger_eventstore::verify`), with the allowed-signers file and the camera registry.
//!
//! Exit status 0 when the ledger verifies, 1 at the first failure, which is named on stderr as
//! `verify: FAILED <chain> seq <seq> commit <id>: rule <code>: <detail>` (or as one JSON
//! object on stdout with `--format json`).

use std::path::{Path, PathBuf};

use anyhow::Context;
use camledger_backup::anchor::AnchorError;
use camledger_eventstore::checkpoint::{AnchoredError, Mismatch};
use camledger_eventstore::sign::AllowedSigners;
use camledger_eventstore::verify::{CameraRegistry, Chain, Error as Failure, Rule, VerifyOptions, VerifyReport};

use crate::config::{DataDirArg, OutputFormat};

/// The flags of `camledger verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub data: DataDirArg,
    /// Allowed-signers file (as `GET /v1/keys` returns it, or `camledger keys show` prints
    /// it): every commit must be signed by a key valid at its committer time. Take it from a
    /// channel the server does not control; without it signatures are not checked.
    #[arg(long, env = "CAMLEDGER_ALLOWED_SIGNERS")]
    pub allowed_signers: Option<PathBuf>,
    /// Anchor store holding the ledger's signed checkpoints (mysql://… or sqlite://PATH, kept
    /// where the data dir's writers cannot reach): every checkpoint's signature, its heads on
    /// the chains at their seqs, and the ledger not behind the latest. Only checkpoints tell
    /// a rollback, or a ledger rewritten with the real key, from the real ledger.
    #[arg(long, env = "CAMLEDGER_ANCHOR_URL", hide_env_values = true)]
    pub anchor_url: Option<String>,
    /// Output format: text (failure on stderr) or one JSON object on stdout.
    #[arg(long, env = "CAMLEDGER_FORMAT", value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
}

/// Runs `camledger verify`.
pub async fn run(args: VerifyArgs) -> anyhow::Result<()> {
    let allowed_signers = match &args.allowed_signers {
        Some(path) => Some(read_allowed_signers(path)?),
        None => None,
    };
    let cameras = read_cameras(&args.data.data_dir).await?;
    let anchor_signers = match (&args.anchor_url, &allowed_signers) {
        (None, _) => None,
        (Some(_), Some(signers)) => Some(signers.clone()),
        (Some(_), None) => {
            tracing::warn!(
                "checking the checkpoints' signatures against the data dir's key history; give --allowed-signers \
                 with the keys you trust"
            );
            Some(crate::keys::read_history(&args.data.data_dir)?)
        }
    };
    let options = VerifyOptions { allowed_signers, cameras };
    let format = args.format;
    let data = args.data;
    let (ledger, outcome, seconds) = tokio::task::spawn_blocking(move || {
        let ledger = crate::datadir::open_ledger(&data)?;
        let progress = crate::progress::Bar::new("verifying");
        let started = std::time::Instant::now();
        let outcome = ledger.verify_with(&options, |done, total| progress.update(done, total));
        progress.finish();
        anyhow::Ok((ledger, outcome, started.elapsed().as_secs_f64()))
    })
    .await
    .context("the verify task panicked")??;
    let mut checkpoints = None;
    let outcome = match (outcome, &args.anchor_url, anchor_signers) {
        (Ok(report), Some(url), Some(signers)) => match verify_anchors(url, &ledger, &report, &signers).await? {
            Ok(count) => {
                checkpoints = Some(count);
                Ok(report)
            }
            Err(failure) => Err(failure),
        },
        (outcome, _, _) => outcome,
    };
    match format {
        OutputFormat::Json => println!("{}", json(&outcome, checkpoints)),
        OutputFormat::Text => match &outcome {
            Ok(report) => println!("{}", text(report, checkpoints, seconds)),
            Err(failure) => eprintln!("verify: {failure}"),
        },
    }
    match outcome {
        Ok(_) => Ok(()),
        Err(failure) => Err(anyhow::anyhow!("the ledger failed verification (rule {})", failure.rule())),
    }
}

/// The anchored-checkpoint rules (`camledger_eventstore::checkpoint::verify_anchored`) for the
/// origin of the verified ledger. The outer error is operational (the store cannot be read);
/// the inner one a verification failure. Returns the number of checkpoints checked.
async fn verify_anchors(
    url: &str,
    ledger: &camledger_eventstore::Ledger,
    report: &VerifyReport,
    signers: &AllowedSigners,
) -> anyhow::Result<Result<usize, Failure>> {
    let store = crate::anchors::connect(url).await?;
    let origin = report.node.as_ref().map(|node| format!("camledger/{node}"));
    let checked = camledger_backup::anchor::verify_ledger(&store, ledger, signers, origin.as_deref()).await;
    let origins = store.origins().await;
    store.close().await;
    let anchors =
        |seq: u64, id: String, rule: Rule, what: String| Failure::Broken { chain: Chain::Anchors, seq, id, rule, what };
    match checked {
        Ok(anchored) if anchored.checkpoints > 0 => Ok(Ok(anchored.checkpoints)),
        Ok(_) => {
            // No checkpoint of this origin: fine for a store that holds none at all, but a
            // ledger regenerated under another node name must not pass for lack of checkpoints.
            let origins = origins.context("listing the anchor store's origins")?;
            match (origin, origins.is_empty()) {
                (_, true) => Ok(Ok(0)),
                (origin, false) => Ok(Err(anchors(
                    0,
                    String::new(),
                    Rule::Checkpoint,
                    format!(
                        "the anchor store holds checkpoints of {} but none of this ledger ({})",
                        origins.join(", "),
                        origin.as_deref().unwrap_or("an empty ledger")
                    ),
                ))),
            }
        }
        Err(AnchorError::Anchored(error)) => {
            let what = error.to_string();
            Ok(Err(match &error {
                AnchoredError::Ledger { events_seq, source, .. } => match source.as_ref() {
                    Mismatch::Behind { checkpoint_head, .. } => {
                        anchors(*events_seq, checkpoint_head.clone(), Rule::Rollback, what)
                    }
                    Mismatch::NotOnChain { found, .. } => anchors(*events_seq, found.clone(), Rule::Rewritten, what),
                    _ => anchors(*events_seq, String::new(), Rule::Checkpoint, what),
                },
                _ => anchors(0, String::new(), Rule::Checkpoint, what),
            }))
        }
        Err(error @ AnchorError::Tampered { .. }) => {
            Ok(Err(anchors(0, String::new(), Rule::Checkpoint, error.to_string())))
        }
        Err(error) => Err(anyhow::Error::new(error).context("checking the anchored checkpoints")),
    }
}

fn read_allowed_signers(path: &Path) -> anyhow::Result<AllowedSigners> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading --allowed-signers {}", path.display()))?;
    let signers = AllowedSigners::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    anyhow::ensure!(!signers.signers.is_empty(), "{} names no key for namespace git", path.display());
    Ok(signers)
}

/// The registry's cameras, when the data dir has a registry.
async fn read_cameras(data_dir: &Path) -> anyhow::Result<Option<CameraRegistry>> {
    if !data_dir.join(crate::registry::REGISTRY_FILE).exists() {
        return Ok(None);
    }
    let registry = crate::registry::Registry::open(data_dir).await.context("opening the camera registry")?;
    let listed = registry.list_cameras().await.context("listing the cameras");
    registry.close().await;
    let mut cameras = CameraRegistry::default();
    for camera in listed? {
        let revoked_at = match &camera.revoked_at {
            Some(at) => Some(
                time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
                    .with_context(|| format!("camera {}: revoked_at {at:?} is not RFC 3339", camera.id))?,
            ),
            None => None,
        };
        cameras.insert(&camera.id, revoked_at);
    }
    Ok(Some(cameras))
}

fn text(report: &VerifyReport, checkpoints: Option<usize>, seconds: f64) -> String {
    let head = match &report.head {
        Some(head) => format!("head seq {} commit {}", head.seq, head.id),
        None => "an empty ledger (no events yet)".to_owned(),
    };
    let anchored = checkpoints.map_or(String::new(), |n| format!(", {n} anchored checkpoints held"));
    format!(
        "verified {} events ({} duplicates, {} image bytes hashed), {} verdicts, notes through event {}, \
         {} objects re-hashed, {} signatures checked, {} camera actions{anchored} in {seconds:.1} s; {head}",
        report.events,
        report.duplicates,
        report.image_bytes,
        report.verdicts,
        report.notes_through,
        report.objects,
        report.signatures,
        report.camera_actions
    )
}

fn json(outcome: &Result<VerifyReport, Failure>, checkpoints: Option<usize>) -> serde_json::Value {
    match outcome {
        Ok(report) => serde_json::json!({
            "ok": true,
            "counts": {
                "events": report.events,
                "duplicates": report.duplicates,
                "image_bytes": report.image_bytes,
                "verdicts": report.verdicts,
                "notes_through": report.notes_through,
                "objects": report.objects,
                "signatures": report.signatures,
                "camera_actions": report.camera_actions,
                "checkpoints": checkpoints,
            },
            "head": report.head.as_ref().map(|h| serde_json::json!({ "seq": h.seq, "id": h.id })),
            "verdict_head": report.verdict_head.as_ref().map(|h| serde_json::json!({ "event_seq": h.event_seq, "id": h.id })),
            "failure": null,
        }),
        Err(failure) => serde_json::json!({
            "ok": false,
            "counts": null,
            "failure": {
                "chain": failure.chain().as_str(),
                "seq": failure.seq(),
                "commit": failure.commit(),
                "rule": failure.rule().as_str(),
                "detail": failure.detail(),
            },
        }),
    }
}
