//! The market engine's seeded randomness: xoshiro256** seeded through SplitMix64, plus the few
//! integer-only draws the engine needs (bounded integers, parts-per-million coins, exponential
//! inter-arrival times in fixed point).
//!
//! Written here rather than taken from a crate so that the stream for a seed can never change with
//! a dependency upgrade: a seed recorded in a ground-truth file must reproduce the run forever.
//! No floating point anywhere, so the stream is bit-identical on every machine.

/// One million: probabilities are expressed in parts per million.
pub const PPM: u32 = 1_000_000;

/// SplitMix64: the seeding generator recommended for xoshiro (and a bijective 64-bit mixer).
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator starting at `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next output.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.state)
    }
}

/// SplitMix64's finalizer: a bijection on `u64` with good avalanche.
pub fn mix64(x: u64) -> u64 {
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// xoshiro256** (Blackman and Vigna), the engine's generator.
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator whose state is four SplitMix64 outputs of `seed` (never all zero).
    pub fn new(seed: u64) -> Self {
        let mut sm = SplitMix64::new(seed);
        let s = [sm.next_u64(), sm.next_u64(), sm.next_u64(), sm.next_u64()];
        debug_assert!(s.iter().any(|&w| w != 0));
        Self { s }
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// A value in `0..n` (`n > 0`) by the multiply-high method (bias below 2^-32 for the bounds
    /// used here, and exactly reproducible).
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// A value in `lo..=hi`.
    #[inline]
    pub fn range_inclusive(&mut self, lo: u64, hi: u64) -> u64 {
        debug_assert!(lo <= hi);
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `ppm / 1,000,000`.
    #[inline]
    pub fn chance_ppm(&mut self, ppm: u32) -> bool {
        self.below(u64::from(PPM)) < u64::from(ppm)
    }

    /// An exponential variate with mean 1, in Q32 fixed point (`2^32` = 1.0); at most about 44.4.
    #[inline]
    pub fn exp_q32(&mut self) -> u64 {
        neg_ln_q32(self.next_u64() | 1)
    }
}

/// `log2(1 + i/256)` for `i` in `0..=256`, Q32.
const LOG2_TABLE_Q32: [u64; 257] = log2_table();

/// `ln 2` in Q32.
const LN2_Q32: u64 = 2_977_044_472;

/// `log2(x)` of a Q62 value `x` in `[1, 2)`, as Q32, by repeated squaring (one bit per step).
const fn log2_unit_q32(x_q62: u128) -> u64 {
    let mut x = x_q62;
    let mut y: u64 = 0;
    let mut bit = 0;
    while bit < 32 {
        x = (x * x) >> 62;
        if x >= (2u128 << 62) {
            x >>= 1;
            y |= 1u64 << (31 - bit);
        }
        bit += 1;
    }
    y
}

const fn log2_table() -> [u64; 257] {
    let mut t = [0u64; 257];
    let mut i = 0;
    while i < 256 {
        t[i] = log2_unit_q32((1u128 << 62) + ((i as u128) << 54));
        i += 1;
    }
    t[256] = 1u64 << 32;
    t
}

/// `-ln(u / 2^64)` in Q32 for `u > 0`: the leading-zero count gives the integer part of the
/// base-2 logarithm, a 257-entry table with linear interpolation the fraction (error < 2^-17).
pub fn neg_ln_q32(u: u64) -> u64 {
    debug_assert!(u > 0);
    let lz = u64::from(u.leading_zeros());
    let m = u << lz;
    let idx = ((m >> 55) & 0xFF) as usize;
    let frac = (m >> 23) & 0xFFFF_FFFF;
    let lo = LOG2_TABLE_Q32[idx];
    let hi = LOG2_TABLE_Q32[idx + 1];
    let log2_frac = lo + (((hi - lo) * frac) >> 32);
    let neg_log2 = ((1 + lz) << 32) - log2_frac;
    ((u128::from(neg_log2) * u128::from(LN2_Q32)) >> 32) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xoshiro_stream_is_pinned() {
        // The first outputs for seed 0 are part of the ground-truth contract: a change here
        // changes every recorded run.
        let mut r = Rng::new(0);
        let got = [r.next_u64(), r.next_u64(), r.next_u64()];
        let mut again = Rng::new(0);
        assert_eq!(got, [again.next_u64(), again.next_u64(), again.next_u64()]);
        let mut sm = SplitMix64::new(0);
        // Reference SplitMix64 output for seed 0.
        assert_eq!(sm.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(got[0], 0x99EC_5F36_CB75_F2B4);
    }

    #[test]
    fn log_table_endpoints() {
        assert_eq!(LOG2_TABLE_Q32[0], 0);
        // log2(1.5) = 0.5849625007 -> Q32 2512394810.
        assert!(LOG2_TABLE_Q32[128].abs_diff(2_512_394_810) <= 2);
    }

    #[test]
    fn neg_ln_known_points() {
        // u = 2^63 -> -ln(0.5) = ln 2.
        assert!(neg_ln_q32(1u64 << 63).abs_diff(LN2_Q32) <= 2);
        // u = 2^62 -> 2 ln 2.
        assert!(neg_ln_q32(1u64 << 62).abs_diff(2 * LN2_Q32) <= 4);
        // u = 3 * 2^62 (0.75) -> 0.2876820725 -> Q32 1235585843.
        assert!(neg_ln_q32(3u64 << 62).abs_diff(1_235_585_843) <= 8_000);
    }

    #[test]
    fn exponential_mean_is_one() {
        let mut r = Rng::new(42);
        let n: u64 = 200_000;
        let sum: u64 = (0..n).map(|_| r.exp_q32()).sum();
        let mean_ppm = (u128::from(sum) * 1_000_000 / (u128::from(n) << 32)) as u64;
        assert!((990_000..=1_010_000).contains(&mean_ppm), "mean {mean_ppm} ppm");
    }

    #[test]
    fn below_stays_in_range() {
        let mut r = Rng::new(7);
        let mut seen = [0u32; 7];
        for _ in 0..70_000 {
            seen[r.below(7) as usize] += 1;
        }
        assert!(seen.iter().all(|&c| (9_000..=11_000).contains(&c)), "{seen:?}");
    }
}
