//! The CPU backend reports bad input as a `BackendError` instead of panicking: a dtype it does
//! not compute in, operands whose shapes do not fit, and step metadata that points outside the
//! tensors. The error stays structured inside `EngineError`.

use engine::backend::cpu_backend::CpuBackend;
use engine::backend::{Backend, BackendError, DType};
use engine::error::EngineError;
use engine::worker::model_runner::ModelInput;

/// A one-token step: id `id`, position 0, slot `slot`, logits of row 0.
fn one_token_step(id: u32, slot: u64) -> ModelInput {
    let mut input = ModelInput {
        input_ids: vec![id],
        positions: vec![0],
        logits_indices: vec![0],
        ..ModelInput::default()
    };
    input.attn_metadata.slot_mapping = vec![slot];
    input
}

#[test]
fn cpu_backend_rejects_bf16_naming_the_op() {
    let b = CpuBackend::default();
    let err = b.upload(vec![0.0; 6], 2, 3, DType::BF16).unwrap_err();
    assert!(
        matches!(
            err,
            BackendError::UnsupportedDType {
                op: "upload",
                dtype: DType::BF16,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("bfloat16"), "{err}");
    assert!(b.zeros(2, 3, DType::F16).is_err());
    let t = b.zeros(2, 3, DType::F32).unwrap();
    assert_eq!((b.shape(&t), b.dtype(&t)), ((2, 3), DType::F32));
}

#[test]
fn shape_mismatches_are_errors() {
    let b = CpuBackend::default();
    let err = b.upload(vec![0.0; 5], 2, 3, DType::F32).unwrap_err();
    assert!(matches!(
        err,
        BackendError::ShapeMismatch { op: "upload", .. }
    ));
    let x = b.zeros(4, 8, DType::F32).unwrap();
    let w = b.zeros(16, 7, DType::F32).unwrap();
    let err = b.linear(&x, &w, None).unwrap_err();
    assert!(
        matches!(err, BackendError::ShapeMismatch { op: "linear", .. }),
        "{err}"
    );
    let err = b.split_columns(&x, &[4, 3]).unwrap_err();
    assert!(matches!(
        err,
        BackendError::ShapeMismatch {
            op: "split_columns",
            ..
        }
    ));
}

#[test]
fn step_metadata_outside_the_tensors_is_an_error() {
    let b = CpuBackend::default();
    let table = b.zeros(10, 4, DType::F32).unwrap(); // [vocab 10, hidden 4]
    let step = b.prepare_step(one_token_step(10, 0)).unwrap();
    let err = b.embedding(&table, &step).unwrap_err();
    assert!(err.to_string().contains("token id 10"), "{err}");

    let step = b.prepare_step(one_token_step(1, 8)).unwrap();
    let (k, v) = (
        b.zeros(1, 4, DType::F32).unwrap(),
        b.zeros(1, 4, DType::F32).unwrap(),
    );
    let mut kc = b.zeros(8, 4, DType::F32).unwrap(); // 8 slots: slot 8 is past the end
    let mut vc = b.zeros(8, 4, DType::F32).unwrap();
    let err = b
        .reshape_and_cache(&k, &v, &mut kc, &mut vc, &step)
        .unwrap_err();
    assert!(err.to_string().contains("slot 8"), "{err}");

    let mut bad = one_token_step(1, 0);
    bad.positions.clear();
    assert!(b.prepare_step(bad).is_err());
}

#[test]
fn engine_error_keeps_the_backend_error_whole() {
    let b = CpuBackend::default();
    let err: EngineError = b.zeros(1, 1, DType::BF16).unwrap_err().into();
    assert!(matches!(
        err,
        EngineError::Backend(BackendError::UnsupportedDType { op: "zeros", .. })
    ));
}
