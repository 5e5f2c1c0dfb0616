//! Async scheduling's hand-over (`Sampling::take_sampled_ids`): a step's input ids take the
//! previous step's sampled ids where `from_rows` names a row, and keep their value elsewhere
//! (`TAKE_NONE`, or a row past the sampled ids). Against the same rule on the host, at batch
//! sizes around the kernel's block size, with rows in any order and repeated; the untouched
//! ids start as a poison value, so a write where none belongs shows.
//!
//! `send_sampled_ids`, the way back: the ids written by the device into page-locked host memory.
//!
//! Without a GPU every test prints `skipped: ...` and passes.
mod common;

use common::{gpu_or_skip, Rng};
use kernels::sampling::TAKE_NONE;

const POISON: u32 = 0xdead_beef;

#[test]
fn input_ids_take_exactly_the_named_rows() {
    let Some(gpu) = gpu_or_skip() else { return };
    let (s, k) = (&gpu.stream, &gpu.kernels.sampling);
    let mut rng = Rng::fresh("take_sampled_ids");
    for (tokens, num_sampled) in [
        (1, 1),
        (7, 3),
        (255, 256),
        (256, 256),
        (1000, 17),
        (4097, 300),
    ] {
        let sampled: Vec<u32> = (0..num_sampled)
            .map(|_| rng.below(128_256) as u32)
            .collect();
        let from_rows: Vec<u32> = (0..tokens)
            .map(|_| match rng.below(4) {
                0 => TAKE_NONE,
                1 => (num_sampled + rng.below(5)) as u32, // past the sampled ids: kept
                _ => rng.below(num_sampled) as u32,
            })
            .collect();
        let want: Vec<u32> = from_rows
            .iter()
            .map(|&r| match sampled.get(r as usize) {
                Some(&id) if r != TAKE_NONE => id,
                _ => POISON,
            })
            .collect();
        let mut ids = s.clone_htod(&vec![POISON; tokens]).unwrap();
        let (d_from, d_sampled) = (
            s.clone_htod(&from_rows).unwrap(),
            s.clone_htod(&sampled).unwrap(),
        );
        k.take_sampled_ids(
            s,
            &mut ids.as_view_mut(),
            &d_from.as_view(),
            &d_sampled.as_view(),
        )
        .unwrap();
        assert_eq!(
            s.clone_dtoh(&ids).unwrap(),
            want,
            "{tokens} tokens, {num_sampled} rows"
        );
        println!("take_sampled_ids: {tokens} tokens from {num_sampled} rows: exact");
    }
    // Lists of different lengths are refused.
    let mut ids = s.clone_htod(&[POISON; 4]).unwrap();
    let short = s.clone_htod(&[0u32; 3]).unwrap();
    assert!(k
        .take_sampled_ids(
            s,
            &mut ids.as_view_mut(),
            &short.as_view(),
            &short.as_view()
        )
        .is_err());
}

/// `send_sampled_ids`: the device writes the ids into mapped page-locked host memory; the
/// host reads exactly them after the stream has passed, and nothing past them changes. Twice
/// on the same memory, as consecutive steps use their slots.
#[test]
fn sampled_ids_reach_page_locked_host_memory() {
    let Some(gpu) = gpu_or_skip() else { return };
    let (s, k) = (&gpu.stream, &gpu.kernels.sampling);
    let mut rng = Rng::fresh("send_sampled_ids");
    let capacity = 4100;
    // SAFETY: written below before anything reads it.
    let mut host = unsafe { gpu.ctx.alloc_pinned_with_flags::<u32>(capacity, 0) }.unwrap();
    let address = kernels::prepare_inputs::mapped_address(&host).unwrap();
    for n in [1, 3, 256, 257, 4097, 1] {
        host.as_mut_slice().unwrap().fill(POISON);
        let sampled: Vec<u32> = (0..n).map(|_| rng.below(128_256) as u32).collect();
        let d_sampled = s.clone_htod(&sampled).unwrap();
        // SAFETY: `address` maps `host` (`capacity` ids), which is neither read nor freed
        // before the synchronize below.
        unsafe { k.send_sampled_ids(s, address, capacity, &d_sampled.as_view()) }.unwrap();
        s.synchronize().unwrap();
        let got = host.as_slice().unwrap();
        assert_eq!(got[..n], sampled[..], "{n} ids");
        assert!(
            got[n..].iter().all(|&v| v == POISON),
            "{n} ids: written past them"
        );
    }
    // More ids than the host memory holds: refused.
    let long = s.clone_htod(&vec![0u32; capacity + 1]).unwrap();
    // SAFETY: refused before any launch.
    assert!(unsafe { k.send_sampled_ids(s, address, capacity, &long.as_view()) }.is_err());
}
