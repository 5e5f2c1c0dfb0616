//! Coalescing, measured: one copy kernel written three ways, and the sectors each moves.
//!
//! ```sh
//! cargo run -p stage4 --example coalescing
//! ```
//!
//! Every version copies the same rows and gets the same result; only the way the threads of a
//! block share a row differs, and with it the memory traffic.

use stage4::gpu::{block_dim, block_idx, launch, thread_idx, Global, LaunchConfig};

// ANCHOR: strided
/// Block `b` copies row `b`. Thread `t` takes elements `t`, `t + blockDim`, `t + 2·blockDim`,
/// ...: in each pass of the loop the 32 lanes of a warp touch 32 neighbouring floats.
async fn copy_strided(out: &Global<f32>, x: &Global<f32>, width: usize) {
    let row = block_idx().x * width;
    let mut i = thread_idx().x;
    while i < width {
        out.store(row + i, x.load(row + i));
        i += block_dim().x;
    }
}
// ANCHOR_END: strided

// ANCHOR: chunked
/// Block `b` copies row `b`. Thread `t` takes a contiguous chunk of the row: in each pass the
/// lanes of a warp touch floats `chunk` apart.
async fn copy_chunked(out: &Global<f32>, x: &Global<f32>, width: usize) {
    let row = block_idx().x * width;
    let chunk = width.div_ceil(block_dim().x);
    let first = thread_idx().x * chunk;
    for i in first..(first + chunk).min(width) {
        out.store(row + i, x.load(row + i));
    }
}
// ANCHOR_END: chunked

fn main() {
    let (rows, threads) = (4, 128);
    for width in [1024, 1020] {
        let data: Vec<f32> = (0..rows * width).map(|i| i as f32).collect();
        let x = Global::from_slice("x", &data);
        let config = LaunchConfig::new(rows, threads);
        println!("== {rows} rows of {width} floats, {threads} threads per block");
        let out = Global::filled("out", data.len(), f32::NAN);
        let strided = launch("copy_strided", config, || copy_strided(&out, &x, width));
        assert_eq!(out.to_vec(), data);
        println!("{strided}");
        let out = Global::filled("out", data.len(), f32::NAN);
        let chunked = launch("copy_chunked", config, || copy_chunked(&out, &x, width));
        assert_eq!(out.to_vec(), data);
        println!("{chunked}");
        if width == 1024 {
            // Rows of whole sectors: the strided copy moves nothing it does not use; the
            // chunked one (chunks of 8 floats: 32 bytes, a sector, between lanes) moves 8x.
            assert_eq!(strided.loads().efficiency(), 1.0);
            assert_eq!(chunked.loads().efficiency(), 0.125);
        }
    }
}
