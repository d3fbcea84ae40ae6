//! Per-field length limits: for each row, the first field (in the given order) that is too long.
use arrow_array::ArrayRef;

use crate::columns::{CodeColumnBuilder, StrColumn};
use crate::error::{CoreError, CoreResult};

/// One field to check: its name, its values and its limit in characters (Unicode code points).
pub struct LengthLimit<'a> {
    pub name: &'a str,
    pub values: &'a StrColumn,
    pub max_chars: usize,
}

/// True when `value` has more than `max_chars` characters.
#[inline]
pub fn exceeds(value: &str, max_chars: usize) -> bool {
    // A string never has more characters than bytes, so short strings need no counting.
    value.len() > max_chars && value.chars().count() > max_chars
}

/// The length kernel: per row the name of the first field over its limit, else null. Nulls never exceed.
pub fn first_too_long_column(limits: &[LengthLimit<'_>], rows: usize) -> CoreResult<ArrayRef> {
    if let Some(bad) = limits.iter().find(|l| l.values.len() != rows) {
        return Err(CoreError::Value(format!(
            "validate_lengths: column {:?} has {} rows, expected {rows}",
            bad.name,
            bad.values.len()
        )));
    }
    let mut first: Vec<Option<usize>> = vec![None; rows];
    for (field, limit) in limits.iter().enumerate() {
        for (slot, value) in first.iter_mut().zip(limit.values.iter()) {
            if slot.is_none() && value.is_some_and(|v| exceeds(v, limit.max_chars)) {
                *slot = Some(field);
            }
        }
    }
    let names: Vec<&str> = limits.iter().map(|l| l.name).collect();
    let mut codes = CodeColumnBuilder::new(&names, rows);
    for slot in first {
        codes.append(slot);
    }
    codes.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;

    #[test]
    fn counts_characters_not_bytes() {
        assert!(!exceeds("ééé", 3));
        assert!(exceeds("éééé", 3));
        assert!(!exceeds("", 0));
        assert!(exceeds("a", 0));
    }

    #[test]
    fn reports_the_first_field_in_order() {
        let first = StrColumn::from_values([Some("abc"), Some("a"), None, Some("abcd")]);
        let last = StrColumn::from_values([Some("xyz"), Some("xyzw"), Some("xyzw"), Some("x")]);
        let limits = [
            LengthLimit {
                name: "first_name",
                values: &first,
                max_chars: 2,
            },
            LengthLimit {
                name: "last_name",
                values: &last,
                max_chars: 3,
            },
        ];
        let out = first_too_long_column(&limits, 4).expect("runs");
        assert_eq!(
            out.as_string_view().iter().collect::<Vec<_>>(),
            vec![
                Some("first_name"),
                Some("last_name"),
                Some("last_name"),
                Some("first_name")
            ]
        );
    }

    #[test]
    fn mismatched_lengths_are_refused() {
        let a = StrColumn::from_values([Some("a")]);
        let limits = [LengthLimit {
            name: "a",
            values: &a,
            max_chars: 1,
        }];
        assert!(matches!(
            first_too_long_column(&limits, 2),
            Err(CoreError::Value(_))
        ));
    }
}
