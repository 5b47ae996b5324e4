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

/// Shape and float32 elements of `t`, from `raw_data` (little-endian) or
/// `float_data`. Anything else is an [`OnnxError::Initializer`] error.
pub(crate) fn tensor_f32(t: &TensorProto) -> Result<(Vec<usize>, Vec<f32>)> {
    let external = t.data_location == Some(DataLocation::External as i32);
    if external || !t.external_data.is_empty() {
        let location = t
            .external_data
            .iter()
            .find(|e| e.key() == "location")
            .map(|e| format!(" (location {:?})", e.value()))
            .unwrap_or_default();
        return Err(init_err(
            t,
            format!(
                "data is stored in an external file{location}; only data embedded in the \
                 model file is supported (re-save the model with its external data embedded)"
            ),
        ));
    }
    if t.segment.is_some() {
        return Err(init_err(t, "segmented tensors are not supported"));
    }
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
    let (shape, numel) = checked_shape(t)?;
    let data = match &t.raw_data {
        Some(raw) => {
            if !t.float_data.is_empty() {
                return Err(init_err(t, "both raw_data and float_data are set"));
            }
            if numel.checked_mul(4) != Some(raw.len()) {
                return Err(init_err(
                    t,
                    format!(
                        "raw_data has {} bytes, but dims {:?} need {} float32 elements ({} bytes)",
                        raw.len(),
                        shape,
                        numel,
                        numel.saturating_mul(4)
                    ),
                ));
            }
            raw.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        }
        None => {
            if t.float_data.len() != numel {
                return Err(init_err(
                    t,
                    format!(
                        "float_data has {} elements, but dims {:?} need {}",
                        t.float_data.len(),
                        shape,
                        numel
                    ),
                ));
            }
            t.float_data.clone()
        }
    };
    Ok((shape, data))
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
    fn segmented_is_rejected() {
        let mut t = float_tensor("w", &[2], true);
        t.segment = Some(Default::default());
        assert!(msg(tensor_f32(&t)).contains("segmented"));
    }
}
