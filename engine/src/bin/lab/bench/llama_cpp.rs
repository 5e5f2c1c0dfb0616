//! llama.cpp beside `lab bench`: the batch-1 workloads timed by a prebuilt llama.cpp (the one
//! the npm package node-llama-cpp ships; `scripts/bench_llama_cpp.mjs`) in a child process,
//! after our runs in each round, on the same GGUF file and the same prompt ids. As with
//! transformers (`transformers.rs`), the point is one window of a shared machine for both
//! numbers, not the cleanest number of either.
//!
//! Only batch 1: the prompt of 512 tokens and decode. The values differ even from the same
//! file: llama.cpp quantizes the activations to 8 bits for its dot products, our engine keeps
//! them in f32 (the speeds compare; the tokens need not).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

/// Our workload names and the script's phase names for the same work.
pub const PHASES: [(&str, &str); 2] = [
    ("prefill b=1 x512", "prefill_b1_512"),
    ("decode b=1", "decode_b1"),
];

/// How to run the llama.cpp side.
pub struct LlamaCpp {
    /// The node binary.
    pub node: PathBuf,
    /// `scripts/bench_llama_cpp.mjs`.
    pub script: PathBuf,
    /// Where `npm i node-llama-cpp` ran (none: node resolves it from the script's place).
    pub package: Option<PathBuf>,
    /// The GGUF llama.cpp loads.
    pub gguf: PathBuf,
    /// Timed repetitions per phase (the best is kept, after one warm-up), as `--runs`.
    pub reps: usize,
    /// llama.cpp's threads: the same number as our pool.
    pub threads: usize,
    /// The model's vocabulary, so that the script draws the same prompt ids as our bench.
    pub vocab: usize,
}

/// What the script says about itself, for the footnote under the table.
#[derive(Debug, PartialEq)]
pub struct Results {
    /// (our workload name, llama.cpp's tokens per second).
    pub tokens_per_s: Vec<(&'static str, f64)>,
    /// e.g. `node-llama-cpp 3.21.1 (prebuilt llama.cpp v0.4.0, libggml-cpu-zen4.so)`.
    pub build: String,
}

/// Whether `--model` names a GGUF llama.cpp can be given: a `.gguf` file, or a model that
/// `lab fetch-model` knows (fetched from a GGUF, kept beside its directory).
pub fn is_gguf_model(model: &str, known: &[&str]) -> bool {
    Path::new(model).extension().is_some_and(|e| e == "gguf") || known.contains(&model)
}

/// Checks what can be checked before the model loads, so that a typo fails in a second, not
/// after the engine's runs: the script, the package directory, node itself, and that the
/// model is a GGUF (or `--llama-cpp-model` names one).
pub fn check_before_load(
    node: &Path,
    script: Option<PathBuf>,
    package: Option<&Path>,
    model: &str,
    gguf: Option<&Path>,
) -> anyhow::Result<PathBuf> {
    // The script sits in the repository beside the engine crate; a copy of the binary
    // elsewhere names it with --llama-cpp-script.
    let script = script.unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/bench_llama_cpp.mjs")
    });
    anyhow::ensure!(
        script.is_file(),
        "--llama-cpp: {} not found (pass --llama-cpp-script PATH)",
        script.display()
    );
    if let Some(dir) = package {
        anyhow::ensure!(
            dir.join("node_modules/node-llama-cpp").is_dir(),
            "--llama-cpp-package: no node_modules/node-llama-cpp in {} (npm i -E --ignore-scripts \
             node-llama-cpp@3.21.1 there)",
            dir.display()
        );
    }
    match gguf {
        Some(g) => anyhow::ensure!(
            g.extension().is_some_and(|e| e == "gguf") && g.is_file(),
            "--llama-cpp-model: {} is not a .gguf file",
            g.display()
        ),
        None => anyhow::ensure!(
            is_gguf_model(model, engine::model_loader::fetch_model::known_models()),
            "--llama-cpp loads a GGUF: --model must be a .gguf file or a fetched model ({}), \
             not {model} (or name the GGUF with --llama-cpp-model)",
            engine::model_loader::fetch_model::known_models().join(", ")
        ),
    }
    let version = Command::new(node)
        .arg("--version")
        .output()
        .with_context(|| format!("--llama-cpp: cannot run {}", node.display()))?;
    anyhow::ensure!(
        version.status.success(),
        "--llama-cpp: {} --version failed ({})",
        node.display(),
        version.status
    );
    Ok(script)
}

/// The GGUF llama.cpp loads: `--llama-cpp-model` if given, else the file our engine computes
/// from (`engine_gguf`, the loaded model's).
pub fn choose_gguf(
    model: &str,
    gguf: Option<&Path>,
    engine_gguf: Option<&Path>,
) -> anyhow::Result<PathBuf> {
    gguf.or(engine_gguf)
        .map(Path::to_path_buf)
        .with_context(|| {
            format!(
            "--llama-cpp: model {model} was loaded without its GGUF (fetched before the GGUF was \
             kept: delete its directory and fetch it again), or name one with --llama-cpp-model"
        )
        })
}

impl LlamaCpp {
    /// The script's command line, writing its JSON to `out`.
    pub fn args(&self, out: &Path) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec![self.script.clone().into()];
        a.extend(self.package_args());
        let phases: Vec<&str> = PHASES.iter().map(|(_, p)| *p).collect();
        a.extend([
            "--model".into(),
            self.gguf.clone().into(),
            "--threads".into(),
            self.threads.to_string().into(),
            "--reps".into(),
            self.reps.to_string().into(),
            "--vocab".into(),
            self.vocab.to_string().into(),
            "--phases".into(),
            phases.join(",").into(),
            "--json".into(),
            out.into(),
        ]);
        a
    }

    /// Loads the model in llama.cpp and stops, before our runs: a GGUF llama.cpp cannot load
    /// (one without tokenizer metadata, which our engine does not need) fails here, not
    /// after them.
    pub fn check(&self) -> anyhow::Result<()> {
        let status = Command::new(&self.node)
            .arg(&self.script)
            .args(self.package_args())
            .arg("--model")
            .arg(&self.gguf)
            .arg("--check")
            .stdout(std::io::stderr())
            .status()
            .with_context(|| format!("--llama-cpp: cannot start {}", self.node.display()))?;
        anyhow::ensure!(
            status.success(),
            "--llama-cpp: llama.cpp cannot load {} ({status}; its message is above); a GGUF \
             without tokenizer metadata loads in our engine but not in llama.cpp: name a file \
             with the same weights that has it with --llama-cpp-model",
            self.gguf.display()
        );
        Ok(())
    }

    fn package_args(&self) -> Vec<OsString> {
        match &self.package {
            Some(p) => vec!["--package".into(), p.clone().into()],
            None => Vec::new(),
        }
    }

    /// Runs the phases once. A phase during which other processes used more than a quarter
    /// of a core is named on stderr, as transformers' are.
    pub fn run(&self) -> anyhow::Result<Results> {
        let out =
            std::env::temp_dir().join(format!("lab-bench-llama-cpp-{}.json", std::process::id()));
        eprintln!(
            "llama.cpp: {} {} on {} ({} threads)",
            self.node.display(),
            self.script.display(),
            self.gguf.display(),
            self.threads
        );
        let status = Command::new(&self.node)
            .args(self.args(&out))
            // Its progress lines go to our stderr: our stdout is the table (and the JSON).
            .stdout(std::io::stderr())
            .status()
            .with_context(|| format!("--llama-cpp: cannot start {}", self.node.display()))?;
        anyhow::ensure!(
            status.success(),
            "--llama-cpp: the script failed ({status}; its message is above)"
        );
        let text = std::fs::read_to_string(&out)
            .with_context(|| format!("--llama-cpp: no results in {}", out.display()))?;
        let _ = std::fs::remove_file(&out);
        parse_results(&text)
    }
}

/// Reads the script's JSON: each phase's `tok_per_s` under `chosen`, and the build under `info`.
pub fn parse_results(text: &str) -> anyhow::Result<Results> {
    let v: serde_json::Value =
        serde_json::from_str(text).context("--llama-cpp: the script's JSON does not parse")?;
    let tokens_per_s = PHASES
        .iter()
        .map(|(ours, p)| {
            let phase = &v["chosen"][p];
            let t = phase["tok_per_s"]
                .as_f64()
                .filter(|t| t.is_finite() && *t > 0.0)
                .with_context(|| format!("--llama-cpp: no tok_per_s for {p}"))?;
            if phase["clean"] == false {
                eprintln!(
                    "llama.cpp's {p} ran while other processes used {:.2} cores: its figure is \
                     not clean",
                    phase["others_cores"].as_f64().unwrap_or(f64::NAN)
                );
            }
            Ok((*ours, t))
        })
        .collect::<anyhow::Result<_>>()?;
    let info = &v["info"];
    let s = |x: &serde_json::Value| x.as_str().unwrap_or("?").to_string();
    let build = format!(
        "{} ({} llama.cpp {}, {})",
        s(&info["package"]),
        s(&info["build_type"]),
        s(&info["llama_cpp_release"]["release"]),
        s(&info["cpu_backend"]),
    );
    Ok(Results {
        tokens_per_s,
        build,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gguf_is_a_gguf_file_or_a_fetched_model() {
        let known = ["smollm2"];
        assert!(is_gguf_model("/m/x.gguf", &known));
        assert!(is_gguf_model("smollm2", &known));
        assert!(!is_gguf_model("/work/ref-hf", &known));
        assert!(!is_gguf_model("tiny", &known));
        assert!(!is_gguf_model("x.gguf.json", &known));
    }

    #[test]
    fn the_named_gguf_wins_over_the_engines() {
        let (ours, named) = (Path::new("/a.gguf"), Path::new("/b.gguf"));
        assert_eq!(
            choose_gguf("smollm2", Some(named), Some(ours)).unwrap(),
            named
        );
        assert_eq!(choose_gguf("smollm2", None, Some(ours)).unwrap(), ours);
        let e = choose_gguf("smollm2", None, None).unwrap_err().to_string();
        assert!(e.contains("--llama-cpp-model"), "{e}");
    }

    /// Bad input before any timing: each a one-line error naming the flag, never a panic.
    #[test]
    fn checks_fail_early_with_the_flag_named() {
        let tmp = tempfile::tempdir().unwrap();
        let script = tmp.path().join("s.mjs");
        std::fs::write(&script, "").unwrap();
        let node = Path::new("/bin/true"); // answers --version with success
        let e = |r: anyhow::Result<PathBuf>| r.unwrap_err().to_string();
        let missing = tmp.path().join("none.mjs");
        assert!(e(check_before_load(
            node,
            Some(missing),
            None,
            "smollm2",
            None
        ))
        .contains("--llama-cpp-script"));
        assert!(e(check_before_load(
            node,
            Some(script.clone()),
            None,
            "/work/ref-hf",
            None
        ))
        .contains("must be a .gguf"));
        assert!(e(check_before_load(
            node,
            Some(script.clone()),
            Some(tmp.path()),
            "smollm2",
            None
        ))
        .contains("--llama-cpp-package"));
        let not_gguf = tmp.path().join("m.bin");
        std::fs::write(&not_gguf, "").unwrap();
        assert!(e(check_before_load(
            node,
            Some(script.clone()),
            None,
            "/work/ref-hf",
            Some(&not_gguf)
        ))
        .contains("--llama-cpp-model"));
        let no_node = tmp.path().join("no-node");
        assert!(e(check_before_load(
            &no_node,
            Some(script.clone()),
            None,
            "smollm2",
            None
        ))
        .contains("cannot run"));
        // A GGUF named explicitly stands in for a model that is not one.
        let gguf = tmp.path().join("m.gguf");
        std::fs::write(&gguf, "").unwrap();
        assert_eq!(
            check_before_load(
                node,
                Some(script.clone()),
                None,
                "/work/ref-hf",
                Some(&gguf)
            )
            .unwrap(),
            script
        );
    }

    #[test]
    fn the_command_line_names_every_setting() {
        let l = LlamaCpp {
            node: "node".into(),
            script: "s.mjs".into(),
            package: Some("/tmp/llama-npm".into()),
            gguf: "/m.gguf".into(),
            reps: 3,
            threads: 2,
            vocab: 49152,
        };
        let a: Vec<String> = l
            .args(Path::new("/o.json"))
            .iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            a.join(" "),
            "s.mjs --package /tmp/llama-npm --model /m.gguf --threads 2 --reps 3 --vocab 49152 \
             --phases prefill_b1_512,decode_b1 --json /o.json"
        );
    }

    #[test]
    fn results_parse_per_phase() {
        let text = r#"{"info": {"package": "node-llama-cpp 3.21.1", "build_type": "prebuilt",
            "llama_cpp_release": {"release": "v0.4.0"}, "cpu_backend": "libggml-cpu-zen4.so"},
            "chosen": {"prefill_b1_512": {"tok_per_s": 327.5, "clean": true},
                       "decode_b1": {"tok_per_s": 96.25, "clean": true}}}"#;
        let r = parse_results(text).unwrap();
        assert_eq!(
            r.tokens_per_s,
            [("prefill b=1 x512", 327.5), ("decode b=1", 96.25)]
        );
        assert_eq!(
            r.build,
            "node-llama-cpp 3.21.1 (prebuilt llama.cpp v0.4.0, libggml-cpu-zen4.so)"
        );
        // A phase missing, or a rate that is no rate, is an error, not a zero in the table.
        let e = parse_results(r#"{"chosen": {"prefill_b1_512": {"tok_per_s": 1.0}}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("decode_b1"), "{e}");
        let zero = r#"{"chosen": {"prefill_b1_512": {"tok_per_s": 0},
                                  "decode_b1": {"tok_per_s": 1}}}"#;
        assert!(parse_results(zero).is_err());
        assert!(parse_results("not json").is_err());
    }
}
