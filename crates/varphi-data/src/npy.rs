//! Loading `.npy` / `.npz` arrays (float32 or float64, C order) and writing `.npy`.

use crate::error::DataError;
use std::io::{BufReader, Read};
use std::path::Path;

/// A dense array read from disk, converted to `f64`.
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    /// Shape.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub data: Vec<f64>,
}

fn read_npy<R: Read>(npy: npyz::NpyFile<R>, path: &Path) -> Result<Array, DataError> {
    if npy.order() == npyz::Order::Fortran {
        return Err(DataError::FortranOrder {
            path: path.to_path_buf(),
        });
    }
    let shape: Vec<usize> = npy.shape().iter().map(|&s| s as usize).collect();
    let dtype = npy.dtype().descr().trim_matches('\'').to_string();
    let io = |e: std::io::Error| DataError::Io {
        path: path.to_path_buf(),
        source: e,
    };
    let data: Vec<f64> = match dtype.trim_start_matches(['<', '>', '|', '=']) {
        "f8" => npy.into_vec::<f64>().map_err(io)?,
        "f4" => npy
            .into_vec::<f32>()
            .map_err(io)?
            .into_iter()
            .map(f64::from)
            .collect(),
        _ => {
            return Err(DataError::Dtype {
                path: path.to_path_buf(),
                dtype,
            });
        }
    };
    let arr = Array { shape, data };
    check_finite(&arr, path)?;
    Ok(arr)
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
    let file = std::fs::File::open(path).map_err(|e| DataError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    let npy = npyz::NpyFile::new(BufReader::new(file)).map_err(|e| DataError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    read_npy(npy, path)
}

/// Read array `key` from a `.npz` archive.
pub fn load_npz(path: &Path, key: &str) -> Result<Array, DataError> {
    let io = |e: std::io::Error| DataError::Io {
        path: path.to_path_buf(),
        source: e,
    };
    let mut archive = npyz::npz::NpzArchive::open(path).map_err(io)?;
    let present: Vec<String> = archive.array_names().map(str::to_string).collect();
    let npy = archive.by_name(key).map_err(io)?;
    match npy {
        Some(npy) => read_npy(npy, path),
        None => Err(DataError::MissingArray {
            path: path.to_path_buf(),
            key: key.to_string(),
            present: present.join(", "),
        }),
    }
}

/// Write a float32 `.npy` file (what `varphi sample` produces).
pub fn save_npy_f32(path: &Path, shape: &[usize], data: &[f64]) -> std::io::Result<()> {
    use npyz::WriterBuilder;
    let file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let shape: Vec<u64> = shape.iter().map(|&s| s as u64).collect();
    let mut writer = npyz::WriteOptions::<f32>::new()
        .default_dtype()
        .shape(&shape)
        .writer(file)
        .begin_nd()?;
    writer.extend(data.iter().map(|&v| v as f32))?;
    writer.finish()
}

/// Write named float64 arrays to an uncompressed `.npz` archive (like `numpy.savez`; deflate
/// would cost several times the generation time of a physics dataset).
pub fn save_npz_f64(path: &Path, arrays: &[(&str, &[usize], &[f64])]) -> std::io::Result<()> {
    use npyz::WriterBuilder;
    let mut npz = npyz::npz::NpzWriter::create(path)?;
    for (name, shape, data) in arrays {
        let shape: Vec<u64> = shape.iter().map(|&s| s as u64).collect();
        let options = npyz::zip::write::FileOptions::default()
            .compression_method(npyz::zip::CompressionMethod::Stored)
            .large_file(data.len() * 8 >= u32::MAX as usize);
        let mut w = npz
            .array::<f64>(name, options)?
            .default_dtype()
            .shape(&shape)
            .begin_nd()?;
        w.extend(data.iter().copied())?;
        w.finish()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_and_npz_round_trip_and_nan_is_named() {
        let dir = std::env::temp_dir().join(format!("varphi-npy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.npy");
        save_npy_f32(&p, &[2, 3], &[1., 2., 3., 4., 5., 6.]).unwrap();
        let a = load_npy(&p).unwrap();
        assert_eq!(a.shape, vec![2, 3]);
        assert_eq!(a.data, vec![1., 2., 3., 4., 5., 6.]);

        let z = dir.join("b.npz");
        save_npz_f64(
            &z,
            &[
                ("x", &[2, 2], &[1., 2., 3., f64::NAN]),
                ("c", &[2], &[0.5, 1.5]),
            ],
        )
        .unwrap();
        assert_eq!(load_npz(&z, "c").unwrap().data, vec![0.5, 1.5]);
        let err = load_npz(&z, "x").unwrap_err().to_string();
        assert!(
            err.contains("non-finite") && err.contains("sample 1"),
            "{err}"
        );
        let err = load_npz(&z, "nope").unwrap_err().to_string();
        assert!(
            err.contains("no array named 'nope'") && err.contains("x"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
