//! # Quiz progress: what a learner got right, kept between sessions
//!
//! One JSON file in the XDG data directory (`$XDG_DATA_HOME/inference-lab/quiz-progress.json`,
//! or `~/.local/share/inference-lab/…`): per chapter, per kind of question, the score of each
//! session (the fraction answered right), oldest first. `lab quiz --progress` prints the last
//! score and the trend, so a learner sees which topics to revisit.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{json, Value};

/// How many sessions' scores are kept per kind.
const KEEP: usize = 20;

/// chapter → kind → scores (0..=1), oldest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    pub chapters: BTreeMap<String, BTreeMap<String, Vec<f64>>>,
}

/// Where the progress file lives: `$XDG_DATA_HOME` or `$HOME/.local/share`.
pub fn progress_path() -> Result<PathBuf, String> {
    let base = match std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => {
            let home = std::env::var_os("HOME")
                .ok_or("neither XDG_DATA_HOME nor HOME is set: no place for quiz progress")?;
            PathBuf::from(home).join(".local/share")
        }
    };
    Ok(base.join("inference-lab").join("quiz-progress.json"))
}

impl Progress {
    /// Reads the file; a missing file is empty progress, a damaged one an error.
    pub fn load() -> Result<Progress, String> {
        let path = progress_path()?;
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Progress::default()),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| format!("{} is not valid JSON: {e}", path.display()))?;
        let mut p = Progress::default();
        let chapters = v.get("chapters").and_then(|c| c.as_object());
        for (chapter, kinds) in chapters.into_iter().flatten() {
            let entry = p.chapters.entry(chapter.clone()).or_default();
            for (kind, record) in kinds.as_object().into_iter().flatten() {
                let scores = record
                    .get("scores")
                    .and_then(|s| s.as_array())
                    .map(|a| a.iter().filter_map(|x| x.as_f64()).collect())
                    .unwrap_or_default();
                entry.insert(kind.clone(), scores);
            }
        }
        Ok(p)
    }

    /// Writes the file (creating its directory), through a temporary file so that an
    /// interrupted write leaves the old progress.
    pub fn save(&self) -> Result<(), String> {
        let path = progress_path()?;
        let dir = path.parent().expect("the path has a directory");
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let mut chapters = serde_json::Map::new();
        for (chapter, kinds) in &self.chapters {
            let mut m = serde_json::Map::new();
            for (kind, scores) in kinds {
                m.insert(kind.clone(), json!({ "scores": scores }));
            }
            chapters.insert(chapter.clone(), Value::Object(m));
        }
        let text = serde_json::to_string_pretty(&json!({ "version": 1, "chapters": chapters }))
            .expect("JSON of numbers and strings");
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, text).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &path).map_err(|e| format!("cannot write {}: {e}", path.display()))
    }

    /// This progress plus one session's scores (kind → (right, asked)) for a chapter.
    pub fn with_session(&self, chapter: &str, session: &BTreeMap<String, (u32, u32)>) -> Progress {
        let mut p = self.clone();
        let kinds = p.chapters.entry(chapter.to_string()).or_default();
        for (kind, &(right, asked)) in session {
            if asked == 0 {
                continue;
            }
            let scores = kinds.entry(kind.clone()).or_default();
            scores.push(right as f64 / asked as f64);
            if scores.len() > KEEP {
                scores.remove(0);
            }
        }
        p
    }

    /// The self-assessment table: chapter, kind, sessions, last score, trend.
    pub fn table(&self) -> String {
        if self.chapters.values().all(|k| k.is_empty()) {
            return "No quiz answered yet: try `lab quiz stage1`.\n".to_string();
        }
        let mut out = format!(
            "{:<8} {:<30} {:>8} {:>6} {:>7}  {}\n",
            "chapter", "question kind", "sessions", "last", "trend", "advice"
        );
        for (chapter, kinds) in &self.chapters {
            for (kind, scores) in kinds {
                let Some(&last) = scores.last() else { continue };
                let trend = match scores.len() {
                    1 => "new".to_string(),
                    n => {
                        let before = scores[..n - 1].iter().sum::<f64>() / (n - 1) as f64;
                        let d = last - before;
                        if d > 0.05 {
                            "up".to_string()
                        } else if d < -0.05 {
                            "down".to_string()
                        } else {
                            "steady".to_string()
                        }
                    }
                };
                let advice = if last < 0.5 {
                    "revisit"
                } else if last < 1.0 {
                    "review"
                } else {
                    "ok"
                };
                out.push_str(&format!(
                    "{:<8} {:<30} {:>8} {:>5.0}% {:>7}  {}\n",
                    chapter,
                    kind,
                    scores.len(),
                    last * 100.0,
                    trend,
                    advice
                ));
            }
        }
        out
    }
}
