//! Reading arrays from the files scientists have: `.npy`, `.npz`, `.safetensors` and `.csv`,
//! in C or Fortran order, with float16/32/64, integer or boolean elements. Every array is
//! returned in C (row-major) order as `f64`; a conversion that changes the values' type or
//! layout is recorded in [`Array::notes`] so the caller can say so.
//!
//! Formats, chosen by the file's extension:
//! - `.npy`: one array (NumPy's format, any byte order);
//! - `.npz`: the array named `key` (NumPy's `savez` / `savez_compressed`);
//! - `.safetensors`: the tensor named `key` (optional when the file holds one tensor);
//! - `.csv`: a table of numbers, comma-separated, with an optional header row; `key` selects
//!   columns by header name (`"a,b"`), otherwise every column is read.
//!
//! A truncated or corrupt file gives a one-line [`DataError::Corrupt`]; an array too large for
//! this machine's memory is refused before it is allocated ([`crate::memory`]).

use crate::error::DataError;
use crate::memory;
use std::io::{BufReader, Read};
use std::path::Path;

/// A dense array read from disk, converted to `f64`.
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    /// Shape.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub data: Vec<f64>,
    /// Conversions applied on reading (element type cast, Fortran order transposed).
    pub notes: Vec<String>,
}

impl Array {
    /// A C-ordered `f64` array with no notes.
    pub fn new(shape: Vec<usize>, data: Vec<f64>) -> Self {
        Self {
            shape,
            data,
            notes: Vec::new(),
        }
    }
}

fn corrupt(path: &Path, format: &'static str, detail: impl std::fmt::Display) -> DataError {
    DataError::Corrupt {
        path: path.to_path_buf(),
        format,
        detail: detail.to_string().replace('\n', " "),
    }
}

fn open_err(path: &Path) -> impl Fn(std::io::Error) -> DataError + '_ {
    move |e| DataError::Io {
        path: path.to_path_buf(),
        source: e,
    }
}

/// Read the array `key` of `path`, the format chosen by the extension (see the module docs).
/// `key` is required for `.npz` and for a `.safetensors` file with several tensors, and must
/// be absent for `.npy`.
pub fn load_array(path: &Path, key: Option<&str>) -> Result<Array, DataError> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    match (ext.as_str(), key) {
        ("npy", None) => load_npy(path),
        ("npy", Some(k)) => Err(DataError::Shape(format!(
            "{}: a .npy file holds one array; drop the key '{k}' (keys select arrays of .npz, .safetensors or columns of .csv)",
            path.display()
        ))),
        ("npz", Some(k)) => load_npz(path, k),
        ("npz", None) => Err(DataError::Shape(format!(
            "{}: name the array to read from this .npz archive (arrays present: {})",
            path.display(),
            npz_names(path)?.join(", ")
        ))),
        ("safetensors", k) => load_safetensors(path, k),
        ("csv", k) => load_csv(path, k),
        _ => Err(DataError::Shape(format!(
            "{}: unknown data file type '.{ext}'; varphi reads .npy, .npz, .safetensors and .csv",
            path.display()
        ))),
    }
}

/// The names of the arrays in a `.npz` archive.
pub fn npz_names(path: &Path) -> Result<Vec<String>, DataError> {
    let archive = npyz::npz::NpzArchive::open(path).map_err(|e| npz_open_err(path, e))?;
    let mut names: Vec<String> = archive.array_names().map(str::to_string).collect();
    names.sort_unstable();
    Ok(names)
}

fn npz_open_err(path: &Path, e: std::io::Error) -> DataError {
    if e.kind() == std::io::ErrorKind::NotFound {
        open_err(path)(e)
    } else {
        corrupt(path, ".npz (zip)", e)
    }
}

/// Transpose Fortran-ordered (column-major) `data` of `shape` into C order.
fn fortran_to_c(shape: &[usize], data: Vec<f64>) -> Vec<f64> {
    let n = data.len();
    let mut out = vec![0.0; n];
    let d = shape.len();
    // Fortran strides: s_0 = 1, s_k = s_{k-1} d_{k-1}.
    let mut f_stride = vec![1usize; d];
    for k in 1..d {
        f_stride[k] = f_stride[k - 1] * shape[k - 1];
    }
    let mut idx = vec![0usize; d];
    for slot in out.iter_mut() {
        let f: usize = idx.iter().zip(&f_stride).map(|(i, s)| i * s).sum();
        *slot = data[f];
        // Advance the C-order multi-index (last axis fastest).
        for k in (0..d).rev() {
            idx[k] += 1;
            if idx[k] < shape[k] {
                break;
            }
            idx[k] = 0;
        }
    }
    out
}

/// The elements of `npy` as `f64`: all of them, or with `pick = (per_row, rows)` only the
/// rows `rows` (ascending, distinct) of `per_row` elements each, streamed so that the others
/// are never held.
fn to_f64<T, R: Read>(
    npy: npyz::NpyFile<R>,
    conv: fn(T) -> f64,
    pick: Option<(usize, &[usize])>,
) -> std::io::Result<Vec<f64>>
where
    T: npyz::Deserialize,
{
    let Some((per_row, rows)) = pick else {
        return Ok(npy.into_vec::<T>()?.into_iter().map(conv).collect());
    };
    let per_row = per_row.max(1);
    let mut out = Vec::with_capacity(rows.len() * per_row);
    let mut wanted = rows.iter().copied().peekable();
    let values = npy
        .data::<T>()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
    for (i, v) in values.enumerate() {
        let Some(&row) = wanted.peek() else { break };
        let v = v?;
        if i / per_row == row {
            out.push(conv(v));
            if (i + 1) % per_row == 0 {
                wanted.next();
            }
        }
    }
    Ok(out)
}

fn read_npy<R: Read>(
    npy: npyz::NpyFile<R>,
    path: &Path,
    available: Option<u64>,
    rows: Option<&[usize]>,
) -> Result<Array, DataError> {
    let fortran = npy.order() == npyz::Order::Fortran;
    let full: Vec<usize> = npy.shape().iter().map(|&s| s as usize).collect();
    if let Some(rows) = rows {
        check_rows(path, &full, rows)?;
    }
    let per_row: usize = full.iter().skip(1).product();
    // A Fortran-ordered array is not stored by rows: read whole, then pick.
    let pick = rows
        .filter(|_| !(fortran && full.len() > 1))
        .map(|r| (per_row, r));
    let shape = match pick {
        Some((_, r)) => std::iter::once(r.len())
            .chain(full[1..].iter().copied())
            .collect(),
        None => full.clone(),
    };
    let descr = npy.dtype().descr().trim_matches('\'').to_string();
    let code = descr.trim_start_matches(['<', '>', '|', '=']).to_string();
    let elements: u128 = shape.iter().map(|&s| s as u128).product();
    let item: u128 = code.get(1..).and_then(|c| c.parse().ok()).unwrap_or(8);
    if let Some(limit) = available
        && elements * item > limit as u128
    {
        return Err(corrupt(
            path,
            ".npy",
            format!(
                "its header declares shape {shape:?} of {descr} ({} bytes), more than the file holds",
                elements * item
            ),
        ));
    }
    memory::check(
        elements * 8,
        &format!("reading {} ({shape:?} as float64)", path.display()),
        "use a smaller file or a machine with more memory",
    )?;
    let bad = |e: std::io::Error| corrupt(path, ".npy", e);
    let mut notes = Vec::new();
    let cast = |notes: &mut Vec<String>, what: &str| {
        notes.push(format!(
            "{}: {what} elements cast to float64",
            path.display()
        ))
    };
    let data: Vec<f64> = match code.as_str() {
        "f8" => to_f64::<f64, _>(npy, |v| v, pick).map_err(bad)?,
        "f4" => to_f64::<f32, _>(npy, f64::from, pick).map_err(bad)?,
        "f2" => {
            cast(&mut notes, "float16");
            to_f64::<half::f16, _>(npy, f64::from, pick).map_err(bad)?
        }
        "i1" | "i2" | "i4" | "i8" | "u1" | "u2" | "u4" | "u8" | "b1" => {
            cast(&mut notes, &descr);
            let v = match code.as_str() {
                "i1" => to_f64::<i8, _>(npy, f64::from, pick),
                "i2" => to_f64::<i16, _>(npy, f64::from, pick),
                "i4" => to_f64::<i32, _>(npy, f64::from, pick),
                "i8" => to_f64::<i64, _>(npy, |v| v as f64, pick),
                "u1" => to_f64::<u8, _>(npy, f64::from, pick),
                "u2" => to_f64::<u16, _>(npy, f64::from, pick),
                "u4" => to_f64::<u32, _>(npy, f64::from, pick),
                "u8" => to_f64::<u64, _>(npy, |v| v as f64, pick),
                _ => to_f64::<bool, _>(npy, |v| f64::from(u8::from(v)), pick),
            };
            let v = v.map_err(bad)?;
            if code.ends_with('8') && v.iter().any(|x| x.abs() > 2f64.powi(53)) {
                notes.push(format!(
                    "{}: 64-bit integers beyond 2^53 lose precision as float64",
                    path.display()
                ));
            }
            v
        }
        _ => {
            return Err(DataError::Dtype {
                path: path.to_path_buf(),
                dtype: descr,
            });
        }
    };
    if data.len() as u128 != elements {
        return Err(corrupt(
            path,
            ".npy",
            format!("{} values for shape {shape:?}", data.len()),
        ));
    }
    let data = if fortran && shape.len() > 1 {
        notes.push(format!(
            "{}: Fortran-ordered array transposed to C order",
            path.display()
        ));
        fortran_to_c(&shape, data)
    } else {
        data
    };
    let arr = Array { shape, data, notes };
    match (rows, pick) {
        (Some(rows), None) => Ok(select_rows(arr, rows)),
        (Some(rows), Some(_)) => {
            // Name the file's sample, not the position among the rows read.
            check_finite(&arr, path).map_err(|e| match e {
                DataError::NonFinite {
                    path,
                    index,
                    sample,
                    value,
                } => DataError::NonFinite {
                    path,
                    index: rows[sample] * per_row + index % per_row.max(1),
                    sample: rows[sample],
                    value,
                },
                e => e,
            })?;
            Ok(arr)
        }
        (None, _) => {
            check_finite(&arr, path)?;
            Ok(arr)
        }
    }
}

/// Rows `rows` (indices into the first axis) must exist and ascend without repeats.
fn check_rows(path: &Path, shape: &[usize], rows: &[usize]) -> Result<(), DataError> {
    let n = shape.first().copied().unwrap_or(0);
    if let Some(&bad) = rows.iter().find(|&&r| r >= n) {
        return Err(DataError::Shape(format!(
            "{}: sample {bad} requested of an array of {n} (shape {shape:?})",
            path.display()
        )));
    }
    if rows.windows(2).any(|w| w[0] >= w[1]) {
        return Err(DataError::Shape(format!(
            "{}: rows to read must ascend without repeats",
            path.display()
        )));
    }
    Ok(())
}

/// Rows `rows` of a whole array (already checked for non-finite values).
fn select_rows(arr: Array, rows: &[usize]) -> Array {
    let per_row: usize = arr.shape.iter().skip(1).product::<usize>().max(1);
    let mut data = Vec::with_capacity(rows.len() * per_row);
    for &r in rows {
        data.extend_from_slice(&arr.data[r * per_row..(r + 1) * per_row]);
    }
    let mut shape = arr.shape;
    if let Some(first) = shape.first_mut() {
        *first = rows.len();
    }
    Array {
        shape,
        data,
        notes: arr.notes,
    }
}

/// The number of samples (first axis) of array `key` of `path`, from its header where the
/// format has one (`.npy`, `.npz`, `.safetensors`); `.csv` is read whole.
pub fn array_rows(path: &Path, key: Option<&str>) -> Result<usize, DataError> {
    let ext = extension(path);
    let first = |shape: &[u64]| shape.first().map_or(1, |&s| s as usize);
    match ext.as_str() {
        "npy" if key.is_none() => {
            let file = std::fs::File::open(path).map_err(open_err(path))?;
            let npy =
                npyz::NpyFile::new(BufReader::new(file)).map_err(|e| corrupt(path, ".npy", e))?;
            Ok(first(npy.shape()))
        }
        "npz" if key.is_some() => {
            with_npz_entry(path, key.unwrap_or_default(), |npy| Ok(first(npy.shape())))
        }
        _ => Ok(load_array(path, key)?.shape.first().copied().unwrap_or(1)),
    }
}

/// Rows `rows` (ascending, distinct) of array `key` of `path`, as [`load_array`] reads it.
/// `.npy` and `.npz` arrays in C order are streamed, so that only those rows are ever held
/// (a Fortran-ordered array, `.safetensors` and `.csv` are read whole, then cut). Each row
/// read is checked for non-finite values (named by its sample in the file).
pub fn load_array_rows(path: &Path, key: Option<&str>, rows: &[usize]) -> Result<Array, DataError> {
    match (extension(path).as_str(), key) {
        ("npy", None) => {
            let file = std::fs::File::open(path).map_err(open_err(path))?;
            let size = file.metadata().map(|m| m.len()).ok();
            let npy =
                npyz::NpyFile::new(BufReader::new(file)).map_err(|e| corrupt(path, ".npy", e))?;
            read_npy(npy, path, size, Some(rows))
        }
        ("npz", Some(k)) => with_npz_entry(path, k, |npy| read_npy(npy, path, None, Some(rows))),
        _ => {
            let arr = load_array(path, key)?;
            check_rows(path, &arr.shape, rows)?;
            Ok(select_rows(arr, rows))
        }
    }
}

fn extension(path: &Path) -> String {
    path.extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default()
}

/// Run `f` on the entry `key.npy` of an `.npz` archive (a reader and its uncompressed size).
fn in_npz_entry<T>(
    path: &Path,
    key: &str,
    f: impl FnOnce(&mut npyz::zip::read::ZipFile<'_>, u64) -> Result<T, DataError>,
) -> Result<T, DataError> {
    let present = npz_names(path)?;
    let file = std::fs::File::open(path).map_err(open_err(path))?;
    let mut zip = npyz::zip::ZipArchive::new(BufReader::new(file))
        .map_err(|e| corrupt(path, ".npz (zip)", e))?;
    let mut entry = match zip.by_name(&format!("{key}.npy")) {
        Ok(e) => e,
        Err(npyz::zip::result::ZipError::FileNotFound) => {
            return Err(DataError::MissingArray {
                path: path.to_path_buf(),
                key: key.to_string(),
                present: present.join(", "),
            });
        }
        Err(e) => return Err(corrupt(path, ".npz (zip)", e)),
    };
    let size = entry.size();
    f(&mut entry, size)
}

/// Run `f` on the `.npy` entry `key` of an `.npz` archive, read as a stream; the rest of the
/// entry is read afterwards so that the zip's CRC-32 is checked.
fn with_npz_entry<T>(
    path: &Path,
    key: &str,
    f: impl FnOnce(npyz::NpyFile<&mut npyz::zip::read::ZipFile<'_>>) -> Result<T, DataError>,
) -> Result<T, DataError> {
    in_npz_entry(path, key, |entry, _| {
        let out = {
            let npy = npyz::NpyFile::new(&mut *entry)
                .map_err(|e| corrupt(path, ".npz entry (.npy)", e))?;
            f(npy)?
        };
        std::io::copy(entry, &mut std::io::sink()).map_err(|e| corrupt(path, ".npz (zip)", e))?;
        Ok(out)
    })
}

/// Reject NaN and infinities, naming the first offender.
pub fn check_finite(arr: &Array, path: &Path) -> Result<(), DataError> {
    let per_sample: usize = arr.shape.iter().skip(1).product::<usize>().max(1);
    if let Some((index, &value)) = arr.data.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(DataError::NonFinite {
            path: path.to_path_buf(),
            index,
            sample: index / per_sample,
            value,
        });
    }
    Ok(())
}

/// Read a `.npy` file.
pub fn load_npy(path: &Path) -> Result<Array, DataError> {
    let file = std::fs::File::open(path).map_err(open_err(path))?;
    let size = file.metadata().map(|m| m.len()).ok();
    let npy = npyz::NpyFile::new(BufReader::new(file)).map_err(|e| corrupt(path, ".npy", e))?;
    read_npy(npy, path, size, None)
}

/// Read array `key` from a `.npz` archive. The entry is read whole first, so the zip's CRC-32
/// is checked: a damaged compressed entry is an error, not silently wrong numbers.
pub fn load_npz(path: &Path, key: &str) -> Result<Array, DataError> {
    let bytes = in_npz_entry(path, key, |entry, size| {
        memory::check(
            size as u128,
            &format!("reading array '{key}' of {}", path.display()),
            "use a smaller file or a machine with more memory",
        )?;
        let mut bytes = Vec::with_capacity(size as usize);
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| corrupt(path, ".npz (zip)", e))?;
        Ok(bytes)
    })?;
    let size = bytes.len() as u64;
    let npy = npyz::NpyFile::new(std::io::Cursor::new(bytes))
        .map_err(|e| corrupt(path, ".npz entry (.npy)", e))?;
    read_npy(npy, path, Some(size), None)
}

/// Read tensor `key` (optional when there is one) from a `.safetensors` file.
pub fn load_safetensors(path: &Path, key: Option<&str>) -> Result<Array, DataError> {
    use safetensors::{Dtype, SafeTensors};
    let bytes = std::fs::read(path).map_err(open_err(path))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| corrupt(path, ".safetensors", e))?;
    let mut names: Vec<&str> = st.names();
    names.sort_unstable();
    let name = match (key, names.as_slice()) {
        (Some(k), _) => k,
        (None, [one]) => *one,
        (None, _) => {
            return Err(DataError::Shape(format!(
                "{}: name the tensor to read (tensors present: {})",
                path.display(),
                names.join(", ")
            )));
        }
    };
    let view = st.tensor(name).map_err(|_| DataError::MissingArray {
        path: path.to_path_buf(),
        key: name.to_string(),
        present: names.join(", "),
    })?;
    let raw = view.data();
    fn le<const N: usize, T>(raw: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
        raw.chunks_exact(N)
            .map(|c| f(c.try_into().expect("chunks of N bytes")))
            .collect()
    }
    let dtype = view.dtype();
    let data: Vec<f64> = match dtype {
        Dtype::F64 => le(raw, f64::from_le_bytes),
        Dtype::F32 => le(raw, |b| f64::from(f32::from_le_bytes(b))),
        Dtype::F16 => le(raw, |b| f64::from(half::f16::from_le_bytes(b))),
        Dtype::BF16 => le(raw, |b| f64::from(half::bf16::from_le_bytes(b))),
        Dtype::I64 => le(raw, |b| i64::from_le_bytes(b) as f64),
        Dtype::I32 => le(raw, |b| f64::from(i32::from_le_bytes(b))),
        Dtype::I16 => le(raw, |b| f64::from(i16::from_le_bytes(b))),
        Dtype::I8 => le(raw, |b: [u8; 1]| f64::from(b[0] as i8)),
        Dtype::U64 => le(raw, |b| u64::from_le_bytes(b) as f64),
        Dtype::U32 => le(raw, |b| f64::from(u32::from_le_bytes(b))),
        Dtype::U16 => le(raw, |b| f64::from(u16::from_le_bytes(b))),
        Dtype::U8 | Dtype::BOOL => le(raw, |b: [u8; 1]| f64::from(b[0])),
        other => {
            return Err(DataError::Dtype {
                path: path.to_path_buf(),
                dtype: format!("{other:?}"),
            });
        }
    };
    let mut notes = Vec::new();
    if !matches!(dtype, Dtype::F64 | Dtype::F32) {
        notes.push(format!(
            "{}: {dtype:?} elements cast to float64",
            path.display()
        ));
    }
    let arr = Array {
        shape: view.shape().to_vec(),
        data,
        notes,
    };
    check_finite(&arr, path)?;
    Ok(arr)
}

/// Read a `.csv` table of numbers `[rows, columns]`; with `columns` (`"a,b"`), only those
/// columns of the header row, in that order.
pub fn load_csv(path: &Path, columns: Option<&str>) -> Result<Array, DataError> {
    let mut text = String::new();
    std::fs::File::open(path)
        .map_err(open_err(path))?
        .read_to_string(&mut text)
        .map_err(|e| corrupt(path, ".csv (UTF-8 text)", e))?;
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
    let split = |l: &str| -> Vec<String> { l.split(',').map(|f| f.trim().to_string()).collect() };
    let Some((first_no, first)) = lines.next() else {
        return Err(DataError::Shape(format!(
            "{}: the CSV file has no rows",
            path.display()
        )));
    };
    let first = split(first);
    let header = first.iter().any(|f| f.parse::<f64>().is_err());
    let width = first.len();
    let pick: Vec<usize> = match columns {
        None => (0..width).collect(),
        Some(cols) => {
            if !header {
                return Err(DataError::Shape(format!(
                    "{}: columns '{cols}' requested, but the CSV file has no header row to name them",
                    path.display()
                )));
            }
            cols.split(',')
                .map(|c| {
                    first.iter().position(|h| h == c.trim()).ok_or_else(|| {
                        DataError::MissingArray {
                            path: path.to_path_buf(),
                            key: c.trim().to_string(),
                            present: first.join(", "),
                        }
                    })
                })
                .collect::<Result<_, _>>()?
        }
    };
    let mut data = Vec::new();
    let mut rows = 0usize;
    let body = (!header)
        .then_some((first_no, first))
        .into_iter()
        .chain(lines.map(|(no, l)| (no, split(l))));
    for (no, fields) in body {
        if fields.len() != width {
            return Err(DataError::Shape(format!(
                "{}:{}: {} fields where the first row has {width}",
                path.display(),
                no + 1,
                fields.len()
            )));
        }
        for &j in &pick {
            let v: f64 = fields[j].parse().map_err(|_| {
                DataError::Shape(format!(
                    "{}:{}: '{}' in column {} is not a number",
                    path.display(),
                    no + 1,
                    fields[j],
                    j + 1
                ))
            })?;
            data.push(v);
        }
        rows += 1;
    }
    let arr = Array::new(vec![rows, pick.len()], data);
    check_finite(&arr, path)?;
    Ok(arr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// The files of `tests/fixtures`, written by NumPy and safetensors' Python writer
    /// (`make_fixtures.py`).
    fn fixture(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name)
    }

    /// `A[i, j, k] = 0.5 (12 i + 4 j + k) − 3` in C order.
    fn a() -> Vec<f64> {
        (0..24).map(|v| 0.5 * v as f64 - 3.0).collect()
    }

    fn ints() -> Vec<f64> {
        (0..24).map(|v| (v - 5) as f64).collect()
    }

    #[test]
    fn numpy_files_of_every_order_and_element_type_read_the_same_values() {
        for (file, key, want, note) in [
            ("c_f64.npy", None, a(), None),
            ("c_f32.npy", None, a(), None),
            ("be_f64.npy", None, a(), None),
            ("c_f16.npy", None, a(), Some("float16")),
            ("f_f64.npy", None, a(), Some("Fortran")),
            ("f_f32.npy", None, a(), Some("Fortran")),
            ("f_f16.npy", None, a(), Some("Fortran")),
            ("i64.npy", None, ints(), Some("cast")),
            ("f_i32.npy", None, ints(), Some("Fortran")),
            (
                "u8.npy",
                None,
                (0..24).map(f64::from).collect(),
                Some("cast"),
            ),
            (
                "bool.npy",
                None,
                (0..24).map(|v| f64::from((v - 5) % 2 == 0)).collect(),
                Some("cast"),
            ),
            ("arrays.npz", Some("x"), a(), None),
            ("arrays.npz", Some("f"), a(), Some("Fortran")),
            ("compressed.npz", Some("x"), a(), None),
            ("compressed.npz", Some("i"), ints(), Some("cast")),
            ("torch_like.npz", Some("u"), a(), Some("Fortran")),
            ("tensors.safetensors", Some("x"), a(), None),
            ("tensors.safetensors", Some("h"), a(), Some("F16")),
            ("tensors.safetensors", Some("d"), a(), None),
            ("tensors.safetensors", Some("i"), ints(), Some("cast")),
            ("one.safetensors", None, a(), None),
        ] {
            let arr = load_array(&fixture(file), key).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!(arr.shape, vec![2, 3, 4], "{file} {key:?}");
            assert_eq!(arr.data, want, "{file} {key:?}");
            match note {
                None => assert!(arr.notes.is_empty(), "{file}: {:?}", arr.notes),
                Some(n) => assert!(
                    arr.notes.iter().any(|m| m.contains(n)),
                    "{file}: {:?}",
                    arr.notes
                ),
            }
        }
        let c = load_array(&fixture("arrays.npz"), Some("c")).unwrap();
        assert_eq!((c.shape, c.data), (vec![2], vec![0.0, 1.0]));
    }

    #[test]
    fn csv_tables_read_all_or_named_columns() {
        let all = load_array(&fixture("table.csv"), None).unwrap();
        assert_eq!(all.shape, vec![4, 3]);
        assert_eq!(&all.data[3..6], &[0.5, -0.5, 1e-3]);
        let two = load_array(&fixture("table.csv"), Some("omega,theta")).unwrap();
        assert_eq!(two.shape, vec![4, 2]);
        assert_eq!(two.data, vec![-1.5, 0.0, -0.5, 0.5, 0.5, 1.0, 1.5, 1.5]);
        let err = load_array(&fixture("table.csv"), Some("phi"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("'phi'") && err.contains("theta, omega, gamma"),
            "{err}"
        );
    }

    /// A copy of fixture `name` cut to `keep` of its bytes (or with its bytes overwritten).
    fn damaged(name: &str, f: impl Fn(&mut Vec<u8>)) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("varphi-read-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut bytes = std::fs::read(fixture(name)).unwrap();
        f(&mut bytes);
        let p = dir.join(format!("damaged-{name}"));
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn truncated_or_corrupt_files_of_each_format_give_one_line_errors() {
        let cut = |n: usize| move |b: &mut Vec<u8>| b.truncate(b.len() - n);
        for (name, key, path) in [
            ("c_f64.npy", None, damaged("c_f64.npy", cut(20))),
            ("c_f64.npy", None, damaged("c_f64.npy", cut(300))),
            ("arrays.npz", Some("x"), damaged("arrays.npz", cut(100))),
            (
                "compressed.npz",
                Some("x"),
                damaged("compressed.npz", |b| {
                    let n = b.len();
                    b[n / 3..n / 3 + 40].fill(0xAB);
                }),
            ),
            (
                "tensors.safetensors",
                Some("x"),
                damaged("tensors.safetensors", cut(50)),
            ),
            (
                "tensors.safetensors",
                Some("x"),
                damaged("tensors.safetensors", |b| b[8..20].fill(b'{')),
            ),
            (
                "table.csv",
                None,
                damaged("table.csv", |b| b.extend_from_slice(b"1,2,oops\n")),
            ),
        ] {
            let err = load_array(&path, key).expect_err(name).to_string();
            assert!(!err.contains('\n'), "{err}");
            assert!(err.contains("damaged-"), "names the file: {err}");
            if !name.ends_with(".csv") {
                assert!(err.contains("truncated or corrupt"), "{name}: {err}");
            } else {
                assert!(err.contains("'oops'") && err.contains(":6:"), "{err}");
            }
        }
        // A header that declares far more data than the file holds is refused before reading.
        let p = damaged("c_f64.npy", |b| {
            let at = b
                .windows(9)
                .position(|w| w == b"(2, 3, 4)")
                .expect("shape in header");
            b[at..at + 9].copy_from_slice(b"(999999,)");
        });
        let err = load_array(&p, None).unwrap_err().to_string();
        assert!(err.contains("more than the file holds"), "{err}");
    }

    #[test]
    fn fortran_order_is_transposed_to_c_order() {
        // A 2×3 matrix [[0, 1, 2], [3, 4, 5]] stored column by column.
        let f = vec![0., 3., 1., 4., 2., 5.];
        assert_eq!(fortran_to_c(&[2, 3], f), vec![0., 1., 2., 3., 4., 5.]);
        // 2×2×2: element (i, j, k) = 4i + 2j + k, Fortran offset i + 2j + 4k.
        let mut f = vec![0.0; 8];
        for i in 0..2 {
            for j in 0..2 {
                for k in 0..2 {
                    f[i + 2 * j + 4 * k] = (4 * i + 2 * j + k) as f64;
                }
            }
        }
        assert_eq!(
            fortran_to_c(&[2, 2, 2], f),
            (0..8).map(f64::from).collect::<Vec<_>>()
        );
    }

    #[test]
    fn rows_read_alone_are_the_rows_of_the_whole_array() {
        for (file, key) in [
            ("c_f64.npy", None),
            ("c_f32.npy", None),
            ("be_f64.npy", None),
            ("f_f32.npy", None),
            ("i64.npy", None),
            ("bool.npy", None),
            ("arrays.npz", Some("x")),
            ("arrays.npz", Some("f")),
            ("compressed.npz", Some("i")),
            ("tensors.safetensors", Some("h")),
        ] {
            let path = fixture(file);
            let whole = load_array(&path, key).unwrap();
            assert_eq!(array_rows(&path, key).unwrap(), 2, "{file}");
            let one = load_array_rows(&path, key, &[1]).unwrap();
            assert_eq!(one.shape, vec![1, 3, 4], "{file} {key:?}");
            assert_eq!(one.data, whole.data[12..], "{file} {key:?}");
            assert_eq!(one.notes, whole.notes, "{file} {key:?}");
            let both = load_array_rows(&path, key, &[0, 1]).unwrap();
            assert_eq!(both.data, whole.data, "{file} {key:?}");
        }
        let path = fixture("c_f64.npy");
        let err = load_array_rows(&path, None, &[2]).unwrap_err().to_string();
        assert!(err.contains("sample 2 requested of an array of 2"), "{err}");
        let err = load_array_rows(&path, None, &[1, 0])
            .unwrap_err()
            .to_string();
        assert!(err.contains("ascend"), "{err}");
    }

    #[test]
    fn a_non_finite_value_is_found_in_the_rows_read_and_named_by_its_sample_in_the_file() {
        let dir = std::env::temp_dir().join(format!("varphi-rows-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("nan.npy");
        let mut v: Vec<f64> = (0..12).map(f64::from).collect();
        v[2 * 3 + 1] = f64::NAN;
        crate::npy::save_npy_f32(&path, &[4, 3], &v).unwrap();
        // Rows 0, 1 and 3 hold no NaN; row 2 does.
        let ok = load_array_rows(&path, None, &[0, 1, 3]).unwrap();
        assert_eq!(ok.data, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 9.0, 10.0, 11.0]);
        match load_array_rows(&path, None, &[0, 2]).unwrap_err() {
            DataError::NonFinite { sample, index, .. } => assert_eq!((sample, index), (2, 7)),
            e => panic!("{e}"),
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}
