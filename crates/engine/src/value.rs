//! [`Value`]: a float tensor of any rank from 1 to [`MAX_RANK`], as the graph
//! passes it between nodes. burn tensors carry their rank in the type; ONNX
//! graphs decide ranks at run time, so values are an enum over ranks.

use burn_tensor::{Device, Gradients, Tensor, TensorData};

/// The largest tensor rank the engine handles.
pub const MAX_RANK: usize = 6;

/// A float32 tensor of rank 1 ..= [`MAX_RANK`] on some device.
#[derive(Debug, Clone)]
pub enum Value {
    /// Rank 1.
    R1(Tensor<1>),
    /// Rank 2.
    R2(Tensor<2>),
    /// Rank 3.
    R3(Tensor<3>),
    /// Rank 4.
    R4(Tensor<4>),
    /// Rank 5.
    R5(Tensor<5>),
    /// Rank 6.
    R6(Tensor<6>),
}

/// Applies a rank-generic expression to the tensor inside a [`Value`],
/// giving a [`Value`] of the same rank.
macro_rules! map_value {
    ($v:expr, $t:ident => $body:expr) => {
        match $v {
            $crate::value::Value::R1($t) => $crate::value::Value::R1($body),
            $crate::value::Value::R2($t) => $crate::value::Value::R2($body),
            $crate::value::Value::R3($t) => $crate::value::Value::R3($body),
            $crate::value::Value::R4($t) => $crate::value::Value::R4($body),
            $crate::value::Value::R5($t) => $crate::value::Value::R5($body),
            $crate::value::Value::R6($t) => $crate::value::Value::R6($body),
        }
    };
}

/// Evaluates a rank-generic expression on the tensor inside a [`Value`].
macro_rules! with_value {
    ($v:expr, $t:ident => $body:expr) => {
        match $v {
            $crate::value::Value::R1($t) => $body,
            $crate::value::Value::R2($t) => $body,
            $crate::value::Value::R3($t) => $body,
            $crate::value::Value::R4($t) => $body,
            $crate::value::Value::R5($t) => $body,
            $crate::value::Value::R6($t) => $body,
        }
    };
}

pub(crate) use {map_value, with_value};

/// Tensors that can be wrapped into a [`Value`] (ranks 1 ..= [`MAX_RANK`]).
pub trait IntoValue {
    /// Wraps the tensor.
    fn into_value(self) -> Value;
}

macro_rules! impl_into_value {
    ($($d:literal => $var:ident),*) => {$(
        impl IntoValue for Tensor<$d> {
            fn into_value(self) -> Value {
                Value::$var(self)
            }
        }
        impl From<Tensor<$d>> for Value {
            fn from(t: Tensor<$d>) -> Value {
                Value::$var(t)
            }
        }
    )*};
}
impl_into_value!(1 => R1, 2 => R2, 3 => R3, 4 => R4, 5 => R5, 6 => R6);

/// Reshapes a tensor of any rank to `shape` (rank 1 ..= [`MAX_RANK`]; the
/// element count must match, which the caller has checked).
pub(crate) fn reshape_tensor<const D: usize>(t: Tensor<D>, shape: &[usize]) -> Value {
    match *shape {
        [a] => Value::R1(t.reshape([a])),
        [a, b] => Value::R2(t.reshape([a, b])),
        [a, b, c] => Value::R3(t.reshape([a, b, c])),
        [a, b, c, d] => Value::R4(t.reshape([a, b, c, d])),
        [a, b, c, d, e] => Value::R5(t.reshape([a, b, c, d, e])),
        [a, b, c, d, e, f] => Value::R6(t.reshape([a, b, c, d, e, f])),
        // Shape inference rejects every other rank before execution starts.
        _ => unreachable!("rank {} checked by shape inference", shape.len()),
    }
}

impl Value {
    /// A value from float32 data in row-major order. `shape` must have rank
    /// 1 ..= [`MAX_RANK`] (a scalar is given shape `[1]`) and match `data`'s length.
    pub fn from_f32(data: Vec<f32>, shape: &[usize], device: &Device) -> Option<Value> {
        if shape.is_empty()
            || shape.len() > MAX_RANK
            || shape.iter().product::<usize>() != data.len()
        {
            return None;
        }
        let n = data.len();
        let flat = Tensor::<1>::from_data(TensorData::new(data, [n]), device);
        Some(reshape_tensor(flat, shape))
    }

    /// The device the tensor lives on.
    pub(crate) fn device(&self) -> Device {
        with_value!(self, t => t.device())
    }

    /// The tensor's dimensions.
    pub fn dims(&self) -> Vec<usize> {
        with_value!(self, t => t.dims().to_vec())
    }

    /// Whether autodiff records operations on this value (its gradient will be asked for).
    pub fn is_tracked(&self) -> bool {
        with_value!(self, t => t.is_tracked())
    }

    /// The rank.
    pub fn rank(&self) -> usize {
        with_value!(self, _t => _t.dims().len())
    }

    /// The elements in row-major order (waits for the device).
    pub fn to_vec(&self) -> Vec<f32> {
        // `into_vec` moves the buffer out when it already holds f32; `iter` (a boxed
        // iterator, one virtual call per element) only for other element types.
        with_value!(self.clone(), t => {
            let data = t.into_data();
            match data.as_slice::<f32>() {
                Ok(_) => data.try_into_vec::<f32>().unwrap_or_default(),
                Err(_) => data.iter::<f32>().collect(),
            }
        })
    }

    /// Reshaped to `shape` (same element count, rank 1 ..= [`MAX_RANK`]).
    pub(crate) fn reshape(self, shape: &[usize]) -> Value {
        with_value!(self, t => reshape_tensor(t, shape))
    }

    /// Broadcast to `shape` (same rank; only axes of size 1 grow; checked by shape inference).
    pub(crate) fn expand(self, shape: &[usize]) -> Value {
        macro_rules! to {
            ($t:expr, $d:literal) => {{
                let mut s = [0usize; $d];
                s.copy_from_slice(shape);
                $t.expand(s)
            }};
        }
        match self {
            Value::R1(t) => Value::R1(to!(t, 1)),
            Value::R2(t) => Value::R2(to!(t, 2)),
            Value::R3(t) => Value::R3(to!(t, 3)),
            Value::R4(t) => Value::R4(to!(t, 4)),
            Value::R5(t) => Value::R5(to!(t, 5)),
            Value::R6(t) => Value::R6(to!(t, 6)),
        }
    }

    /// Elements `start .. start + len` along `axis`.
    pub(crate) fn narrow(self, axis: usize, start: usize, len: usize) -> Value {
        map_value!(self, t => t.narrow(axis, start, len))
    }

    /// The values (all of one rank, equal outside `axis`) joined along `axis`.
    pub(crate) fn cat(values: Vec<Value>, axis: usize) -> Value {
        let rank = values.first().map_or(1, Value::rank);
        macro_rules! cat {
            ($var:ident) => {
                Value::$var(Tensor::cat(
                    values
                        .into_iter()
                        .map(|v| match v {
                            Value::$var(t) => t,
                            _ => unreachable!("ranks checked by the caller"),
                        })
                        .collect(),
                    axis,
                ))
            };
        }
        match rank {
            1 => cat!(R1),
            2 => cat!(R2),
            3 => cat!(R3),
            4 => cat!(R4),
            5 => cat!(R5),
            _ => cat!(R6),
        }
    }

    /// The rank-4 tensor inside (shape inference guarantees the rank).
    pub(crate) fn into_r4(self) -> Tensor<4> {
        match self {
            Value::R4(t) => t,
            _ => unreachable!("rank 4 checked by shape inference"),
        }
    }

    /// The rank-5 tensor inside (shape inference guarantees the rank).
    pub(crate) fn into_r5(self) -> Tensor<5> {
        match self {
            Value::R5(t) => t,
            _ => unreachable!("rank 5 checked by shape inference"),
        }
    }

    /// The rank-2 tensor inside (shape inference guarantees the rank).
    pub(crate) fn into_r2(self) -> Tensor<2> {
        match self {
            Value::R2(t) => t,
            _ => unreachable!("rank 2 checked by shape inference"),
        }
    }

    /// The rank-1 tensor inside (shape inference guarantees the rank).
    pub(crate) fn into_r1(self) -> Tensor<1> {
        match self {
            Value::R1(t) => t,
            _ => unreachable!("rank 1 checked by shape inference"),
        }
    }

    /// With leading axes of size 1 added up to `rank` (numpy broadcasting).
    pub(crate) fn into_rank(self, rank: usize) -> Value {
        let dims = self.dims();
        if dims.len() >= rank {
            return self;
        }
        let mut shape = vec![1; rank - dims.len()];
        shape.extend_from_slice(&dims);
        self.reshape(&shape)
    }

    /// Whether the tensor's gradient is retained by a backward pass.
    pub fn requires_grad(&self) -> bool {
        with_value!(self, t => t.is_require_grad())
    }

    /// Whether the tensor lives on an autodiff device.
    pub fn is_autodiff(&self) -> bool {
        with_value!(self, t => t.is_autodiff())
    }

    /// Marks the tensor as a leaf whose gradient is wanted; `None` when it is
    /// not on an autodiff device (`Device::flex().autodiff()`).
    pub fn require_grad(self) -> Option<Value> {
        if !self.is_autodiff() {
            return None;
        }
        Some(map_value!(self, t => t.require_grad()))
    }

    /// This tensor's gradient after `loss.backward()`, if it was tracked.
    pub fn grad(&self, grads: &Gradients) -> Option<Value> {
        with_value!(self, t => t.grad(grads).map(Value::from))
    }

    /// The same values without autodiff tracking.
    pub fn detach(self) -> Value {
        map_value!(self, t => t.detach())
    }
}

/// Element-wise binary operation with numpy broadcasting; both operands are
/// first brought to the same rank. Shapes are checked by shape inference.
pub(crate) fn broadcast_binary(a: Value, b: Value, f: BinaryFn) -> Value {
    let rank = a.rank().max(b.rank());
    let (mut a, mut b) = (a.into_rank(rank), b.into_rank(rank));
    if f.needs_equal_shapes() && a.dims() != b.dims() {
        let shape: Vec<usize> = a
            .dims()
            .iter()
            .zip(b.dims())
            .map(|(x, y)| (*x).max(y))
            .collect();
        a = a.expand(&shape);
        b = b.expand(&shape);
    }
    match (a, b) {
        (Value::R1(x), Value::R1(y)) => Value::R1(f.apply(x, y)),
        (Value::R2(x), Value::R2(y)) => Value::R2(f.apply(x, y)),
        (Value::R3(x), Value::R3(y)) => Value::R3(f.apply(x, y)),
        (Value::R4(x), Value::R4(y)) => Value::R4(f.apply(x, y)),
        (Value::R5(x), Value::R5(y)) => Value::R5(f.apply(x, y)),
        (Value::R6(x), Value::R6(y)) => Value::R6(f.apply(x, y)),
        _ => unreachable!("operands brought to one rank"),
    }
}

/// The element-wise binary operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BinaryFn {
    Add,
    Sub,
    Mul,
    Div,
    Max,
    Min,
    Pow,
}

impl BinaryFn {
    /// Whether burn's operation needs both operands at the output shape (no broadcasting).
    fn needs_equal_shapes(self) -> bool {
        matches!(self, BinaryFn::Max | BinaryFn::Min | BinaryFn::Pow)
    }

    fn apply<const D: usize>(self, x: Tensor<D>, y: Tensor<D>) -> Tensor<D> {
        match self {
            BinaryFn::Add => x.add(y),
            BinaryFn::Sub => x.sub(y),
            BinaryFn::Mul => x.mul(y),
            BinaryFn::Div => x.div(y),
            BinaryFn::Max => x.max_pair(y),
            BinaryFn::Min => x.min_pair(y),
            BinaryFn::Pow => x.powf(y),
        }
    }
}
