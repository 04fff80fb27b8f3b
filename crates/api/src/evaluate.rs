//! `camledger evaluate`: judge a folder of an operator's labelled images exactly as the
//! service would, and report false positives, recall, the classifier's score distribution and
//! the threshold that meets a target false-positive rate.
//!
//! "Exactly as the service would": each file goes through upload admission
//! (`admission::admit`, the service's default limits), then, in the labels file's order as
//! events 1, 2, 3 … of one camera (`evaluate`) received at one moment, through the worker's
//! own judging functions (`judge::analyse`, `judge::judge_in_order`,
//! `judge::judge_undecodable`) with the same options (`--model`, `--spam-threshold`,
//! near-duplicate options); exact duplicates are found by SHA-256 as at ingest. A file the
//! service would refuse at upload is reported as refused, not judged.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use camledger_processor::admission::{admit, Limits};
use camledger_processor::classifier::Classifier;
use camledger_processor::judge::{self, analyse, AnalyseError, EventFacts, History};
use camledger_processor::verdict::CLASSIFIER;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::{parse_rate, JudgeArgs, OutputFormat};

/// A command line that parsed but whose input is unusable (a malformed labels file): the
/// binary exits 2, as for a usage error, before anything is judged.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// `camledger evaluate`.
#[derive(Debug, Clone, clap::Args)]
pub struct EvaluateArgs {
    /// CSV of `file,label` rows (label `ham` or `spam`; `file` relative to DIR; an optional
    /// `file,label` header; blank lines ignored).
    #[arg(long, env = "CAMLEDGER_LABELS")]
    pub labels: PathBuf,
    /// Folder holding the labelled images.
    pub dir: PathBuf,
    #[command(flatten)]
    pub judge: JudgeArgs,
    /// False-positive rate the suggested threshold must meet (ham flagged / ham).
    #[arg(long, env = "CAMLEDGER_TARGET_FPR", default_value_t = 0.01, value_parser = parse_rate)]
    pub target_fpr: f64,
    #[arg(long, env = "CAMLEDGER_FORMAT", value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
}

/// What an operator says an image is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Label {
    Ham,
    Spam,
}

/// One labelled file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labelled {
    pub file: String,
    pub label: Label,
}

/// Parses a labels file (see [`EvaluateArgs::labels`]); every problem names its line.
pub fn parse_labels(text: &str) -> Result<Vec<Labelled>, UsageError> {
    let mut rows = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if n == 1
            && fields.len() == 2
            && fields[0].eq_ignore_ascii_case("file")
            && fields[1].eq_ignore_ascii_case("label")
        {
            continue;
        }
        let [file, label] = fields[..] else {
            return Err(UsageError(format!(
                "line {n}: expected `file,label`, found {} field(s): {line:?}",
                fields.len()
            )));
        };
        if file.is_empty() {
            return Err(UsageError(format!("line {n}: the file name is empty")));
        }
        let label = match label.to_ascii_lowercase().as_str() {
            "ham" => Label::Ham,
            "spam" => Label::Spam,
            _ => return Err(UsageError(format!("line {n}: unknown label {label:?} (use ham or spam)"))),
        };
        if let Some(first) = seen.insert(file.to_owned(), n) {
            return Err(UsageError(format!("line {n}: {file} is already labelled on line {first}")));
        }
        rows.push(Labelled { file: file.to_owned(), label });
    }
    if rows.is_empty() {
        return Err(UsageError("no labelled files".into()));
    }
    Ok(rows)
}

/// One judged (or refused) file.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub file: String,
    pub label: Label,
    /// The service's verdict; `true` for a refused upload.
    pub spam: bool,
    /// The verdict's reasons, or `["refused"]`.
    pub reasons: Vec<String>,
    pub scores: BTreeMap<String, f64>,
    /// The model's top label, `null` when the classifier did not run.
    pub top_label: Option<String>,
    /// Why the upload was refused (`null` when admitted).
    pub refused: Option<String>,
}

/// Five-number summary and histogram of classifier scores.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Distribution {
    pub count: usize,
    pub min: Option<f64>,
    pub p10: Option<f64>,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
    /// Counts in ten bins `[0, 0.1)`, … `[0.9, 1.0]`.
    pub histogram: [usize; 10],
}

impl Distribution {
    fn of(mut scores: Vec<f64>) -> Self {
        scores.sort_by(f64::total_cmp);
        let at = |q: f64| -> Option<f64> {
            let last = scores.len().checked_sub(1)?;
            Some(scores[((last as f64) * q).round() as usize])
        };
        let mut histogram = [0; 10];
        for s in &scores {
            histogram[((s * 10.0).floor() as usize).min(9)] += 1;
        }
        Self {
            count: scores.len(),
            min: scores.first().copied(),
            p10: at(0.1),
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            max: scores.last().copied(),
            histogram,
        }
    }
}

/// Counts and rates at one threshold.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Rates {
    pub threshold: f64,
    /// Ham flagged (refused ham included).
    pub false_positives: usize,
    pub false_positive_rate: f64,
    /// Spam flagged (refused spam included).
    pub caught: usize,
    pub recall: f64,
}

/// The whole report (`--format json` prints it as is).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub model: String,
    pub model_sha256: String,
    pub ham: usize,
    pub spam: usize,
    /// The service's outcome at the threshold in force.
    pub at_threshold: Rates,
    /// Files of each outcome.
    pub false_positive_files: Vec<String>,
    pub missed_spam_files: Vec<String>,
    /// How many flagged files each reason flagged, per label.
    pub reasons: BTreeMap<String, BTreeMap<String, usize>>,
    /// Classifier scores of the judged files, per label.
    pub scores: BTreeMap<String, Distribution>,
    pub target_false_positive_rate: f64,
    /// The lowest threshold (in millionths, as verdicts record it) at which the false-positive
    /// rate is at most the target, with its rates; `null` when no threshold can (ham flagged
    /// for other reasons alone exceed the target, or no ham is labelled).
    pub suggested: Option<Rates>,
    pub files: Vec<Row>,
}

/// Whether a row is flagged at classifier threshold `t`: its other reasons, or its classifier
/// score at or above `t`.
fn flagged_at(row: &Row, t: f64) -> bool {
    let others = row.reasons.iter().any(|r| r != CLASSIFIER);
    others || row.scores.get(CLASSIFIER).is_some_and(|s| *s >= t)
}

fn rates(rows: &[Row], t: f64, flagged: impl Fn(&Row) -> bool) -> Rates {
    let count = |label| rows.iter().filter(|r| r.label == label).count();
    let hit = |label| rows.iter().filter(|r| r.label == label && flagged(r)).count();
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let (fp, caught) = (hit(Label::Ham), hit(Label::Spam));
    Rates {
        threshold: t,
        false_positives: fp,
        false_positive_rate: ratio(fp, count(Label::Ham)),
        caught,
        recall: ratio(caught, count(Label::Spam)),
    }
}

/// The lowest threshold in millionths with at most `target` of the ham flagged.
fn suggest(rows: &[Row], target: f64) -> Option<Rates> {
    let ham: Vec<&Row> = rows.iter().filter(|r| r.label == Label::Ham).collect();
    if ham.is_empty() {
        return None;
    }
    let allowed = (target * ham.len() as f64 + 1e-9).floor() as usize;
    let fixed = ham.iter().filter(|r| flagged_at(r, f64::INFINITY)).count();
    let mut free: Vec<f64> = ham
        .iter()
        .filter(|r| !flagged_at(r, f64::INFINITY))
        .filter_map(|r| r.scores.get(CLASSIFIER).copied())
        .collect();
    free.sort_by(|a, b| b.total_cmp(a));
    let budget = allowed.checked_sub(fixed)?;
    // Flag at most `budget` of the remaining ham: the threshold must lie above the next one.
    let t = match free.get(budget) {
        Some(score) => (((score * 1e6).floor() + 1.0) / 1e6).min(1.0),
        None => 1e-6,
    };
    let result = rates(rows, t, |r| flagged_at(r, t));
    (result.false_positive_rate <= target + 1e-12).then_some(result)
}

/// Judges every labelled file (blocking: run off the async runtime).
pub fn evaluate(
    labels: &[Labelled],
    dir: &Path,
    config: &judge::Config,
    classifier: &mut Classifier,
    target: f64,
    mut progress: impl FnMut(u64, u64),
) -> anyhow::Result<Report> {
    let mut history = History::new(config);
    let mut first_of: HashMap<[u8; 32], u64> = HashMap::new();
    let mut rows = Vec::with_capacity(labels.len());
    let mut seq = 0u64;
    for (i, item) in labels.iter().enumerate() {
        let path = dir.join(&item.file);
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let mut row = Row {
            file: item.file.clone(),
            label: item.label,
            spam: true,
            reasons: vec!["refused".to_owned()],
            scores: BTreeMap::new(),
            top_label: None,
            refused: None,
        };
        match admit(&bytes, &Limits::default()) {
            Err(refusal) => row.refused = Some(refusal.to_string()),
            Ok(_) => {
                seq += 1;
                let digest: [u8; 32] = Sha256::digest(&bytes).into();
                let duplicate_of = first_of.get(&digest).copied();
                first_of.entry(digest).or_insert(seq);
                let facts = EventFacts { seq, camera: "evaluate", received_at: 0, duplicate_of };
                let verdict = match analyse(&bytes, config, Some(&mut *classifier)) {
                    Ok(analysis) => {
                        row.top_label = analysis.classification.as_ref().map(|c| c.top_label.clone());
                        judge::judge_in_order(&mut history, &facts, &analysis, config)?
                    }
                    Err(AnalyseError::Decode(_)) => judge::judge_undecodable(config),
                    Err(AnalyseError::Classify(e)) => {
                        return Err(e).with_context(|| format!("classifying {}", path.display()))
                    }
                };
                row.spam = verdict.spam;
                row.reasons = verdict.reasons.iter().map(|r| (*r).to_owned()).collect();
                row.scores = verdict.scores;
            }
        }
        rows.push(row);
        progress(i as u64 + 1, labels.len() as u64);
    }
    let model = classifier.model();
    let threshold = config.thresholds.classifier;
    let mut reasons: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    let mut scores: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for row in &rows {
        let label = if row.label == Label::Ham { "ham" } else { "spam" };
        for reason in row.reasons.iter().filter(|_| row.spam) {
            *reasons.entry(label.to_owned()).or_default().entry(reason.clone()).or_default() += 1;
        }
        if let Some(s) = row.scores.get(CLASSIFIER) {
            scores.entry(label.to_owned()).or_default().push(*s);
        }
    }
    let files = |keep: &dyn Fn(&Row) -> bool| rows.iter().filter(|r| keep(r)).map(|r| r.file.clone()).collect();
    Ok(Report {
        model: format!("{} {}", model.manifest().name, model.manifest().version),
        model_sha256: model.sha256().to_ascii_lowercase(),
        ham: rows.iter().filter(|r| r.label == Label::Ham).count(),
        spam: rows.iter().filter(|r| r.label == Label::Spam).count(),
        at_threshold: rates(&rows, threshold, |r| r.spam),
        false_positive_files: files(&|r| r.label == Label::Ham && r.spam),
        missed_spam_files: files(&|r| r.label == Label::Spam && !r.spam),
        reasons,
        scores: ["ham", "spam"]
            .into_iter()
            .map(|l| (l.to_owned(), Distribution::of(scores.remove(l).unwrap_or_default())))
            .collect(),
        target_false_positive_rate: target,
        suggested: suggest(&rows, target),
        files: rows,
    })
}

/// `camledger evaluate`.
pub async fn run(args: EvaluateArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.labels)
        .with_context(|| format!("reading the labels file {}", args.labels.display()))?;
    let labels = parse_labels(&text).map_err(|e| UsageError(format!("{}: {}", args.labels.display(), e.0)))?;
    if let Some(missing) = labels.iter().find(|l| !args.dir.join(&l.file).is_file()) {
        return Err(UsageError(format!(
            "{}: {} is not a file in {}",
            args.labels.display(),
            missing.file,
            args.dir.display()
        ))
        .into());
    }
    let model = Arc::new(args.judge.model()?);
    let runtime = args.judge.runtime()?;
    let mut classifier = Classifier::new(&runtime, Arc::clone(&model)).context("creating an ONNX session")?;
    let config = args.judge.config(&model);
    let (target, dir) = (args.target_fpr, args.dir.clone());
    let report = tokio::task::spawn_blocking(move || {
        let progress = crate::progress::Bar::new("judging images");
        let report = evaluate(&labels, &dir, &config, &mut classifier, target, |d, t| progress.update(d, t));
        progress.finish();
        report
    })
    .await
    .context("the evaluation panicked")??;
    let mut out = std::io::stdout().lock();
    match args.format {
        OutputFormat::Json => {
            serde_json::to_writer_pretty(&mut out, &report)?;
            writeln!(out)?;
        }
        OutputFormat::Text => write_text(&mut out, &report)?,
    }
    Ok(())
}

fn percent(rate: f64) -> String {
    format!("{:.2}%", rate * 100.0)
}

fn opt(value: Option<f64>) -> String {
    value.map_or("-".to_owned(), |v| format!("{v:.4}"))
}

fn write_text(out: &mut impl Write, r: &Report) -> std::io::Result<()> {
    let at = &r.at_threshold;
    writeln!(
        out,
        "model {} ({}), spam threshold {}",
        r.model,
        &r.model_sha256[..12.min(r.model_sha256.len())],
        at.threshold
    )?;
    writeln!(out, "{} images: {} ham, {} spam", r.ham + r.spam, r.ham, r.spam)?;
    writeln!(out, "false positives: {} of {} ham ({})", at.false_positives, r.ham, percent(at.false_positive_rate))?;
    let describe = |row: &Row| {
        let score = row.scores.get(CLASSIFIER).map_or(String::new(), |s| format!(" classifier {s:.4}"));
        let top = row.top_label.as_ref().map_or(String::new(), |t| format!(" top {t}"));
        let refused = row.refused.as_ref().map_or(String::new(), |why| format!(" ({why})"));
        format!("{} [{}]{score}{top}{refused}", row.file, row.reasons.join(","))
    };
    for row in r.files.iter().filter(|row| row.label == Label::Ham && row.spam) {
        writeln!(out, "  flagged {}", describe(row))?;
    }
    writeln!(out, "recall: {} of {} spam ({})", at.caught, r.spam, percent(at.recall))?;
    for row in r.files.iter().filter(|row| row.label == Label::Spam && !row.spam) {
        writeln!(out, "  missed  {}", describe(row))?;
    }
    writeln!(out, "classifier scores  count  min     p10     p50     p90     p99     max     histogram (tenths)")?;
    for (label, d) in &r.scores {
        let histogram: Vec<String> = d.histogram.iter().map(ToString::to_string).collect();
        writeln!(
            out,
            "  {label:<16} {:>5}  {}  {}  {}  {}  {}  {}  {}",
            d.count,
            opt(d.min),
            opt(d.p10),
            opt(d.p50),
            opt(d.p90),
            opt(d.p99),
            opt(d.max),
            histogram.join(" ")
        )?;
    }
    match &r.suggested {
        Some(s) => writeln!(
            out,
            "threshold for at most {} false positives: {} (false positives {}, recall {}); use --spam-threshold {}",
            percent(r.target_false_positive_rate),
            s.threshold,
            percent(s.false_positive_rate),
            percent(s.recall),
            s.threshold
        ),
        None => writeln!(
            out,
            "no threshold keeps false positives at or below {}: ham flagged for other reasons (duplicates, \
             near-duplicates, blank frames, refused uploads) already exceed it",
            percent(r.target_false_positive_rate)
        ),
    }
}

#[cfg(test)]
mod tests;
