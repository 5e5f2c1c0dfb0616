//! Stage 6's numeric questions: pipeline parallelism, read off the schedule the engine's CPU
//! pipeline executed (one thread per stage).

use super::*;
use crate::template::{keep, Args, Kind, Rng, Values};

/// Stage 6's kinds.
pub const KINDS: &[Kind] = &[
    Kind {
        name: "pipeline_efficiency_one_batch",
        check_fn: "pipeline_executed",
        draw: draw_pipeline,
        derive: derive_pipeline,
        refit: keep,
    },
    Kind {
        name: "pipeline_ticks",
        check_fn: "pipeline_executed",
        draw: draw_pipeline,
        derive: derive_pipeline,
        refit: keep,
    },
    Kind {
        name: "pipeline_last_stage_start",
        check_fn: "pipeline_executed",
        draw: draw_pipeline,
        derive: derive_pipeline,
        refit: keep,
    },
    Kind {
        name: "pipeline_efficiency",
        check_fn: "pipeline_executed",
        draw: draw_pipeline,
        derive: derive_pipeline,
        refit: keep,
    },
    Kind {
        name: "pipeline_idle_units",
        check_fn: "pipeline_executed",
        draw: draw_pipeline,
        derive: derive_pipeline,
        refit: keep,
    },
    Kind {
        name: "pipeline_busy_stages",
        check_fn: "pipeline_executed",
        draw: draw_pipeline,
        derive: derive_pipeline,
        refit: keep,
    },
];

// 3 to 6 stages; 1 micro-batch where the book has 1, fewer micro-batches than stages where
// the book has fewer, else 2 to 8; the last stage, a micro-batch and a tick of the step.
fn draw_pipeline(rng: &mut Rng, book: &Args) -> Args {
    let mut args = book.clone();
    let s = rng.range(3, 6);
    let book_m = int(book, "micro_batches").unwrap_or(1);
    let book_s = int(book, "stages").unwrap_or(4);
    let m = if book_m == 1 {
        1
    } else if book_m < book_s {
        rng.range(2, s - 1)
    } else {
        rng.range(2, 8)
    };
    set(&mut args, "stages", s);
    set(&mut args, "micro_batches", m);
    if args.contains_key("stage") {
        set(&mut args, "stage", s - 1);
        set(&mut args, "micro_batch", rng.range(0, m - 1));
    }
    if args.contains_key("tick") {
        set(&mut args, "tick", rng.range(0, m + s - 2));
    }
    args
}

fn derive_pipeline(args: &Args) -> Result<Values, String> {
    let (n, m) = (int(args, "stages")?, int(args, "micro_batches")?);
    if int(args, "stage").is_ok_and(|x| x + 1 != n) {
        return Err("this template asks about the last stage".into());
    }
    let out = |o: &str| engine_with("pipeline_executed", args, &[("output", s(o))]);
    let ticks = out("ticks")? as u64;
    let busy = out("busy_units")? as u64;
    let idle = out("idle_units")? as u64;
    let later: Vec<u64> = (1..n).collect();
    let mut v = values(&[
        ("stages_word", number_word(n)),
        ("last_stage", (n - 1).to_string()),
        ("stages_minus_one", (n - 1).to_string()),
        ("last_mb", m.saturating_sub(1).to_string()),
        ("later_stages", spoken_list(&later)),
        ("ticks", ticks.to_string()),
        ("busy_units", busy.to_string()),
        ("total_units", (busy + idle).to_string()),
    ]);
    if let Ok(t) = int(args, "tick") {
        // Stage s holds micro-batch t − s at tick t when that is a real one.
        let busy_now: Vec<u64> = (0..n).filter(|&st| st <= t && t - st < m).collect();
        let text = match busy_now.as_slice() {
            [] => "no stage".to_string(),
            [one] => format!("stage {one}"),
            many => format!("stages {}", spoken_list(many)),
        };
        v.insert("busy_text".into(), text);
    }
    Ok(v)
}
