//! Result records and where they go: JSON lines or CSV, to stdout or to a file that is
//! appended to resumably (finished inputs are read back, a torn last line is repaired).

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::postprocess::Ranked;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON object per line.
    Jsonl,
    /// Comma-separated values with a header row.
    Csv,
}

/// One input's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The input path as given or found.
    pub path: String,
    /// Top-k classes, best first (absent for errors).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub top: Option<Vec<Ranked>>,
    /// Whether the image shows none of the model's classes (present when the model has
    /// an unknown rule and it is on).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub unknown: Option<bool>,
    /// The engine that produced the result.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub engine: Option<String>,
    /// Why the input could not be classified.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
}

/// Problems with the output file.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The output file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The existing file is not one this command can append to.
    #[error("{path}: line {line}: {message}; refusing to append (choose another --out)")]
    Foreign {
        /// The output file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

fn csv_header(k: usize) -> String {
    let mut cols = vec![
        "path".to_string(),
        "engine".to_string(),
        "unknown".to_string(),
    ];
    for r in 1..=k {
        cols.extend([
            format!("top{r}_label"),
            format!("top{r}_index"),
            format!("top{r}_prob"),
        ]);
    }
    cols.push("error".into());
    cols.join(",")
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Read the first field of a CSV line (quoted or not).
fn csv_first_field(line: &str) -> Option<String> {
    if let Some(rest) = line.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = rest.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    out.push('"');
                } else {
                    return Some(out);
                }
            } else {
                out.push(c);
            }
        }
        None
    } else {
        line.split(',').next().map(str::to_string)
    }
}

impl Record {
    /// Serialize as one line (without the newline).
    pub fn to_line(&self, format: Format, k: usize) -> String {
        match format {
            Format::Jsonl => serde_json::to_string(self).expect("records always serialize"),
            Format::Csv => {
                let mut fields = vec![
                    csv_field(&self.path),
                    self.engine.clone().unwrap_or_default(),
                    self.unknown.map(|u| u.to_string()).unwrap_or_default(),
                ];
                let top = self.top.as_deref().unwrap_or(&[]);
                for r in 0..k {
                    match top.get(r) {
                        Some(t) => fields.extend([
                            csv_field(&t.label),
                            t.index.to_string(),
                            format!("{}", t.prob),
                        ]),
                        None => fields.extend([String::new(), String::new(), String::new()]),
                    }
                }
                fields.push(csv_field(self.error.as_deref().unwrap_or("")));
                fields.join(",")
            }
        }
    }
}

/// Where records are written. Each batch is written with one call and flushed, so a crash
/// loses at most the line being written, which the next run repairs.
pub struct Sink {
    target: Target,
    format: Format,
    k: usize,
    last_sync: Instant,
}

enum Target {
    Stdout(io::Stdout),
    File { file: File, path: PathBuf },
}

impl Sink {
    /// Write to standard output (no resume).
    pub fn stdout(format: Format, k: usize) -> Sink {
        let sink = Sink {
            target: Target::Stdout(io::stdout()),
            format,
            k,
            last_sync: Instant::now(),
        };
        if format == Format::Csv {
            println!("{}", csv_header(k));
        }
        sink
    }

    /// Open `path` for appending. Returns the sink and the inputs already finished there.
    pub fn resume_file(
        path: &Path,
        format: Format,
        k: usize,
    ) -> Result<(Sink, HashSet<String>), OutputError> {
        let io_err = |source| OutputError::Io {
            path: path.into(),
            source,
        };
        let done = if path.exists() {
            repair_torn_tail(path).map_err(io_err)?;
            read_finished(path, format, k)?
        } else {
            HashSet::new()
        };
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io_err)?;
        if format == Format::Csv && file.metadata().map_err(io_err)?.len() == 0 {
            writeln!(file, "{}", csv_header(k)).map_err(io_err)?;
        }
        Ok((
            Sink {
                target: Target::File {
                    file,
                    path: path.into(),
                },
                format,
                k,
                last_sync: Instant::now(),
            },
            done,
        ))
    }

    /// Write and flush a batch of records.
    pub fn write(&mut self, records: &[Record]) -> Result<(), OutputError> {
        let mut buf = String::new();
        for r in records {
            buf.push_str(&r.to_line(self.format, self.k));
            buf.push('\n');
        }
        match &mut self.target {
            Target::Stdout(out) => {
                let mut lock = out.lock();
                lock.write_all(buf.as_bytes())
                    .and_then(|_| lock.flush())
                    .map_err(|source| OutputError::Io {
                        path: "<stdout>".into(),
                        source,
                    })
            }
            Target::File { file, path } => {
                file.write_all(buf.as_bytes())
                    .map_err(|source| OutputError::Io {
                        path: path.clone(),
                        source,
                    })?;
                // kill -9 cannot lose what write() returned; a power cut can, so sync often.
                if self.last_sync.elapsed() > Duration::from_secs(2) {
                    let _ = file.sync_data();
                    self.last_sync = Instant::now();
                }
                Ok(())
            }
        }
    }

    /// Sync to disk.
    pub fn finish(&mut self) -> Result<(), OutputError> {
        if let Target::File { file, path } = &mut self.target {
            file.sync_all().map_err(|source| OutputError::Io {
                path: path.clone(),
                source,
            })?;
        }
        Ok(())
    }
}

/// Cut a partial last line (a write interrupted by a crash) so appending starts clean.
fn repair_torn_tail(path: &Path) -> io::Result<()> {
    let bytes = std::fs::read(path)?;
    let keep = match bytes.iter().rposition(|&b| b == b'\n') {
        Some(i) => i + 1,
        None => 0,
    };
    if keep < bytes.len() {
        tracing::warn!(
            "{}: removing a torn last line ({} bytes) left by an interrupted run",
            path.display(),
            bytes.len() - keep
        );
        let f = OpenOptions::new().write(true).open(path)?;
        f.set_len(keep as u64)?;
        f.sync_all()?;
    }
    Ok(())
}

fn read_finished(path: &Path, format: Format, k: usize) -> Result<HashSet<String>, OutputError> {
    let file = File::open(path).map_err(|source| OutputError::Io {
        path: path.into(),
        source,
    })?;
    let mut done = HashSet::new();
    for (i, line) in io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|source| OutputError::Io {
            path: path.into(),
            source,
        })?;
        let foreign = |message: String| OutputError::Foreign {
            path: path.into(),
            line: i + 1,
            message,
        };
        match format {
            Format::Jsonl => {
                let record: Record = serde_json::from_str(&line)
                    .map_err(|e| foreign(format!("not a result record ({e})")))?;
                done.insert(record.path);
            }
            Format::Csv if i == 0 => {
                if line != csv_header(k) {
                    return Err(foreign(format!(
                        "the header differs from this run's ({})",
                        csv_header(k)
                    )));
                }
            }
            Format::Csv => {
                let p =
                    csv_first_field(&line).ok_or_else(|| foreign("unreadable CSV row".into()))?;
                done.insert(p);
            }
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(path: &str) -> Record {
        Record {
            path: path.into(),
            top: Some(vec![Ranked {
                label: "goldfish, Carassius auratus".into(),
                index: 1,
                prob: 0.5,
            }]),
            unknown: None,
            engine: Some("tract".into()),
            error: None,
        }
    }

    #[test]
    fn jsonl_record_has_the_documented_fields() {
        let line = ok("a.jpg").to_line(Format::Jsonl, 1);
        assert_eq!(
            line,
            r#"{"path":"a.jpg","top":[{"label":"goldfish, Carassius auratus","index":1,"prob":0.5}],"engine":"tract"}"#
        );
    }

    #[test]
    fn csv_quotes_and_reads_back_paths() {
        let line = ok("we,ird \"name\".jpg").to_line(Format::Csv, 1);
        assert_eq!(
            line,
            r#""we,ird ""name"".jpg",tract,,"goldfish, Carassius auratus",1,0.5,"#
        );
        assert_eq!(
            csv_first_field(&line).as_deref(),
            Some("we,ird \"name\".jpg")
        );
    }

    #[test]
    fn torn_tail_is_cut_and_finished_inputs_are_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("out.jsonl");
        let full = format!(
            "{}\n{}\n",
            ok("a").to_line(Format::Jsonl, 1),
            ok("b").to_line(Format::Jsonl, 1)
        );
        std::fs::write(&out, format!("{full}{{\"path\":\"c\",\"to")).expect("write");
        let (_sink, done) = Sink::resume_file(&out, Format::Jsonl, 1).expect("resume");
        assert_eq!(std::fs::read_to_string(&out).expect("read"), full);
        assert_eq!(done, HashSet::from(["a".to_string(), "b".to_string()]));
    }
}
