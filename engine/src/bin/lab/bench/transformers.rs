//! transformers beside `lab bench`: the same four CPU workloads timed by Hugging Face
//! transformers (`scripts/bench_transformers.py`, float32, eager, greedy, EOS off) in a child
//! process, between our own runs, so that the ratio compares two numbers from one window of
//! the machine. A baseline measured on another day says little on a shared 2-core machine,
//! where the load moves both sides by ±20%; alternating the two (A B A B) does.
//!
//! The script times prompts cut from prose and our bench uses synthetic ids: the work per
//! token is the same (same lengths, same batch, no padding, the LM head on the last position
//! only at prefill), the values are not, which does not matter for speed.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

/// Our workload names and the script's phase names for the same work.
pub const PHASES: [(&str, &str); 4] = [
    ("prefill b=1 x512", "prefill_b1_512"),
    ("prefill b=8 x128", "prefill_b8_128"),
    ("decode b=1", "decode_b1"),
    ("decode b=8", "decode_b8"),
];

/// How to run the transformers side.
pub struct Transformers {
    /// A Python with torch and transformers installed.
    pub python: PathBuf,
    /// `scripts/bench_transformers.py`.
    pub script: PathBuf,
    /// A Hugging Face directory of the same model (f32 values equal to ours).
    pub model_dir: PathBuf,
    /// Timed repetitions per phase (the best is kept, after one warm-up), as `--runs`.
    pub reps: usize,
    /// torch's threads: the same number as our pool.
    pub threads: usize,
}

impl Transformers {
    /// Checks the paths before any timing starts, so a typo fails in a second, not after the
    /// engine's runs.
    pub fn new(
        python: PathBuf,
        script: Option<PathBuf>,
        model_dir: PathBuf,
        reps: usize,
        threads: usize,
    ) -> anyhow::Result<Self> {
        // The script sits in the repository beside the engine crate; a copy of the binary
        // elsewhere names it with --transformers-script.
        let script = script.unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/bench_transformers.py")
        });
        anyhow::ensure!(
            script.is_file(),
            "--transformers: {} not found (pass --transformers-script PATH)",
            script.display()
        );
        anyhow::ensure!(
            model_dir.join("config.json").is_file(),
            "--transformers: {} is not a Hugging Face model directory (no config.json); pass \
             --transformers-model DIR (scripts/make_reference.py writes one for SmolLM2)",
            model_dir.display()
        );
        Ok(Self {
            python,
            script,
            model_dir,
            reps,
            threads,
        })
    }

    /// Runs the four phases once: (our workload name, transformers' tokens per second).
    /// A phase during which other processes used more than a quarter of a core is named on
    /// stderr: on 2 cores torch's threads then wait for each other and its decode can drop
    /// tenfold, so that ratio says more about the load than about either engine.
    pub fn run(&self) -> anyhow::Result<Vec<(&'static str, f64)>> {
        let out = std::env::temp_dir().join(format!(
            "lab-bench-transformers-{}.json",
            std::process::id()
        ));
        let phases: Vec<&str> = PHASES.iter().map(|(_, p)| *p).collect();
        eprintln!(
            "transformers: {} {} ({} threads)",
            self.python.display(),
            self.script.display(),
            self.threads
        );
        // One try per phase, no waiting for a quiet machine: the point is the same window as
        // ours, not the cleanest number (the script's own doc mode waits and retries).
        let status = Command::new(&self.python)
            .arg(&self.script)
            .arg("--model")
            .arg(&self.model_dir)
            .args(["--reps", &self.reps.to_string()])
            .args(["--threads", &self.threads.to_string()])
            .args(["--attempts", "1", "--clean-runs", "1", "--max-wait-s", "0"])
            .args(["--phases", &phases.join(",")])
            .arg("--json")
            .arg(&out)
            // Its progress lines go to our stderr: our stdout is the table (and the JSON).
            .stdout(std::io::stderr())
            .status()
            .with_context(|| format!("--transformers: cannot start {}", self.python.display()))?;
        anyhow::ensure!(
            status.success(),
            "--transformers: the script failed ({status}); is torch installed in {}?",
            self.python.display()
        );
        let text = std::fs::read_to_string(&out)
            .with_context(|| format!("--transformers: no results in {}", out.display()))?;
        let _ = std::fs::remove_file(&out);
        let v: serde_json::Value = serde_json::from_str(&text)?;
        PHASES
            .iter()
            .map(|(ours, p)| {
                let phase = &v["chosen"][p];
                let t = phase["tok_per_s"]
                    .as_f64()
                    .with_context(|| format!("--transformers: no tok_per_s for {p}"))?;
                if phase["clean"] == false {
                    eprintln!(
                        "transformers' {p} ran while other processes used {:.2} cores: its \
                         figure is not clean",
                        phase["others_cores"].as_f64().unwrap_or(f64::NAN)
                    );
                }
                Ok((*ours, t))
            })
            .collect()
    }
}
