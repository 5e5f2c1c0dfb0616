//! Writing GGUF files: a small builder of the format, byte by byte (header, metadata, tensor
//! table, aligned data). Tests make model files and every kind of broken file with it, without
//! any download; it writes whatever it is given, quantized blocks included, unchecked.

/// A GGUF string: `u64` length, then the bytes.
fn gguf_string(s: &str) -> Vec<u8> {
    [&(s.len() as u64).to_le_bytes()[..], s.as_bytes()].concat()
}

/// Builds a little-endian GGUF file in memory.
pub struct GgufBuilder {
    version: u32,
    alignment: u64,
    n_kv: u64,
    kvs: Vec<u8>,
    tensors: Vec<(String, Vec<u64>, u32, Vec<u8>)>,
}

impl GgufBuilder {
    /// An empty version-3 file with 32-byte alignment.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        Self {
            version: 3,
            alignment: 32,
            n_kv: 0,
            kvs: vec![],
            tensors: vec![],
        }
    }

    /// Sets the format version written in the header.
    pub fn version(mut self, v: u32) -> Self {
        self.version = v;
        self
    }

    /// A key with value type `ty` and the already-encoded value bytes.
    pub fn kv(mut self, key: &str, ty: u32, value: &[u8]) -> Self {
        if key == "general.alignment" && ty == 4 {
            self.alignment = u32::from_le_bytes(value.try_into().unwrap()) as u64;
        }
        self.kvs.extend(gguf_string(key));
        self.kvs.extend(ty.to_le_bytes());
        self.kvs.extend(value);
        self.n_kv += 1;
        self
    }

    /// A `u32` value.
    pub fn u32(self, key: &str, v: u32) -> Self {
        self.kv(key, 4, &v.to_le_bytes())
    }
    /// An `f32` value.
    pub fn f32(self, key: &str, v: f32) -> Self {
        self.kv(key, 6, &v.to_le_bytes())
    }
    /// A `bool` value.
    pub fn bool(self, key: &str, v: bool) -> Self {
        self.kv(key, 7, &[v as u8])
    }
    /// A string value.
    pub fn str(self, key: &str, v: &str) -> Self {
        self.kv(key, 8, &gguf_string(v))
    }
    /// An array of strings.
    pub fn str_array(self, key: &str, items: &[&str]) -> Self {
        let mut v = 8u32.to_le_bytes().to_vec();
        v.extend((items.len() as u64).to_le_bytes());
        items.iter().for_each(|s| v.extend(gguf_string(s)));
        self.kv(key, 9, &v)
    }
    /// An array of `i32`.
    pub fn i32_array(self, key: &str, items: &[i32]) -> Self {
        let mut v = 5u32.to_le_bytes().to_vec();
        v.extend((items.len() as u64).to_le_bytes());
        items.iter().for_each(|x| v.extend(x.to_le_bytes()));
        self.kv(key, 9, &v)
    }

    /// A tensor with ggml `dims` (innermost first), ggml type id, and raw data bytes.
    pub fn tensor(mut self, name: &str, dims: &[u64], type_id: u32, data: Vec<u8>) -> Self {
        self.tensors
            .push((name.into(), dims.to_vec(), type_id, data));
        self
    }

    /// An F32 tensor.
    pub fn tensor_f32(self, name: &str, dims: &[u64], values: &[f32]) -> Self {
        self.tensor(
            name,
            dims,
            0,
            values.iter().flat_map(|x| x.to_le_bytes()).collect(),
        )
    }

    /// The whole file.
    pub fn build(&self) -> Vec<u8> {
        let align = |n: usize| n.next_multiple_of(self.alignment as usize);
        let mut out = b"GGUF".to_vec();
        out.extend(self.version.to_le_bytes());
        out.extend((self.tensors.len() as u64).to_le_bytes());
        out.extend(self.n_kv.to_le_bytes());
        out.extend(&self.kvs);
        let mut offset = 0;
        for (name, dims, ty, data) in &self.tensors {
            out.extend(gguf_string(name));
            out.extend((dims.len() as u32).to_le_bytes());
            dims.iter().for_each(|d| out.extend(d.to_le_bytes()));
            out.extend(ty.to_le_bytes());
            out.extend((offset as u64).to_le_bytes());
            offset = align(offset + data.len());
        }
        out.resize(align(out.len()), 0);
        for (_, _, _, data) in &self.tensors {
            out.extend(data);
            out.resize(align(out.len()), 0);
        }
        out
    }

    /// Writes the file into `dir` and returns its path.
    pub fn write_to(
        &self,
        dir: &std::path::Path,
        name: &str,
    ) -> std::io::Result<std::path::PathBuf> {
        let path = dir.join(name);
        std::fs::write(&path, self.build())?;
        Ok(path)
    }
}
