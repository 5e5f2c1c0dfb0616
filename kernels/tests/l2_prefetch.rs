//! l2_prefetch asks the L2 cache for bytes and does nothing else: the weight it is given is
//! unchanged bit for bit, at every size (parts of odd lengths, more bytes asked than a part
//! holds, none), and under programmatic dependent launch it still ends after the kernel before
//! it, so a kernel after it reads what the one before wrote.
mod common;

use common::{gpu_or_skip, poisoned, Rng};

#[test]
fn prefetch_changes_nothing() {
    let Some(gpu) = gpu_or_skip() else { return };
    let (s, k) = (&gpu.stream, &gpu.kernels.l2_prefetch);
    let mut rng = Rng::fresh("l2_prefetch");
    // (parts, elements, bytes asked of each part): Llama-3.2-1B's gate/up at the engine's
    // share of a 50 MB L2, a part shorter than the request, odd sizes, nothing.
    for (parts, n, bytes) in [
        (2, 16384 * 2048, 12_500_000),
        (1, 1000, 100_000),
        (2, 2 * 4099, 8000),
        (3, 3 * 7, 16),
        (2, 4096, 0),
    ] {
        let w = rng.bf16s(n, 1.0);
        let dw = s.clone_htod(&w).unwrap();
        k.prefetch(s, &dw.as_view(), parts, bytes).unwrap();
        assert_eq!(
            s.clone_dtoh(&dw).unwrap(),
            w,
            "{parts} parts of {n}, {bytes} bytes"
        );
        println!(
            "l2_prefetch [{parts} x {} elements, {bytes} bytes each]: unchanged",
            n / parts
        );
    }
}

#[test]
fn a_kernel_after_the_prefetch_reads_what_the_one_before_wrote() {
    let Some(gpu) = gpu_or_skip() else { return };
    let (s, split) = (&gpu.stream, &gpu.kernels.split_columns);
    let mut rng = Rng::fresh("l2_prefetch_order");
    // 64 MiB written, prefetched, then copied on: a prefetch grid that ended before the writer
    // would let the reader see the writer's poison.
    let (rows, w) = (4096, [4096, 2048, 2048]);
    let x = rng.bf16s(rows * 8192, 1.0);
    let dx = s.clone_htod(&x).unwrap();
    for round in 0..20 {
        let mut a = poisoned(s, rows * w[0]);
        let (mut b, mut c) = (poisoned(s, rows * w[1]), poisoned(s, rows * w[2]));
        split
            .split3(
                s,
                [
                    &mut a.as_view_mut(),
                    &mut b.as_view_mut(),
                    &mut c.as_view_mut(),
                ],
                &dx.as_view(),
                rows,
            )
            .unwrap();
        gpu.kernels
            .l2_prefetch
            .prefetch(s, &a.as_view(), 1, 1 << 20)
            .unwrap();
        let (mut a0, mut a1, mut a2) = (
            poisoned(s, rows * 2048),
            poisoned(s, rows * 1024),
            poisoned(s, rows * 1024),
        );
        split
            .split3(
                s,
                [
                    &mut a0.as_view_mut(),
                    &mut a1.as_view_mut(),
                    &mut a2.as_view_mut(),
                ],
                &a.as_view(),
                rows,
            )
            .unwrap();
        let got = s.clone_dtoh(&a0).unwrap();
        for r in 0..rows {
            assert_eq!(
                &got[r * 2048..][..2048],
                &x[r * 8192..][..2048],
                "round {round}, row {r}"
            );
        }
    }
    println!("l2_prefetch between a writer and a reader: 20 rounds exact");
}
