//! # Stage 3: the model executor
//!
//! The scheduler has decided a step's batch (a `SchedulerOutput`); now the worker runs it. You
//! write the pieces between that decision and the next token, in this order:
//!
//! ```text
//! 1. slot_mapping       slot_for_position    where a token's key/value live in the paged cache
//! 2. prepare_inputs     prepare_inputs       the flat batch: ids, positions, AttentionMetadata
//! 3. rms_norm           rms_norm,            the normalization before attention and the MLP
//!                       fused_add_rms_norm
//! 4. rotary_embedding   rotary_embedding     positions, encoded by rotating q and k
//! 5. paged_attention    paged_attention      attention over keys/values found by block table
//! 6. sampler            sample               greedy, temperature, top-k, top-p
//! ```
//!
//! Data flow, with your code in brackets:
//!
//! ```text
//! SchedulerOutput ─ [prepare_inputs] ─ [slot_for_position] per token
//!   └ ModelInput { input_ids, positions, AttentionMetadata, logits_indices }
//!       └ LlamaForCausalLM::forward on the CPU backend:
//!           embed ─ [rms_norm] ─ then each layer:
//!             qkv_proj ─ [rotary_embedding] ─ reshape_and_cache ─ [paged_attention] ─ o_proj
//!             ─ [fused_add_rms_norm] ─ gate_up_proj ─ silu_and_mul ─ down_proj
//!             ─ [fused_add_rms_norm] (the next layer's input norm, or the final norm)
//!           ─ lm_head, on the rows in logits_indices only
//!       └ logits ─ [sample] ─ next token
//! ```
//!
//! [`engine_parts`] puts your pieces into an [`EngineParts`]; the tests build an engine from it
//! and check that it generates exactly the tokens of the engine's own parts. Run
//! `cargo test -p stage3`: every test fails with `not yet implemented: stage3: ...` until you
//! write the function it names. `cargo test -p stage3 --features reference` swaps every
//! exercise for the engine's implementation (that is how `cargo xtask check` proves the tests
//! pass; it also runs the plausible wrong solutions in `mutants/` and requires the tests to
//! catch each one).

// The stubs ignore their arguments (and some imports) until you fill them in.
#![cfg_attr(
    not(feature = "reference"),
    allow(unused_variables, unused_imports, dead_code)
)]

// Maintainers only: plausible wrong solutions that the tests must catch (see mutants/mod.rs).
#[cfg(feature = "mutants")]
#[path = "../mutants/mod.rs"]
mod mutants;

pub mod paged_attention;
pub mod prepare_inputs;
pub mod rms_norm;
pub mod rotary_embedding;
pub mod sampler;
pub mod slot_mapping;

use engine::backend::cpu_backend::CpuKernels;
use engine::EngineParts;

/// The engine's parts with yours in place: input preparation (with your slot mapping), the
/// RMSNorm and rotary kernels, and the sampler.
pub fn engine_parts() -> EngineParts {
    EngineParts {
        prepare_inputs: prepare_inputs::prepare_inputs,
        kernels: CpuKernels {
            rms_norm: rms_norm::rms_norm,
            fused_add_rms_norm: rms_norm::fused_add_rms_norm,
            rotary_embedding: rotary_embedding::rotary_embedding,
            paged_attention: paged_attention::paged_attention,
        },
        sample: sampler::sample,
        ..EngineParts::default()
    }
}
