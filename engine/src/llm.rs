//! The offline API, shaped like vLLM's `LLM`: give it prompts, get back completions.

use crate::chat_template::ChatMessage;
use crate::config::EngineConfig;
use crate::engine_parts::EngineParts;
use crate::error::{EngineError, Result};
use crate::llm_engine::{LLMEngine, Prompt, RequestOutput};
use crate::model_source::LoadedModel;
use crate::sampling_params::SamplingParams;

/// A model and an engine around it.
pub struct LLM {
    pub engine: LLMEngine,
}

impl LLM {
    pub fn new(model: LoadedModel, config: EngineConfig) -> Result<Self> {
        Ok(LLM {
            engine: LLMEngine::new(model, config)?,
        })
    }

    /// Like [`LLM::new`], with some of the engine's parts replaced (see [`EngineParts`]).
    pub fn with_parts(
        model: LoadedModel,
        config: EngineConfig,
        parts: EngineParts,
    ) -> Result<Self> {
        Ok(LLM {
            engine: LLMEngine::with_parts(model, config, parts)?,
        })
    }

    // ANCHOR: generate
    /// Generates a completion for every prompt, all batched together by the scheduler.
    /// Outputs come back in the order of `prompts`.
    pub fn generate(
        &mut self,
        prompts: &[impl AsRef<str>],
        params: &SamplingParams,
    ) -> Result<Vec<RequestOutput>> {
        let prompts = prompts
            .iter()
            .map(|p| Prompt::Text(p.as_ref().to_string()))
            .collect();
        self.generate_prompts(prompts, params)
    }
    // ANCHOR_END: generate

    /// Like [`LLM::generate`], for prompts given as text or token ids.
    pub fn generate_prompts(
        &mut self,
        prompts: Vec<Prompt>,
        params: &SamplingParams,
    ) -> Result<Vec<RequestOutput>> {
        let requests = prompts.into_iter().map(|p| (p, params.clone())).collect();
        self.generate_requests(requests)
    }

    /// Like [`LLM::generate_prompts`], each prompt with its own parameters (its priority and
    /// tenant, say).
    pub fn generate_requests(
        &mut self,
        requests: Vec<(Prompt, SamplingParams)>,
    ) -> Result<Vec<RequestOutput>> {
        // Validate everything before running anything: a bad prompt fails the whole call up
        // front, and the prompts queued before it are withdrawn so none is left behind.
        let mut ids = Vec::with_capacity(requests.len());
        for (i, (p, params)) in requests.into_iter().enumerate() {
            match self.engine.add_request(p, params) {
                Ok(id) => ids.push(id),
                Err(e) => {
                    for &id in &ids {
                        self.engine.abort_request(id);
                    }
                    return Err(match e {
                        EngineError::InvalidRequest(m) => {
                            EngineError::InvalidRequest(format!("prompt {}: {m}", i + 1))
                        }
                        other => other,
                    });
                }
            }
        }
        let mut outputs = Vec::with_capacity(ids.len());
        while self.engine.has_unfinished_requests() {
            outputs.extend(self.engine.step()?);
        }
        outputs.sort_by_key(|o| o.request_id);
        Ok(outputs)
    }

    /// Applies the model's chat template to one user message per prompt, with the assistant
    /// turn opened, as transformers' `apply_chat_template(add_generation_prompt=True)`.
    pub fn chat_prompt(&self, user_message: &str) -> Result<String> {
        let template = self
            .engine
            .tokenizer
            .chat_template
            .as_ref()
            .ok_or_else(|| {
                EngineError::ChatTemplate("this model has no chat template; drop --chat".into())
            })?;
        let msg = ChatMessage {
            role: "user".into(),
            content: user_message.into(),
        };
        template.apply(&[msg], true)
    }
}
