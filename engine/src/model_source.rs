//! Resolves `--model tiny | smollm2 | PATH` into a config, weights and a tokenizer.

use std::path::{Path, PathBuf};

use crate::config::model_config::token_ids;
use crate::config::ModelConfig;
use crate::error::{EngineError, Result};
use crate::model_executor::random_weights::random_tensor;
use crate::model_executor::safetensors_loader::{check_weights, load_weights_into};
use crate::model_executor::weights::{assemble_into, HostTensor, LlamaWeights};
use crate::tiny_model::{tiny_config, tiny_tokenizer};
use crate::tokenizer::Tokenizer;

/// Seed of the tiny model and of `--random-weights` unless told otherwise.
pub const DEFAULT_WEIGHT_SEED: u64 = 0;

/// Where a model comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelSpec {
    /// Built in code, random weights.
    Tiny,
    /// A name `lab fetch-model` knows (downloaded and converted on first use).
    Known(String),
    /// A Hugging Face model directory.
    Dir(PathBuf),
}

impl ModelSpec {
    pub fn parse(s: &str) -> Self {
        if s == "tiny" {
            ModelSpec::Tiny
        } else if crate::model_loader::fetch_model::known_models().contains(&s) {
            ModelSpec::Known(s.to_string())
        } else {
            ModelSpec::Dir(PathBuf::from(s))
        }
    }
}

/// Where a model's weights come from. Files and seeds are read (or drawn) tensor by tensor
/// when the engine puts the weights on its backend ([`ModelWeights::load_into`]), so a model
/// on its way to a GPU never sits whole in host memory: one fused tensor at a time does.
pub enum ModelWeights {
    /// Already in host memory, f32 (weights built or changed in code).
    Host(LlamaWeights<HostTensor>),
    /// Drawn from a seed, by tensor name (the tiny model, `--random-weights`).
    Random { seed: u64 },
    /// The safetensors files of a Hugging Face directory (checked when the model was loaded).
    Safetensors(PathBuf),
    /// `dir`, converted from the GGUF file `gguf`: loaded as [`ModelWeights::Safetensors`],
    /// then a backend that computes from blocks (the CPU's) keeps the linear layers in the
    /// GGUF's Q8_0/Q4_1 blocks instead (`model_loader::gguf_blocks`).
    Gguf { dir: PathBuf, gguf: PathBuf },
}

impl ModelWeights {
    /// Builds the weights for `config`, handing each fused tensor to `up` (a backend's upload)
    /// as soon as it is ready.
    pub fn load_into<T>(
        self,
        config: &ModelConfig,
        up: impl FnMut(HostTensor) -> Result<T>,
    ) -> Result<LlamaWeights<T>> {
        match self {
            ModelWeights::Host(w) => w.try_map(up),
            ModelWeights::Random { seed } => assemble_into(
                config,
                |name, [rows, cols]| Ok(random_tensor(seed, name, rows, cols)),
                up,
            ),
            ModelWeights::Safetensors(dir) | ModelWeights::Gguf { dir, .. } => {
                load_weights_into(&dir, config, up)
            }
        }
    }

    /// The GGUF file the weights were converted from, if they were.
    pub fn gguf_path(&self) -> Option<&Path> {
        match self {
            ModelWeights::Gguf { gguf, .. } => Some(gguf),
            _ => None,
        }
    }

    /// All the weights in host memory, f32 (to change or save them).
    pub fn into_host(self, config: &ModelConfig) -> Result<LlamaWeights<HostTensor>> {
        self.load_into(config, Ok)
    }
}

/// Everything needed to build an engine.
pub struct LoadedModel {
    pub name: String,
    pub config: ModelConfig,
    pub weights: ModelWeights,
    pub tokenizer: Tokenizer,
    /// Tokens that end generation (generation_config.json, else config.json).
    pub eos_token_ids: Vec<u32>,
}

impl LoadedModel {
    /// The weights in host memory, f32, read or drawn now if they were not yet (to change or
    /// compare them); they stay there, as [`ModelWeights::Host`].
    pub fn host_weights(&mut self) -> Result<&mut LlamaWeights<HostTensor>> {
        let source = std::mem::replace(&mut self.weights, ModelWeights::Random { seed: 0 });
        let host = match source {
            ModelWeights::Host(w) => w,
            other => other.into_host(&self.config)?,
        };
        self.weights = ModelWeights::Host(host);
        match &mut self.weights {
            ModelWeights::Host(w) => Ok(w),
            _ => unreachable!("set just above"),
        }
    }
}

/// Loads a model; with `random_weights`, only its config and tokenizer are read and the
/// weights are drawn from `seed`.
pub fn load_model(spec: &ModelSpec, random: bool, seed: u64) -> Result<LoadedModel> {
    let dir = match spec {
        ModelSpec::Tiny => {
            let config = tiny_config();
            return Ok(LoadedModel {
                name: "tiny".into(),
                weights: ModelWeights::Random { seed },
                eos_token_ids: config.eos_token_ids.clone(),
                config,
                tokenizer: tiny_tokenizer(),
            });
        }
        ModelSpec::Known(name) => {
            use crate::model_loader::fetch_model::{fetch_model, fetched_gguf};
            let dir = fetch_model(name)
                .map_err(|e| EngineError::Io(format!("cannot fetch model `{name}`: {e}")))?;
            let mut model = load_dir(&dir, random, seed)?;
            if let (false, Some(gguf)) = (random, fetched_gguf(name)) {
                model.weights = ModelWeights::Gguf { dir, gguf };
            }
            return Ok(model);
        }
        ModelSpec::Dir(path) if path.extension().is_some_and(|e| e == "gguf") => {
            return load_gguf(path, random, seed);
        }
        ModelSpec::Dir(dir) => dir.clone(),
    };
    load_dir(&dir, random, seed)
}

/// `--model path/x.gguf`: converted once to a Hugging Face directory in the cache
/// (`<cache>/models/gguf-<stem>-<bytes>`, for the config, tokenizer and f32 weights), and
/// marked [`ModelWeights::Gguf`] so that the CPU backend computes from the file's blocks.
fn load_gguf(gguf: &Path, random: bool, seed: u64) -> Result<LoadedModel> {
    use crate::model_loader::{fetch_model::cache_dir, gguf_to_hf};
    let _span = tracing::debug_span!("load_gguf").entered();
    let meta = std::fs::metadata(gguf)
        .map_err(|e| EngineError::Io(format!("cannot read {}: {e}", gguf.display())))?;
    let stem = gguf.file_stem().unwrap_or_default().to_string_lossy();
    let cache = cache_dir().map_err(|e| EngineError::Io(e.to_string()))?;
    let dir = cache
        .join("models")
        .join(format!("gguf-{stem}-{}", meta.len()));
    let complete = |dir: &Path| gguf_to_hf::HF_FILES.iter().all(|f| dir.join(f).is_file());
    if !complete(&dir) {
        // Another process may have finished the same conversion first; theirs is as good.
        if let Err(e) = gguf_to_hf::convert_gguf_to_hf(gguf, &dir) {
            if !complete(&dir) {
                return Err(EngineError::Weights(format!("{}: {e}", gguf.display())));
            }
        }
    }
    let mut model = load_dir(&dir, random, seed)?;
    model.name = gguf.display().to_string();
    if !random {
        model.weights = ModelWeights::Gguf {
            dir,
            gguf: gguf.to_path_buf(),
        };
    }
    Ok(model)
}

fn load_dir(path: &Path, random: bool, seed: u64) -> Result<LoadedModel> {
    // A lone config file (e.g. engine/configs/llama-2-7b.json) is a shape to fill randomly.
    let is_config_file = path.is_file() && path.extension().is_some_and(|e| e == "json");
    if !path.is_dir() && !is_config_file {
        return Err(EngineError::InvalidArgument(format!(
            "model `{}` is neither `tiny`, a known model name ({}), a model directory, nor a \
             config.json file",
            path.display(),
            crate::model_loader::fetch_model::known_models().join(", ")
        )));
    }
    if is_config_file && !random {
        return Err(EngineError::InvalidArgument(format!(
            "{} is a config file without weights: add --random-weights",
            path.display()
        )));
    }
    let (config, dir) = if is_config_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| EngineError::Config(format!("cannot read {}: {e}", path.display())))?;
        let config = ModelConfig::from_json(&text)
            .map_err(|e| EngineError::Config(format!("{}: {e}", path.display())))?;
        (
            config,
            path.parent().unwrap_or(Path::new(".")).to_path_buf(),
        )
    } else {
        (ModelConfig::from_dir(path)?, path.to_path_buf())
    };
    // Random weights need no real vocabulary: without a tokenizer.json, use the byte-level
    // one of the tiny model (its 259 ids fit any vocabulary).
    let tokenizer = if random && (is_config_file || !dir.join("tokenizer.json").exists()) {
        tiny_tokenizer()
    } else {
        Tokenizer::from_dir(&dir)?
    };
    if tokenizer.vocab_size() > config.vocab_size {
        return Err(EngineError::Tokenizer(format!(
            "tokenizer.json has {} tokens but config.json's vocab_size is {}",
            tokenizer.vocab_size(),
            config.vocab_size
        )));
    }
    let weights = if random {
        ModelWeights::Random { seed }
    } else {
        check_weights(&dir, &config)?; // bad files fail here, before any device is set up
        ModelWeights::Safetensors(dir.clone())
    };
    let eos_token_ids = match is_config_file {
        true => None,
        false => generation_eos(&dir)?,
    }
    .unwrap_or_else(|| config.eos_token_ids.clone());
    Ok(LoadedModel {
        name: path.display().to_string(),
        config,
        weights,
        tokenizer,
        eos_token_ids,
    })
}

/// `eos_token_id` of `generation_config.json`, if the file exists.
fn generation_eos(dir: &Path) -> Result<Option<Vec<u32>>> {
    let Ok(text) = std::fs::read_to_string(dir.join("generation_config.json")) else {
        return Ok(None);
    };
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| EngineError::Config(format!("generation_config.json: invalid JSON: {e}")))?;
    let ids = token_ids(&json.get("eos_token_id").cloned())?;
    Ok((!ids.is_empty()).then_some(ids))
}
