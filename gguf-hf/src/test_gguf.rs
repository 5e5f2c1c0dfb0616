//! The GGUF reader's tests, on small files made byte by byte with
//! [`GgufBuilder`](super::gguf_writer::GgufBuilder): independent of any model download, and
//! every kind of broken file on purpose.

use super::gguf::{GgufError, GgufFile, GgufHeader};
use super::gguf_metadata::MetaValue;
pub(crate) use super::gguf_writer::GgufBuilder;

fn small_file() -> GgufBuilder {
    GgufBuilder::new()
        .str("general.architecture", "llama")
        .u32("llama.block_count", 2)
        .f32("llama.rope.freq_base", 10000.0)
        .bool("tokenizer.ggml.add_bos_token", false)
        .str_array("tokenizer.ggml.tokens", &["a", "b"])
        .i32_array("tokenizer.ggml.token_type", &[3, 1])
        .tensor_f32("norm.weight", &[3], &[1.0, 2.0, 3.0])
        .tensor_f32("w.weight", &[2, 3], &[1., 2., 3., 4., 5., 6.])
}

#[test]
fn reads_metadata_and_tensor_table() {
    let h = GgufHeader::parse(&small_file().build()).unwrap();
    assert_eq!(h.version, 3);
    assert_eq!(h.metadata.str("general.architecture").unwrap(), "llama");
    assert_eq!(h.metadata.usize("llama.block_count").unwrap(), 2);
    assert_eq!(h.metadata.f64("llama.rope.freq_base").unwrap(), 10000.0);
    assert!(!h.metadata.bool("tokenizer.ggml.add_bos_token").unwrap());
    assert_eq!(
        h.metadata.str_array("tokenizer.ggml.tokens").unwrap(),
        ["a", "b"]
    );
    assert_eq!(
        h.metadata.u64_array("tokenizer.ggml.token_type").unwrap(),
        [3, 1]
    );
    assert!(matches!(
        h.metadata.usize("nope"),
        Err(GgufError::MissingKey(_))
    ));
    assert!(matches!(
        h.metadata.str("llama.block_count"),
        Err(GgufError::WrongType { .. })
    ));
    let w = h.tensor("w.weight").unwrap();
    assert_eq!(w.shape(), [3, 2], "GGUF dims are innermost first");
    assert_eq!(h.data_offset % 32, 0);
    assert_eq!(
        w.offset, 32,
        "the second tensor starts at the next aligned offset"
    );
}

#[test]
fn every_value_type_and_nested_arrays() {
    let nested = [
        9u32.to_le_bytes().to_vec(),
        1u64.to_le_bytes().to_vec(),
        0u32.to_le_bytes().to_vec(),
        2u64.to_le_bytes().to_vec(),
        vec![7, 8],
    ]
    .concat();
    let b = GgufBuilder::new()
        .kv("u8", 0, &[200])
        .kv("i8", 1, &[0xff])
        .kv("u16", 2, &[1, 1])
        .kv("i16", 3, &[0xfe, 0xff])
        .kv("i32", 5, &(-5i32).to_le_bytes())
        .kv("u64", 10, &9u64.to_le_bytes())
        .kv("i64", 11, &(-9i64).to_le_bytes())
        .kv("f64", 12, &0.5f64.to_le_bytes())
        .kv("nested", 9, &nested);
    let h = GgufHeader::parse(&b.build()).unwrap();
    let m = &h.metadata;
    assert_eq!(*m.get("u8").unwrap(), MetaValue::U8(200));
    assert_eq!(*m.get("i8").unwrap(), MetaValue::I8(-1));
    assert_eq!(*m.get("u16").unwrap(), MetaValue::U16(257));
    assert_eq!(*m.get("i16").unwrap(), MetaValue::I16(-2));
    assert_eq!(
        m.get("i32").unwrap().as_u64(),
        None,
        "negative integers are not counts"
    );
    assert_eq!(h.metadata.usize("u64").unwrap(), 9);
    assert_eq!(*m.get("i64").unwrap(), MetaValue::I64(-9));
    assert_eq!(h.metadata.f64("f64").unwrap(), 0.5);
    let inner = MetaValue::Array(vec![MetaValue::U8(7), MetaValue::U8(8)]);
    assert_eq!(*m.get("nested").unwrap(), MetaValue::Array(vec![inner]));
}

#[test]
fn custom_alignment_moves_the_data() {
    let h = GgufHeader::parse(&small_file().u32("general.alignment", 64).build()).unwrap();
    assert_eq!(h.alignment, 64);
    assert_eq!(h.data_offset % 64, 0);
    assert_eq!(h.tensor("w.weight").unwrap().offset, 64);
}

#[test]
fn dequantizes_from_a_mapped_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = small_file()
        .version(2)
        .write_to(dir.path(), "m.gguf")
        .unwrap();
    let f = GgufFile::open(&path).unwrap();
    let w = f.header.tensor("w.weight").unwrap();
    assert_eq!(f.dequantize(w).unwrap(), [1., 2., 3., 4., 5., 6.]);
}

#[test]
fn rejects_malformed_headers() {
    let good = small_file().build();
    let mut magic = good.clone();
    magic[0] = b'X';
    assert!(matches!(
        GgufHeader::parse(&magic),
        Err(GgufError::BadMagic { .. })
    ));
    let v1 = small_file().version(1).build();
    assert!(matches!(
        GgufHeader::parse(&v1),
        Err(GgufError::UnsupportedVersion(1))
    ));
    let big = small_file().version(3u32.swap_bytes()).build();
    assert!(matches!(GgufHeader::parse(&big), Err(GgufError::BigEndian)));
    let dup = small_file().u32("llama.block_count", 3).build();
    assert!(matches!(
        GgufHeader::parse(&dup),
        Err(GgufError::DuplicateKey(_))
    ));
    let align = small_file().u32("general.alignment", 24).build();
    assert!(matches!(
        GgufHeader::parse(&align),
        Err(GgufError::BadAlignment(24))
    ));
    let huge = GgufBuilder::new()
        .kv(
            "a",
            9,
            &[[0u8; 4].as_slice(), &u64::MAX.to_le_bytes()].concat(),
        )
        .build();
    assert!(matches!(
        GgufHeader::parse(&huge),
        Err(GgufError::Truncated { .. })
    ));
    let q4k = GgufBuilder::new()
        .tensor("t", &[256], 12, vec![0; 144])
        .build();
    let err = GgufHeader::parse(&q4k).unwrap_err();
    assert!(err.to_string().contains("Q4_K"), "{err}");
    let ragged = GgufBuilder::new()
        .tensor("t", &[31], 8, vec![0; 34])
        .build();
    assert!(matches!(
        GgufHeader::parse(&ragged),
        Err(GgufError::BadTensor { .. })
    ));
}

#[test]
fn every_truncation_is_an_error() {
    let good = small_file().build();
    GgufHeader::parse(&good).unwrap();
    let last_data = good.len() - 32 + 6 * 4;
    for len in 0..last_data {
        assert!(
            GgufHeader::parse(&good[..len]).is_err(),
            "prefix of {len} bytes parsed"
        );
    }
}

proptest::proptest! {
    /// Whatever bytes we corrupt, parsing returns (Ok or Err) instead of panicking.
    #[test]
    fn corrupt_bytes_never_panic(
        flips in proptest::collection::vec((0usize..400, proptest::num::u8::ANY), 1..8)
    ) {
        let mut bytes = small_file().build();
        for (at, b) in flips {
            let n = bytes.len();
            bytes[at % n] = b;
        }
        let _ = GgufHeader::parse(&bytes);
    }
}
