//! `scion data lint`: what would go wrong training on a folder, found before training.
//! Errors (exit non-zero): missing classes in a split, empty classes, corrupt images,
//! the same image in two splits or under two labels. Warnings: tiny classes, imbalance,
//! non-image files, duplicates within a class.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::dataset::{DatasetError, SPLITS, has_split_layout, scan_classes};
use scion_edge::classify::inputs::{has_image_extension, is_hidden};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Training works, but the result may disappoint.
    Warning,
    /// Fix before training.
    Error,
}

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Error or warning.
    pub severity: Severity,
    /// What and where.
    pub message: String,
}

/// Thresholds.
#[derive(Debug, Clone, Copy)]
pub struct LintOptions {
    /// Classes with fewer images than this (in a split) are flagged.
    pub tiny: usize,
    /// Largest/smallest class size ratio above which imbalance is flagged.
    pub imbalance: f32,
}

impl Default for LintOptions {
    fn default() -> Self {
        LintOptions {
            tiny: 5,
            imbalance: 3.0,
        }
    }
}

/// The result of a lint.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Split names in table order (`all` for the flat layout).
    pub splits: Vec<String>,
    /// Images per class per split.
    pub counts: BTreeMap<String, BTreeMap<String, usize>>,
    /// Problems, errors first.
    pub findings: Vec<Finding>,
    /// Hidden files and folders skipped.
    pub hidden_ignored: usize,
}

impl Report {
    /// Whether any finding is an error.
    pub fn has_errors(&self) -> bool {
        self.findings.iter().any(|f| f.severity == Severity::Error)
    }

    /// A table of class counts and the findings, for people.
    pub fn render(&self) -> String {
        let width = self
            .counts
            .keys()
            .map(String::len)
            .max()
            .unwrap_or(5)
            .max(5);
        let mut out = format!("{:<width$}", "class");
        for s in &self.splits {
            let _ = write!(out, " {s:>7}");
        }
        out.push('\n');
        for (class, per_split) in &self.counts {
            let _ = write!(out, "{class:<width$}");
            for s in &self.splits {
                let _ = write!(out, " {:>7}", per_split.get(s).copied().unwrap_or(0));
            }
            out.push('\n');
        }
        let errors = self
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .count();
        let warnings = self.findings.len() - errors;
        for f in &self.findings {
            let tag = match f.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
            };
            let _ = writeln!(out, "{tag}: {}", f.message);
        }
        let _ = writeln!(
            out,
            "{errors} errors, {warnings} warnings; {} hidden entries ignored",
            self.hidden_ignored
        );
        out
    }
}

fn count_hidden_and_strays(dir: &Path, hidden: &mut usize, strays: &mut Vec<PathBuf>) {
    for entry in walkdir::WalkDir::new(dir)
        .min_depth(1)
        .into_iter()
        .flatten()
    {
        let p = entry.path();
        if p.ancestors().take(entry.depth()).any(is_hidden) {
            if is_hidden(p) {
                *hidden += 1;
            }
            continue;
        }
        if entry.file_type().is_file() && !has_image_extension(p) {
            strays.push(p.to_path_buf());
        }
    }
}

/// Lint the data set at `root`.
pub fn lint(root: &Path, options: LintOptions) -> Result<Report, DatasetError> {
    let mut report = Report::default();
    let splits: Vec<(String, PathBuf)> = if has_split_layout(root) {
        SPLITS
            .iter()
            .filter(|s| root.join(s).is_dir())
            .map(|s| (s.to_string(), root.join(s)))
            .collect()
    } else {
        vec![("all".to_string(), root.to_path_buf())]
    };
    let mut findings = Vec::new();
    let mut err = |m: String| {
        findings.push(Finding {
            severity: Severity::Error,
            message: m,
        })
    };
    let mut by_split = Vec::new();
    for (name, dir) in &splits {
        by_split.push((name.clone(), scan_classes(dir)?));
    }
    let all_classes: BTreeSet<String> = by_split
        .iter()
        .flat_map(|(_, c)| c.keys().cloned())
        .collect();
    if all_classes.len() < 2 {
        err(format!(
            "{} class folder(s); a classifier needs at least two",
            all_classes.len()
        ));
    }
    let mut hashes: HashMap<[u8; 32], Vec<(String, String, PathBuf)>> = HashMap::new();
    for (split, classes) in &by_split {
        for class in &all_classes {
            let files = classes.get(class);
            let n = files.map_or(0, Vec::len);
            report
                .counts
                .entry(class.clone())
                .or_default()
                .insert(split.clone(), n);
            match files {
                None => err(format!("class '{class}' is missing from {split}/")),
                Some(f) if f.is_empty() => {
                    err(format!("class '{class}' has no images in {split}/"))
                }
                Some(f) => {
                    for path in f {
                        let bytes = match std::fs::read(path) {
                            Ok(b) => b,
                            Err(e) => {
                                err(format!("{}: unreadable: {e}", path.display()));
                                continue;
                            }
                        };
                        if let Err(e) = scion_edge::preprocess::decode_rgb(&bytes, None) {
                            err(format!("{}: {e}", path.display()));
                        }
                        hashes
                            .entry(Sha256::digest(&bytes).into())
                            .or_default()
                            .push((split.clone(), class.clone(), path.clone()));
                    }
                }
            }
        }
    }
    let mut warn = Vec::new();
    for (split, _) in &by_split {
        let sizes: Vec<(usize, &String)> = all_classes
            .iter()
            .map(|c| (report.counts[c].get(split).copied().unwrap_or(0), c))
            .collect();
        for (n, c) in &sizes {
            if *n > 0 && *n < options.tiny {
                warn.push(format!("class '{c}' has only {n} images in {split}/"));
            }
        }
        let (min, max) = (sizes.iter().min(), sizes.iter().max());
        if let (Some((lo, lo_c)), Some((hi, hi_c))) = (min, max)
            && *lo > 0
            && *hi as f32 / *lo as f32 > options.imbalance
        {
            warn.push(format!(
                "imbalanced {split}/: '{hi_c}' has {hi} images, '{lo_c}' only {lo} ({:.1}x); \
                 train with --class-weight balanced (or --sampler balanced) so every class counts alike",
                *hi as f32 / *lo as f32
            ));
        }
    }
    let mut groups: Vec<_> = hashes.into_values().filter(|g| g.len() > 1).collect();
    groups.sort();
    for group in groups {
        let splits: BTreeSet<&String> = group.iter().map(|(s, _, _)| s).collect();
        let classes: BTreeSet<&String> = group.iter().map(|(_, c, _)| c).collect();
        let paths: Vec<String> = group
            .iter()
            .map(|(_, _, p)| p.display().to_string())
            .collect();
        if splits.len() > 1 {
            err(format!(
                "the same image is in several splits (leaks into evaluation): {}",
                paths.join(", ")
            ));
        } else if classes.len() > 1 {
            err(format!(
                "the same image has several labels: {}",
                paths.join(", ")
            ));
        } else {
            warn.push(format!("duplicate images: {}", paths.join(", ")));
        }
    }
    let mut strays = Vec::new();
    count_hidden_and_strays(root, &mut report.hidden_ignored, &mut strays);
    if !strays.is_empty() {
        let shown: Vec<String> = strays
            .iter()
            .take(3)
            .map(|p| p.display().to_string())
            .collect();
        warn.push(format!(
            "{} files that are not images are ignored (e.g. {})",
            strays.len(),
            shown.join(", ")
        ));
    }
    findings.extend(warn.into_iter().map(|m| Finding {
        severity: Severity::Warning,
        message: m,
    }));
    findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
    report.splits = splits.into_iter().map(|(s, _)| s).collect();
    report.findings = findings;
    Ok(report)
}
