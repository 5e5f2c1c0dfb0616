//! reshape_and_cache is a copy, so the check is exact: every written row equals its token's
//! key/value bit for bit, and every other row of the (NaN-poisoned) cache is untouched, padding
//! rows (slot `PADDING_SLOT`) included.
mod common;

use common::{gpu_or_skip, poisoned, Rng};
use kernels::reshape_and_cache::PADDING_SLOT;

#[test]
fn reshape_and_cache_writes_exactly_the_mapped_rows() {
    let Some(gpu) = gpu_or_skip() else { return };
    let (s, k) = (&gpu.stream, &gpu.kernels.reshape_and_cache);
    let mut rng = Rng::fresh("reshape_and_cache");
    // (num_tokens, num_kv_heads, head_dim, num_blocks, block_size)
    for (t, nkv, d, nb, bs) in [
        (37, 8, 64, 10, 16),
        (5, 3, 64, 4, 3),
        (13, 5, 6, 7, 4),
        (1, 1, 128, 1, 1),
    ] {
        let row = nkv * d;
        let slots_total = nb * bs;
        // Every fifth token is a padding row (PADDING_SLOT): written nowhere.
        let slots: Vec<u64> = rng.permutation(slots_total)[..t]
            .iter()
            .enumerate()
            .map(|(tok, &v)| if tok % 5 == 4 { PADDING_SLOT } else { v as u64 })
            .collect();
        let (key, value) = (rng.bf16s(t * row, 1.0), rng.bf16s(t * row, 1.0));
        let (dk, dv) = (s.clone_htod(&key).unwrap(), s.clone_htod(&value).unwrap());
        let dslots = s.clone_htod(&slots).unwrap();
        let (mut kc, mut vc) = (
            poisoned(s, slots_total * row),
            poisoned(s, slots_total * row),
        );
        k.reshape_and_cache(
            s,
            &dk.as_view(),
            &dv.as_view(),
            &mut kc.as_view_mut(),
            &mut vc.as_view_mut(),
            &dslots.as_view(),
            row,
        )
        .unwrap();
        let (kc, vc) = (s.clone_dtoh(&kc).unwrap(), s.clone_dtoh(&vc).unwrap());
        let mut written = vec![None; slots_total];
        for (tok, &slot) in slots.iter().enumerate() {
            if slot != PADDING_SLOT {
                written[slot as usize] = Some(tok);
            }
        }
        for (slot, w) in written.iter().enumerate() {
            let (kr, vr) = (&kc[slot * row..][..row], &vc[slot * row..][..row]);
            match w {
                Some(tok) => {
                    assert_eq!(
                        kr,
                        &key[tok * row..][..row],
                        "key of token {tok} in slot {slot}"
                    );
                    assert_eq!(
                        vr,
                        &value[tok * row..][..row],
                        "value of token {tok} in slot {slot}"
                    );
                }
                None => assert!(
                    kr.iter().chain(vr).all(|v| v.is_nan()),
                    "slot {slot} was written but no token maps to it"
                ),
            }
        }
        println!("reshape_and_cache [{t} tokens, row {row}, {slots_total} slots]: exact");
    }
}
