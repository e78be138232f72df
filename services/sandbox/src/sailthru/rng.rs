//! Tiny counter-based randomness: every record draws from its own stream, keyed by
//! (seed, stream, record index), so any record can be produced (or just counted) on its own
//! and the output never depends on a library's sampling algorithm.

/// The golden-ratio increment of SplitMix64.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's finaliser: a bijection on `u64` with good avalanche.
pub(crate) const fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Independent random streams, one per kind of generated thing.
#[derive(Clone, Copy)]
#[repr(u64)]
pub(crate) enum Stream {
    Blast = 1,
    MessageBlast = 2,
    MessageTransactional = 3,
    Profile = 4,
    /// The creation time hidden in a profile id (shared by profiles and messages).
    ProfileId = 5,
    /// The bijection that turns a profile index into the low 64 bits of its id.
    ProfileIdKey = 6,
    /// Same for message_transactional ids.
    TransactionalIdKey = 7,
}

/// The key of a stream for one seed.
pub(crate) const fn stream_key(seed: u64, stream: Stream) -> u64 {
    mix64(seed.wrapping_add((stream as u64).wrapping_mul(GOLDEN)) ^ 0x5EED_5A17_7B0E_D00D)
}

/// A SplitMix64 generator.
pub(crate) struct Rng(u64);

impl Rng {
    /// The stream of record `index` of `stream` for `seed`.
    pub(crate) fn for_record(seed: u64, stream: Stream, index: u64) -> Self {
        Rng(mix64(stream_key(seed, stream) ^ index))
    }

    /// The next 64 random bits.
    #[inline]
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN);
        mix64(self.0)
    }

    /// A number in `0..n` (`0` when `n == 0`); multiply-shift, so a negligible bias.
    #[inline]
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// A number in `lo..=hi`.
    #[inline]
    pub(crate) fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `num / den`.
    #[inline]
    pub(crate) fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }

    /// An index into a table of `len` entries.
    #[inline]
    pub(crate) fn pick(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }
}
