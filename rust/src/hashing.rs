//! A fast hasher for string-keyed maps: one XXH3 call per key instead of SipHash or XXH3's streaming state.
use std::hash::{BuildHasherDefault, Hasher};

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Hashes each `write` with one-shot XXH3, chained through the seed; integers are mixed in directly.
#[derive(Default, Clone, Copy)]
pub struct OneShotXxh3(u64);

impl Hasher for OneShotXxh3 {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        self.0 = xxh3_64_with_seed(bytes, self.0);
    }

    #[inline]
    fn write_u8(&mut self, byte: u8) {
        // `str`'s Hash ends with a 0xff marker byte; a cheap mix keeps it from costing a second XXH3 call.
        self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

/// `BuildHasher` for `HashMap`/`HashSet` with string keys.
pub type BuildOneShotXxh3 = BuildHasherDefault<OneShotXxh3>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::hash::BuildHasher;

    #[test]
    fn equal_strings_hash_equal_and_different_ones_differ() {
        let build = BuildOneShotXxh3::default();
        assert_eq!(build.hash_one("abc"), build.hash_one(String::from("abc")));
        assert_ne!(build.hash_one("abc"), build.hash_one("abd"));
        assert_ne!(build.hash_one(("a", "bc")), build.hash_one(("ab", "c")));
    }

    #[test]
    fn works_as_a_map_hasher() {
        let mut map: HashMap<&str, usize, BuildOneShotXxh3> = HashMap::default();
        for (i, key) in ["x", "y", "x", ""].iter().enumerate() {
            map.entry(key).or_insert(i);
        }
        assert_eq!(map.len(), 3);
        assert_eq!(map["x"], 0);
    }
}
