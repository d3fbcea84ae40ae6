//! Email normalisation and syntax validation (no DNS).
//!
//! The steps, in order, each with the code it may produce:
//! 1. trim Unicode white space; nothing left (or a null) → `empty`;
//! 2. fold: NFC, lower-case, NFC again (lower-casing can un-compose); ASCII takes a fast path;
//! 3. no `@` → `missing_at`; the local part is what precedes the LAST `@` (quoted parts may hold `@`);
//! 4. local part over 64 bytes → `too_long`; not a dot-atom or quoted string (RFC 5322 with RFC 6532
//!    UTF-8, as the `email_address` crate reads it) → `invalid_local_part`;
//! 5. domain through UTS 46 ToASCII (STD3 rules, hyphen checks, DNS lengths; the `idna` crate), plus at
//!    least two labels and a top-level label that is not all digits → else `invalid_domain`;
//! 6. the normalised address over 254 bytes → `too_long`.
//!
//! UTS 46 is what browsers apply (WHATWG URL); it admits a few domains that the stricter IDNA 2008
//! registry rules refuse (symbols such as U+2603, the CONTEXTO rules). The property tests pin that down.
use std::borrow::Cow;
use std::collections::HashMap;

use arrow_array::ArrayRef;
use email_address::EmailAddress;
use idna::uts46::{AsciiDenyList, DnsLength, Hyphens, Uts46};
use unicode_normalization::{is_nfc_quick, IsNormalized, UnicodeNormalization};

use crate::columns::{
    concat_string_views, map_row_parts, threads_for, CodeColumnBuilder, StrColumn,
    StringColumnBuilder,
};
use crate::error::CoreResult;
use crate::hashing::BuildOneShotXxh3;

/// Longest address accepted, in bytes (RFC 5321 path limit less the angle brackets).
pub const MAX_ADDRESS_BYTES: usize = 254;
/// Longest local part accepted, in bytes (RFC 5321).
pub const MAX_LOCAL_PART_BYTES: usize = 64;

/// Why an email was rejected; `code()` is the stable text reported to users.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmailError {
    Empty,
    TooLong,
    MissingAt,
    InvalidLocalPart,
    InvalidDomain,
}

/// Every email error code, in the order of `EmailError`'s variants.
pub static EMAIL_CODES: [&str; 5] = [
    "empty",
    "too_long",
    "missing_at",
    "invalid_local_part",
    "invalid_domain",
];

impl EmailError {
    /// Position of this error's code in `EMAIL_CODES`.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The stable code reported to users.
    pub fn code(self) -> &'static str {
        EMAIL_CODES[self.index()]
    }
}

/// Domain conversions already done within one column: real data repeats a few domains many times.
#[derive(Default)]
pub struct DomainCache {
    map: HashMap<Box<str>, Result<Box<str>, EmailError>, BuildOneShotXxh3>,
}

/// Entries kept before the cache starts over, bounding memory on columns of distinct domains.
const DOMAIN_CACHE_LIMIT: usize = 65_536;

impl DomainCache {
    /// The ASCII form of a (folded) domain, or `InvalidDomain`.
    pub fn to_ascii<'a>(&'a mut self, domain: &str) -> Result<Cow<'a, str>, EmailError> {
        if !self.map.contains_key(domain) {
            if self.map.len() >= DOMAIN_CACHE_LIMIT {
                self.map.clear();
            }
            self.map.insert(
                domain.into(),
                domain_to_ascii(domain).map(String::into_boxed_str),
            );
        }
        match self.map.get(domain) {
            Some(Ok(ascii)) => Ok(Cow::Borrowed(ascii)),
            Some(Err(err)) => Err(*err),
            None => domain_to_ascii(domain).map(Cow::Owned),
        }
    }
}

/// Normalises one address into `out` (cleared first), or says why it is not an address.
pub fn normalize_email_into(
    raw: &str,
    out: &mut String,
    domains: &mut DomainCache,
) -> Result<(), EmailError> {
    out.clear();
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(EmailError::Empty);
    }
    fold_case(trimmed, out);
    let Some((local, domain)) = out.rsplit_once('@') else {
        return Err(EmailError::MissingAt);
    };
    if local.len() > MAX_LOCAL_PART_BYTES {
        return Err(EmailError::TooLong);
    }
    if !EmailAddress::is_valid_local_part(local) {
        return Err(EmailError::InvalidLocalPart);
    }
    let ascii_domain = domains.to_ascii(domain)?;
    if local.len() + 1 + ascii_domain.len() > MAX_ADDRESS_BYTES {
        return Err(EmailError::TooLong);
    }
    if ascii_domain != domain {
        let local_len = local.len();
        out.truncate(local_len + 1);
        out.push_str(&ascii_domain);
    }
    Ok(())
}

/// Normalises one address, or says why it is not an address.
pub fn normalize_email(raw: &str) -> Result<String, EmailError> {
    let mut out = String::new();
    normalize_email_into(raw, &mut out, &mut DomainCache::default()).map(|()| out)
}

/// NFC, lower-case, NFC: the canonical spelling of `text`, written to `out`.
fn fold_case(text: &str, out: &mut String) {
    if text.is_ascii() {
        out.push_str(text);
        out.make_ascii_lowercase();
        return;
    }
    let composed: Cow<'_, str> = if is_nfc_quick(text.chars()) == IsNormalized::Yes {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(text.nfc().collect())
    };
    let lowered = composed.to_lowercase();
    if is_nfc_quick(lowered.chars()) == IsNormalized::Yes {
        out.push_str(&lowered);
    } else {
        out.extend(lowered.nfc());
    }
}

/// UTS 46 ToASCII with the strict flags, plus the rules a mail domain needs beyond DNS syntax.
fn domain_to_ascii(domain: &str) -> Result<String, EmailError> {
    let ascii = Uts46::new()
        .to_ascii(
            domain.as_bytes(),
            AsciiDenyList::STD3,
            Hyphens::Check,
            DnsLength::Verify,
        )
        .map_err(|_| EmailError::InvalidDomain)?;
    let Some((_, top_label)) = ascii.rsplit_once('.') else {
        return Err(EmailError::InvalidDomain);
    };
    if top_label.bytes().all(|b| b.is_ascii_digit()) {
        return Err(EmailError::InvalidDomain);
    }
    Ok(ascii.into_owned())
}

/// The email kernel over a column: (normalised, code), nulls in `normalised` where the code is set.
///
/// Rows are independent, so large columns are split over a few threads.
pub fn normalize_email_column(emails: &StrColumn) -> CoreResult<(ArrayRef, ArrayRef)> {
    let parts = map_row_parts(emails, threads_for(emails.len()), normalize_email_part)?;
    let (normalized, codes): (Vec<_>, Vec<_>) = parts.into_iter().unzip();
    Ok((
        concat_string_views(&normalized)?,
        concat_string_views(&codes)?,
    ))
}

fn normalize_email_part(emails: &StrColumn) -> CoreResult<(ArrayRef, ArrayRef)> {
    let mut normalized = StringColumnBuilder::new(emails.len());
    let mut codes = CodeColumnBuilder::new(&EMAIL_CODES, emails.len());
    let mut buffer = String::new();
    let mut domains = DomainCache::default();
    for value in emails.iter() {
        match normalize_email_into(value.unwrap_or(""), &mut buffer, &mut domains) {
            Ok(()) => {
                normalized.append(Some(&buffer));
                codes.append(None);
            }
            Err(err) => {
                normalized.append(None);
                codes.append(Some(err.index()));
            }
        }
    }
    Ok((normalized.finish(), codes.finish()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;

    fn check(raw: &str) -> Result<String, &'static str> {
        normalize_email(raw).map_err(EmailError::code)
    }

    #[test]
    fn trims_and_lowercases() {
        assert_eq!(
            check("  John.Doe@Example.COM \t"),
            Ok("john.doe@example.com".into())
        );
        assert_eq!(check("\u{a0}a@b.co\u{3000}"), Ok("a@b.co".into()));
    }

    #[test]
    fn empty_inputs() {
        for raw in ["", "   ", "\n\t", "\u{2028}"] {
            assert_eq!(check(raw), Err("empty"), "{raw:?}");
        }
    }

    #[test]
    fn missing_at() {
        assert_eq!(check("john.example.com"), Err("missing_at"));
    }

    #[test]
    fn local_part_rules() {
        assert_eq!(check("@example.com"), Err("invalid_local_part"));
        assert_eq!(check("a..b@example.com"), Err("invalid_local_part"));
        assert_eq!(check(".a@example.com"), Err("invalid_local_part"));
        assert_eq!(check("a b@example.com"), Err("invalid_local_part"));
        assert_eq!(
            check("\"a b\"@example.com"),
            Ok("\"a b\"@example.com".into())
        );
        assert_eq!(
            check("\"a@b\"@Example.com"),
            Ok("\"a@b\"@example.com".into())
        );
        assert_eq!(check("\"\"@example.com"), Err("invalid_local_part"));
        assert_eq!(
            check("user+tag@example.com"),
            Ok("user+tag@example.com".into())
        );
    }

    #[test]
    fn length_limits() {
        let local64 = "a".repeat(64);
        assert!(check(&format!("{local64}@example.com")).is_ok());
        assert_eq!(check(&format!("a{local64}@example.com")), Err("too_long"));
        // 64 + 1 + 189 = 254 bytes is the longest address; labels stay within 63 bytes.
        let domain = |len: usize| {
            let mut labels = Vec::new();
            let mut left = len;
            while left > 0 {
                let take = left.min(63);
                let take = if left - take == 1 { take - 2 } else { take };
                labels.push("d".repeat(take));
                left -= take;
                left = left.saturating_sub(1);
            }
            labels.join(".")
        };
        let d189 = domain(189);
        assert_eq!(d189.len(), 189);
        assert!(check(&format!("{local64}@{d189}")).is_ok());
        let d190 = domain(190);
        assert_eq!(d190.len(), 190);
        assert_eq!(check(&format!("{local64}@{d190}")), Err("too_long"));
    }

    #[test]
    fn domain_rules() {
        assert_eq!(check("a@localhost"), Err("invalid_domain"));
        assert_eq!(check("a@"), Err("invalid_domain"));
        assert_eq!(check("a@exa_mple.com"), Err("invalid_domain"));
        assert_eq!(check("a@-example.com"), Err("invalid_domain"));
        assert_eq!(check("a@example.com."), Err("invalid_domain"));
        assert_eq!(check("a@example..com"), Err("invalid_domain"));
        assert_eq!(check("a@1.2.3.4"), Err("invalid_domain"));
        assert_eq!(check("a@[127.0.0.1]"), Err("invalid_domain"));
        assert_eq!(
            check(&format!("a@{}.com", "x".repeat(64))),
            Err("invalid_domain")
        );
        assert_eq!(check("a@xn--zz.com"), Err("invalid_domain"));
    }

    #[test]
    fn international_domains_become_ascii() {
        assert_eq!(
            check("Jürgen@Bücher.DE"),
            Ok("jürgen@xn--bcher-kva.de".into())
        );
        assert_eq!(
            check("user@例え.テスト"),
            Ok("user@xn--r8jz45g.xn--zckzah".into())
        );
        assert_eq!(
            check("user@xn--bcher-kva.de"),
            Ok("user@xn--bcher-kva.de".into())
        );
    }

    #[test]
    fn unicode_is_composed_before_comparison() {
        let decomposed = "Jos\u{65}\u{301}@example.com";
        assert_eq!(check(decomposed), Ok("jos\u{e9}@example.com".into()));
    }

    #[test]
    fn column_kernel_keeps_rows_aligned() {
        let column = StrColumn::from_values([Some("A@B.co"), None, Some("nope"), Some("")]);
        let (normalized, codes) = normalize_email_column(&column).expect("kernel runs");
        let normalized = normalized.as_string_view();
        let codes = codes.as_string_view();
        assert_eq!(
            normalized.iter().collect::<Vec<_>>(),
            vec![Some("a@b.co"), None, None, None]
        );
        assert_eq!(
            codes.iter().collect::<Vec<_>>(),
            vec![None, Some("empty"), Some("missing_at"), Some("empty")]
        );
    }
}
