//! The byte format of everything ranks send each other over TCP: little-endian integers and
//! `f32`s, variable-length lengths and ids, length-prefixed lists, and length-prefixed frames
//! on a stream.
//!
//! Hand-written rather than a serialization crate, so that a byte count is the count of what
//! the engine decided to send (the step broadcast's sizes are measured with it) and so that a
//! truncated or foreign frame is an error that says what was expected, never a panic.

use std::io::{self, Read, Write};

/// The largest frame a rank accepts (a step's broadcast, a reply with logits, a tensor): a
/// length past it is a stream out of step or another program, not a message.
pub const MAX_FRAME_BYTES: u64 = 1 << 32;

/// Appends values to a byte buffer.
#[derive(Debug, Default, Clone)]
pub struct WireWriter {
    pub bytes: Vec<u8>,
}

impl WireWriter {
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.bytes.push(v);
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// A variable-length integer (LEB128: 7 bits a byte, low first), for lengths and ids:
    /// most take one or two bytes.
    pub fn varint(&mut self, mut v: u64) -> &mut Self {
        while v >= 0x80 {
            self.bytes.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.bytes.push(v as u8);
        self
    }
    pub fn usize(&mut self, v: usize) -> &mut Self {
        self.varint(v as u64)
    }
    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.u8(u8::from(v))
    }
    /// A length, then the values.
    pub fn u32s(&mut self, v: &[u32]) -> &mut Self {
        self.usize(v.len());
        v.iter().for_each(|&x| {
            self.u32(x);
        });
        self
    }
    pub fn f32s(&mut self, v: &[f32]) -> &mut Self {
        self.usize(v.len());
        v.iter().for_each(|&x| {
            self.bytes.extend_from_slice(&x.to_le_bytes());
        });
        self
    }
    pub fn str(&mut self, v: &str) -> &mut Self {
        self.usize(v.len());
        self.bytes.extend_from_slice(v.as_bytes());
        self
    }
}

/// Reads values back in the order they were written; every read checks the bytes are there.
#[derive(Debug)]
pub struct WireReader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> WireReader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        WireReader { bytes, at: 0 }
    }

    fn take(&mut self, n: usize) -> io::Result<&'a [u8]> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| {
            bad(format!(
                "a message ended after {} bytes, {} short of what its fields say",
                self.bytes.len(),
                self.at + n - self.bytes.len()
            ))
        })?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }
    pub fn u8(&mut self) -> io::Result<u8> {
        Ok(self.take(1)?[0])
    }
    pub fn u32(&mut self) -> io::Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }
    pub fn u64(&mut self) -> io::Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }
    pub fn varint(&mut self) -> io::Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(bad("a variable-length integer longer than 64 bits"))
    }
    pub fn usize(&mut self) -> io::Result<usize> {
        usize::try_from(self.varint()?).map_err(|_| bad("a length does not fit this machine"))
    }
    pub fn bool(&mut self) -> io::Result<bool> {
        Ok(self.u8()? != 0)
    }
    /// A list's length, checked against the bytes left (`each` bytes per item) before any
    /// allocation, so a corrupt length cannot ask for gigabytes.
    fn len(&mut self, each: usize) -> io::Result<usize> {
        let n = self.usize()?;
        if n.saturating_mul(each) > self.bytes.len() - self.at {
            return Err(bad(format!(
                "a list claims {n} items but only {} bytes follow",
                self.bytes.len() - self.at
            )));
        }
        Ok(n)
    }
    pub fn u32s(&mut self) -> io::Result<Vec<u32>> {
        let n = self.len(4)?;
        (0..n).map(|_| self.u32()).collect()
    }
    pub fn f32s(&mut self) -> io::Result<Vec<f32>> {
        let n = self.len(4)?;
        let raw = self.take(4 * n)?;
        Ok(raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4")))
            .collect())
    }
    pub fn str(&mut self) -> io::Result<String> {
        let n = self.len(1)?;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| bad("a string is not UTF-8"))
    }
    /// Fails unless every byte was read (a frame with trailing bytes is not the message its
    /// reader thinks it is).
    pub fn finish(self) -> io::Result<()> {
        match self.bytes.len() - self.at {
            0 => Ok(()),
            n => Err(bad(format!("{n} unexpected bytes after a message"))),
        }
    }
}

/// An `InvalidData` error: the bytes are not what this program sends.
pub fn bad(why: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.into())
}

/// Writes one frame: its length (8 bytes), then `payload`, in one write (two small writes on
/// a socket can wait on each other's acknowledgement: Nagle's algorithm and delayed ACKs).
pub fn write_frame(stream: &mut impl Write, payload: &[u8]) -> io::Result<()> {
    let mut frame = Vec::with_capacity(8 + payload.len());
    frame.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    frame.extend_from_slice(payload);
    stream.write_all(&frame)?;
    stream.flush()
}

/// Reads one frame. `Ok(None)` when the stream ended cleanly before a frame began (the peer
/// closed it); a stream that ends inside a frame is an `UnexpectedEof` error.
pub fn read_frame(stream: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 8];
    let mut got = 0;
    while got < len.len() {
        match stream.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let len = u64::from_le_bytes(len);
    if len > MAX_FRAME_BYTES {
        return Err(bad(format!(
            "a frame of {len} bytes: the stream is out of step, or not from a rank"
        )));
    }
    let mut payload = vec![0u8; len as usize];
    stream.read_exact(&mut payload)?;
    Ok(Some(payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_short_input_is_an_error() {
        let mut w = WireWriter::default();
        w.u8(7)
            .u64(1 << 40)
            .bool(true)
            .u32s(&[1, 2])
            .f32s(&[0.5, -1.0]);
        w.str("rank");
        for v in [0, 127, 128, 300, u64::MAX] {
            w.varint(v);
        }
        let mut r = WireReader::new(&w.bytes);
        assert_eq!(r.u8().unwrap(), 7);
        assert_eq!(r.u64().unwrap(), 1 << 40);
        assert!(r.bool().unwrap());
        assert_eq!(r.u32s().unwrap(), [1, 2]);
        assert_eq!(r.f32s().unwrap(), [0.5, -1.0]);
        assert_eq!(r.str().unwrap(), "rank");
        for v in [0, 127, 128, 300, u64::MAX] {
            assert_eq!(r.varint().unwrap(), v);
        }
        r.finish().unwrap();
        let cut = &w.bytes[..w.bytes.len() - 2 - 16];
        let mut r = WireReader::new(cut);
        r.u8().unwrap();
        r.u64().unwrap();
        r.bool().unwrap();
        r.u32s().unwrap();
        r.f32s().unwrap();
        assert!(r.str().is_err());
    }

    #[test]
    fn frames_round_trip_and_a_clean_end_is_none() {
        let mut buf = Vec::new();
        write_frame(&mut buf, b"abc").unwrap();
        write_frame(&mut buf, b"").unwrap();
        let mut s = &buf[..];
        assert_eq!(read_frame(&mut s).unwrap().unwrap(), b"abc");
        assert_eq!(read_frame(&mut s).unwrap().unwrap(), b"");
        assert!(read_frame(&mut s).unwrap().is_none());
        let mut cut = &buf[..5];
        assert!(read_frame(&mut cut).is_err());
    }
}
