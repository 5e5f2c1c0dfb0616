//! copy_rows_htod writes the `[rows, used]` corner of a wider device matrix and nothing else:
//! the corner equals the host rows, every entry right of it and below it keeps what was there.
mod common;

use common::gpu_or_skip;
use kernels::copy_rows::copy_rows_htod;

#[test]
fn copy_rows_writes_the_corner_only() {
    let Some(gpu) = gpu_or_skip() else { return };
    let s = &gpu.stream;
    // (rows, used, width, buffer rows): a decode batch's tables at Llama-3.2-1B's width, a
    // full-width copy, one row, one column.
    for (rows, used, width, cap) in [
        (37, 125, 8192, 40),
        (5, 9, 9, 8),
        (1, 3, 64, 4),
        (6, 1, 16, 6),
    ] {
        let before: Vec<u32> = (0..cap * width).map(|i| u32::MAX - i as u32).collect();
        let mut dst = s.clone_htod(&before).unwrap();
        let src: Vec<u32> = (0..rows * used).map(|i| i as u32 * 7 + 1).collect();
        copy_rows_htod(s, &src, used, &mut dst, width).unwrap();
        let got = s.clone_dtoh(&dst).unwrap();
        for r in 0..cap {
            for c in 0..width {
                let want = if r < rows && c < used {
                    src[r * used + c]
                } else {
                    before[r * width + c]
                };
                assert_eq!(
                    got[r * width + c],
                    want,
                    "[{rows}, {used}] into width {width}: row {r}, column {c}"
                );
            }
        }
        println!("copy_rows_htod [{rows}, {used}] into [{cap}, {width}]: exact");
    }
}

#[test]
fn copy_rows_refuses_a_corner_that_does_not_fit() {
    let Some(gpu) = gpu_or_skip() else { return };
    let s = &gpu.stream;
    let mut dst = s.alloc_zeros::<u32>(4 * 8).unwrap();
    // Wider than the buffer's rows; more rows than it has; a ragged source.
    for (src, used) in [(vec![1u32; 9], 9), (vec![1; 5 * 8], 8), (vec![1; 7], 2)] {
        let e = copy_rows_htod(s, &src, used, &mut dst, 8).unwrap_err();
        assert!(e.to_string().contains("copy_rows_htod"), "{e}");
    }
}
