//! CPython's `random` module, the part a benchmark workload needs: `seed(int)`,
//! `getrandbits(k)` and `randint(a, b)`, bit for bit.
//!
//! Why port it: nano-vllm's benchmark (and so every published figure on it) draws its prompt
//! lengths, prompt ids and output lengths from Python's `random` after `random.seed(0)`. To run
//! the *same* 256 requests in Rust, with no file of ids to carry around, we must draw exactly
//! the numbers Python draws. That fixes three things:
//! - the generator: the Mersenne Twister MT19937 (Matsumoto and Nishimura, 1998), 624 words
//!   of state, tempered 32-bit outputs;
//! - the seeding: an int seed is cut into 32-bit words, least significant first, and fed to
//!   MT19937's `init_by_array` (`seed(0)` is the one-word key `[0]`), not `init_genrand`;
//! - the range reduction: `randint(a, b)` is `a + _randbelow(b - a + 1)`, and `_randbelow(n)`
//!   draws `k = n.bit_length()` bits (`getrandbits(k)` keeps the top `k` bits of one output)
//!   and retries while the result is `>= n`. Rejection, not modulo: how many outputs a call
//!   consumes depends on the values, so any other reduction drifts after the first retry.

/// Words of MT19937 state.
const N: usize = 624;
/// The middle word of the recurrence.
const M: usize = 397;

/// Python's `random.Random`, restricted to integer seeds and integer draws.
pub struct PyRandom {
    mt: [u32; N],
    /// Next word of `mt` to temper; `N` means "regenerate first".
    index: usize,
}

impl PyRandom {
    /// `random.seed(seed)` for a non-negative int (`random.Random(seed)`).
    pub fn new(seed: u64) -> Self {
        // The int's 32-bit words, least significant first; zero is one word, [0].
        let key: Vec<u32> = if seed >> 32 == 0 {
            vec![seed as u32]
        } else {
            vec![seed as u32, (seed >> 32) as u32]
        };
        let mut r = PyRandom {
            mt: [0; N],
            index: N,
        };
        r.init_by_array(&key);
        r
    }

    /// MT19937's `init_genrand`: a linear-congruential fill of the state from one word.
    fn init_genrand(&mut self, s: u32) {
        self.mt[0] = s;
        for i in 1..N {
            let prev = self.mt[i - 1];
            self.mt[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        self.index = N;
    }

    /// MT19937's `init_by_array`: mixes a key of any length into the state.
    fn init_by_array(&mut self, key: &[u32]) {
        self.init_genrand(19_650_218);
        let (mut i, mut j) = (1usize, 0usize);
        for _ in 0..N.max(key.len()) {
            let prev = self.mt[i - 1];
            self.mt[i] = (self.mt[i] ^ (prev ^ (prev >> 30)).wrapping_mul(1_664_525))
                .wrapping_add(key[j])
                .wrapping_add(j as u32);
            i += 1;
            j += 1;
            if i >= N {
                self.mt[0] = self.mt[N - 1];
                i = 1;
            }
            if j >= key.len() {
                j = 0;
            }
        }
        for _ in 0..N - 1 {
            let prev = self.mt[i - 1];
            self.mt[i] = (self.mt[i] ^ (prev ^ (prev >> 30)).wrapping_mul(1_566_083_941))
                .wrapping_sub(i as u32);
            i += 1;
            if i >= N {
                self.mt[0] = self.mt[N - 1];
                i = 1;
            }
        }
        self.mt[0] = 0x8000_0000; // the top bit set: the state is never all zero
    }

    /// The next 32-bit output (MT19937's `genrand_uint32`).
    pub fn next_u32(&mut self) -> u32 {
        if self.index >= N {
            self.twist();
        }
        let mut y = self.mt[self.index];
        self.index += 1;
        // Tempering: spreads the state word's bits so every output bit is well distributed.
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// Regenerates all `N` words of state at once.
    fn twist(&mut self) {
        for i in 0..N {
            let y = (self.mt[i] & 0x8000_0000) | (self.mt[(i + 1) % N] & 0x7fff_ffff);
            let mag = if y & 1 == 1 { 0x9908_b0df } else { 0 };
            self.mt[i] = self.mt[(i + M) % N] ^ (y >> 1) ^ mag;
        }
        self.index = 0;
    }

    /// `random.getrandbits(k)` for `k <= 64`: the top `k` bits of one output when `k <= 32`;
    /// otherwise whole outputs from the least significant word up, the last one cut to its
    /// top bits.
    pub fn getrandbits(&mut self, k: u32) -> u64 {
        assert!(k <= 64, "getrandbits({k}): at most 64 bits here");
        let mut out = 0u64;
        let mut left = k;
        let mut shift = 0;
        while left > 0 {
            let take = left.min(32);
            let word = (self.next_u32() >> (32 - take)) as u64;
            out |= word << shift;
            shift += 32;
            left -= take;
        }
        out
    }

    /// `random._randbelow(n)` for `n >= 1`: uniform in `0..n` by rejection.
    fn randbelow(&mut self, n: u64) -> u64 {
        let k = 64 - n.leading_zeros(); // n.bit_length()
        loop {
            let r = self.getrandbits(k);
            if r < n {
                return r;
            }
        }
    }

    /// `random.randint(a, b)`: uniform in `a..=b` (Python raises on `b < a`; so do we).
    pub fn randint(&mut self, a: i64, b: i64) -> i64 {
        assert!(a <= b, "randint({a}, {b}): empty range");
        let width = u64::try_from(b as i128 - a as i128 + 1).expect("a range of at most 2^64 - 1");
        (a as i128 + self.randbelow(width) as i128) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Every expected value below was printed by CPython 3.11.7's `random` on this machine.

    #[test]
    fn raw_outputs_match_cpython_after_seed_0() {
        // random.seed(0); [random.getrandbits(32) for _ in range(3)]
        let mut r = PyRandom::new(0);
        let got: Vec<u64> = (0..3).map(|_| r.getrandbits(32)).collect();
        assert_eq!(got, [3626764237, 1654615998, 3255389356]);
        // ...the 701st output (random.seed(0), 700 draws, one more): past the 624 words of the
        // first state, so after the state was regenerated once more
        for _ in 3..700 {
            r.getrandbits(32);
        }
        assert_eq!(r.getrandbits(32), 2140787315);
    }

    #[test]
    fn a_seed_wider_than_32_bits_is_a_two_word_key() {
        // random.Random(2**40 + 7)
        let mut r = PyRandom::new((1 << 40) + 7);
        let got: Vec<u64> = (0..3).map(|_| r.getrandbits(32)).collect();
        assert_eq!(got, [2635837658, 3209733218, 3500038837]);
    }

    #[test]
    fn getrandbits_of_more_and_fewer_than_32_bits() {
        // r = random.Random(5); [r.getrandbits(64) for _ in range(2)]; [r.getrandbits(5) ...]
        let mut r = PyRandom::new(5);
        assert_eq!(r.getrandbits(64), 4712128852136459333);
        assert_eq!(r.getrandbits(64), 6613812840851947673);
        let got: Vec<u64> = (0..3).map(|_| r.getrandbits(5)).collect();
        assert_eq!(got, [25, 22, 30]);
    }

    #[test]
    fn randint_matches_cpython_with_rejections() {
        // random.seed(0); [randint(100, 1024) for _ in range(3)]: 925 values in 10 bits, so
        // about one draw in ten is rejected and redrawn.
        let mut r = PyRandom::new(0);
        let got: Vec<i64> = (0..3).map(|_| r.randint(100, 1024)).collect();
        assert_eq!(got, [964, 494, 876]);
        // r = random.Random(5); wide ranges (40 bits) and negative bounds
        let mut r = PyRandom::new(5);
        let wide: Vec<i64> = (0..3).map(|_| r.randint(0, 1_000_000_000_000)).collect();
        assert_eq!(wide, [281848216645, 394027974809, 759329574455]);
        let small: Vec<i64> = (0..6).map(|_| r.randint(-3, 3)).collect();
        assert_eq!(small, [3, 2, 2, 1, -3, 3]);
    }
}
