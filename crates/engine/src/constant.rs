//! Constant tensors known when the plan is built: graph initializers and
//! `Constant` node values, read defensively out of `TensorProto`s.

use subsetq_onnx::pb::tensor_proto::{DataLocation, DataType};
use subsetq_onnx::pb::TensorProto;

use crate::error::{EngineError, Result};

/// Element data of a constant tensor.
#[derive(Debug, Clone, PartialEq)]
pub enum ConstData {
    /// Float tensors (FLOAT, or DOUBLE converted to f32).
    F32(Vec<f32>),
    /// Integer tensors (INT64, INT32), used for shapes, pads and axes.
    I64(Vec<i64>),
}

/// A constant tensor: shape and data.
#[derive(Debug, Clone, PartialEq)]
pub struct ConstTensor {
    /// Dimensions (empty for a scalar).
    pub shape: Vec<usize>,
    /// Elements in row-major order.
    pub data: ConstData,
}

impl ConstTensor {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The float data, if this is a float tensor.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            ConstData::F32(v) => Some(v),
            ConstData::I64(_) => None,
        }
    }

    /// The integer data, if this is an integer tensor.
    pub fn as_i64(&self) -> Option<&[i64]> {
        match &self.data {
            ConstData::I64(v) => Some(v),
            ConstData::F32(_) => None,
        }
    }

    /// The single element of a one-element float tensor, as used by `Clip`'s
    /// min / max and `Pad`'s constant value.
    pub fn scalar_f32(&self) -> Option<f32> {
        match self.as_f32() {
            Some([v]) => Some(*v),
            _ => None,
        }
    }
}

fn tensor_err(name: &str, msg: impl Into<String>) -> EngineError {
    EngineError::Tensor {
        name: name.to_string(),
        msg: msg.into(),
    }
}

/// Reads a `TensorProto` (FLOAT, DOUBLE, INT64 or INT32, embedded data) into a
/// [`ConstTensor`]. `name` is used in errors (the proto's name may be empty
/// for a `Constant` node's value).
pub fn read_tensor(t: &TensorProto, name: &str) -> Result<ConstTensor> {
    if t.data_location == Some(DataLocation::External as i32) || !t.external_data.is_empty() {
        return Err(tensor_err(
            name,
            "data is stored in an external file; only data embedded in the model is supported",
        ));
    }
    if t.segment.is_some() {
        return Err(tensor_err(name, "segmented tensors are not supported"));
    }
    let mut shape = Vec::with_capacity(t.dims.len());
    let mut numel: usize = 1;
    for &d in &t.dims {
        let d = usize::try_from(d)
            .map_err(|_| tensor_err(name, format!("invalid dims {:?}", t.dims)))?;
        numel = numel.checked_mul(d).ok_or_else(|| {
            tensor_err(name, format!("dims {:?}: element count overflows", t.dims))
        })?;
        shape.push(d);
    }
    let raw = t.raw_data.as_deref();
    let dt = t.data_type();
    let data = if dt == DataType::Float as i32 {
        ConstData::F32(match raw {
            Some(r) => from_le::<4, f32>(name, r, numel, f32::from_le_bytes)?,
            None => checked_len(name, t.float_data.clone(), numel)?,
        })
    } else if dt == DataType::Double as i32 {
        let v = match raw {
            Some(r) => from_le::<8, f64>(name, r, numel, f64::from_le_bytes)?,
            None => checked_len(name, t.double_data.clone(), numel)?,
        };
        ConstData::F32(v.into_iter().map(|x| x as f32).collect())
    } else if dt == DataType::Int64 as i32 {
        ConstData::I64(match raw {
            Some(r) => from_le::<8, i64>(name, r, numel, i64::from_le_bytes)?,
            None => checked_len(name, t.int64_data.clone(), numel)?,
        })
    } else if dt == DataType::Int32 as i32 {
        let v = match raw {
            Some(r) => from_le::<4, i32>(name, r, numel, i32::from_le_bytes)?,
            None => checked_len(name, t.int32_data.clone(), numel)?,
        };
        ConstData::I64(v.into_iter().map(i64::from).collect())
    } else {
        let type_name = DataType::try_from(dt)
            .map(|d| d.as_str_name().to_string())
            .unwrap_or_else(|_| format!("unknown data type {dt}"));
        return Err(tensor_err(
            name,
            format!("element type {type_name} is not supported (FLOAT, DOUBLE, INT64, INT32 are)"),
        ));
    };
    Ok(ConstTensor { shape, data })
}

fn checked_len<T>(name: &str, v: Vec<T>, numel: usize) -> Result<Vec<T>> {
    if v.len() != numel {
        return Err(tensor_err(
            name,
            format!("holds {} elements but its dims need {numel}", v.len()),
        ));
    }
    Ok(v)
}

fn from_le<const N: usize, T>(
    name: &str,
    raw: &[u8],
    numel: usize,
    conv: fn([u8; N]) -> T,
) -> Result<Vec<T>> {
    if numel.checked_mul(N) != Some(raw.len()) {
        return Err(tensor_err(
            name,
            format!(
                "raw_data has {} bytes but its dims need {numel} elements of {N} bytes",
                raw.len()
            ),
        ));
    }
    Ok(raw
        .chunks_exact(N)
        .map(|c| {
            let mut b = [0u8; N];
            b.copy_from_slice(c);
            conv(b)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proto(dims: &[i64], dt: DataType) -> TensorProto {
        TensorProto {
            dims: dims.to_vec(),
            data_type: Some(dt as i32),
            ..Default::default()
        }
    }

    #[test]
    fn reads_raw_and_typed() {
        let mut t = proto(&[2], DataType::Float);
        t.raw_data = Some([1.5f32.to_le_bytes(), (-2.0f32).to_le_bytes()].concat());
        let c = read_tensor(&t, "t").unwrap();
        assert_eq!(c.shape, vec![2]);
        assert_eq!(c.as_f32(), Some(&[1.5, -2.0][..]));

        let mut t = proto(&[3], DataType::Int64);
        t.int64_data = vec![1, -1, 0];
        assert_eq!(
            read_tensor(&t, "t").unwrap().as_i64(),
            Some(&[1, -1, 0][..])
        );

        let mut t = proto(&[], DataType::Float);
        t.float_data = vec![6.0];
        assert_eq!(read_tensor(&t, "t").unwrap().scalar_f32(), Some(6.0));
    }

    #[test]
    fn rejects_bad_lengths_and_types() {
        let mut t = proto(&[3], DataType::Float);
        t.raw_data = Some(vec![0; 8]);
        let e = read_tensor(&t, "w").unwrap_err().to_string();
        assert!(e.contains("tensor w") && e.contains("8 bytes"), "{e}");

        let mut t = proto(&[2], DataType::Float16);
        t.raw_data = Some(vec![0; 4]);
        let e = read_tensor(&t, "h").unwrap_err().to_string();
        assert!(e.contains("FLOAT16"), "{e}");

        let t = proto(&[-1], DataType::Float);
        assert!(read_tensor(&t, "n").is_err());
    }
}
