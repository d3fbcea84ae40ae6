//! Phone normalisation to E.164 with libphonenumber (the `rlibphonenumber` port and its metadata).
//!
//! Empty or white-space input means "no phone" (null e164, null code). Otherwise the number is parsed
//! against the default region (a leading `+` or IDD overrides it), must be a valid number for its
//! region, and is written as E.164. Parse failures map to `invalid_country`, `too_short`, `too_long`,
//! or `invalid_phone`; a number that parses but is not valid is `invalid_phone`.
use std::panic::{catch_unwind, AssertUnwindSafe};

use arrow_array::ArrayRef;
use rlibphonenumber::{ParseError, PhoneNumberFormat, Region, PHONE_NUMBER_UTIL};

use crate::columns::{
    concat_string_views, map_row_parts, threads_for, CodeColumnBuilder, StrColumn,
    StringColumnBuilder,
};
use crate::error::{CoreError, CoreResult};

/// libphonenumber refuses longer input outright (as TOO_LONG) before parsing it.
pub const MAX_INPUT_CHARS: usize = 250;

/// Why a phone was rejected; `code()` is the stable text reported to users.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhoneError {
    InvalidPhone,
    TooShort,
    TooLong,
    InvalidCountry,
}

/// Every phone error code, in the order of `PhoneError`'s variants.
pub static PHONE_CODES: [&str; 4] = ["invalid_phone", "too_short", "too_long", "invalid_country"];

impl PhoneError {
    /// Position of this error's code in `PHONE_CODES`.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The stable code reported to users.
    pub fn code(self) -> &'static str {
        PHONE_CODES[self.index()]
    }
}

/// The region for numbers written without a country code: an ISO 3166 alpha-2 code libphonenumber knows.
pub fn parse_region(region: &str) -> CoreResult<Region> {
    Region::from_code(region.trim())
        .ok()
        .filter(|r| PHONE_NUMBER_UTIL.get_country_code_for_region(*r).is_some())
        .ok_or_else(|| {
            let hint = "use an ISO 3166 alpha-2 code, e.g. \"US\"";
            CoreError::Value(format!(
                "default_region: {region:?} is not a region libphonenumber knows ({hint})"
            ))
        })
}

/// Normalises one phone: `Ok(None)` for no phone, `Ok(Some(e164))`, or why it is not a valid number.
pub fn normalize_phone(raw: &str, region: Region) -> Result<Option<String>, PhoneError> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Ok(None);
    }
    if trimmed.len() > MAX_INPUT_CHARS && trimmed.chars().count() > MAX_INPUT_CHARS {
        return Err(PhoneError::TooLong);
    }
    // A panic inside the port on odd input must become a row error, never cross into Python.
    let parsed = catch_unwind(AssertUnwindSafe(|| parse_valid_e164(trimmed, region)));
    parsed.unwrap_or(Err(PhoneError::InvalidPhone)).map(Some)
}

fn parse_valid_e164(text: &str, region: Region) -> Result<String, PhoneError> {
    let number = PHONE_NUMBER_UTIL
        .parse(text, Some(region))
        .map_err(|err| match err {
            ParseError::InvalidCountryCode => PhoneError::InvalidCountry,
            ParseError::TooShortAfterIdd | ParseError::TooShortNsn => PhoneError::TooShort,
            ParseError::TooLongNsn => PhoneError::TooLong,
            ParseError::NotANumber(_) => PhoneError::InvalidPhone,
        })?;
    if !number.is_valid() {
        return Err(PhoneError::InvalidPhone);
    }
    Ok(number.format_as(PhoneNumberFormat::E164).into_owned())
}

/// The phone kernel over a column: (e164, code). Large columns are split over a few threads.
pub fn normalize_phone_column(
    phones: &StrColumn,
    region: Region,
) -> CoreResult<(ArrayRef, ArrayRef)> {
    let normalize = |part: &StrColumn| normalize_phone_part(part, region);
    let parts = map_row_parts(phones, threads_for(phones.len()), normalize)?;
    let (e164, codes): (Vec<_>, Vec<_>) = parts.into_iter().unzip();
    Ok((concat_string_views(&e164)?, concat_string_views(&codes)?))
}

fn normalize_phone_part(phones: &StrColumn, region: Region) -> CoreResult<(ArrayRef, ArrayRef)> {
    let mut e164 = StringColumnBuilder::new(phones.len());
    let mut codes = CodeColumnBuilder::new(&PHONE_CODES, phones.len());
    for value in phones.iter() {
        match value.map(|v| normalize_phone(v, region)) {
            None | Some(Ok(None)) => {
                e164.append(None);
                codes.append(None);
            }
            Some(Ok(Some(number))) => {
                e164.append(Some(&number));
                codes.append(None);
            }
            Some(Err(err)) => {
                e164.append(None);
                codes.append(Some(err.index()));
            }
        }
    }
    Ok((e164.finish(), codes.finish()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;

    fn check(raw: &str, region: &str) -> Result<Option<String>, &'static str> {
        let region = parse_region(region).expect("known region");
        normalize_phone(raw, region).map_err(PhoneError::code)
    }

    #[test]
    fn formats_e164() {
        assert_eq!(
            check("(650) 253-0000", "US"),
            Ok(Some("+16502530000".into()))
        );
        assert_eq!(
            check("+44 20 7031 3000", "US"),
            Ok(Some("+442070313000".into()))
        );
        assert_eq!(
            check("020 7031 3000", "gb"),
            Ok(Some("+442070313000".into()))
        );
        assert_eq!(check("030 123456", "DE"), Ok(Some("+4930123456".into())));
    }

    #[test]
    fn empty_means_no_phone() {
        assert_eq!(check("", "US"), Ok(None));
        assert_eq!(check("  \t", "US"), Ok(None));
    }

    #[test]
    fn error_codes() {
        assert_eq!(check("hello", "US"), Err("invalid_phone"));
        assert_eq!(check("+999 1234 5678", "US"), Err("invalid_country"));
        assert_eq!(check("1", "US"), Err("invalid_phone"));
        assert_eq!(check("123456789012345678901", "US"), Err("too_long"));
        assert_eq!(check("555-0000", "US"), Err("invalid_phone"));
        assert_eq!(
            check(&format!("{}650 253 0000", "(".repeat(238)), "US"),
            Ok(Some("+16502530000".into()))
        );
        assert_eq!(
            check(&format!("{}650 253 0000", "(".repeat(239)), "US"),
            Err("too_long")
        );
    }

    #[test]
    fn unknown_region_is_a_value_error() {
        assert!(matches!(parse_region("XX"), Err(CoreError::Value(_))));
        assert!(parse_region("us").is_ok());
    }

    #[test]
    fn column_kernel() {
        let column = StrColumn::from_values([Some("650 253 0000"), None, Some(" "), Some("abc")]);
        let (e164, codes) = normalize_phone_column(&column, Region::US).expect("kernel runs");
        assert_eq!(
            e164.as_string_view().iter().collect::<Vec<_>>(),
            vec![Some("+16502530000"), None, None, None]
        );
        assert_eq!(
            codes.as_string_view().iter().collect::<Vec<_>>(),
            vec![None, None, None, Some("invalid_phone")]
        );
    }
}
