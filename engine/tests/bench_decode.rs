//! `lab bench --workload decode --batch-size N` as a user runs it: on the tiny model with two
//! tensor-parallel ranks (threads on the CPU), the timed window's steps and each rank's
//! all-reduce bytes against the closed form; and the batch sizes it must refuse.

mod common;
use common::lab_cli::lab;

use engine::tiny_model::tiny_config;

fn bench(extra: &[&str]) -> (i32, String, String) {
    let mut args = vec![
        "bench",
        "--model",
        "tiny",
        "--device",
        "cpu",
        "--threads",
        "1",
    ];
    args.extend_from_slice(extra);
    lab(&args)
}

#[test]
fn tp2_batch4_all_reduces_match_the_closed_form() {
    let (batch, tp) = (4, 2);
    let (code, stdout, stderr) = bench(&[
        "--workload",
        "decode",
        "--batch-size",
        "4",
        "--tp",
        "2",
        "--runs",
        "1",
        "--json",
    ]);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    let line = stdout.lines().last().expect("a JSON line");
    let r: serde_json::Value = serde_json::from_str(line).expect("the last line is JSON");
    assert_eq!(r["workload"], "decode");
    assert_eq!(r["batch_size"], batch);
    let steps = r["decode_steps"].as_u64().unwrap();
    assert_eq!(steps, 128);
    assert!(r["ms_per_step"].as_f64().unwrap() > 0.0);

    // Written out here rather than taken from the binary: after the embedding, and after
    // o_proj and down_proj in each layer, one all-reduce of [batch, hidden] f32 values.
    let c = tiny_config();
    let sites = 1 + 2 * c.num_hidden_layers as u64;
    let per_step = sites * (batch * c.hidden_size * 4) as u64;
    let ranks = r["ranks"].as_array().expect("one row per rank");
    assert_eq!(ranks.len(), tp);
    for row in ranks {
        assert_eq!(
            row["all_reduce_calls"].as_u64(),
            Some(sites * steps),
            "{row}"
        );
        assert_eq!(
            row["all_reduce_tensor_bytes"].as_u64(),
            Some(per_step * steps),
            "{row}"
        );
        assert_eq!(
            row["predicted_all_reduce_tensor_bytes_per_step"].as_u64(),
            Some(per_step)
        );
        // A ring of two ranks: each sends 2(N−1)/N = 1 × every tensor (half in the
        // reduce-scatter, half in the all-gather).
        assert_eq!(
            row["all_reduce_sent_bytes"].as_u64(),
            Some(per_step * steps)
        );
        // The collectives run inside the steps: a share of them, never more.
        let share = row["comm_share"].as_f64().unwrap();
        assert!(share > 0.0 && share <= 1.0, "{row}");
        // A rank's part of the step and the time outside it make the executor's wall time,
        // which runs inside the step's: what is left, the engine's own, cannot be negative.
        let part = row["step_ms_per_step"].as_f64().expect("step_ms_per_step");
        let outside = row["outside_ms_per_step"]
            .as_f64()
            .expect("outside_ms_per_step");
        assert!(part > 0.0 && outside >= 0.0, "{row}");
        let engine = r["engine_ms_per_step"]
            .as_f64()
            .expect("engine_ms_per_step");
        assert!(
            engine >= 0.0 && engine < r["ms_per_step"].as_f64().unwrap(),
            "{r}"
        );
    }
}

#[test]
fn batch_sizes_out_of_range_are_refused() {
    let cases: [(&[&str], &str); 3] = [
        (
            &["--workload", "decode", "--batch-size", "0"],
            "--batch-size 0",
        ),
        (
            &[
                "--workload",
                "decode",
                "--batch-size",
                "9",
                "--max-num-seqs",
                "8",
            ],
            "--max-num-seqs (8)",
        ),
        (
            &["--workload", "decode-b1", "--batch-size", "4"],
            "--workload decode",
        ),
    ];
    for (args, needle) in cases {
        let (code, stdout, stderr) = bench(args);
        assert_ne!(code, 0, "{args:?} should fail; stdout: {stdout}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(stderr.starts_with("error: "), "{stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}
