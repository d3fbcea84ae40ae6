//! crm-bulk's Rust core: column kernels exposed to Python as `crm_bulk._core`.
//!
//! The kernels (`email`, `phone`, `dedup`, `lengths`, `custom_fields`) and the column helpers are pure
//! Rust, tested by `cargo test`; `arrow_ffi` and `bindings` are the only modules that know Python.
pub mod arrow_ffi;
pub mod bindings;
pub mod columns;
pub mod custom_fields;
pub mod dedup;
pub mod email;
pub mod error;
pub mod hashing;
pub mod lengths;
pub mod phone;

use pyo3::prelude::*;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<arrow_ffi::ArrowColumn>()?;
    m.add_class::<bindings::SeenKeys>()?;
    m.add_function(wrap_pyfunction!(bindings::core_version, m)?)?;
    m.add_function(wrap_pyfunction!(bindings::normalize_emails, m)?)?;
    m.add_function(wrap_pyfunction!(bindings::normalize_phones, m)?)?;
    m.add_function(wrap_pyfunction!(bindings::first_occurrence, m)?)?;
    m.add_function(wrap_pyfunction!(bindings::validate_lengths, m)?)?;
    m.add_function(wrap_pyfunction!(bindings::validate_custom_fields, m)?)?;
    Ok(())
}
