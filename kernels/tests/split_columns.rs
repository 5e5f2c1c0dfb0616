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
