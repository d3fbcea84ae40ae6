//! Limits on a contact's custom fields, given as JSON text: size, syntax, an object on top, nesting depth.
//!
//! Checked in this order, first failure wins: `too_large` (UTF-8 bytes over the limit, before parsing),
//! `invalid_json` (not RFC 8259 JSON; the empty string included), `not_an_object`, `too_deep` (more than
//! `max_depth` nested objects/arrays, the top-level object counting as 1). A null value is fine.
//! The scanner checks syntax without building values, and keeps its own stack, so deep input cannot
//! overflow the call stack.
use arrow_array::ArrayRef;

use crate::columns::{
    concat_string_views, map_row_parts, threads_for, CodeColumnBuilder, StrColumn,
};
use crate::error::CoreResult;

/// Why a custom-fields document was rejected; `code()` is the stable text reported to users.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CustomFieldsError {
    InvalidJson,
    NotAnObject,
    TooLarge,
    TooDeep,
}

/// Every custom-fields code, in the order of `CustomFieldsError`'s variants.
pub static CUSTOM_FIELDS_CODES: [&str; 4] =
    ["invalid_json", "not_an_object", "too_large", "too_deep"];

impl CustomFieldsError {
    /// Position of this error's code in `CUSTOM_FIELDS_CODES`.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The stable code reported to users.
    pub fn code(self) -> &'static str {
        CUSTOM_FIELDS_CODES[self.index()]
    }
}

/// Checks one custom-fields document against the limits.
pub fn check_custom_fields(
    text: &str,
    max_bytes: usize,
    max_depth: usize,
) -> Result<(), CustomFieldsError> {
    if text.len() > max_bytes {
        return Err(CustomFieldsError::TooLarge);
    }
    let shape = scan_json(text.as_bytes()).ok_or(CustomFieldsError::InvalidJson)?;
    if !shape.top_is_object {
        return Err(CustomFieldsError::NotAnObject);
    }
    if shape.depth > max_depth {
        return Err(CustomFieldsError::TooDeep);
    }
    Ok(())
}

/// The custom-fields kernel over a column: a code per row, null when the row is fine (or null).
/// Large columns are split over a few threads.
pub fn check_custom_fields_column(
    texts: &StrColumn,
    max_bytes: usize,
    max_depth: usize,
) -> CoreResult<ArrayRef> {
    let check = |part: &StrColumn| check_custom_fields_part(part, max_bytes, max_depth);
    concat_string_views(&map_row_parts(texts, threads_for(texts.len()), check)?)
}

fn check_custom_fields_part(
    texts: &StrColumn,
    max_bytes: usize,
    max_depth: usize,
) -> CoreResult<ArrayRef> {
    let mut codes = CodeColumnBuilder::new(&CUSTOM_FIELDS_CODES, texts.len());
    for text in texts.iter() {
        let code = text.and_then(|t| check_custom_fields(t, max_bytes, max_depth).err());
        codes.append(code.map(CustomFieldsError::index));
    }
    codes.finish()
}

/// What the scanner learnt about a valid document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonShape {
    /// The top-level value is an object.
    pub top_is_object: bool,
    /// The deepest nesting of objects and arrays (0 for a scalar).
    pub depth: usize,
}

/// Validates `bytes` as one JSON text (RFC 8259); `None` when it is not.
pub fn scan_json(bytes: &[u8]) -> Option<JsonShape> {
    let mut scanner = Scanner { bytes, pos: 0 };
    // true = inside an object, false = inside an array.
    let mut stack: Vec<bool> = Vec::new();
    let mut depth = 0;
    scanner.skip_ws();
    let top_is_object = scanner.peek() == Some(b'{');
    'value: loop {
        scanner.skip_ws();
        match scanner.peek()? {
            b'{' => {
                scanner.pos += 1;
                stack.push(true);
                depth = depth.max(stack.len());
                scanner.skip_ws();
                if scanner.peek() == Some(b'}') {
                    scanner.pos += 1;
                    stack.pop();
                } else {
                    scanner.member_key()?;
                    continue 'value;
                }
            }
            b'[' => {
                scanner.pos += 1;
                stack.push(false);
                depth = depth.max(stack.len());
                scanner.skip_ws();
                if scanner.peek() == Some(b']') {
                    scanner.pos += 1;
                    stack.pop();
                } else {
                    continue 'value;
                }
            }
            b'"' => scanner.string()?,
            b't' => scanner.literal(b"true")?,
            b'f' => scanner.literal(b"false")?,
            b'n' => scanner.literal(b"null")?,
            b'-' | b'0'..=b'9' => scanner.number()?,
            _ => return None,
        }
        // A value just ended: close containers until one expects another element.
        loop {
            scanner.skip_ws();
            let Some(&in_object) = stack.last() else {
                return (scanner.pos == bytes.len()).then_some(JsonShape {
                    top_is_object,
                    depth,
                });
            };
            match (scanner.peek()?, in_object) {
                (b',', true) => {
                    scanner.pos += 1;
                    scanner.skip_ws();
                    scanner.member_key()?;
                    continue 'value;
                }
                (b',', false) => {
                    scanner.pos += 1;
                    continue 'value;
                }
                (b'}', true) | (b']', false) => {
                    scanner.pos += 1;
                    stack.pop();
                }
                _ => return None,
            }
        }
    }
}

struct Scanner<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    /// `"key"` then `:`, leaving the position before the member's value.
    fn member_key(&mut self) -> Option<()> {
        if self.peek() != Some(b'"') {
            return None;
        }
        self.string()?;
        self.skip_ws();
        if self.peek() != Some(b':') {
            return None;
        }
        self.pos += 1;
        Some(())
    }

    fn string(&mut self) -> Option<()> {
        self.pos += 1; // the opening quote
        loop {
            match self.peek()? {
                b'"' => {
                    self.pos += 1;
                    return Some(());
                }
                b'\\' => {
                    self.pos += 1;
                    match self.peek()? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.pos += 1,
                        b'u' => {
                            let hex = self.bytes.get(self.pos + 1..self.pos + 5)?;
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return None;
                            }
                            self.pos += 5;
                        }
                        _ => return None,
                    }
                }
                0x00..=0x1f => return None,
                _ => self.pos += 1,
            }
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        if self.bytes.get(self.pos..self.pos + word.len())? == word {
            self.pos += word.len();
            Some(())
        } else {
            None
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
        self.pos - start
    }

    fn number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek()? {
            b'0' => self.pos += 1,
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return None;
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return None;
            }
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(text: &str) -> Option<&'static str> {
        check_custom_fields(text, 16384, 5)
            .err()
            .map(CustomFieldsError::code)
    }

    #[test]
    fn accepts_objects() {
        for text in [
            "{}",
            " { } ",
            r#"{"a": 1, "b": [true, false, null], "c": {"d": "x\"y\\u00e9\n"}}"#,
            r#"{"n": -0.5e+10, "m": 0, "k": 12.25E-3, "l": []}"#,
            "{\"é\": \"ü\"}",
        ] {
            assert_eq!(code(text), None, "{text}");
        }
    }

    #[test]
    fn rejects_invalid_json() {
        for text in [
            "",
            "   ",
            "{",
            "{\"a\"}",
            "{\"a\":}",
            "{\"a\":1,}",
            "{a:1}",
            "{'a':1}",
            "{\"a\":01}",
            "{\"a\":1.}",
            "{\"a\":.5}",
            "{\"a\":1e}",
            "{\"a\":NaN}",
            "{\"a\":\"\u{1}\"}",
            "{\"a\":\"\\x\"}",
            "{\"a\":\"\\u12g4\"}",
            "{} {}",
            "{\"a\":[1,]}",
            "{\"a\":[1 2]}",
            "\u{feff}{}",
            "{\"a\":tru}",
        ] {
            assert_eq!(code(text), Some("invalid_json"), "{text:?}");
        }
    }

    #[test]
    fn rejects_non_objects() {
        for text in ["[]", "1", "\"x\"", "null", "[{}]"] {
            assert_eq!(code(text), Some("not_an_object"), "{text}");
        }
    }

    #[test]
    fn depth_limit() {
        let nest = |n: usize| format!("{}1{}", "{\"a\":".repeat(n), "}".repeat(n));
        assert_eq!(code(&nest(5)), None);
        assert_eq!(code(&nest(6)), Some("too_deep"));
        assert_eq!(code("{\"a\":[[[[1]]]]}"), None);
        assert_eq!(code("{\"a\":[[[[[1]]]]]}"), Some("too_deep"));
        // Very deep input neither overflows the stack nor escapes the size check.
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(
            check_custom_fields(&deep, usize::MAX, 5),
            Err(CustomFieldsError::NotAnObject)
        );
        let deep_obj = format!("{{\"a\":{}{}}}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(
            check_custom_fields(&deep_obj, usize::MAX, 5),
            Err(CustomFieldsError::TooDeep)
        );
    }

    #[test]
    fn size_limit_counts_utf8_bytes() {
        let text = format!("{{\"a\":\"{}\"}}", "é".repeat(10));
        assert_eq!(check_custom_fields(&text, text.len(), 5), Ok(()));
        assert_eq!(
            check_custom_fields(&text, text.len() - 1, 5),
            Err(CustomFieldsError::TooLarge)
        );
        assert_eq!(
            check_custom_fields("{{{", 2, 5),
            Err(CustomFieldsError::TooLarge)
        );
    }

    #[test]
    fn shape_of_scalars() {
        assert_eq!(
            scan_json(b"  42 "),
            Some(JsonShape {
                top_is_object: false,
                depth: 0
            })
        );
    }
}
