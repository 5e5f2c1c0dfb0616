//! All of stage 3 at once: your slot mapping, input preparation, kernels and sampler in one
//! engine, on the tiny model and (when fetched) on SmolLM2 against transformers.

mod common;

/// "With all your parts, the engine generates exactly the same tokens."
#[test]
fn engine_with_all_of_stage3_generates_the_same_tokens() {
    common::assert_same_as_engine("all of stage 3", stage3::engine_parts, &common::greedy());
    common::assert_same_as_engine("all of stage 3", stage3::engine_parts, &common::random());
    common::check_smollm2("all of stage 3", stage3::engine_parts());
}
