//! Collecting the next training round's images: frames the model was unsure about, frames
//! where the announced label changed, frames it rejected as unknown, one every N seconds,
//! and whatever the capture button or `POST /v1/capture` asks for.
//!
//! Each frame goes to `DIR/<guess>/<millis>-<seq>.jpg` (the guess: the frame's top-1 label,
//! or `unknown`) with a JSON sidecar `<millis>-<seq>.json` (probabilities, model, time,
//! policy). JPEG encoding and disk writes happen on a writer thread, never on the frame
//! thread: the loop only decides and hands the frame over, and drops it (counted) when the
//! writer is behind. Per-folder caps and a disk budget drop the oldest images first.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::hub::Captured;
use crate::postprocess::Ranked;
use crate::preprocess::RgbImage;
use crate::service::confined;

/// Why a frame was saved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Top-1 probability below `collect.below`.
    LowConfidence,
    /// The announced label changed on this frame.
    LabelChange,
    /// The model's unknown rule rejected the frame.
    Unknown,
    /// One frame every `collect.every_s` seconds.
    EveryS,
    /// The capture button or `POST /v1/capture` (always on with a capture folder).
    Button,
}

impl Policy {
    /// The name used in the config, sidecars and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Policy::LowConfidence => "low_confidence",
            Policy::LabelChange => "label_change",
            Policy::Unknown => "unknown",
            Policy::EveryS => "every_s",
            Policy::Button => "button",
        }
    }

    /// The policies a config can turn on, for messages.
    pub const CONFIGURABLE: &'static str = "low_confidence, label_change, unknown, every_s";
}

impl std::str::FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> Result<Policy, String> {
        match s.trim() {
            "low_confidence" => Ok(Policy::LowConfidence),
            "label_change" => Ok(Policy::LabelChange),
            "unknown" => Ok(Policy::Unknown),
            "every_s" => Ok(Policy::EveryS),
            other => Err(format!(
                "'{other}' is not a collect policy (one of {})",
                Policy::CONFIGURABLE
            )),
        }
    }
}

/// `[collect]` in `edge.toml`: which frames are saved into `capture_dir`, and how much.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CollectSection {
    /// Policies that save frames by themselves: low_confidence, label_change, unknown,
    /// every_s (the capture button always works when `capture_dir` is set).
    pub policies: Vec<Policy>,
    /// `low_confidence`: save frames whose top-1 probability is below this.
    pub below: f32,
    /// `every_s`: seconds between two saved frames.
    pub every_s: f64,
    /// Per policy, at least this many seconds between two saved frames (a camera at
    /// 30 fps that stares at something new would otherwise fill the disk in minutes).
    pub min_gap_s: f64,
    /// Most images per folder (label); the oldest of that folder go first.
    pub per_label: usize,
    /// Disk budget of the whole capture folder, MiB; the oldest images go first.
    pub max_mb: u64,
}

impl Default for CollectSection {
    fn default() -> Self {
        CollectSection {
            policies: Vec::new(),
            below: 0.5,
            every_s: 60.0,
            min_gap_s: 2.0,
            per_label: 500,
            max_mb: 1024,
        }
    }
}

impl CollectSection {
    /// The first unusable key and why.
    pub fn validate(&self, capture_dir: Option<&PathBuf>) -> Result<(), (&'static str, String)> {
        if self.policies.contains(&Policy::Button) {
            return Err((
                "collect.policies",
                format!(
                    "'button' is not a policy to turn on (the capture button always saves); use {}",
                    Policy::CONFIGURABLE
                ),
            ));
        }
        if !self.policies.is_empty() && capture_dir.is_none() {
            return Err((
                "collect.policies",
                "needs `capture_dir` (where the frames go)".into(),
            ));
        }
        if !(self.below > 0.0 && self.below <= 1.0) {
            return Err(("collect.below", format!("{} is not in (0, 1]", self.below)));
        }
        if self.every_s.is_nan() || self.every_s <= 0.0 {
            return Err(("collect.every_s", "must be above 0".into()));
        }
        if self.min_gap_s.is_nan() || self.min_gap_s < 0.0 {
            return Err(("collect.min_gap_s", "must be 0 or more".into()));
        }
        if self.per_label == 0 {
            return Err(("collect.per_label", "must be at least 1".into()));
        }
        if self.max_mb == 0 {
            return Err(("collect.max_mb", "must be at least 1".into()));
        }
        Ok(())
    }
}

/// What the loop knows about a frame when it decides whether to save it.
#[derive(Debug, Clone, Copy)]
pub struct FrameFacts {
    /// The frame's top-1 probability.
    pub top1: f32,
    /// Rejected by the unknown rule.
    pub unknown: bool,
    /// The announced label changed on this frame.
    pub label_changed: bool,
}

/// The JSON sidecar beside each saved JPEG.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Sidecar {
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// The frame's sequence number.
    pub seq: u64,
    /// Why it was saved.
    pub policy: Policy,
    /// The model's guess: the frame's top-1 label, or `unknown`.
    pub guess: String,
    /// The announced (smoothed) label at that frame.
    pub announced: Option<String>,
    /// Whether the unknown rule rejected it (absent without a rule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unknown: Option<bool>,
    /// The rule's score (absent without a rule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unknown_score: Option<f32>,
    /// Best labels first.
    pub top: Vec<Ranked>,
    /// Every class's probability, in the card's label order.
    pub probs: Vec<f32>,
    /// The model: its card's name.
    pub model: String,
    /// sha256 of the model file.
    pub model_sha256: String,
    /// The engine that ran it.
    pub engine: String,
    /// The label a person confirmed (the page's "confirm as"); none: only the guess.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmed: Option<String>,
}

/// A frame handed to the writer.
struct Job {
    image: RgbImage,
    sidecar: Sidecar,
    reply: Option<crossbeam_channel::Sender<Result<Captured, String>>>,
}

/// One saved image in the index.
#[derive(Debug, Clone)]
struct Entry {
    folder: String,
    name: String,
    bytes: u64,
}

/// Counters, for `/metrics` and `/v1/status`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CollectStats {
    /// Frames saved since start, per policy.
    pub saved: BTreeMap<String, u64>,
    /// Frames a policy wanted but the writer was behind on (dropped, not saved).
    pub skipped: u64,
    /// Images deleted to keep a folder cap or the disk budget.
    pub evicted: u64,
    /// Failed writes.
    pub errors: u64,
    /// Images in the folder now.
    pub files: usize,
    /// Bytes in the folder now (JPEGs and sidecars).
    pub bytes: u64,
    /// Images per folder now.
    pub folders: BTreeMap<String, usize>,
}

/// What the writer and the readers share.
#[derive(Debug, Default)]
struct Shared {
    /// Oldest first: (millis, seq) → entry.
    index: BTreeMap<(u64, u64), Entry>,
    stats: CollectStats,
}

impl Shared {
    fn refresh_totals(&mut self) {
        self.stats.files = self.index.len();
        self.stats.bytes = self.index.values().map(|e| e.bytes).sum();
        let mut folders = BTreeMap::new();
        for e in self.index.values() {
            *folders.entry(e.folder.clone()).or_insert(0) += 1;
        }
        self.stats.folders = folders;
    }
}

/// One listed capture (`GET /v1/captures`).
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    /// `folder/name.jpg`, relative to the capture folder.
    pub path: String,
    /// The folder: the guess.
    pub folder: String,
    /// JPEG and sidecar bytes.
    pub bytes: u64,
    /// When (Unix milliseconds).
    pub time_ms: u64,
    /// Why (absent when the sidecar is missing or unreadable).
    pub policy: Option<Policy>,
    /// The frame's top-1.
    pub top1: Option<Ranked>,
    /// The confirmed label, if a person gave one.
    pub confirmed: Option<String>,
}

/// The collector: decides on the frame thread, writes on its own thread.
pub struct Collector {
    dir: PathBuf,
    config: CollectSection,
    shared: Arc<Mutex<Shared>>,
    jobs: Mutex<Option<crossbeam_channel::Sender<Job>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    last: Mutex<HashMap<Policy, Instant>>,
}

/// How many frames may wait for the writer before new ones are dropped.
const QUEUE: usize = 4;

impl Collector {
    /// Open (and index) `dir`, and start the writer thread.
    pub fn start(dir: &Path, config: CollectSection) -> std::io::Result<Arc<Collector>> {
        std::fs::create_dir_all(dir)?;
        let mut shared = Shared {
            index: scan(dir)?,
            ..Shared::default()
        };
        shared.refresh_totals();
        let shared = Arc::new(Mutex::new(shared));
        let (tx, rx) = crossbeam_channel::bounded::<Job>(QUEUE);
        let writer = {
            let (dir, shared, config) = (dir.to_path_buf(), shared.clone(), config.clone());
            std::thread::Builder::new()
                .name("scion-collect".into())
                .spawn(move || {
                    for job in rx {
                        write_job(&dir, &config, &shared, job);
                    }
                })?
        };
        Ok(Arc::new(Collector {
            dir: dir.to_path_buf(),
            config,
            shared,
            jobs: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
            last: Mutex::new(HashMap::new()),
        }))
    }

    /// The capture folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The settings.
    pub fn config(&self) -> &CollectSection {
        &self.config
    }

    /// Which policy (if any) wants this frame saved now. Cheap: the frame thread asks.
    pub fn due(&self, facts: FrameFacts, now: Instant) -> Option<Policy> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let gap = Duration::from_secs_f64(self.config.min_gap_s);
        for &policy in &self.config.policies {
            let wants = match policy {
                Policy::LowConfidence => !facts.unknown && facts.top1 < self.config.below,
                Policy::LabelChange => facts.label_changed,
                Policy::Unknown => facts.unknown,
                Policy::EveryS => true,
                Policy::Button => false,
            };
            let wait = if policy == Policy::EveryS {
                Duration::from_secs_f64(self.config.every_s)
            } else {
                gap
            };
            let rested = last
                .get(&policy)
                .is_none_or(|t| now.duration_since(*t) >= wait);
            if wants && rested {
                last.insert(policy, now);
                return Some(policy);
            }
        }
        None
    }

    /// Hand a frame to the writer. A full queue drops it (counted), unless a person asked
    /// (`reply`), who is told.
    pub fn submit(
        &self,
        image: RgbImage,
        sidecar: Sidecar,
        reply: Option<crossbeam_channel::Sender<Result<Captured, String>>>,
    ) {
        let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        let Some(jobs) = jobs.as_ref() else {
            if let Some(reply) = reply {
                let _ = reply.send(Err("the collector has stopped".into()));
            }
            return;
        };
        if let Err(e) = jobs.try_send(Job {
            image,
            sidecar,
            reply,
        }) {
            self.lock().stats.skipped += 1;
            if let Some(reply) = e.into_inner().reply {
                let _ = reply.send(Err("the capture writer is busy; try again".into()));
            }
        }
    }

    /// Write what is queued and stop the writer.
    pub fn finish(&self) {
        drop(self.jobs.lock().unwrap_or_else(|p| p.into_inner()).take());
        if let Some(writer) = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = writer.join();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The counters now.
    pub fn stats(&self) -> CollectStats {
        self.lock().stats.clone()
    }

    /// Prometheus lines (appended to `/metrics`).
    pub fn render_metrics(&self) -> String {
        let stats = self.stats();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP scion_collect_saved_total Frames saved for the next training round, by policy.\n# TYPE scion_collect_saved_total counter"
        );
        for policy in [
            Policy::LowConfidence,
            Policy::LabelChange,
            Policy::Unknown,
            Policy::EveryS,
            Policy::Button,
        ] {
            let n = stats.saved.get(policy.name()).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "scion_collect_saved_total{{policy=\"{}\"}} {n}",
                policy.name()
            );
        }
        for (name, help, kind, value) in [
            (
                "scion_collect_skipped_total",
                "Frames a policy wanted while the writer was behind.",
                "counter",
                stats.skipped as f64,
            ),
            (
                "scion_collect_evicted_total",
                "Images deleted to keep the folder caps and the disk budget.",
                "counter",
                stats.evicted as f64,
            ),
            (
                "scion_collect_errors_total",
                "Failed capture writes.",
                "counter",
                stats.errors as f64,
            ),
            (
                "scion_collect_files",
                "Images in the capture folder.",
                "gauge",
                stats.files as f64,
            ),
            (
                "scion_collect_bytes",
                "Bytes in the capture folder.",
                "gauge",
                stats.bytes as f64,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        out
    }

    /// The saved images, newest first, at most `limit`, with what their sidecars say.
    pub fn list(&self, limit: usize) -> Vec<Listed> {
        let entries: Vec<((u64, u64), Entry)> = self
            .lock()
            .index
            .iter()
            .rev()
            .take(limit)
            .map(|(k, e)| (*k, e.clone()))
            .collect();
        entries
            .into_iter()
            .map(|((time_ms, _), e)| {
                let sidecar = read_sidecar(&self.dir.join(&e.folder).join(&e.name));
                Listed {
                    path: format!("{}/{}", e.folder, e.name),
                    folder: e.folder,
                    bytes: e.bytes,
                    time_ms,
                    policy: sidecar.as_ref().map(|s| s.policy),
                    top1: sidecar.as_ref().and_then(|s| s.top.first().cloned()),
                    confirmed: sidecar.and_then(|s| s.confirmed),
                }
            })
            .collect()
    }

    /// Every saved file, oldest first, relative to the folder (JPEGs and sidecars), for
    /// the zip download.
    pub fn files(&self) -> Vec<String> {
        let mut files = Vec::new();
        for e in self.lock().index.values() {
            files.push(format!("{}/{}", e.folder, e.name));
            files.push(format!("{}/{}", e.folder, sidecar_name(&e.name)));
        }
        files
    }

    /// Record that a person says the image at `path` (`folder/name.jpg`) shows `label`.
    pub fn confirm(&self, path: &str, label: &str) -> Result<String, String> {
        let label = label.trim();
        if label.is_empty() {
            return Err("no label given".into());
        }
        let known = confined::is_plain_relative(path)
            && self
                .lock()
                .index
                .values()
                .any(|e| format!("{}/{}", e.folder, e.name) == path);
        if !known {
            return Err(format!(
                "{path}: no such capture (it may have been dropped)"
            ));
        }
        let jpeg = self.dir.join(path);
        let mut sidecar =
            read_sidecar(&jpeg).ok_or_else(|| format!("{path}: its sidecar is missing"))?;
        sidecar.confirmed = Some(label.to_string());
        write_atomic(
            &jpeg.with_file_name(sidecar_name(&file_name(&jpeg))),
            &serde_json::to_vec_pretty(&sidecar).map_err(|e| e.to_string())?,
        )
        .map_err(|e| format!("{path}: {e}"))?;
        Ok(label.to_string())
    }
}

/// The folder a guess goes into: one path component, never hidden.
pub fn folder_name(label: &str) -> String {
    let name: String = label
        .chars()
        .map(|c| {
            if matches!(c, '/' | '\\' | '\0') {
                '_'
            } else {
                c
            }
        })
        .collect();
    let name = name.trim().trim_start_matches('.').to_string();
    if name.is_empty() {
        "unlabelled".into()
    } else {
        name
    }
}

/// `NAME.jpg` → `NAME.json`.
pub fn sidecar_name(jpeg: &str) -> String {
    format!("{}.json", jpeg.strip_suffix(".jpg").unwrap_or(jpeg))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The sidecar of a JPEG, if it can be read.
pub fn read_sidecar(jpeg: &Path) -> Option<Sidecar> {
    let path = jpeg.with_file_name(sidecar_name(&file_name(jpeg)));
    let text = confined::read_regular(&path).ok()?;
    serde_json::from_slice(&text).ok()
}

/// `<millis>-<seq>.jpg` → (millis, seq).
fn parse_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(".jpg")?;
    let (millis, seq) = stem.split_once('-')?;
    Some((millis.parse().ok()?, seq.parse().ok()?))
}

/// Index what an earlier run left in `dir`.
fn scan(dir: &Path) -> std::io::Result<BTreeMap<(u64, u64), Entry>> {
    let mut index = BTreeMap::new();
    for folder in std::fs::read_dir(dir)? {
        let folder = folder?;
        if !folder.file_type()?.is_dir() {
            continue;
        }
        let folder_name = folder.file_name().to_string_lossy().into_owned();
        for file in std::fs::read_dir(folder.path())? {
            let file = file?;
            // Links are not captures: listing one would hand its target out in the zip.
            if !file.file_type()?.is_file() {
                continue;
            }
            let name = file.file_name().to_string_lossy().into_owned();
            let Some(key) = parse_name(&name) else {
                continue;
            };
            let sidecar =
                std::fs::metadata(folder.path().join(sidecar_name(&name))).map_or(0, |m| m.len());
            index.insert(
                key,
                Entry {
                    folder: folder_name.clone(),
                    name,
                    bytes: file.metadata()?.len() + sidecar,
                },
            );
        }
    }
    Ok(index)
}

/// Write under a temporary name and rename, so a reader never sees half a file.
/// The partial file is created anew, so a link planted under its name is not followed.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let partial = path.with_extension("partial");
    confined::create_new(&partial)?.write_all(bytes)?;
    std::fs::rename(&partial, path)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The writer thread's work for one frame: JPEG, sidecar, index, caps.
fn write_job(dir: &Path, config: &CollectSection, shared: &Mutex<Shared>, job: Job) {
    let Job {
        image,
        sidecar,
        reply,
    } = job;
    let folder = folder_name(&sidecar.guess);
    let name = format!("{}-{}.jpg", sidecar.time_ms, sidecar.seq);
    let path = dir.join(&folder).join(&name);
    let written = (|| -> Result<u64, String> {
        // A label's folder that is a link (planted, or made by hand) is refused, not used.
        confined::real_dir(&dir.join(&folder))
            .map_err(|e| format!("{}: {e}", dir.join(&folder).display()))?;
        let jpeg = crate::service::preview::encode_jpeg(&image, 95)?;
        let side = serde_json::to_vec_pretty(&sidecar).map_err(|e| e.to_string())?;
        // The sidecar first: a JPEG on disk always has its sidecar.
        write_atomic(&path.with_file_name(sidecar_name(&name)), &side)
            .and_then(|()| write_atomic(&path, &jpeg))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok((jpeg.len() + side.len()) as u64)
    })();
    let mut shared = shared.lock().unwrap_or_else(|p| p.into_inner());
    let answer = match written {
        Ok(bytes) => {
            tracing::debug!(
                "collected frame {} ({}) into {}",
                sidecar.seq,
                sidecar.policy.name(),
                path.display()
            );
            *shared
                .stats
                .saved
                .entry(sidecar.policy.name().to_string())
                .or_insert(0) += 1;
            shared.index.insert(
                (sidecar.time_ms, sidecar.seq),
                Entry {
                    folder: folder.clone(),
                    name: name.clone(),
                    bytes,
                },
            );
            evict(dir, config, &mut shared, &folder);
            Ok(Captured {
                path: path.clone(),
                label: folder,
                seq: sidecar.seq,
            })
        }
        Err(e) => {
            tracing::warn!("collecting frame {}: {e}", sidecar.seq);
            shared.stats.errors += 1;
            Err(e)
        }
    };
    shared.refresh_totals();
    drop(shared);
    if let Some(reply) = reply {
        let _ = reply.send(answer);
    }
}

/// Keep the folder's cap and the disk budget, oldest first.
fn evict(dir: &Path, config: &CollectSection, shared: &mut Shared, folder: &str) {
    let mut doomed = Vec::new();
    let in_folder: Vec<(u64, u64)> = shared
        .index
        .iter()
        .filter(|(_, e)| e.folder == folder)
        .map(|(k, _)| *k)
        .collect();
    if in_folder.len() > config.per_label {
        doomed.extend_from_slice(&in_folder[..in_folder.len() - config.per_label]);
    }
    let budget = config.max_mb.saturating_mul(1 << 20);
    let mut total: u64 = shared.index.values().map(|e| e.bytes).sum::<u64>()
        - doomed
            .iter()
            .filter_map(|k| shared.index.get(k))
            .map(|e| e.bytes)
            .sum::<u64>();
    for (key, entry) in &shared.index {
        if total <= budget {
            break;
        }
        if !doomed.contains(key) {
            doomed.push(*key);
            total -= entry.bytes;
        }
    }
    for key in doomed {
        if let Some(e) = shared.index.remove(&key) {
            let jpeg = dir.join(&e.folder).join(&e.name);
            let _ = std::fs::remove_file(&jpeg);
            let _ = std::fs::remove_file(jpeg.with_file_name(sidecar_name(&e.name)));
            shared.stats.evicted += 1;
        }
    }
}

/// A sidecar for a frame, stamped now.
#[allow(clippy::too_many_arguments)]
pub fn sidecar(
    seq: u64,
    policy: Policy,
    labels: &[String],
    probs: &[f32],
    top: &[Ranked],
    unknown: Option<bool>,
    unknown_score: Option<f32>,
    announced: Option<String>,
    model: &super::hub::ModelInfo,
) -> Sidecar {
    let guess = if unknown == Some(true) {
        crate::classifier::UNKNOWN.to_string()
    } else {
        top.first()
            .map(|r| r.label.clone())
            .or_else(|| labels.first().cloned())
            .unwrap_or_default()
    };
    Sidecar {
        time_ms: now_ms(),
        seq,
        policy,
        guess,
        announced,
        unknown,
        unknown_score,
        top: top.to_vec(),
        probs: probs.to_vec(),
        model: model.name.clone(),
        model_sha256: model.sha256.clone(),
        engine: model.engine.clone(),
        confirmed: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> RgbImage {
        RgbImage {
            width: 32,
            height: 24,
            pixels: (0..32 * 24 * 3).map(|i| (i % 251) as u8).collect(),
        }
    }

    fn side(seq: u64, guess: &str, time_ms: u64) -> Sidecar {
        Sidecar {
            time_ms,
            seq,
            policy: Policy::LowConfidence,
            guess: guess.into(),
            announced: None,
            unknown: None,
            unknown_score: None,
            top: vec![Ranked {
                label: guess.into(),
                index: 0,
                prob: 0.4,
            }],
            probs: vec![0.4, 0.6],
            model: "m".into(),
            model_sha256: "ab".repeat(32),
            engine: "tract".into(),
            confirmed: None,
        }
    }

    fn save(c: &Collector, seq: u64, guess: &str, time_ms: u64) -> Captured {
        let (tx, rx) = crossbeam_channel::bounded(1);
        c.submit(image(), side(seq, guess, time_ms), Some(tx));
        rx.recv().expect("answer").expect("saved")
    }

    #[test]
    fn labels_become_single_folder_names() {
        assert_eq!(folder_name("golden retriever"), "golden retriever");
        assert_eq!(folder_name("../etc/passwd"), "_etc_passwd");
        assert_eq!(folder_name(" "), "unlabelled");
    }

    #[test]
    fn policies_rest_between_saves_and_every_s_waits_its_interval() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = CollectSection {
            policies: vec![Policy::Unknown, Policy::LowConfidence, Policy::EveryS],
            below: 0.6,
            every_s: 10.0,
            min_gap_s: 1.0,
            ..CollectSection::default()
        };
        let c = Collector::start(dir.path(), config).expect("start");
        let t0 = Instant::now();
        let sure = FrameFacts {
            top1: 0.9,
            unknown: false,
            label_changed: false,
        };
        let unsure = FrameFacts { top1: 0.3, ..sure };
        let rejected = FrameFacts {
            unknown: true,
            ..sure
        };
        assert_eq!(c.due(sure, t0), Some(Policy::EveryS), "the first interval");
        assert_eq!(c.due(sure, t0 + Duration::from_secs(1)), None);
        assert_eq!(c.due(unsure, t0), Some(Policy::LowConfidence));
        assert_eq!(c.due(unsure, t0 + Duration::from_millis(500)), None, "gap");
        assert_eq!(
            c.due(unsure, t0 + Duration::from_millis(1500)),
            Some(Policy::LowConfidence)
        );
        assert_eq!(c.due(rejected, t0), Some(Policy::Unknown));
        assert_eq!(
            c.due(sure, t0 + Duration::from_secs(10)),
            Some(Policy::EveryS)
        );
        c.finish();
    }

    #[test]
    fn caps_and_the_budget_drop_the_oldest_and_survive_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = CollectSection {
            per_label: 2,
            ..CollectSection::default()
        };
        let c = Collector::start(dir.path(), config.clone()).expect("start");
        for seq in 0..3 {
            save(&c, seq, "bag", 1_000 + seq);
        }
        let saved = save(&c, 9, "shirt", 2_000);
        assert_eq!(saved.label, "shirt");
        let sidecar = read_sidecar(&saved.path).expect("sidecar");
        assert_eq!(sidecar.seq, 9);
        let bag: Vec<String> = c
            .list(10)
            .into_iter()
            .filter(|l| l.folder == "bag")
            .map(|l| l.path)
            .collect();
        assert_eq!(
            bag,
            ["bag/1002-2.jpg", "bag/1001-1.jpg"],
            "oldest bag dropped"
        );
        assert!(!dir.path().join("bag/1000-0.json").exists());
        let stats = c.stats();
        assert_eq!((stats.files, stats.evicted), (3, 1));
        assert_eq!(stats.saved.get("low_confidence"), Some(&4));
        c.finish();

        // A second run indexes what is there, and a 1 MiB budget is kept from then on.
        let on_disk: u64 = ["bag/1001-1", "bag/1002-2", "shirt/2000-9"]
            .iter()
            .flat_map(|stem| ["jpg", "json"].map(|ext| dir.path().join(format!("{stem}.{ext}"))))
            .map(|p| std::fs::metadata(p).expect("file").len())
            .sum();
        let c = Collector::start(dir.path(), config).expect("restart");
        assert_eq!(c.stats().files, 3);
        assert_eq!(c.stats().bytes, on_disk);
        assert_eq!(c.files().len(), 6);
        c.confirm("bag/1001-1.jpg", "coat").expect("confirm");
        let confirmed = read_sidecar(&dir.path().join("bag/1001-1.jpg")).expect("sidecar");
        assert_eq!(confirmed.confirmed.as_deref(), Some("coat"));
        assert!(c.confirm("bag/nope.jpg", "coat").is_err());
        c.finish();
        let tiny = CollectSection {
            max_mb: 1,
            ..CollectSection::default()
        };
        // Fill past 1 MiB with noise images (JPEG cannot shrink noise much).
        let c = Collector::start(dir.path(), tiny).expect("restart");
        let noise = RgbImage {
            width: 512,
            height: 512,
            pixels: (0..512u32 * 512 * 3)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
                .collect(),
        };
        for seq in 0..8 {
            let (tx, rx) = crossbeam_channel::bounded(1);
            c.submit(
                noise.clone(),
                side(100 + seq, "noise", 5_000 + seq),
                Some(tx),
            );
            rx.recv().expect("answer").expect("saved");
        }
        let stats = c.stats();
        assert!(stats.bytes <= 1 << 20, "{stats:?}");
        assert!(stats.evicted >= 1, "{stats:?}");
        let newest = &c.list(1)[0];
        assert_eq!(newest.path, "noise/5007-107.jpg", "the newest stays");
        c.finish();
    }

    #[test]
    fn links_planted_in_the_folder_are_neither_listed_nor_written_through() {
        let dir = tempfile::tempdir().expect("tempdir");
        let captures = dir.path().join("captures");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(captures.join("dog")).expect("mkdir");
        std::fs::create_dir(&outside).expect("mkdir");
        std::fs::write(outside.join("secret"), b"not for the zip").expect("write");
        // A capture-looking name that links to a file elsewhere, and a label's folder that
        // links to a folder elsewhere.
        std::os::unix::fs::symlink(outside.join("secret"), captures.join("dog/1-1.jpg"))
            .expect("symlink");
        std::os::unix::fs::symlink(&outside, captures.join("cat")).expect("symlink");
        let c = Collector::start(&captures, CollectSection::default()).expect("start");
        assert!(c.files().is_empty(), "{:?}", c.files());

        let (tx, rx) = crossbeam_channel::bounded(1);
        c.submit(image(), side(2, "cat", 2000), Some(tx));
        let refused = rx
            .recv()
            .expect("answer")
            .expect_err("written through a link");
        assert!(refused.contains("symbolic link"), "{refused}");
        let left: Vec<_> = std::fs::read_dir(&outside).expect("read").collect();
        assert_eq!(left.len(), 1, "something was written outside");
        assert!(c.confirm("dog/1-1.jpg", "dog").is_err());
        assert!(c.confirm("../outside/secret", "x").is_err());

        // Another label still saves, inside.
        let saved = save(&c, 3, "bird", 3000);
        assert_eq!(saved.path, captures.join("bird/3000-3.jpg"));
        c.finish();
    }
}
