//! Changing and writing models: replacing a float32 initializer's values, metadata, and an
//! atomic save that never leaves a half-written file.

use std::io::Write;
use std::path::Path;

use prost::Message;

use crate::pb::tensor_proto::DataType;
use crate::pb::StringStringEntryProto;
use crate::{Model, OnnxError, Result};

impl Model {
    /// Replaces the values of the float32 initializer `name` (same number of elements), stored
    /// as little-endian `raw_data`.
    pub fn set_initializer_f32(&mut self, name: &str, values: &[f32]) -> Result<()> {
        let graph = self.proto.graph.as_mut().ok_or(OnnxError::NoGraph)?;
        let err = |msg: String| OnnxError::Initializer {
            name: name.to_string(),
            msg,
        };
        let t = graph
            .initializer
            .iter_mut()
            .find(|t| t.name() == name)
            .ok_or_else(|| err("no such initializer".into()))?;
        let (_, old) = crate::tensor::tensor_f32(t)?;
        if old.len() != values.len() {
            return Err(err(format!(
                "has {} elements, got {}",
                old.len(),
                values.len()
            )));
        }
        t.data_type = Some(DataType::Float as i32);
        t.float_data.clear();
        t.raw_data = Some(values.iter().flat_map(|v| v.to_le_bytes()).collect());
        Ok(())
    }

    /// Sets (or replaces) a `metadata_props` entry.
    pub fn set_metadata(&mut self, key: &str, value: &str) {
        let props = &mut self.proto.metadata_props;
        match props.iter_mut().find(|p| p.key() == key) {
            Some(p) => p.value = Some(value.to_string()),
            None => props.push(StringStringEntryProto {
                key: Some(key.to_string()),
                value: Some(value.to_string()),
            }),
        }
    }

    /// A `metadata_props` value.
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.proto
            .metadata_props
            .iter()
            .find(|p| p.key() == key)
            .map(|p| p.value())
    }

    /// The model's protobuf bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.proto.encode_to_vec()
    }

    /// Writes the model to `path` atomically (see [`write_atomically`]).
    pub fn save(&self, path: &Path) -> Result<()> {
        write_atomically(path, &self.to_bytes()).map_err(|source| OnnxError::Io {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename, so `path`
/// is either the old file or the complete new one, never partial; the temporary file is removed
/// on failure.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file path"))?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use crate::testutil::conv_relu_gemm;
    use crate::{decode, Model, OnnxError};

    #[test]
    fn replaced_weights_and_metadata_survive_a_save_and_load() {
        let mut m = Model::from_proto(conv_relu_gemm(1));
        let new: Vec<f32> = (0..72).map(|i| -(i as f32)).collect();
        m.set_initializer_f32("conv1.weight", &new).unwrap();
        // float_data initializers become raw_data ones.
        m.set_initializer_f32("fc.bias", &[1.0, 2.0, 3.0]).unwrap();
        m.set_metadata("subsetq", "{\"k\":1}");
        m.set_metadata("subsetq", "{\"k\":2}");
        let dir = std::env::temp_dir().join(format!("subsetq-onnx-write-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("out.onnx");
        m.save(&path).unwrap();
        let back = crate::load(&path).unwrap();
        assert_eq!(
            back.initializer_f32("conv1.weight").unwrap().unwrap().1,
            new
        );
        assert_eq!(
            back.initializer_f32("fc.bias").unwrap().unwrap().1,
            vec![1.0, 2.0, 3.0]
        );
        assert_eq!(back.metadata("subsetq"), Some("{\"k\":2}"));
        assert_eq!(back.proto.metadata_props.len(), 1);
        assert_eq!(decode(&m.to_bytes()).unwrap(), back);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn wrong_sizes_unknown_names_and_unwritable_paths_are_errors() {
        let mut m = Model::from_proto(conv_relu_gemm(1));
        assert!(matches!(
            m.set_initializer_f32("conv1.weight", &[1.0]),
            Err(OnnxError::Initializer { .. })
        ));
        assert!(matches!(
            m.set_initializer_f32("nope", &[1.0]),
            Err(OnnxError::Initializer { .. })
        ));
        let bad = std::path::Path::new("/nonexistent-dir-subsetq/x.onnx");
        assert!(matches!(m.save(bad), Err(OnnxError::Io { .. })));
        assert!(!bad.exists());
    }
}
