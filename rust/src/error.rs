//! The one error type of the core. Pure Rust: the Python glue maps it to exceptions in one place.
use std::fmt;

use arrow_schema::ArrowError;

/// Why a kernel call was refused. Per-row problems are never errors: they become codes in the output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoreError {
    /// An argument has the wrong type (e.g. an integer column where strings are expected).
    Type(String),
    /// An argument has the right type but an unusable value (mismatched lengths, unknown region, ...).
    Value(String),
    /// Arrow data could not be imported or assembled.
    Arrow(String),
    /// A kernel failed in a way that is a bug in the core (a caught panic), not a problem with the input.
    Internal(String),
}

impl fmt::Display for CoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CoreError::Type(msg) | CoreError::Value(msg) => f.write_str(msg),
            CoreError::Arrow(msg) => write!(f, "arrow data error: {msg}"),
            CoreError::Internal(msg) => write!(f, "internal error in the Rust core: {msg}"),
        }
    }
}

impl std::error::Error for CoreError {}

impl From<ArrowError> for CoreError {
    fn from(err: ArrowError) -> Self {
        CoreError::Arrow(err.to_string())
    }
}

/// The result type of every fallible core function.
pub type CoreResult<T> = Result<T, CoreError>;

/// Runs `kernel`, turning a panic into `CoreError::Internal` so that none ever unwinds into Python.
pub fn without_panics<T>(what: &str, kernel: impl FnOnce() -> CoreResult<T>) -> CoreResult<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(kernel)).unwrap_or_else(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|m| (*m).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".to_owned());
        Err(CoreError::Internal(format!("{what}: {message}")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_become_internal_errors() {
        let result: CoreResult<()> = without_panics("probe", || panic!("boom"));
        assert_eq!(result, Err(CoreError::Internal("probe: boom".into())));
        assert_eq!(without_panics("probe", || Ok(3)), Ok(3));
    }
}
