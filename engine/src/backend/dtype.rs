//! Element types of backend tensors.
//!
//! The CPU backend computes in f32, the reference every other backend is checked against. A GPU
//! backend keeps weights, activations and the KV cache in bf16: decode reads every weight once
//! per step, so halving the bytes halves the time. The dtype travels with the tensor, so an op
//! handed a dtype it cannot compute in says so instead of reading the bytes as something else.

use std::fmt;

/// The element type of a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// IEEE 754 single precision: the CPU backend's only dtype.
    F32,
    /// bfloat16: f32's exponent range with 8 bits of mantissa; what GPU backends store.
    BF16,
    /// IEEE 754 half precision: more mantissa than bf16, a narrower range.
    F16,
}

impl DType {
    /// Bytes one element takes.
    pub const fn size_in_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::BF16 | DType::F16 => 2,
        }
    }

    /// The name PyTorch and Hugging Face configs use (`torch_dtype`).
    pub const fn name(self) -> &'static str {
        match self {
            DType::F32 => "float32",
            DType::BF16 => "bfloat16",
            DType::F16 => "float16",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_names() {
        assert_eq!(DType::F32.size_in_bytes(), 4);
        assert_eq!(DType::BF16.size_in_bytes(), 2);
        assert_eq!(DType::F16.to_string(), "float16");
    }
}
