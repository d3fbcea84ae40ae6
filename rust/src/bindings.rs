//! Thin `#[pyfunction]` wrappers: import columns, release the GIL, run a pure-Rust kernel, export.
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;

use crate::arrow_ffi::{import_str_column, ArrowColumn};
use crate::error::{without_panics, CoreError};
use crate::lengths::LengthLimit;
use crate::{custom_fields, dedup, email, lengths, phone};

impl From<CoreError> for PyErr {
    fn from(err: CoreError) -> PyErr {
        match err {
            CoreError::Type(_) => PyTypeError::new_err(err.to_string()),
            CoreError::Value(_) | CoreError::Arrow(_) => PyValueError::new_err(err.to_string()),
            CoreError::Internal(_) => PyRuntimeError::new_err(err.to_string()),
        }
    }
}

fn pair((a, b): (arrow_array::ArrayRef, arrow_array::ArrayRef)) -> (ArrowColumn, ArrowColumn) {
    (ArrowColumn::new(a), ArrowColumn::new(b))
}

fn non_negative(name: &str, value: i64) -> Result<usize, CoreError> {
    usize::try_from(value)
        .map_err(|_| CoreError::Value(format!("{name} must be >= 0, got {value}")))
}

/// The version of the compiled core, so callers can check the extension they loaded.
#[pyfunction]
pub fn core_version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// Normalises and validates emails: (normalised, code).
#[pyfunction]
pub fn normalize_emails(
    py: Python<'_>,
    emails: &Bound<'_, PyAny>,
) -> PyResult<(ArrowColumn, ArrowColumn)> {
    let column = import_str_column(emails, "emails")?;
    Ok(pair(py.detach(|| {
        without_panics("normalize_emails", || {
            email::normalize_email_column(&column)
        })
    })?))
}

/// Normalises phones to E.164: (e164, code).
#[pyfunction]
#[pyo3(signature = (phones, default_region = "US"))]
pub fn normalize_phones(
    py: Python<'_>,
    phones: &Bound<'_, PyAny>,
    default_region: &str,
) -> PyResult<(ArrowColumn, ArrowColumn)> {
    let region = phone::parse_region(default_region)?;
    let column = import_str_column(phones, "phones")?;
    Ok(pair(py.detach(|| {
        without_panics("normalize_phones", || {
            phone::normalize_phone_column(&column, region)
        })
    })?))
}

/// First occurrence of each key: (is_first, first_index).
#[pyfunction]
pub fn first_occurrence(
    py: Python<'_>,
    keys: &Bound<'_, PyAny>,
) -> PyResult<(ArrowColumn, ArrowColumn)> {
    let column = import_str_column(keys, "keys")?;
    Ok(pair(py.detach(|| {
        without_panics("first_occurrence", || {
            dedup::first_occurrence_column(&column)
        })
    })?))
}

/// Keys met across calls with the record that held each first (`dedup::SeenKeys`): an upload's emails.
#[pyclass(module = "crm_bulk._core", name = "SeenKeys")]
#[derive(Default)]
pub struct SeenKeys {
    inner: dedup::SeenKeys,
}

#[pymethods]
impl SeenKeys {
    #[new]
    fn new() -> Self {
        Self::default()
    }

    /// Per row, the number of the earlier record holding the key, else null (`first_record` numbers row 0).
    fn repeats(
        &mut self,
        py: Python<'_>,
        keys: &Bound<'_, PyAny>,
        first_record: i64,
    ) -> PyResult<ArrowColumn> {
        let column = import_str_column(keys, "keys")?;
        let inner = &mut self.inner;
        let earlier = py.detach(|| {
            without_panics("SeenKeys.repeats", || {
                Ok(inner.repeats(&column, first_record))
            })
        })?;
        Ok(ArrowColumn::new(earlier))
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }
}

/// Per row, the name of the first column over its character limit; `columns`, `names`, `limits` align.
#[pyfunction]
pub fn validate_lengths(
    py: Python<'_>,
    columns: Vec<Bound<'_, PyAny>>,
    names: Vec<String>,
    limits: Vec<i64>,
    rows: i64,
) -> PyResult<ArrowColumn> {
    if columns.len() != names.len() || columns.len() != limits.len() {
        return Err(CoreError::Value(format!(
            "validate_lengths: {} columns, {} names and {} limits must be as many",
            columns.len(),
            names.len(),
            limits.len()
        ))
        .into());
    }
    let rows = non_negative("rows", rows)?;
    let values = columns
        .iter()
        .zip(&names)
        .map(|(c, n)| import_str_column(c, n))
        .collect::<PyResult<Vec<_>>>()?;
    let max_chars = limits
        .iter()
        .zip(&names)
        .map(|(l, n)| non_negative(&format!("limit for {n:?}"), *l))
        .collect::<Result<Vec<_>, _>>()?;
    let specs: Vec<LengthLimit<'_>> = names
        .iter()
        .zip(&values)
        .zip(max_chars)
        .map(|((name, values), max_chars)| LengthLimit {
            name,
            values,
            max_chars,
        })
        .collect();
    let codes = py.detach(|| {
        without_panics("validate_lengths", || {
            lengths::first_too_long_column(&specs, rows)
        })
    })?;
    Ok(ArrowColumn::new(codes))
}

/// Custom-fields JSON limits: a code per row, null when fine.
#[pyfunction]
#[pyo3(signature = (json_texts, *, max_bytes = 16384, max_depth = 5))]
pub fn validate_custom_fields(
    py: Python<'_>,
    json_texts: &Bound<'_, PyAny>,
    max_bytes: i64,
    max_depth: i64,
) -> PyResult<ArrowColumn> {
    let max_bytes = non_negative("max_bytes", max_bytes)?;
    let max_depth = non_negative("max_depth", max_depth)?;
    let column = import_str_column(json_texts, "json_texts")?;
    let codes = py.detach(|| {
        without_panics("validate_custom_fields", || {
            custom_fields::check_custom_fields_column(&column, max_bytes, max_depth)
        })
    })?;
    Ok(ArrowColumn::new(codes))
}
