//! Duplicate detection within a column and stable key hashes for checks across chunks.
use arrow_array::ArrayRef;
use arrow_buffer::{BooleanBufferBuilder, NullBuffer};
use hashbrown::hash_table::{Entry, HashTable};
use xxhash_rust::xxh3::{xxh3_128, xxh3_64};

use crate::columns::{bool_column, int64_column, StrColumn};
use crate::error::{CoreError, CoreResult};

/// The stable 64-bit hash of a key: XXH3-64 (seed 0) of its UTF-8 bytes.
#[inline]
pub fn hash_key(key: &str) -> u64 {
    xxh3_64(key.as_bytes())
}

/// For each row: is it the first occurrence of its key, and if not, the row of that first occurrence.
///
/// Returns (is_first: Boolean, first_index: Int64, null for firsts). Null keys are never duplicates.
/// The table holds 4-byte row numbers rather than string references, so it stays a fraction of the
/// size and most probes stay in cache; keys are compared through the row they point at.
pub fn first_occurrence_column(keys: &StrColumn) -> CoreResult<(ArrayRef, ArrayRef)> {
    let len = keys.len();
    if u32::try_from(len).is_err() {
        return Err(CoreError::Value(format!(
            "first_occurrence: {len} rows exceed one call's limit"
        )));
    }
    let values: Vec<Option<&str>> = keys.iter().collect();
    let key_at = |row: u32| values.get(row as usize).copied().flatten();
    let mut table: HashTable<u32> = HashTable::with_capacity(len);
    let mut is_first = BooleanBufferBuilder::new(len);
    let mut has_first = BooleanBufferBuilder::new(len);
    let mut first_index: Vec<i64> = Vec::with_capacity(len);
    for (row, key) in (0u32..).zip(values.iter()) {
        let first = key.and_then(|key| {
            let entry = table.entry(
                hash_key(key),
                |&seen| key_at(seen) == Some(key),
                |&seen| key_at(seen).map_or(0, hash_key),
            );
            match entry {
                Entry::Occupied(seen) => Some(i64::from(*seen.get())),
                Entry::Vacant(slot) => {
                    slot.insert(row);
                    None
                }
            }
        });
        is_first.append(first.is_none());
        has_first.append(first.is_some());
        first_index.push(first.unwrap_or(0));
    }
    let nulls = NullBuffer::new(has_first.finish());
    let nulls = (nulls.null_count() > 0).then_some(nulls);
    Ok((
        bool_column(is_first.finish()),
        int64_column(first_index, nulls),
    ))
}

/// Keys met across calls (an upload's normalised emails, fed chunk by chunk), each with the number of the
/// record that held it first. A key is kept as its XXH3-128 rather than its text — 24 bytes an entry
/// whatever the key's length — so a false repeat needs a 128-bit collision.
#[derive(Default)]
pub struct SeenKeys {
    table: HashTable<SeenKey>,
}

struct SeenKey {
    hash: [u64; 2],
    record: i64,
}

impl SeenKeys {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many distinct keys have been seen.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// True before any key was seen.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Per row: the record number of the earlier record that held the key, or null when this row is the
    /// first (its own number, `first_record + row`, is then remembered). Null keys are never repeats.
    pub fn repeats(&mut self, keys: &StrColumn, first_record: i64) -> ArrayRef {
        let len = keys.len();
        let mut earlier: Vec<i64> = Vec::with_capacity(len);
        let mut is_repeat = BooleanBufferBuilder::new(len);
        for (record, key) in (first_record..).zip(keys.iter()) {
            let found = key.and_then(|key| {
                let full = xxh3_128(key.as_bytes());
                // Truncations of the 128-bit hash: the low half also buckets the table.
                let hash = [full as u64, (full >> 64) as u64];
                match self
                    .table
                    .entry(hash[0], |seen| seen.hash == hash, |seen| seen.hash[0])
                {
                    Entry::Occupied(seen) => Some(seen.get().record),
                    Entry::Vacant(slot) => {
                        slot.insert(SeenKey { hash, record });
                        None
                    }
                }
            });
            is_repeat.append(found.is_some());
            earlier.push(found.unwrap_or(0));
        }
        let nulls = NullBuffer::new(is_repeat.finish());
        let nulls = (nulls.null_count() > 0).then_some(nulls);
        int64_column(earlier, nulls)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::types::Int64Type;

    fn repeats(seen: &mut SeenKeys, keys: &[Option<&str>], first_record: i64) -> Vec<Option<i64>> {
        let column = seen.repeats(&StrColumn::from_values(keys.iter().copied()), first_record);
        column.as_primitive::<Int64Type>().iter().collect()
    }

    #[test]
    fn seen_keys_remember_the_first_record_across_calls() {
        let mut seen = SeenKeys::new();
        assert!(seen.is_empty());
        assert_eq!(
            repeats(&mut seen, &[Some("a"), Some("b"), Some("a"), None], 1),
            vec![None, None, Some(1), None]
        );
        assert_eq!(
            repeats(&mut seen, &[Some("b"), Some("c"), None, Some("c"), Some("a")], 5),
            vec![Some(2), None, None, Some(6), Some(1)]
        );
        assert_eq!(seen.len(), 3);
    }

    #[test]
    fn seen_keys_tell_keys_apart_by_their_whole_text() {
        let mut seen = SeenKeys::new();
        let keys: Vec<String> = (0..20_000).map(|i| format!("user{i}@example.com")).collect();
        let column: Vec<Option<&str>> = keys.iter().map(|k| Some(k.as_str())).collect();
        assert!(repeats(&mut seen, &column, 0).iter().all(Option::is_none));
        assert!(repeats(&mut seen, &[Some("user19999@example.com ")], 20_000)[0].is_none());
        assert_eq!(repeats(&mut seen, &[Some("user7@example.com")], 20_001), vec![Some(7)]);
    }

    fn run(keys: &[Option<&str>]) -> (Vec<bool>, Vec<Option<i64>>) {
        let (is_first, first_index) =
            first_occurrence_column(&StrColumn::from_values(keys.iter().copied())).expect("runs");
        let is_first = is_first
            .as_boolean()
            .iter()
            .map(|v| v.expect("no nulls"))
            .collect();
        (
            is_first,
            first_index.as_primitive::<Int64Type>().iter().collect(),
        )
    }

    #[test]
    fn marks_first_occurrences() {
        let keys = [
            Some("a"),
            Some("b"),
            Some("a"),
            None,
            None,
            Some("b"),
            Some("a"),
            Some(""),
        ];
        let (is_first, first_index) = run(&keys);
        assert_eq!(
            is_first,
            vec![true, true, false, true, true, false, false, true]
        );
        assert_eq!(
            first_index,
            vec![None, None, Some(0), None, None, Some(1), Some(0), None]
        );
    }

    #[test]
    fn all_distinct_has_all_null_indexes() {
        let (is_first, first_index) = run(&[Some("x"), Some("y")]);
        assert_eq!(is_first, vec![true, true]);
        assert_eq!(first_index, vec![None, None]);
    }

    #[test]
    fn hashes_are_xxh3_and_stable() {
        // Reference values of XXH3-64 with seed 0.
        assert_eq!(hash_key(""), 0x2D06_8005_38D3_94C2);
        assert_eq!(hash_key("abc"), hash_key("abc"));
    }
}
