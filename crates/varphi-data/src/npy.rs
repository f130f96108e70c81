//! Writing `.npy` / `.npz` arrays; the readers of every format live in [`crate::read`] and are
//! re-exported here.

pub use crate::read::{Array, check_finite, load_npy, load_npz};
use std::path::Path;

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
            // A fixed timestamp (the zip epoch, 1980-01-01): the same arrays give the same
            // bytes, whenever and however (sharded or not) they were generated.
            .last_modified_time(npyz::zip::DateTime::default())
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
