//! crm-bulk's Rust core: column kernels exposed to Python as `crm_bulk._core`.
use pyo3::prelude::*;

/// The version of the compiled core, so callers can check the extension they loaded.
#[pyfunction]
fn core_version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(core_version, m)?)?;
    Ok(())
}
