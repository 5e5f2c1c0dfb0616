//! split_columns is a copy, so the check is exact: each part holds its columns of every row,
//! bit for bit, and no element is left unwritten (outputs start as NaN).
mod common;

use common::{gpu_or_skip, poisoned, Rng};

#[test]
fn split_columns_copies_each_part_exactly() {
    let Some(gpu) = gpu_or_skip() else { return };
    let (s, k) = (&gpu.stream, &gpu.kernels.split_columns);
    let mut rng = Rng::fresh("split_columns");
    // (rows, [w0, w1, w2]): SmolLM2's and Llama-3.2-1B's qkv, odd widths (scalar path), 1 row.
    for (rows, w) in [
        (37, [576, 192, 192]),
        (5, [2048, 512, 512]),
        (13, [7, 3, 3]),
        (1, [64, 64, 8]),
    ] {
        let width: usize = w.iter().sum();
        let x = rng.bf16s(rows * width, 1.0);
        let dx = s.clone_htod(&x).unwrap();
        let mut parts: Vec<_> = w.iter().map(|&wp| poisoned(s, rows * wp)).collect();
        {
            let [a, b, c] = &mut parts[..] else {
                unreachable!()
            };
            k.split3(
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
        }
        let mut start = 0;
        for (p, &wp) in parts.iter().zip(&w) {
            let got = s.clone_dtoh(p).unwrap();
            for r in 0..rows {
                assert_eq!(
                    &got[r * wp..][..wp],
                    &x[r * width + start..][..wp],
                    "row {r}, part at column {start}"
                );
            }
            start += wp;
        }
        println!("split_columns [{rows} rows, widths {w:?}]: exact");
    }
}

/// The ranks' column slices of an all-gather, side by side: exact, padding columns dropped,
/// every output element written (outputs start as NaN), and a layout that cannot be one (more
/// columns than the ranks hold) refused.
#[test]
fn gather_rank_columns_puts_slices_side_by_side() {
    let Some(gpu) = gpu_or_skip() else { return };
    let (s, k) = (&gpu.stream, &gpu.kernels.split_columns);
    let mut rng = Rng::fresh("gather_rank_columns");
    // (ranks, rows, w, cols): Llama-2-7B's vocabulary over 2 ranks (16-byte path), SmolLM2's
    // over 3, a padded last slice (49155 over 2 → 24578 each, 1 padding column), odd widths.
    for (ranks, rows, w, cols) in [
        (2, 3, 16000, 32000),
        (3, 1, 16384, 49152),
        (2, 5, 24578, 49155),
        (4, 7, 5, 19),
        (1, 2, 24, 24),
    ] {
        let x = rng.bf16s(ranks * rows * w, 1.0);
        let dx = s.clone_htod(&x).unwrap();
        let mut out = poisoned(s, rows * cols);
        k.gather_ranks(s, &mut out.as_view_mut(), &dx.as_view(), ranks, rows, cols)
            .unwrap();
        let got = s.clone_dtoh(&out).unwrap();
        for r in 0..rows {
            for c in 0..cols {
                let (rank, j) = (c / w, c % w);
                assert_eq!(
                    got[r * cols + c].to_bits(),
                    x[(rank * rows + r) * w + j].to_bits(),
                    "{ranks} ranks of [{rows}, {w}] -> {cols}: row {r}, column {c}"
                );
            }
        }
        println!("gather_rank_columns [{ranks} x {rows} x {w}] -> [{rows}, {cols}]: exact");
    }
    let dx = s.clone_htod(&rng.bf16s(2 * 3 * 8, 1.0)).unwrap();
    let mut out = poisoned(s, 3 * 17);
    let e = k.gather_ranks(s, &mut out.as_view_mut(), &dx.as_view(), 2, 3, 17);
    assert!(e.is_err(), "17 columns from 2 ranks of 8");
}
