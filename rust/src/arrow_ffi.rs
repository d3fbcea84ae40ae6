//! Arrow PyCapsule interface: columns in from any exporter (Polars Series, pyarrow arrays), out as
//! `ArrowColumn` objects that Polars and pyarrow import without copying.
use std::ffi::CStr;

use arrow_array::ffi::{from_ffi, FFI_ArrowArray, FFI_ArrowSchema};
use arrow_array::ffi_stream::{ArrayStreamReader, FFI_ArrowArrayStream};
use arrow_array::{make_array, ArrayRef};
use arrow_schema::Field;
use pyo3::exceptions::PyTypeError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyCapsule, PyTuple};

use crate::columns::StrColumn;
use crate::error::CoreError;

const STREAM_CAPSULE: &CStr = c"arrow_array_stream";
const SCHEMA_CAPSULE: &CStr = c"arrow_schema";
const ARRAY_CAPSULE: &CStr = c"arrow_array";

/// Imports the chunks of a column from an object exporting `__arrow_c_stream__` or `__arrow_c_array__`.
pub fn import_arrays(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<ArrayRef>> {
    let py = obj.py();
    if obj.hasattr(intern!(py, "__arrow_c_stream__"))? {
        let capsule = obj.call_method0(intern!(py, "__arrow_c_stream__"))?;
        let capsule = capsule
            .cast_into::<PyCapsule>()
            .map_err(|_| not_a_capsule(what))?;
        let pointer = capsule.pointer_checked(Some(STREAM_CAPSULE))?;
        // SAFETY: the capsule is named "arrow_array_stream", so it holds an ArrowArrayStream; `from_raw`
        // moves it out and marks the original released, as the C stream interface prescribes.
        let stream = unsafe { FFI_ArrowArrayStream::from_raw(pointer.cast().as_ptr()) };
        let reader = ArrayStreamReader::try_new(stream).map_err(CoreError::from)?;
        let arrays = reader
            .collect::<Result<Vec<_>, _>>()
            .map_err(CoreError::from)?;
        return Ok(arrays);
    }
    if obj.hasattr(intern!(py, "__arrow_c_array__"))? {
        let pair = obj.call_method0(intern!(py, "__arrow_c_array__"))?;
        let (schema, array): (Bound<'_, PyAny>, Bound<'_, PyAny>) =
            pair.extract().map_err(|_| not_a_capsule(what))?;
        let schema = schema
            .cast_into::<PyCapsule>()
            .map_err(|_| not_a_capsule(what))?;
        let array = array
            .cast_into::<PyCapsule>()
            .map_err(|_| not_a_capsule(what))?;
        let schema_ptr = schema
            .pointer_checked(Some(SCHEMA_CAPSULE))?
            .cast::<FFI_ArrowSchema>();
        let array_ptr = array
            .pointer_checked(Some(ARRAY_CAPSULE))?
            .cast::<FFI_ArrowArray>();
        // SAFETY: the capsule names guarantee the struct types; the array is moved out (its original is
        // marked released) and the schema is only borrowed while its capsule is alive.
        let data = unsafe {
            let ffi_array = FFI_ArrowArray::from_raw(array_ptr.as_ptr());
            from_ffi(ffi_array, schema_ptr.as_ref())
        }
        .map_err(CoreError::from)?;
        return Ok(vec![make_array(data)]);
    }
    let type_name = obj.get_type().name()?;
    Err(PyTypeError::new_err(format!(
        "{what}: expected a polars.Series or another Arrow array (Arrow PyCapsule interface), got {type_name}"
    )))
}

/// Imports a string column (see `columns::StrColumn` for the accepted layouts).
pub fn import_str_column(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<StrColumn> {
    let arrays = import_arrays(obj, what)?;
    Ok(StrColumn::try_from_arrays(&arrays, what)?)
}

fn not_a_capsule(what: &str) -> PyErr {
    PyTypeError::new_err(format!(
        "{what}: the Arrow export did not return PyCapsules"
    ))
}

/// One Arrow array produced by a kernel; Polars (`pl.Series(col)`) and pyarrow (`pa.array(col)`) import
/// it through `__arrow_c_array__` without copying.
#[pyclass(frozen, module = "crm_bulk._core", name = "ArrowColumn")]
pub struct ArrowColumn {
    array: ArrayRef,
}

impl ArrowColumn {
    /// Wraps a finished array.
    pub fn new(array: ArrayRef) -> Self {
        Self { array }
    }
}

#[pymethods]
impl ArrowColumn {
    /// Exports the array as a (schema, array) pair of PyCapsules; `requested_schema` is not honoured.
    #[pyo3(signature = (requested_schema=None))]
    fn __arrow_c_array__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        // The interface lets a producer ignore the request; consumers cast if they must.
        drop(requested_schema);
        let field = Field::new("", self.array.data_type().clone(), true);
        let schema = FFI_ArrowSchema::try_from(&field).map_err(CoreError::from)?;
        let array = FFI_ArrowArray::new(&self.array.to_data());
        let schema = PyCapsule::new(py, schema, Some(SCHEMA_CAPSULE.to_owned()))?;
        let array = PyCapsule::new(py, array, Some(ARRAY_CAPSULE.to_owned()))?;
        PyTuple::new(py, [schema, array])
    }

    fn __len__(&self) -> usize {
        self.array.len()
    }

    fn __repr__(&self) -> String {
        format!(
            "ArrowColumn(type={}, len={})",
            self.array.data_type(),
            self.array.len()
        )
    }
}
