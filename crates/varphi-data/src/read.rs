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
/// are never held. With `fortran = Some(n)` the file is column-major with `n` rows: the
/// element at position `k` of the stream belongs to row `k % n`, and each picked row comes
/// back with its own elements in Fortran order (the caller transposes them).
fn to_f64<T, R: Read>(
    npy: npyz::NpyFile<R>,
    conv: fn(T) -> f64,
    pick: Option<(usize, &[usize])>,
    fortran: Option<usize>,
) -> std::io::Result<Vec<f64>>
where
    T: npyz::Deserialize,
{
    let Some((per_row, rows)) = pick else {
        return Ok(npy.into_vec::<T>()?.into_iter().map(conv).collect());
    };
    let per_row = per_row.max(1);
    let values = npy
        .data::<T>()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
    if let Some(n) = fortran {
        // Where each file row goes among the rows read (usize::MAX: not read).
        let mut slot = vec![usize::MAX; n];
        for (i, &r) in rows.iter().enumerate() {
            slot[r] = i;
        }
        let mut out = vec![0.0; rows.len() * per_row];
        let mut seen = 0usize;
        for (k, v) in values.enumerate() {
            let v = v?;
            seen += 1;
            let at = slot[k % n];
            if at != usize::MAX {
                out[at * per_row + k / n] = conv(v);
            }
        }
        if seen != n * per_row {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("{seen} values for {n} rows of {per_row}"),
            ));
        }
        return Ok(out);
    }
    let mut out = Vec::with_capacity(rows.len() * per_row);
    let mut wanted = rows.iter().copied().peekable();
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
    let pick = rows.map(|r| (per_row, r));
    // A Fortran-ordered array is stored by columns: the rows are picked from the stream by
    // their position modulo the row count.
    let column_major = (fortran && full.len() > 1).then_some(full[0]);
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
        "f8" => to_f64::<f64, _>(npy, |v| v, pick, column_major).map_err(bad)?,
        "f4" => to_f64::<f32, _>(npy, f64::from, pick, column_major).map_err(bad)?,
        "f2" => {
            cast(&mut notes, "float16");
            to_f64::<half::f16, _>(npy, f64::from, pick, column_major).map_err(bad)?
        }
        "i1" | "i2" | "i4" | "i8" | "u1" | "u2" | "u4" | "u8" | "b1" => {
            cast(&mut notes, &descr);
            let v = match code.as_str() {
                "i1" => to_f64::<i8, _>(npy, f64::from, pick, column_major),
                "i2" => to_f64::<i16, _>(npy, f64::from, pick, column_major),
                "i4" => to_f64::<i32, _>(npy, f64::from, pick, column_major),
                "i8" => to_f64::<i64, _>(npy, |v| v as f64, pick, column_major),
                "u1" => to_f64::<u8, _>(npy, f64::from, pick, column_major),
                "u2" => to_f64::<u16, _>(npy, f64::from, pick, column_major),
                "u4" => to_f64::<u32, _>(npy, f64::from, pick, column_major),
                "u8" => to_f64::<u64, _>(npy, |v| v as f64, pick, column_major),
                _ => to_f64::<bool, _>(npy, |v| f64::from(u8::from(v)), pick, column_major),
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
        match pick {
            None => fortran_to_c(&shape, data),
            // Each picked row holds its own elements in Fortran order.
            Some(_) => data
                .chunks(per_row.max(1))
                .flat_map(|row| fortran_to_c(&shape[1..], row.to_vec()))
                .collect(),
        }
    } else {
        data
    };
    let arr = Array { shape, data, notes };
    check_finite_rows(&arr, path, rows)?;
    Ok(arr)
}

/// [`check_finite`] on the rows `rows` of a file read alone (all rows when `None`), naming
/// the file's sample and element, not their positions among the rows read.
fn check_finite_rows(arr: &Array, path: &Path, rows: Option<&[usize]>) -> Result<(), DataError> {
    let per_row: usize = arr.shape.iter().skip(1).product::<usize>().max(1);
    check_finite(arr, path).map_err(|e| match (e, rows) {
        (
            DataError::NonFinite {
                path,
                index,
                sample,
                value,
            },
            Some(rows),
        ) => DataError::NonFinite {
            path,
            index: rows[sample] * per_row + index % per_row,
            sample: rows[sample],
            value,
        },
        (e, _) => e,
    })
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

/// The number of samples (first axis) of array `key` of `path`, from its header where the
/// format has one (`.npy`, `.npz`, `.safetensors`); a `.csv` file's lines are counted.
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
        "csv" => Ok(read_csv(path, key, Some(&[]))?.1),
        "safetensors" => Ok(read_safetensors(path, key, Some(&[]))?.1),
        _ => Ok(load_array(path, key)?.shape.first().copied().unwrap_or(1)),
    }
}

/// Rows `rows` (ascending, distinct) of array `key` of `path`, as [`load_array`] reads it.
/// Every format is streamed, so that only those rows are ever held: `.npy` and `.npz` arrays
/// (C or Fortran order) element by element, `.safetensors` by seeking to the rows' bytes,
/// `.csv` line by line. Each row read is checked for non-finite values (named by its sample
/// in the file).
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
        ("safetensors", k) => Ok(read_safetensors(path, k, Some(rows))?.0),
        ("csv", k) => Ok(read_csv(path, k, Some(rows))?.0),
        // Wrong key / unknown extension: the whole-file reader gives the error.
        _ => load_array(path, key),
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
    Ok(read_safetensors(path, key, None)?.0)
}

/// The largest JSON header a `.safetensors` file may declare (the format's own limit).
const SAFETENSORS_MAX_HEADER: u64 = 100_000_000;

/// Tensor `key` of a `.safetensors` file, whole or only the rows `rows` (ascending,
/// distinct), with the tensor's number of rows. Only the header and the bytes of the rows
/// asked for are read: the file is never held whole, so each rank of a sharded run reads its
/// own rows.
fn read_safetensors(
    path: &Path,
    key: Option<&str>,
    rows: Option<&[usize]>,
) -> Result<(Array, usize), DataError> {
    use safetensors::Dtype;
    use safetensors::tensor::Metadata;
    use std::io::{Seek, SeekFrom};
    let bad = |detail: String| corrupt(path, ".safetensors", detail);
    let mut file = std::fs::File::open(path).map_err(open_err(path))?;
    let size = file.metadata().map_err(open_err(path))?.len();
    let mut len8 = [0u8; 8];
    file.read_exact(&mut len8)
        .map_err(|_| bad(format!("{size} bytes, too short for a header")))?;
    let n = u64::from_le_bytes(len8);
    if n > SAFETENSORS_MAX_HEADER || n > size - 8 {
        return Err(bad(format!(
            "its header declares {n} bytes, more than the file's {size} (truncated?)"
        )));
    }
    let mut header = vec![0u8; n as usize];
    file.read_exact(&mut header)
        .map_err(|e| bad(e.to_string()))?;
    let meta: Metadata = serde_json::from_slice(&header).map_err(|e| bad(e.to_string()))?;
    let tensors = meta.tensors();
    let mut names: Vec<&str> = tensors.keys().map(String::as_str).collect();
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
    let info = meta.info(name).ok_or_else(|| DataError::MissingArray {
        path: path.to_path_buf(),
        key: name.to_string(),
        present: names.join(", "),
    })?;
    let dtype = info.dtype;
    let decode: fn(&[u8], &mut Vec<f64>) = match dtype {
        Dtype::F64 => |r, o| le(r, o, |b| f64::from_le_bytes(b)),
        Dtype::F32 => |r, o| le(r, o, |b| f64::from(f32::from_le_bytes(b))),
        Dtype::F16 => |r, o| le(r, o, |b| f64::from(half::f16::from_le_bytes(b))),
        Dtype::BF16 => |r, o| le(r, o, |b| f64::from(half::bf16::from_le_bytes(b))),
        Dtype::I64 => |r, o| le(r, o, |b| i64::from_le_bytes(b) as f64),
        Dtype::I32 => |r, o| le(r, o, |b| f64::from(i32::from_le_bytes(b))),
        Dtype::I16 => |r, o| le(r, o, |b| f64::from(i16::from_le_bytes(b))),
        Dtype::I8 => |r, o| le(r, o, |b: [u8; 1]| f64::from(b[0] as i8)),
        Dtype::U64 => |r, o| le(r, o, |b| u64::from_le_bytes(b) as f64),
        Dtype::U32 => |r, o| le(r, o, |b| f64::from(u32::from_le_bytes(b))),
        Dtype::U16 => |r, o| le(r, o, |b| f64::from(u16::from_le_bytes(b))),
        Dtype::U8 | Dtype::BOOL => |r, o| le(r, o, |b: [u8; 1]| f64::from(b[0])),
        other => {
            return Err(DataError::Dtype {
                path: path.to_path_buf(),
                dtype: format!("{other:?}"),
            });
        }
    };
    let item = dtype.bitsize() / 8;
    let full = info.shape.clone();
    let (start, end) = info.data_offsets;
    let elements: usize = full.iter().product();
    let fits = (8 + n as u128 + end as u128) <= size as u128;
    if end < start || (end - start) as u128 != elements as u128 * item as u128 || !fits {
        return Err(bad(format!(
            "tensor '{name}' of shape {full:?} ({dtype:?}) declares bytes {start}..{end} after \
             the header, which the file's {size} bytes do not hold (truncated?)"
        )));
    }
    // A 0-d tensor is one row of one element.
    let per_row: usize = full.iter().skip(1).product();
    let count = full.first().copied().unwrap_or(1);
    if let Some(rows) = rows {
        check_rows(path, &full, rows)?;
    }
    let taken = rows.map_or(count, <[usize]>::len);
    let mut shape = full.clone();
    if let Some(first) = shape.first_mut() {
        *first = taken;
    }
    memory::check(
        (taken * per_row) as u128 * 8,
        &format!("reading {} ({shape:?} as float64)", path.display()),
        "use a smaller file or a machine with more memory",
    )?;
    let all: Vec<usize>;
    let wanted = match rows {
        Some(r) => r,
        None => {
            all = (0..count).collect();
            &all
        }
    };
    let mut data = Vec::with_capacity(taken * per_row);
    let row_bytes = per_row * item;
    let base = 8 + n + start as u64;
    let mut i = 0;
    let mut buf = Vec::new();
    while i < wanted.len() {
        // One read per run of consecutive rows.
        let mut j = i + 1;
        while j < wanted.len() && wanted[j] == wanted[j - 1] + 1 {
            j += 1;
        }
        file.seek(SeekFrom::Start(base + (wanted[i] * row_bytes) as u64))
            .map_err(|e| bad(e.to_string()))?;
        buf.resize((j - i) * row_bytes, 0);
        file.read_exact(&mut buf).map_err(|e| bad(e.to_string()))?;
        decode(&buf, &mut data);
        i = j;
    }
    let mut notes = Vec::new();
    if !matches!(dtype, Dtype::F64 | Dtype::F32) {
        notes.push(format!(
            "{}: {dtype:?} elements cast to float64",
            path.display()
        ));
    }
    let arr = Array { shape, data, notes };
    check_finite_rows(&arr, path, rows)?;
    Ok((arr, count))
}

/// Append the little-endian `N`-byte elements of `raw`, converted by `f`, to `out`.
fn le<const N: usize>(raw: &[u8], out: &mut Vec<f64>, f: impl Fn([u8; N]) -> f64) {
    out.extend(
        raw.chunks_exact(N)
            .map(|c| f(c.try_into().expect("chunks of N bytes"))),
    );
}

/// Read a `.csv` table of numbers `[rows, columns]`; with `columns` (`"a,b"`), only those
/// columns of the header row, in that order.
pub fn load_csv(path: &Path, columns: Option<&str>) -> Result<Array, DataError> {
    Ok(read_csv(path, columns, None)?.0)
}

/// A `.csv` table read line by line: every row, or only the data rows `rows` (ascending,
/// distinct; header, blank and `#` lines not counted), with the number of data rows in the
/// file. Every line's field count is checked; only the rows kept are parsed and held.
fn read_csv(
    path: &Path,
    columns: Option<&str>,
    rows: Option<&[usize]>,
) -> Result<(Array, usize), DataError> {
    use std::io::BufRead;
    let file = std::fs::File::open(path).map_err(open_err(path))?;
    let text_err = |e: std::io::Error| corrupt(path, ".csv (UTF-8 text)", e);
    let mut lines = BufReader::new(file)
        .lines()
        .enumerate()
        .filter_map(|(no, l)| match l {
            Ok(l) if l.trim().is_empty() || l.trim_start().starts_with('#') => None,
            other => Some((no, other)),
        });
    let split = |l: &str| -> Vec<String> { l.split(',').map(|f| f.trim().to_string()).collect() };
    let Some((first_no, first)) = lines.next() else {
        return Err(DataError::Shape(format!(
            "{}: the CSV file has no rows",
            path.display()
        )));
    };
    let first = split(&first.map_err(text_err)?);
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
    let mut total = 0usize;
    let mut wanted = rows.map(|r| r.iter().copied().peekable());
    let body = (!header)
        .then_some((first_no, Ok(first.join(","))))
        .into_iter()
        .chain(lines);
    for (no, line) in body {
        let fields = split(&line.map_err(text_err)?);
        if fields.len() != width {
            return Err(DataError::Shape(format!(
                "{}:{}: {} fields where the first row has {width}",
                path.display(),
                no + 1,
                fields.len()
            )));
        }
        let keep = match wanted.as_mut() {
            None => true,
            Some(w) => w.next_if_eq(&total).is_some(),
        };
        total += 1;
        if !keep {
            continue;
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
    }
    // Once the row count is known: rows out of range or not ascending (which the pass above
    // would have skipped) are refused.
    if let Some(rows) = rows {
        check_rows(path, &[total, pick.len()], rows)?;
    }
    let arr = Array::new(vec![data.len() / pick.len().max(1), pick.len()], data);
    check_finite_rows(&arr, path, rows)?;
    Ok((arr, total))
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
            ("f_f64.npy", None),
            ("f_f16.npy", None),
            ("f_i32.npy", None),
            ("tensors.safetensors", Some("h")),
            ("tensors.safetensors", Some("x")),
            ("tensors.safetensors", Some("i")),
            ("one.safetensors", None),
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

    /// Rows picked from files written here with more rows than the fixtures hold, so that a
    /// run of consecutive rows, a gap and the last row are all read: a Fortran-ordered `.npy`,
    /// a `.safetensors` tensor and a `.csv` table with a header, comments and blank lines.
    #[test]
    fn streamed_rows_of_every_format_are_the_rows_of_the_whole_array() {
        let dir = std::env::temp_dir().join(format!("varphi-stream-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (n, shape) = (5usize, [5u64, 2, 3]);
        let c: Vec<f64> = (0..30).map(|i| f64::from(i) * 0.5 - 3.0).collect();
        // Fortran order: element (i, j, k) at i + 5 j + 10 k.
        let mut f = vec![0.0; 30];
        for i in 0..5 {
            for j in 0..2 {
                for k in 0..3 {
                    f[i + 5 * j + 10 * k] = c[i * 6 + j * 3 + k];
                }
            }
        }
        let fpath = dir.join("fortran.npy");
        {
            use npyz::WriterBuilder;
            let file = std::io::BufWriter::new(std::fs::File::create(&fpath).unwrap());
            let mut w = npyz::WriteOptions::new()
                .default_dtype()
                .shape(&shape)
                .order(npyz::Order::Fortran)
                .writer(file)
                .begin_nd()
                .unwrap();
            w.extend(f.iter().copied()).unwrap();
            w.finish().unwrap();
        }
        let spath = dir.join("t.safetensors");
        {
            let bytes: Vec<u8> = c.iter().flat_map(|v| (*v as f32).to_le_bytes()).collect();
            let other: Vec<u8> = vec![7u8; 4];
            let views = [
                (
                    "x",
                    safetensors::tensor::TensorView::new(
                        safetensors::Dtype::F32,
                        vec![5, 2, 3],
                        &bytes,
                    )
                    .unwrap(),
                ),
                (
                    "b",
                    safetensors::tensor::TensorView::new(safetensors::Dtype::U8, vec![4], &other)
                        .unwrap(),
                ),
            ];
            safetensors::serialize_to_file(views, None, &spath).unwrap();
        }
        let cpath = dir.join("t.csv");
        let mut text = String::from("# a comment\na,b,c,d,e,f\n");
        for (i, row) in c.chunks(6).enumerate() {
            let fields: Vec<String> = row.iter().map(f64::to_string).collect();
            text += &fields.join(",");
            text += if i == 2 { "\n\n# between\n" } else { "\n" };
        }
        std::fs::write(&cpath, text).unwrap();
        for (path, key, width) in [
            (&fpath, None, 6),
            (&spath, Some("x"), 6),
            (&cpath, None, 6),
            (&cpath, Some("f,b"), 2),
        ] {
            let whole = load_array(path, key).unwrap();
            assert_eq!(whole.shape[0], n, "{path:?}");
            assert_eq!(array_rows(path, key).unwrap(), n, "{path:?} {key:?}");
            let rows = [0usize, 1, 3, 4];
            let got = load_array_rows(path, key, &rows).unwrap();
            let want: Vec<f64> = rows
                .iter()
                .flat_map(|&r| whole.data[r * width..(r + 1) * width].iter().copied())
                .collect();
            assert_eq!(got.shape[0], 4, "{path:?} {key:?}");
            assert_eq!(got.shape[1..], whole.shape[1..], "{path:?} {key:?}");
            assert_eq!(got.data, want, "{path:?} {key:?}");
            assert_eq!(got.notes, whole.notes, "{path:?} {key:?}");
            let err = load_array_rows(path, key, &[2, 5]).unwrap_err().to_string();
            assert!(err.contains("sample 5 requested of an array of 5"), "{err}");
            let err = load_array_rows(path, key, &[3, 1]).unwrap_err().to_string();
            assert!(err.contains("ascend"), "{path:?}: {err}");
        }
        // The whole arrays themselves: C-order values, whatever the file's layout.
        assert_eq!(load_array(&fpath, None).unwrap().data, c);
        let st = load_array(&spath, Some("x")).unwrap();
        assert_eq!(
            st.data,
            c.iter().map(|v| f64::from(*v as f32)).collect::<Vec<_>>()
        );
        assert_eq!(load_array(&cpath, None).unwrap().data, c);
        std::fs::remove_dir_all(&dir).ok();
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
