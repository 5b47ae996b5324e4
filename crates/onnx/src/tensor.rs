//! Reading float32 data out of a `TensorProto`, defensively.

use crate::pb::tensor_proto::{DataLocation, DataType};
use crate::pb::TensorProto;
use crate::{OnnxError, Result};

fn init_err(t: &TensorProto, msg: impl Into<String>) -> OnnxError {
    OnnxError::Initializer {
        name: t.name().to_string(),
        msg: msg.into(),
    }
}

/// The tensor's dims as `usize`s and their product, checked: no negative
/// dim, no overflow.
pub(crate) fn checked_shape(t: &TensorProto) -> Result<(Vec<usize>, usize)> {
    let mut shape = Vec::with_capacity(t.dims.len());
    let mut numel: usize = 1;
    for &d in &t.dims {
        let d = usize::try_from(d).map_err(|_| {
            init_err(
                t,
                format!("invalid dims {:?}: negative or too large", t.dims),
            )
        })?;
        numel = numel
            .checked_mul(d)
            .ok_or_else(|| init_err(t, format!("dims {:?}: element count overflows", t.dims)))?;
        shape.push(d);
    }
    Ok((shape, numel))
}

fn data_type_name(code: i32) -> String {
    match DataType::try_from(code) {
        Ok(dt) => dt.as_str_name().to_string(),
        Err(_) => format!("unknown data type {code}"),
    }
}

/// Element data of a constant tensor.
#[derive(Debug, Clone, PartialEq)]
pub enum ConstData {
    /// Float tensors (FLOAT, or DOUBLE converted to f32).
    F32(Vec<f32>),
    /// Integer tensors (INT64, INT32), as used for shapes, pads and axes.
    I64(Vec<i64>),
}

/// A constant tensor (a graph initializer or a `Constant` node's value):
/// shape and data.
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

/// Reads a `TensorProto` of type FLOAT, DOUBLE (converted to f32), INT64 or
/// INT32 whose data is embedded in the model. `name` is used in errors (a
/// `Constant` node's value may have no name of its own). Anything else, or
/// data that does not match the dims, is an [`OnnxError::Initializer`] error.
pub fn read_tensor(t: &TensorProto, name: &str) -> Result<ConstTensor> {
    let err = |msg: String| OnnxError::Initializer {
        name: name.to_string(),
        msg,
    };
    let external = t.data_location == Some(DataLocation::External as i32);
    if external || !t.external_data.is_empty() {
        let location = t
            .external_data
            .iter()
            .find(|e| e.key() == "location")
            .map(|e| format!(" (location {:?})", e.value()))
            .unwrap_or_default();
        return Err(err(format!(
            "data is stored in an external file{location}; only data embedded in the \
             model file is supported (re-save the model with its external data embedded)"
        )));
    }
    if t.segment.is_some() {
        return Err(err("segmented tensors are not supported".to_string()));
    }
    let (shape, numel) = checked_shape(t).map_err(|e| match e {
        OnnxError::Initializer { msg, .. } => err(msg),
        other => other,
    })?;
    let elements = Elements {
        raw: t.raw_data.as_deref(),
        shape: &shape,
        numel,
        err: &err,
    };
    let dt = t.data_type();
    let data = if dt == DataType::Float as i32 {
        ConstData::F32(elements.read("float_data", &t.float_data, f32::from_le_bytes)?)
    } else if dt == DataType::Double as i32 {
        let v = elements.read("double_data", &t.double_data, f64::from_le_bytes)?;
        ConstData::F32(v.into_iter().map(|x| x as f32).collect())
    } else if dt == DataType::Int64 as i32 {
        ConstData::I64(elements.read("int64_data", &t.int64_data, i64::from_le_bytes)?)
    } else if dt == DataType::Int32 as i32 {
        let v = elements.read("int32_data", &t.int32_data, i32::from_le_bytes)?;
        ConstData::I64(v.into_iter().map(i64::from).collect())
    } else if dt == DataType::Uint8 as i32 {
        // Typed data of 8-bit types is one element per int32_data entry.
        let v = match t.raw_data.as_deref() {
            Some(_) => elements.read("int32_data", &[], u8::from_le_bytes)?,
            None => elements
                .read("int32_data", &t.int32_data, i32::from_le_bytes)?
                .into_iter()
                .map(|x| u8::try_from(x).map_err(|_| err(format!("{x} is not a UINT8"))))
                .collect::<Result<Vec<u8>>>()?,
        };
        ConstData::I64(v.into_iter().map(i64::from).collect())
    } else if dt == DataType::Uint4 as i32 {
        ConstData::I64(read_uint4(t, numel, &err)?)
    } else {
        return Err(err(format!(
            "element type {} is not supported (FLOAT, DOUBLE, INT64, INT32, UINT8 and UINT4 are)",
            data_type_name(dt)
        )));
    };
    Ok(ConstTensor { shape, data })
}

/// UINT4 elements: two per byte, the first in the low nibble (`raw_data`, or the same bytes
/// one per `int32_data` entry).
fn read_uint4(
    t: &TensorProto,
    numel: usize,
    err: &impl Fn(String) -> OnnxError,
) -> Result<Vec<i64>> {
    let packed: Vec<u8> = match t.raw_data.as_deref() {
        Some(raw) if t.int32_data.is_empty() => raw.to_vec(),
        Some(_) => return Err(err("both raw_data and int32_data are set".to_string())),
        None => t
            .int32_data
            .iter()
            .map(|&x| u8::try_from(x).map_err(|_| err(format!("{x} is not a packed UINT4 pair"))))
            .collect::<Result<_>>()?,
    };
    if packed.len() != numel.div_ceil(2) {
        return Err(err(format!(
            "{} bytes of packed UINT4 data for {numel} elements (need {})",
            packed.len(),
            numel.div_ceil(2)
        )));
    }
    Ok((0..numel)
        .map(|i| i64::from((packed[i / 2] >> (4 * (i % 2))) & 0x0f))
        .collect())
}

/// The element data of one tensor: `raw_data` (little-endian) or the typed
/// repeated field, never both, with a length that matches the dims.
struct Elements<'a, E> {
    raw: Option<&'a [u8]>,
    shape: &'a [usize],
    numel: usize,
    err: &'a E,
}

impl<E: Fn(String) -> OnnxError> Elements<'_, E> {
    fn read<T: Copy, const N: usize>(
        &self,
        field: &str,
        typed: &[T],
        from_le: fn([u8; N]) -> T,
    ) -> Result<Vec<T>> {
        let (shape, numel) = (self.shape, self.numel);
        match self.raw {
            Some(raw) => {
                if !typed.is_empty() {
                    return Err((self.err)(format!("both raw_data and {field} are set")));
                }
                if numel.checked_mul(N) != Some(raw.len()) {
                    return Err((self.err)(format!(
                        "raw_data has {} bytes, but dims {shape:?} need {numel} elements of \
                         {N} bytes ({} bytes)",
                        raw.len(),
                        numel.saturating_mul(N)
                    )));
                }
                Ok(raw
                    .chunks_exact(N)
                    .map(|c| {
                        let mut b = [0u8; N];
                        b.copy_from_slice(c);
                        from_le(b)
                    })
                    .collect())
            }
            None if typed.len() != numel => Err((self.err)(format!(
                "{field} has {} elements, but dims {shape:?} need {numel}",
                typed.len()
            ))),
            None => Ok(typed.to_vec()),
        }
    }
}

/// Shape and float32 elements of a FLOAT tensor. Any other element type is an
/// [`OnnxError::Initializer`] error: weights are read as stored, never
/// converted.
pub(crate) fn tensor_f32(t: &TensorProto) -> Result<(Vec<usize>, Vec<f32>)> {
    let dt = t.data_type();
    if dt != DataType::Float as i32 {
        return Err(init_err(
            t,
            format!(
                "element type {} is not supported; only FLOAT (float32) weights can be read",
                data_type_name(dt)
            ),
        ));
    }
    let c = read_tensor(t, t.name())?;
    let ConstData::F32(v) = c.data else {
        return Err(init_err(t, "is not a float tensor"));
    };
    Ok((c.shape, v))
}

/// Decodes a serialized `TensorProto` (an ONNX test's `input_0.pb`); `origin` names the bytes
/// in errors.
pub fn decode_tensor(bytes: &[u8], origin: &str) -> Result<TensorProto> {
    use prost::Message;
    TensorProto::decode(bytes).map_err(|source| OnnxError::Decode {
        origin: origin.to_string(),
        source,
    })
}

/// A serialized FLOAT `TensorProto` named `name` (raw little-endian data).
pub fn encode_tensor_f32(name: &str, shape: &[usize], data: &[f32]) -> Vec<u8> {
    use prost::Message;
    TensorProto {
        name: Some(name.to_string()),
        dims: shape.iter().map(|&d| d as i64).collect(),
        data_type: Some(DataType::Float as i32),
        raw_data: Some(data.iter().flat_map(|v| v.to_le_bytes()).collect()),
        ..Default::default()
    }
    .encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::StringStringEntryProto;
    use crate::testutil::float_tensor;

    fn msg(r: Result<(Vec<usize>, Vec<f32>)>) -> String {
        match r {
            Err(e @ OnnxError::Initializer { .. }) => e.to_string(),
            other => panic!("expected an Initializer error, got {other:?}"),
        }
    }

    #[test]
    fn raw_and_float_data_agree() {
        let raw = float_tensor("w", &[2, 3], true);
        let flt = float_tensor("w", &[2, 3], false);
        assert!(raw.raw_data.is_some() && raw.float_data.is_empty());
        assert!(flt.raw_data.is_none() && !flt.float_data.is_empty());
        let a = tensor_f32(&raw).unwrap();
        let b = tensor_f32(&flt).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.0, vec![2, 3]);
        assert_eq!(a.1, vec![0.0, 0.5, 1.0, 1.5, 2.0, 2.5]);
    }

    #[test]
    fn scalar_and_empty_tensors() {
        let s = float_tensor("s", &[], true);
        assert_eq!(tensor_f32(&s).unwrap(), (vec![], vec![0.0]));
        let e = float_tensor("e", &[0, 5], false);
        assert_eq!(tensor_f32(&e).unwrap(), (vec![0, 5], vec![]));
    }

    #[test]
    fn wrong_raw_length_names_the_tensor() {
        let mut t = float_tensor("conv1.weight", &[2, 3], true);
        if let Some(raw) = t.raw_data.as_mut() {
            raw.pop();
        }
        let m = msg(tensor_f32(&t));
        assert!(
            m.contains("conv1.weight") && m.contains("raw_data has 23 bytes"),
            "{m}"
        );
    }

    #[test]
    fn wrong_float_data_length() {
        let mut t = float_tensor("w", &[2, 3], false);
        t.float_data.push(1.0);
        assert!(msg(tensor_f32(&t)).contains("float_data has 7 elements"));
        t.float_data.clear();
        assert!(msg(tensor_f32(&t)).contains("float_data has 0 elements"));
    }

    #[test]
    fn both_raw_and_float_data() {
        let mut t = float_tensor("w", &[1], true);
        t.float_data = vec![1.0];
        assert!(msg(tensor_f32(&t)).contains("both raw_data and float_data"));
    }

    #[test]
    fn fp16_is_rejected() {
        let mut t = float_tensor("half.weight", &[2, 3], true);
        t.data_type = Some(DataType::Float16 as i32);
        t.raw_data = Some(vec![0; 12]);
        let m = msg(tensor_f32(&t));
        assert!(m.contains("half.weight") && m.contains("FLOAT16"), "{m}");
        t.data_type = Some(12345);
        assert!(msg(tensor_f32(&t)).contains("unknown data type 12345"));
        t.data_type = None;
        assert!(msg(tensor_f32(&t)).contains("UNDEFINED"));
    }

    #[test]
    fn external_data_is_rejected() {
        let mut t = float_tensor("big.weight", &[2, 3], false);
        t.float_data.clear();
        t.data_location = Some(DataLocation::External as i32);
        t.external_data = vec![StringStringEntryProto {
            key: Some("location".into()),
            value: Some("weights.bin".into()),
        }];
        let m = msg(tensor_f32(&t));
        assert!(
            m.contains("big.weight") && m.contains("external") && m.contains("weights.bin"),
            "{m}"
        );
        // external_data without data_location, and data_location alone.
        let mut u = t.clone();
        u.data_location = None;
        assert!(msg(tensor_f32(&u)).contains("external"));
        t.external_data.clear();
        assert!(msg(tensor_f32(&t)).contains("external"));
    }

    #[test]
    fn hostile_dims() {
        let mut t = float_tensor("w", &[2], true);
        t.dims = vec![-1, 4];
        assert!(msg(tensor_f32(&t)).contains("negative"));
        t.dims = vec![i64::MAX, i64::MAX, 4];
        assert!(msg(tensor_f32(&t)).contains("overflows"));
        // numel fits usize but numel * 4 does not.
        t.dims = vec![1 << 31, 1 << 31, 1 << 1];
        assert!(msg(tensor_f32(&t)).contains("raw_data has 8 bytes"));
        t.raw_data = None;
        t.float_data = vec![0.0; 2];
        assert!(msg(tensor_f32(&t)).contains("float_data has 2 elements"));
    }

    #[test]
    fn integer_and_double_tensors() {
        let mut t = float_tensor("shape", &[3], false);
        t.float_data.clear();
        t.data_type = Some(DataType::Int64 as i32);
        t.int64_data = vec![1, -1, 0];
        let c = read_tensor(&t, "shape").unwrap();
        assert_eq!(
            (c.shape.as_slice(), c.as_i64()),
            (&[3][..], Some(&[1, -1, 0][..]))
        );
        t.int64_data.pop();
        let m = read_tensor(&t, "shape").unwrap_err().to_string();
        assert!(m.contains("int64_data has 2 elements"), "{m}");

        t.int64_data.clear();
        t.data_type = Some(DataType::Int32 as i32);
        t.raw_data = Some([7i32, -2, 3].iter().flat_map(|v| v.to_le_bytes()).collect());
        assert_eq!(
            read_tensor(&t, "s").unwrap().as_i64(),
            Some(&[7, -2, 3][..])
        );

        t.data_type = Some(DataType::Double as i32);
        t.raw_data = None;
        t.double_data = vec![0.5, -2.0, 1e-3];
        let c = read_tensor(&t, "d").unwrap();
        assert_eq!(c.as_f32(), Some(&[0.5, -2.0, 1e-3][..]));
        // A DOUBLE weight is not read as a weight: weights are FLOAT only.
        assert!(msg(tensor_f32(&t)).contains("DOUBLE"));

        let mut s = float_tensor("six", &[], false);
        s.float_data = vec![6.0];
        assert_eq!(read_tensor(&s, "six").unwrap().scalar_f32(), Some(6.0));
    }

    #[test]
    fn segmented_is_rejected() {
        let mut t = float_tensor("w", &[2], true);
        t.segment = Some(Default::default());
        assert!(msg(tensor_f32(&t)).contains("segmented"));
    }
}
