//! Reading string columns from Arrow arrays and building the output columns, in pure Rust.
//!
//! Polars hands strings over as `Utf8View`; pyarrow usually as `Utf8` or `LargeUtf8`; an all-null Polars
//! Series as `Null`. A column may arrive in several chunks; kernels see one logical column.
use std::sync::Arc;

use arrow_array::builder::{make_view, StringViewBuilder};
use arrow_array::{
    Array, ArrayRef, BooleanArray, Int64Array, LargeStringArray, StringArray, StringViewArray,
};
use arrow_buffer::{BooleanBuffer, Buffer, NullBuffer, ScalarBuffer};
use arrow_schema::DataType;

use crate::error::{CoreError, CoreResult};

/// One chunk of a string column.
#[derive(Debug, Clone)]
pub enum StrChunk {
    Utf8(StringArray),
    LargeUtf8(LargeStringArray),
    Utf8View(StringViewArray),
    /// Arrow's `Null` type: every value is null.
    Null(usize),
}

impl StrChunk {
    /// Wraps an Arrow array, refusing anything that is not a string (or all-null) array.
    pub fn try_new(array: &ArrayRef, what: &str) -> CoreResult<Self> {
        let any = array.as_any();
        let chunk = match array.data_type() {
            DataType::Utf8 => any
                .downcast_ref::<StringArray>()
                .cloned()
                .map(StrChunk::Utf8),
            DataType::LargeUtf8 => any
                .downcast_ref::<LargeStringArray>()
                .cloned()
                .map(StrChunk::LargeUtf8),
            DataType::Utf8View => any
                .downcast_ref::<StringViewArray>()
                .cloned()
                .map(StrChunk::Utf8View),
            DataType::Null => Some(StrChunk::Null(array.len())),
            other => {
                return Err(CoreError::Type(format!(
                    "{what}: expected a string column (Utf8, LargeUtf8 or Utf8View), got {other}"
                )))
            }
        };
        chunk.ok_or_else(|| {
            CoreError::Arrow(format!("{what}: array does not match its declared type"))
        })
    }

    /// Number of rows in this chunk.
    pub fn len(&self) -> usize {
        match self {
            StrChunk::Utf8(a) => a.len(),
            StrChunk::LargeUtf8(a) => a.len(),
            StrChunk::Utf8View(a) => a.len(),
            StrChunk::Null(n) => *n,
        }
    }

    /// True when the chunk has no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The value at `i` (which must be `< len()`), or `None` for a null.
    #[inline]
    pub fn value(&self, i: usize) -> Option<&str> {
        match self {
            StrChunk::Utf8(a) => a.is_valid(i).then(|| a.value(i)),
            StrChunk::LargeUtf8(a) => a.is_valid(i).then(|| a.value(i)),
            StrChunk::Utf8View(a) => a.is_valid(i).then(|| a.value(i)),
            StrChunk::Null(_) => None,
        }
    }

    /// The values in order.
    pub fn iter(&self) -> impl Iterator<Item = Option<&str>> + '_ {
        (0..self.len()).map(move |i| self.value(i))
    }

    /// Rows `offset..offset + len` of this chunk, sharing its buffers.
    pub fn slice(&self, offset: usize, len: usize) -> Self {
        match self {
            StrChunk::Utf8(a) => StrChunk::Utf8(a.slice(offset, len)),
            StrChunk::LargeUtf8(a) => StrChunk::LargeUtf8(a.slice(offset, len)),
            StrChunk::Utf8View(a) => StrChunk::Utf8View(a.slice(offset, len)),
            StrChunk::Null(_) => StrChunk::Null(len),
        }
    }
}

/// A whole string column, possibly in several chunks.
#[derive(Debug, Clone, Default)]
pub struct StrColumn {
    chunks: Vec<StrChunk>,
    len: usize,
}

impl StrColumn {
    /// Builds a column from Arrow chunks; `what` names the argument in error messages.
    pub fn try_from_arrays(arrays: &[ArrayRef], what: &str) -> CoreResult<Self> {
        let chunks = arrays
            .iter()
            .map(|a| StrChunk::try_new(a, what))
            .collect::<CoreResult<Vec<_>>>()?;
        let len = chunks.iter().map(StrChunk::len).sum();
        Ok(Self { chunks, len })
    }

    /// Builds a column from plain values (tests and pure-Rust callers).
    pub fn from_values<'a>(values: impl IntoIterator<Item = Option<&'a str>>) -> Self {
        let array = StringArray::from_iter(values);
        let len = array.len();
        Self {
            chunks: vec![StrChunk::Utf8(array)],
            len,
        }
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the column has no rows.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The values in order, across chunks.
    pub fn iter(&self) -> impl Iterator<Item = Option<&str>> + '_ {
        self.chunks.iter().flat_map(StrChunk::iter)
    }

    /// Rows `start..end` (clamped to the column), sharing the buffers.
    pub fn slice(&self, start: usize, end: usize) -> Self {
        let end = end.min(self.len);
        let mut chunks = Vec::new();
        let mut chunk_start = 0;
        for chunk in &self.chunks {
            let chunk_end = chunk_start + chunk.len();
            let from = start.max(chunk_start);
            let to = end.min(chunk_end);
            if from < to {
                chunks.push(chunk.slice(from - chunk_start, to - from));
            }
            chunk_start = chunk_end;
        }
        Self {
            chunks,
            len: end.saturating_sub(start),
        }
    }

    /// The null mask of the whole column (`None` when there are no nulls).
    pub fn nulls(&self) -> Option<NullBuffer> {
        let mut valid = arrow_buffer::BooleanBufferBuilder::new(self.len);
        let mut any_null = false;
        for chunk in &self.chunks {
            match chunk {
                StrChunk::Null(n) => {
                    valid.append_n(*n, false);
                    any_null |= *n > 0;
                }
                StrChunk::Utf8(a) => append_validity(&mut valid, a.nulls(), a.len(), &mut any_null),
                StrChunk::LargeUtf8(a) => {
                    append_validity(&mut valid, a.nulls(), a.len(), &mut any_null)
                }
                StrChunk::Utf8View(a) => {
                    append_validity(&mut valid, a.nulls(), a.len(), &mut any_null)
                }
            }
        }
        any_null.then(|| NullBuffer::new(valid.finish()))
    }
}

fn append_validity(
    out: &mut arrow_buffer::BooleanBufferBuilder,
    nulls: Option<&NullBuffer>,
    len: usize,
    any_null: &mut bool,
) {
    match nulls {
        Some(n) if n.null_count() > 0 => {
            *any_null = true;
            out.append_buffer(n.inner());
        }
        _ => out.append_n(len, true),
    }
}

/// Builds a `Utf8View` column of codes drawn from a fixed table; each distinct code is stored once.
pub struct CodeColumnBuilder {
    views_of_codes: Vec<u128>,
    data: Buffer,
    views: Vec<u128>,
    valid: arrow_buffer::BooleanBufferBuilder,
    any_null: bool,
}

impl CodeColumnBuilder {
    /// A builder for `capacity` rows whose codes come from `table`.
    pub fn new<S: AsRef<str>>(table: &[S], capacity: usize) -> Self {
        let mut bytes = Vec::new();
        let mut views_of_codes = Vec::with_capacity(table.len());
        for code in table {
            let code = code.as_ref().as_bytes();
            // Offsets stay small: the table is a handful of names; a huge one saturates and fails validation.
            let offset = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
            views_of_codes.push(make_view(code, 0, offset));
            bytes.extend_from_slice(code);
        }
        Self {
            views_of_codes,
            data: Buffer::from_vec(bytes),
            views: Vec::with_capacity(capacity),
            valid: arrow_buffer::BooleanBufferBuilder::new(capacity),
            any_null: false,
        }
    }

    /// Appends the code at `index` in the table, or a null for `None`.
    #[inline]
    pub fn append(&mut self, index: Option<usize>) {
        match index.and_then(|i| self.views_of_codes.get(i)) {
            Some(view) => {
                self.views.push(*view);
                self.valid.append(true);
            }
            None => {
                self.views.push(0);
                self.valid.append(false);
                self.any_null = true;
            }
        }
    }

    /// The finished column.
    pub fn finish(mut self) -> CoreResult<ArrayRef> {
        let nulls = self.any_null.then(|| NullBuffer::new(self.valid.finish()));
        let array =
            StringViewArray::try_new(ScalarBuffer::from(self.views), vec![self.data], nulls)?;
        Ok(Arc::new(array))
    }
}

/// Builds a `Utf8View` column of arbitrary strings.
pub struct StringColumnBuilder {
    inner: StringViewBuilder,
}

impl StringColumnBuilder {
    /// A builder for `capacity` rows.
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: StringViewBuilder::with_capacity(capacity),
        }
    }

    /// Appends a value or a null.
    #[inline]
    pub fn append(&mut self, value: Option<&str>) {
        match value {
            Some(v) => self.inner.append_value(v),
            None => self.inner.append_null(),
        }
    }

    /// The finished column.
    pub fn finish(mut self) -> ArrayRef {
        Arc::new(self.inner.finish())
    }
}

/// Fewest rows worth a thread of their own: below this, spawning costs more than it saves.
pub const MIN_ROWS_PER_THREAD: usize = 65_536;
/// Most threads one kernel call uses.
pub const MAX_THREADS: usize = 4;

/// How many threads a row-independent kernel should use for `rows` rows.
pub fn threads_for(rows: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    (rows / MIN_ROWS_PER_THREAD).clamp(1, cores.clamp(1, MAX_THREADS))
}

/// Runs `kernel` over `parts` contiguous slices of `column` on scoped threads; results in row order.
pub fn map_row_parts<T: Send>(
    column: &StrColumn,
    parts: usize,
    kernel: impl Fn(&StrColumn) -> CoreResult<T> + Sync,
) -> CoreResult<Vec<T>> {
    if parts <= 1 {
        return Ok(vec![kernel(column)?]);
    }
    let step = column.len().div_ceil(parts);
    let slices: Vec<StrColumn> = (0..parts)
        .map(|i| column.slice(i * step, (i + 1) * step))
        .collect();
    let kernel = &kernel;
    std::thread::scope(|scope| {
        let handles: Vec<_> = slices
            .iter()
            .map(|slice| scope.spawn(move || kernel(slice)))
            .collect();
        handles
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|_| Err(CoreError::Internal("a kernel thread panicked".into())))
            })
            .collect()
    })
}

/// Concatenates `Utf8View` arrays without copying string bytes: views are re-pointed at the joined
/// buffer list.
pub fn concat_string_views(parts: &[ArrayRef]) -> CoreResult<ArrayRef> {
    if let [single] = parts {
        return Ok(Arc::clone(single));
    }
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let mut views: Vec<u128> = Vec::with_capacity(total);
    let mut buffers: Vec<Buffer> = Vec::new();
    let mut valid = arrow_buffer::BooleanBufferBuilder::new(total);
    let mut any_null = false;
    for part in parts {
        let array = part
            .as_any()
            .downcast_ref::<StringViewArray>()
            .ok_or_else(|| {
                CoreError::Internal("concat_string_views: not a Utf8View array".into())
            })?;
        let shift = u32::try_from(buffers.len())
            .map_err(|_| CoreError::Internal("concat_string_views: too many buffers".into()))?;
        views.extend(
            array
                .views()
                .iter()
                .map(|&view| shift_buffer_index(view, shift)),
        );
        buffers.extend(array.data_buffers().iter().cloned());
        append_validity(&mut valid, array.nulls(), array.len(), &mut any_null);
    }
    let nulls = any_null.then(|| NullBuffer::new(valid.finish()));
    Ok(Arc::new(StringViewArray::try_new(
        ScalarBuffer::from(views),
        buffers,
        nulls,
    )?))
}

/// A view of 12 bytes or fewer holds its string inline; a longer one names a buffer (bits 64..96).
#[inline]
fn shift_buffer_index(view: u128, shift: u32) -> u128 {
    let len = view as u32;
    if len <= 12 || shift == 0 {
        view
    } else {
        view + (u128::from(shift) << 64)
    }
}

/// A Boolean column without nulls.
pub fn bool_column(values: BooleanBuffer) -> ArrayRef {
    Arc::new(BooleanArray::new(values, None))
}

/// An Int64 column with the given null mask.
pub fn int64_column(values: Vec<i64>, nulls: Option<NullBuffer>) -> ArrayRef {
    Arc::new(Int64Array::new(ScalarBuffer::from(values), nulls))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;

    #[test]
    fn reads_every_string_layout() {
        let values = [
            Some("a"),
            None,
            Some("a much longer string than twelve bytes"),
        ];
        let arrays: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(values.to_vec())),
            Arc::new(LargeStringArray::from(values.to_vec())),
            Arc::new(StringViewArray::from(values.to_vec())),
            Arc::new(arrow_array::NullArray::new(2)),
        ];
        let column =
            StrColumn::try_from_arrays(&arrays, "keys").expect("string arrays are accepted");
        assert_eq!(column.len(), 11);
        let got: Vec<Option<&str>> = column.iter().collect();
        let mut expected = [values.to_vec(), values.to_vec(), values.to_vec()].concat();
        expected.extend([None, None]);
        assert_eq!(got, expected);
        let nulls = column.nulls().expect("there are nulls");
        assert_eq!(nulls.null_count(), 5);
        assert!(nulls.is_null(1) && nulls.is_null(10) && nulls.is_valid(2));
    }

    #[test]
    fn refuses_non_string_arrays() {
        let ints: ArrayRef = Arc::new(Int64Array::from(vec![1, 2]));
        let err = StrColumn::try_from_arrays(&[ints], "emails").unwrap_err();
        assert!(
            matches!(err, CoreError::Type(ref m) if m.contains("emails") && m.contains("Int64"))
        );
    }

    #[test]
    fn slices_across_chunks() {
        let arrays: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec![Some("a"), Some("b"), None])),
            Arc::new(StringViewArray::from(vec![Some("c"), Some("d")])),
        ];
        let column = StrColumn::try_from_arrays(&arrays, "x").expect("strings");
        let middle = column.slice(2, 4);
        assert_eq!(middle.len(), 2);
        assert_eq!(middle.iter().collect::<Vec<_>>(), vec![None, Some("c")]);
        assert_eq!(
            column.slice(4, 99).iter().collect::<Vec<_>>(),
            vec![Some("d")]
        );
        assert!(column.slice(5, 9).is_empty());
    }

    #[test]
    fn parts_run_in_row_order_and_concatenate() {
        let long = |i: usize| format!("value number {i} which is longer than twelve bytes");
        let values: Vec<Option<String>> =
            (0..1000).map(|i| (i % 7 != 0).then(|| long(i))).collect();
        let column = StrColumn::from_values(values.iter().map(Option::as_deref));
        let parts = map_row_parts(&column, 3, |part| {
            let mut out = StringColumnBuilder::new(part.len());
            part.iter().for_each(|v| out.append(v));
            Ok(out.finish())
        })
        .expect("runs");
        assert_eq!(parts.len(), 3);
        let joined = concat_string_views(&parts).expect("concatenates");
        let joined = joined.as_string_view();
        assert_eq!(
            joined
                .iter()
                .map(|v| v.map(str::to_owned))
                .collect::<Vec<_>>(),
            values
        );
    }

    #[test]
    fn thread_count_grows_with_rows() {
        assert_eq!(threads_for(10), 1);
        assert!(threads_for(10 * MIN_ROWS_PER_THREAD) <= MAX_THREADS);
    }

    #[test]
    fn no_nulls_gives_no_mask() {
        let column = StrColumn::from_values([Some("x"), Some("y")]);
        assert!(column.nulls().is_none());
    }

    #[test]
    fn code_builder_shares_one_buffer() {
        static TABLE: [&str; 2] = ["short", "a_code_longer_than_twelve"];
        let mut builder = CodeColumnBuilder::new(&TABLE, 4);
        builder.append(Some(1));
        builder.append(None);
        builder.append(Some(0));
        builder.append(Some(1));
        let array = builder.finish().expect("valid views");
        let strings = array.as_string_view();
        assert_eq!(
            strings.iter().collect::<Vec<_>>(),
            vec![
                Some("a_code_longer_than_twelve"),
                None,
                Some("short"),
                Some("a_code_longer_than_twelve")
            ]
        );
        assert_eq!(strings.data_buffers().len(), 1);
    }
}
