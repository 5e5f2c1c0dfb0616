//! Stage 2's numeric questions: chunked prefill under a token budget, and static against
//! continuous batching, each answered by driving the engine's scheduler.

use super::*;
use crate::template::{keep, Args, Kind, Rng, Values};

/// Stage 2's kinds.
pub const KINDS: &[Kind] = &[
    Kind {
        name: "long_prompt_first_token_step",
        check_fn: "prefill_steps",
        draw: draw_long_prompt,
        derive: derive_first_token_step,
        refit: keep,
    },
    Kind {
        name: "long_prompt_with_decodes_step",
        check_fn: "prefill_steps",
        draw: draw_long_prompt,
        derive: derive_long_prompt,
        refit: keep,
    },
    Kind {
        name: "long_prompt_last_chunk",
        check_fn: "prefill_steps",
        draw: draw_long_prompt_last_chunk,
        derive: derive_long_prompt,
        refit: keep,
    },
    Kind {
        name: "budget_second_prompt_chunk",
        check_fn: "budget_step",
        draw: draw_two_prompts,
        derive: derive_budget_step,
        refit: keep,
    },
    Kind {
        name: "budget_prompt_chunk",
        check_fn: "budget_step",
        draw: draw_one_prompt,
        derive: derive_budget_step,
        refit: keep,
    },
    Kind {
        name: "static_batch_running",
        check_fn: "batching_run",
        draw: draw_batch_run,
        derive: derive_batch_run,
        refit: keep,
    },
    Kind {
        name: "static_batch_utilization",
        check_fn: "batching_run",
        draw: draw_batch_run,
        derive: derive_static_utilization,
        refit: keep,
    },
    Kind {
        name: "continuous_batch_running",
        check_fn: "batching_run",
        draw: draw_batch_run,
        derive: derive_batch_run,
        refit: keep,
    },
    Kind {
        name: "continuous_batch_steps",
        check_fn: "batching_run",
        draw: draw_batch_run,
        derive: derive_continuous_steps,
        refit: keep,
    },
    Kind {
        name: "continuous_tokens_per_step",
        check_fn: "batching_run",
        draw: draw_batch_run,
        derive: derive_tokens_per_step,
        refit: keep,
    },
];

/// "Eight", "13".
fn capitalized_number(n: u64) -> String {
    let w = number_word(n);
    let mut c = w.chars();
    c.next().map_or(w.clone(), |f| {
        f.to_uppercase().collect::<String>() + c.as_str()
    })
}

// A prompt of 2 to 10 budgets; 2 to 16 decodes beside it when the question has decodes.
fn draw_long_prompt(rng: &mut Rng, book: &Args) -> Args {
    let mut args = book.clone();
    let budget = rng.pick(&[256, 512, 1024]);
    set(&mut args, "max_num_batched_tokens", budget);
    set(
        &mut args,
        "prompt_len",
        rng.range(2 * budget + 1, 10 * budget),
    );
    if args.contains_key("num_decodes") {
        set(&mut args, "num_decodes", rng.range(2, 16));
    }
    args
}

// The same, asking for the chunk of the prompt's last step (which the engine says).
fn draw_long_prompt_last_chunk(rng: &mut Rng, book: &Args) -> Args {
    let mut args = draw_long_prompt(rng, book);
    let steps = engine_with("prefill_steps", &args, &[("output", s("steps"))]).unwrap_or(1.0);
    set(&mut args, "step", steps as u64);
    args
}

fn derive_first_token_step(args: &Args) -> Result<Values, String> {
    let steps = engine("prefill_steps", args)? as u64;
    Ok(values(&[("steps_word", ordinal_word(steps))]))
}

fn derive_long_prompt(args: &Args) -> Result<Values, String> {
    let ask = |output: &str, step: u64| {
        engine_with(
            "prefill_steps",
            args,
            &[("output", s(output)), ("step", i(step))],
        )
        .map(|v| v as u64)
    };
    // The step count is asked without `step` (the same question the draw asked).
    let mut whole = args.clone();
    whole.remove("step");
    let steps = engine_with("prefill_steps", &whole, &[("output", s("steps"))])? as u64;
    let chunk = ask("chunk", 1)?;
    let last = ask("chunk", steps)?;
    if int(args, "step").is_ok_and(|s| s != steps) {
        return Err("this template asks for the prompt's last chunk".into());
    }
    let full = steps.saturating_sub(1);
    Ok(values(&[
        ("steps_word", ordinal_word(steps)),
        ("chunk", chunk.to_string()),
        ("full_chunks", full.to_string()),
        ("full_chunks_word", capitalized_number(full)),
        ("covered", (full * chunk).to_string()),
        ("rest", last.to_string()),
    ]))
}

// Decodes (2 to 16) and two prompts: the first fits whole, the second is cut.
fn draw_two_prompts(rng: &mut Rng, book: &Args) -> Args {
    let mut args = book.clone();
    let budget = rng.pick(&[256, 512, 1024]);
    let d = rng.range(2, 16);
    let p = rng.range((budget - d) / 2 + 1, budget - d - 1);
    set(&mut args, "max_num_batched_tokens", budget);
    set(&mut args, "num_decodes", d);
    set_list(&mut args, "prefill_lens", &[p, p]);
    args
}

// Decodes (2 to budget / 16) and one prompt longer than what they leave.
fn draw_one_prompt(rng: &mut Rng, book: &Args) -> Args {
    let mut args = book.clone();
    let budget = rng.pick(&[128, 256, 512]);
    let d = rng.range(2, budget / 16);
    set(&mut args, "max_num_batched_tokens", budget);
    set(&mut args, "num_decodes", d);
    set_list(
        &mut args,
        "prefill_lens",
        &[rng.range(budget - d + 1, budget + 200)],
    );
    args
}

fn derive_budget_step(args: &Args) -> Result<Values, String> {
    let prompts = ints(args, "prefill_lens")?;
    let first = prompts.first().copied().unwrap_or(0);
    let (budget, d) = (
        int(args, "max_num_batched_tokens")?,
        int(args, "num_decodes")?,
    );
    Ok(values(&[
        ("prompt_each", first.to_string()),
        ("left_after_decodes", budget.saturating_sub(d).to_string()),
        ("left", budget.saturating_sub(d + first).to_string()),
    ]))
}

// 2 to 6 requests of 4 to 30 output tokens through as many slots; a step that runs some.
fn draw_batch_run(rng: &mut Rng, book: &Args) -> Args {
    let mut args = book.clone();
    let b = rng.range(2, 6);
    let lens: Vec<u64> = (0..b).map(|_| rng.range(4, 30)).collect();
    set(&mut args, "batch_size", b);
    set_list(&mut args, "output_lens", &lens);
    if args.contains_key("repeat") && int(book, "repeat").is_ok_and(|r| r > 2) {
        set(&mut args, "repeat", rng.range(2, 4));
    }
    if args.contains_key("step") {
        let longest = lens.iter().copied().max().unwrap_or(1);
        set(&mut args, "step", rng.range(2, longest));
    }
    args
}

/// What every batching question shows: the lengths, slots and counts, no engine run.
fn derive_batch_run(args: &Args) -> Result<Values, String> {
    let lens = ints(args, "output_lens")?;
    let (b, repeat) = (int(args, "batch_size")?, int(args, "repeat").unwrap_or(1));
    let terms: Vec<String> = lens.iter().map(|l| l.to_string()).collect();
    let total: u64 = lens.iter().sum::<u64>() * repeat;
    Ok(values(&[
        ("batch_word", number_word(b)),
        ("lens_spoken", spoken_list(&lens)),
        ("lens_list", terms.join(", ")),
        ("lens_sum_terms", terms.join(" + ")),
        ("total_requests", (lens.len() as u64 * repeat).to_string()),
        ("repeat_word", number_word(repeat)),
        (
            "longest",
            lens.iter().max().copied().unwrap_or(0).to_string(),
        ),
        ("total_tokens", total.to_string()),
    ]))
}

/// The same requests run in another mode or asked for another output.
fn batching(args: &Args, mode: &str, output: &str) -> Result<f64, String> {
    engine_with(
        "batching_run",
        args,
        &[("mode", s(mode)), ("output", s(output))],
    )
}

fn derive_static_utilization(args: &Args) -> Result<Values, String> {
    let mut v = derive_batch_run(args)?;
    let steps = batching(args, "static", "steps")? as u64;
    v.insert("static_steps".into(), steps.to_string());
    v.insert(
        "static_slot_steps".into(),
        (int(args, "batch_size")? * steps).to_string(),
    );
    Ok(v)
}

fn derive_continuous_steps(args: &Args) -> Result<Values, String> {
    let mut v = derive_batch_run(args)?;
    let steps = batching(args, "static", "steps")?;
    v.insert("static_steps".into(), steps.to_string());
    Ok(v)
}

fn derive_tokens_per_step(args: &Args) -> Result<Values, String> {
    let mut v = derive_continuous_steps(args)?;
    v.insert(
        "continuous_steps".into(),
        batching(args, "continuous", "steps")?.to_string(),
    );
    // Static batching's tokens per step: the same tokens over its steps.
    let static_steps = batching(args, "static", "steps")?;
    let tokens =
        (ints(args, "output_lens")?.iter().sum::<u64>() * int(args, "repeat").unwrap_or(1)) as f64;
    v.insert("static_rate".into(), short(tokens / static_steps, 2));
    Ok(v)
}
