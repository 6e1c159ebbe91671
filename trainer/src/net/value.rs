//! Tensors of the ranks a CNN graph uses (1 to 5: ShuffleNet's channel shuffle is 5-D), behind one type, with numpy-style
//! broadcasting between ranks as ONNX specifies it.

use burn::prelude::*;

use super::NetError;

/// A float tensor of rank 1 to 4.
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
}

/// Apply a rank-generic expression to whichever rank `$v` has.
macro_rules! each_rank {
    ($v:expr, $t:ident => $body:expr) => {
        match $v {
            $crate::net::value::Value::R1($t) => $crate::net::value::Value::R1($body),
            $crate::net::value::Value::R2($t) => $crate::net::value::Value::R2($body),
            $crate::net::value::Value::R3($t) => $crate::net::value::Value::R3($body),
            $crate::net::value::Value::R4($t) => $crate::net::value::Value::R4($body),
            $crate::net::value::Value::R5($t) => $crate::net::value::Value::R5($body),
        }
    };
}
pub(crate) use each_rank;

impl From<Tensor<4>> for Value {
    fn from(t: Tensor<4>) -> Value {
        Value::R4(t)
    }
}

impl Value {
    /// From flat values and a shape of rank 1 to 5 (rank 0 becomes `[1]`).
    pub fn from_flat(flat: Tensor<1>, shape: &[usize]) -> Result<Value, NetError> {
        Ok(match *shape {
            [] => Value::R1(flat),
            [a] => Value::R1(flat.reshape([a])),
            [a, b] => Value::R2(flat.reshape([a, b])),
            [a, b, c] => Value::R3(flat.reshape([a, b, c])),
            [a, b, c, d] => Value::R4(flat.reshape([a, b, c, d])),
            [a, b, c, d, e] => Value::R5(flat.reshape([a, b, c, d, e])),
            _ => {
                return Err(NetError::Unsupported(format!(
                    "a tensor of rank {} (shape {shape:?})",
                    shape.len()
                )));
            }
        })
    }

    /// The rank.
    pub fn rank(&self) -> usize {
        match self {
            Value::R1(_) => 1,
            Value::R2(_) => 2,
            Value::R3(_) => 3,
            Value::R4(_) => 4,
            Value::R5(_) => 5,
        }
    }

    /// The shape.
    pub fn dims(&self) -> Vec<usize> {
        match self {
            Value::R1(t) => t.dims().to_vec(),
            Value::R2(t) => t.dims().to_vec(),
            Value::R3(t) => t.dims().to_vec(),
            Value::R4(t) => t.dims().to_vec(),
            Value::R5(t) => t.dims().to_vec(),
        }
    }

    /// All values, flattened.
    pub fn flatten(self) -> Tensor<1> {
        let n = self.dims().iter().product::<usize>();
        match self {
            Value::R1(t) => t,
            Value::R2(t) => t.reshape([n]),
            Value::R3(t) => t.reshape([n]),
            Value::R4(t) => t.reshape([n]),
            Value::R5(t) => t.reshape([n]),
        }
    }

    /// Reshape to `shape` (rank 1 to 5, same element count).
    pub fn reshape(self, shape: &[usize]) -> Result<Value, NetError> {
        Value::from_flat(self.flatten(), shape)
    }

    /// The rank-4 tensor, or an error naming `what` needs it.
    pub fn r4(self, what: &str) -> Result<Tensor<4>, NetError> {
        match self {
            Value::R4(t) => Ok(t),
            other => Err(NetError::Shape(format!(
                "{what} needs a rank-4 tensor, got shape {:?}",
                other.dims()
            ))),
        }
    }

    /// The rank-2 tensor, or an error naming `what` needs it.
    pub fn r2(self, what: &str) -> Result<Tensor<2>, NetError> {
        match self {
            Value::R2(t) => Ok(t),
            other => Err(NetError::Shape(format!(
                "{what} needs a rank-2 tensor, got shape {:?}",
                other.dims()
            ))),
        }
    }

    /// The rank-1 tensor, or an error naming `what` needs it.
    pub fn r1(self, what: &str) -> Result<Tensor<1>, NetError> {
        match self {
            Value::R1(t) => Ok(t),
            other => Err(NetError::Shape(format!(
                "{what} needs a rank-1 tensor, got shape {:?}",
                other.dims()
            ))),
        }
    }

    /// Raise to `rank` by adding leading dimensions of size 1 (ONNX broadcasting).
    pub fn raise(self, rank: usize) -> Value {
        if self.rank() >= rank {
            return self;
        }
        let mut shape = vec![1; rank - self.rank()];
        shape.extend(self.dims());
        self.reshape(&shape).expect("rank at most 5")
    }

    /// An element-wise binary operation with broadcasting.
    pub fn zip(self, other: Value, op: fn(BinaryOperands) -> Value) -> Result<Value, NetError> {
        let rank = self.rank().max(other.rank());
        Ok(op(match (self.raise(rank), other.raise(rank)) {
            (Value::R1(a), Value::R1(b)) => BinaryOperands::R1(a, b),
            (Value::R2(a), Value::R2(b)) => BinaryOperands::R2(a, b),
            (Value::R3(a), Value::R3(b)) => BinaryOperands::R3(a, b),
            (Value::R4(a), Value::R4(b)) => BinaryOperands::R4(a, b),
            (Value::R5(a), Value::R5(b)) => BinaryOperands::R5(a, b),
            _ => unreachable!("both raised to the same rank"),
        }))
    }
}

/// Two tensors of the same rank.
pub enum BinaryOperands {
    /// Rank 1.
    R1(Tensor<1>, Tensor<1>),
    /// Rank 2.
    R2(Tensor<2>, Tensor<2>),
    /// Rank 3.
    R3(Tensor<3>, Tensor<3>),
    /// Rank 4.
    R4(Tensor<4>, Tensor<4>),
    /// Rank 5.
    R5(Tensor<5>, Tensor<5>),
}

/// Apply a rank-generic binary expression.
macro_rules! each_pair {
    ($p:expr, $a:ident, $b:ident => $body:expr) => {
        match $p {
            $crate::net::value::BinaryOperands::R1($a, $b) => $crate::net::value::Value::R1($body),
            $crate::net::value::BinaryOperands::R2($a, $b) => $crate::net::value::Value::R2($body),
            $crate::net::value::BinaryOperands::R3($a, $b) => $crate::net::value::Value::R3($body),
            $crate::net::value::BinaryOperands::R4($a, $b) => $crate::net::value::Value::R4($body),
            $crate::net::value::BinaryOperands::R5($a, $b) => $crate::net::value::Value::R5($body),
        }
    };
}
pub(crate) use each_pair;
