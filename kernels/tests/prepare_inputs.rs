//! `PrepareInputs`: a step's packed arrays and block-table corner read by a kernel from
//! page-locked host memory, with async scheduling's hand-over on the way. Against the same
//! copy done on the host: random bytes, random tables, random hand-over rows (some naming no
//! row, some past the sampled ids); the device buffers start poisoned, so a word written where
//! none belongs, or one left unwritten, shows. Each case runs twice on the same staging memory
//! with new bytes, as the engine's steps do, so a stale read of the first step's bytes would
//! show too.
//!
//! Without a GPU every test prints `skipped: ...` and passes.
mod common;

use common::{gpu_or_skip, Rng};
use kernels::prepare_inputs::{mapped_address, Handover, StagedStep, TableCorner};
use kernels::sampling::TAKE_NONE;

const POISON: u8 = 0xab;
const POISON_U32: u32 = 0xabab_abab;

/// One case: packed bytes, tokens handed over (None: no hand-over), a table corner
/// (rows, used) and the device tables' width (None: tables unchanged).
struct Case {
    packed_bytes: usize,
    handover: Option<usize>,
    tables: Option<(usize, usize, usize)>,
}

#[test]
fn staged_steps_arrive_exactly() {
    let Some(gpu) = gpu_or_skip() else { return };
    let (s, k) = (&gpu.stream, &gpu.kernels.prepare_inputs);
    let mut rng = Rng::fresh("prepare_inputs");
    let cases = [
        Case {
            packed_bytes: 16,
            handover: None,
            tables: None,
        },
        Case {
            packed_bytes: 3072,
            handover: Some(1),
            tables: Some((1, 1, 8)),
        },
        Case {
            packed_bytes: 4096,
            handover: Some(7),
            tables: None,
        },
        Case {
            packed_bytes: 8192,
            handover: None,
            tables: Some((37, 5, 512)),
        },
        Case {
            packed_bytes: 65536,
            handover: Some(256),
            tables: Some((256, 128, 8192)),
        },
        Case {
            packed_bytes: 262_144,
            handover: Some(4099),
            tables: Some((256, 3, 3)),
        },
    ];
    for case in &cases {
        let bytes = case.packed_bytes;
        // The hand-over's two arrays at the first two 256-byte boundaries that fit them.
        let handover = case.handover.map(|n| {
            let words = n.div_ceil(4) * 16;
            let from_rows_at = words.next_multiple_of(256);
            assert!(
                from_rows_at + words <= bytes,
                "case too small for its tokens"
            );
            Handover {
                ids_at: 0,
                from_rows_at,
                num_tokens: n,
            }
        });
        let corner = case.tables.map(|(rows, used, _)| TableCorner {
            at: bytes,
            rows,
            used,
        });
        let width = case.tables.map_or(1, |t| t.2);
        let table_rows = case.tables.map_or(1, |t| t.0 + 2);
        let staged_len = bytes + case.tables.map_or(0, |t| t.0 * t.1 * 4);
        // SAFETY: every byte is written below before the kernel reads it.
        let mut staging = unsafe { gpu.ctx.alloc_pinned::<u8>(staged_len) }.unwrap();
        let address = mapped_address(&staging).unwrap();
        let mut packed = s.clone_htod(&vec![POISON; bytes + 64]).unwrap();
        let mut tables = s.clone_htod(&vec![POISON_U32; table_rows * width]).unwrap();
        for round in 0..2 {
            let host: Vec<u8> = (0..staged_len).map(|_| rng.below(256) as u8).collect();
            let num_sampled = 1 + rng.below(300);
            let sampled: Vec<u32> = (0..num_sampled)
                .map(|_| rng.below(128_256) as u32)
                .collect();
            let mut staged = host.clone();
            let mut want = host[..bytes].to_vec();
            if let Some(h) = handover {
                for t in 0..h.num_tokens {
                    let row = match rng.below(4) {
                        0 => TAKE_NONE,
                        1 => (num_sampled + rng.below(5)) as u32, // past the ids: kept
                        _ => rng.below(num_sampled) as u32,
                    };
                    let at = h.from_rows_at + 4 * t;
                    staged[at..at + 4].copy_from_slice(&row.to_le_bytes());
                    want[at..at + 4].copy_from_slice(&row.to_le_bytes());
                    if let Some(&id) = sampled.get(row as usize).filter(|_| row != TAKE_NONE) {
                        let at = h.ids_at + 4 * t;
                        want[at..at + 4].copy_from_slice(&id.to_le_bytes());
                    }
                }
            }
            want.extend_from_slice(&[POISON; 64]);
            let mut want_tables = s.clone_dtoh(&tables).unwrap();
            if let (Some(c), Some((_, _, w))) = (corner, case.tables) {
                for r in 0..c.rows {
                    for col in 0..c.used {
                        let at = c.at + 4 * (r * c.used + col);
                        let v = u32::from_le_bytes(staged[at..at + 4].try_into().unwrap());
                        want_tables[r * w + col] = v;
                    }
                }
            }
            staging.as_mut_slice().unwrap().copy_from_slice(&staged);
            let d_sampled = s.clone_htod(&sampled).unwrap();
            let step = StagedStep {
                packed_bytes: bytes,
                handover,
                tables: corner,
            };
            // SAFETY: `address` is `staging`'s mapped address, `staged_len` bytes, and
            // `staging` is neither written nor freed before the synchronize below.
            unsafe {
                k.launch(
                    s,
                    &mut packed,
                    address,
                    staged_len,
                    &step,
                    &d_sampled.as_view(),
                    &mut tables,
                    width,
                )
            }
            .unwrap();
            s.synchronize().unwrap();
            assert!(
                s.clone_dtoh(&packed).unwrap() == want,
                "{bytes} packed bytes, round {round}: packed arrays differ"
            );
            assert!(
                s.clone_dtoh(&tables).unwrap() == want_tables,
                "{bytes} packed bytes, round {round}: tables differ"
            );
        }
        println!(
            "prepare_inputs: {bytes} bytes, hand-over {:?}, tables {:?}: exact, twice",
            case.handover, case.tables
        );
    }
}

#[test]
fn steps_outside_their_buffers_are_refused() {
    let Some(gpu) = gpu_or_skip() else { return };
    let (s, k) = (&gpu.stream, &gpu.kernels.prepare_inputs);
    // SAFETY: nothing is launched from it (every call below is refused before launching).
    let staging = unsafe { gpu.ctx.alloc_pinned::<u8>(1024) }.unwrap();
    let address = mapped_address(&staging).unwrap();
    let mut packed = s.alloc_zeros::<u8>(1024).unwrap();
    let mut tables = s.alloc_zeros::<u32>(64).unwrap();
    let sampled = s.alloc_zeros::<u32>(4).unwrap();
    let plain = StagedStep {
        packed_bytes: 512,
        handover: None,
        tables: None,
    };
    let refused = [
        StagedStep {
            packed_bytes: 500,
            ..plain
        }, // not whole words
        StagedStep {
            packed_bytes: 2048,
            ..plain
        }, // past the buffers
        StagedStep {
            handover: Some(Handover {
                ids_at: 0,
                from_rows_at: 496,
                num_tokens: 8,
            }),
            ..plain
        },
        StagedStep {
            tables: Some(TableCorner {
                at: 512,
                rows: 4,
                used: 9,
            }), // wider than 8
            ..plain
        },
        StagedStep {
            tables: Some(TableCorner {
                at: 512,
                rows: 200,
                used: 1,
            }), // past the staged bytes
            ..plain
        },
    ];
    for step in refused {
        // SAFETY: refused before any launch (the point of the test).
        let r = unsafe {
            k.launch(
                s,
                &mut packed,
                address,
                1024,
                &step,
                &sampled.as_view(),
                &mut tables,
                8,
            )
        };
        assert!(r.is_err(), "{step:?} was accepted");
    }
}
