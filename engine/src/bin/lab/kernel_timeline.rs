//! `lab bench --workload decode-b1 --kernel-timeline PATH`: where a batch-1 decode step's
//! device time goes, kernel by kernel, inside its CUDA graph.
//!
//! The kernels are built with the timeline probe (`kernels::kernel_timeline`): each block
//! records when it reached its wait for the previous kernel and when it was let go. Grouped
//! into launches and the launches into steps (a step starts with `prepare_inputs.cu`'s
//! kernel), each launch is read as:
//! - **runs**: from its first block's release to the next launch's first release, that is
//!   from the previous kernel's end to its own, its share of the step on the critical path;
//! - **waited**: how long its first block had been waiting when it was let go (resident, its
//!   weight loads issued, under the previous kernel);
//! - **last in**: when its last block arrived at the wait, after its release (positive: some
//!   blocks were not even resident when the kernel could go, so their preparation is on the
//!   critical path).
//!
//! A decoder layer repeats the same launches, so positions in the layer are averaged over the
//! layers and the steps. The launches are also written as a Chrome trace (PATH), which
//! Perfetto opens: one track for the time each kernel runs, one for its blocks' waiting.

use kernels::kernel_timeline::{launches, LaunchTimes, TimelineRecords};

/// Whether `l` is `prepare_inputs.cu`'s kernel: the first launch of every step.
fn is_step_start(l: &LaunchTimes) -> bool {
    l.file_name() == "prepare_inputs.cu"
}

/// The launches of `records`, cut into steps (each starting at `prepare_inputs`), keeping only
/// the steps with the most common number of launches (a step cut short by the buffer, or the
/// window's first, may differ).
pub fn steps(records: &TimelineRecords) -> Vec<Vec<LaunchTimes>> {
    let mut steps: Vec<Vec<LaunchTimes>> = Vec::new();
    for l in launches(&records.records) {
        if is_step_start(&l) || steps.is_empty() {
            steps.push(Vec::new());
        }
        steps.last_mut().expect("pushed above").push(l);
    }
    steps.retain(|s| is_step_start(&s[0]));
    let mut counts = std::collections::BTreeMap::<usize, usize>::new();
    for s in &steps {
        *counts.entry(s.len()).or_default() += 1;
    }
    let Some((&len, _)) = counts.iter().max_by_key(|&(len, n)| (n, len)) else {
        return steps;
    };
    steps.retain(|s| s.len() == len);
    steps
}

/// One launch's three times, µs (the module's docs say what each means); `runs` is `None`
/// for a step's last launch.
#[derive(Debug, Clone, Copy, Default)]
struct Times {
    runs: Option<f64>,
    waited: f64,
    last_in: f64,
}

fn times(step: &[LaunchTimes], i: usize) -> Times {
    let l = &step[i];
    let us = |a: u64, b: u64| (a as f64 - b as f64) / 1e3;
    Times {
        runs: step
            .get(i + 1)
            .map(|n| us(n.first_release_ns, l.first_release_ns)),
        waited: us(l.first_release_ns, l.first_arrival_ns),
        last_in: us(l.last_arrival_ns, l.first_release_ns),
    }
}

/// The layer's pattern in a step of `len` launches for `layers` layers: `(first, period)` such
/// that launches `first + k·period + j` have the same kernel file for every layer `k`, the
/// shortest such period. `None` if the files do not repeat so.
fn layer_pattern(step: &[LaunchTimes], layers: usize) -> Option<(usize, usize)> {
    if layers == 0 {
        return None;
    }
    for period in 1..=12 {
        for first in 0..=6 {
            if first + layers * period > step.len() {
                break;
            }
            let repeats = (0..period).all(|j| {
                let f = step[first + j].file;
                (1..layers).all(|k| step[first + k * period + j].file == f)
            });
            if repeats && (layers > 1 || period == step.len() - first) {
                return Some((first, period));
            }
        }
    }
    None
}

/// A row of the report: a kernel (or a position in the layer), its mean times over the rows
/// averaged.
struct Row {
    name: String,
    blocks: usize,
    sms: usize,
    count: usize,
    runs: f64,
    waited: f64,
    last_in: f64,
}

fn mean_row(name: String, items: &[(&LaunchTimes, Times)]) -> Row {
    let n = items.len().max(1) as f64;
    let runs: Vec<f64> = items.iter().filter_map(|(_, t)| t.runs).collect();
    Row {
        name,
        blocks: items.first().map_or(0, |(l, _)| l.blocks),
        sms: items.first().map_or(0, |(l, _)| l.sms),
        count: items.len(),
        runs: if runs.is_empty() {
            f64::NAN
        } else {
            runs.iter().sum::<f64>() / runs.len() as f64
        },
        waited: items.iter().map(|(_, t)| t.waited).sum::<f64>() / n,
        last_in: items.iter().map(|(_, t)| t.last_in).sum::<f64>() / n,
    }
}

/// Prints the per-kernel table of `steps` (for a model of `layers` layers), writes the Chrome
/// trace to `path`, and returns the report's JSON.
pub fn report(
    steps: &[Vec<LaunchTimes>],
    layers: usize,
    dropped: u64,
    path: &std::path::Path,
) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!(
        !steps.is_empty(),
        "the kernel timeline recorded no whole step (were the kernels built with it?)"
    );
    let step = &steps[0];
    let label = |l: &LaunchTimes| format!("{} ({} blocks)", l.file_name(), l.blocks);
    let mut rows = Vec::new();
    let pattern = layer_pattern(step, layers);
    let (first, period) = pattern.unwrap_or((step.len(), 0));
    let after = first + layers * period;
    let collect = |i: usize| -> Vec<(&LaunchTimes, Times)> {
        steps.iter().map(|s| (&s[i], times(s, i))).collect()
    };
    for (i, l) in step.iter().enumerate().take(first) {
        rows.push(mean_row(label(l), &collect(i)));
    }
    for j in 0..period {
        let items: Vec<_> = (0..layers)
            .flat_map(|k| collect(first + k * period + j))
            .collect();
        rows.push(mean_row(
            format!("layer: {}", label(&step[first + j])),
            &items,
        ));
    }
    for (i, l) in step.iter().enumerate().skip(after) {
        rows.push(mean_row(label(l), &collect(i)));
    }
    let step_us: Vec<f64> = steps
        .iter()
        .map(|s| (s[s.len() - 1].first_release_ns - s[0].first_release_ns) as f64 / 1e3)
        .collect();
    let mean_step = step_us.iter().sum::<f64>() / step_us.len() as f64;
    println!(
        "kernel timeline: {} steps of {} launches{} ({} block records dropped); µs, mean over \
         steps{}:",
        steps.len(),
        step.len(),
        match pattern {
            Some((_, p)) => format!(", {layers} layers of {p}"),
            None => String::new(),
        },
        dropped,
        if pattern.is_some() { " and layers" } else { "" },
    );
    println!(
        "  {:<44} {:>6} {:>5} {:>8} {:>8} {:>8}",
        "kernel", "blocks", "SMs", "runs", "waited", "last in"
    );
    for r in &rows {
        println!(
            "  {:<44} {:>6} {:>5} {:>8.2} {:>8.2} {:>8.2}",
            r.name, r.blocks, r.sms, r.runs, r.waited, r.last_in
        );
    }
    println!(
        "  first kernel's release to the last kernel's: {mean_step:.1} µs a step (runs: from a \
         kernel's release to the next one's; waited: its first block before its release; last \
         in: its last block's arrival after its release)"
    );
    write_chrome_trace(steps, path)?;
    println!(
        "  Chrome trace of the launches: {} (open in Perfetto)",
        path.display()
    );
    let json_rows: Vec<_> = rows
        .iter()
        .map(|r| {
            serde_json::json!({
                "kernel": r.name, "blocks": r.blocks, "sms": r.sms, "launches": r.count,
                "runs_us": r.runs, "waited_us": r.waited, "last_in_us": r.last_in,
            })
        })
        .collect();
    Ok(serde_json::json!({
        "steps": steps.len(),
        "launches_per_step": step.len(),
        "step_us": mean_step,
        "dropped_records": dropped,
        "kernels": json_rows,
    }))
}

/// The launches as Chrome trace events: per launch, "runs" (release to the next release) on
/// one track and "waiting" (first arrival to release) on another, µs from the first step.
fn write_chrome_trace(steps: &[Vec<LaunchTimes>], path: &std::path::Path) -> anyhow::Result<()> {
    let t0 = steps[0][0]
        .first_arrival_ns
        .min(steps[0][0].first_release_ns);
    let us = |t: u64| (t.saturating_sub(t0)) as f64 / 1e3;
    let mut events = Vec::new();
    for (n, step) in steps.iter().enumerate() {
        for (i, l) in step.iter().enumerate() {
            let end = step
                .get(i + 1)
                .map_or(l.last_release_ns, |n| n.first_release_ns);
            let args = serde_json::json!({
                "step": n, "launch": i, "blocks": l.blocks, "sms": l.sms,
                "last_in_us": (l.last_arrival_ns as f64 - l.first_release_ns as f64) / 1e3,
            });
            events.push(serde_json::json!({
                "name": l.file_name(), "ph": "X", "pid": 1, "tid": 1,
                "ts": us(l.first_release_ns), "dur": us(end) - us(l.first_release_ns),
                "args": args,
            }));
            events.push(serde_json::json!({
                "name": l.file_name(), "ph": "X", "pid": 1, "tid": 2,
                "ts": us(l.first_arrival_ns),
                "dur": us(l.first_release_ns) - us(l.first_arrival_ns),
            }));
        }
    }
    for (tid, name) in [
        (1, "kernels: release to next release"),
        (2, "blocks waiting"),
    ] {
        events.push(serde_json::json!({
            "name": "thread_name", "ph": "M", "pid": 1, "tid": tid, "args": {"name": name},
        }));
    }
    let trace = serde_json::json!({ "traceEvents": events, "displayTimeUnit": "ns" });
    std::fs::write(path, serde_json::to_vec(&trace)?)
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kernels::kernel_timeline::BlockRecord;

    /// File indices in `kernels`' order: prepare_inputs 13, embedding 0, gemv 9, attention 4.
    fn launch_records(
        grid: u64,
        file: u16,
        blocks: u32,
        arrive: u64,
        release: u64,
    ) -> Vec<BlockRecord> {
        (0..blocks)
            .map(|b| BlockRecord {
                grid,
                arrived_ns: arrive + b as u64,
                released_ns: release,
                block: b,
                file,
                sm: b as u16,
            })
            .collect()
    }

    /// Two steps of: prepare_inputs, embedding, 2 layers of (gemv, attention), gemv.
    fn two_steps() -> TimelineRecords {
        let mut records = Vec::new();
        let mut grid = 0;
        let mut t = 1_000;
        for _ in 0..2 {
            for file in [13, 0, 9, 4, 9, 4, 9] {
                grid += 1;
                records.extend(launch_records(grid, file, 3, t - 500, t));
                t += 2_000;
            }
        }
        TimelineRecords {
            records,
            dropped: 0,
        }
    }

    #[test]
    fn launches_are_cut_into_steps_at_prepare_inputs() {
        let s = steps(&two_steps());
        assert_eq!(s.len(), 2);
        assert!(s.iter().all(|s| s.len() == 7));
        assert_eq!(s[1][0].file_name(), "prepare_inputs.cu");
    }

    #[test]
    fn the_layers_pattern_is_found_and_times_read_between_releases() {
        let s = steps(&two_steps());
        assert_eq!(layer_pattern(&s[0], 2), Some((2, 2)));
        let t = times(&s[0], 2);
        assert_eq!(t.runs, Some(2.0));
        assert_eq!(t.waited, 0.5);
        assert_eq!(t.last_in, -0.498);
        assert_eq!(times(&s[0], 6).runs, None);
    }

    #[test]
    fn the_report_averages_layers_and_writes_a_trace() {
        let s = steps(&two_steps());
        let path = std::env::temp_dir().join(format!("timeline-{}.json", std::process::id()));
        let json = report(&s, 2, 0, &path).unwrap();
        let trace: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(json["launches_per_step"], 7);
        let kernels = json["kernels"].as_array().unwrap();
        // prepare_inputs, embedding, the layer's two positions, the last gemv
        assert_eq!(kernels.len(), 5);
        assert_eq!(kernels[2]["kernel"], "layer: gemv.cu (3 blocks)");
        assert_eq!(kernels[2]["launches"], 4);
        assert_eq!(json["step_us"], 12.0);
        // two events per launch and two track names
        assert_eq!(trace["traceEvents"].as_array().unwrap().len(), 2 * 14 + 2);
    }
}
