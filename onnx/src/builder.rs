//! Small constructors for ONNX protobuf values, shared by importers and graph patches.

use crate::pb::{
    AttributeProto, NodeProto, OperatorSetIdProto, StringStringEntryProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto, attribute_proto, tensor_proto, tensor_shape_proto,
    type_proto,
};

/// ONNX IR version written by scion (IR 8 pairs with opset 13..18 in every runtime we target).
pub const IR_VERSION: i64 = 8;
/// Default-domain opset written by scion.
pub const OPSET: i64 = 13;

/// The opset import for the default domain.
pub fn default_opset() -> OperatorSetIdProto {
    OperatorSetIdProto {
        domain: String::new(),
        version: OPSET,
    }
}

/// A dense f32 initializer. Values that do not fill `dims` are a bug in the caller, and
/// checked in every build: a release build would otherwise write a corrupt model.
pub fn tensor_f32(name: &str, dims: &[i64], data: Vec<f32>) -> TensorProto {
    let elements = dims.iter().try_fold(1i64, |n, &d| n.checked_mul(d));
    assert_eq!(
        elements.and_then(|n| usize::try_from(n).ok()),
        Some(data.len()),
        "tensor '{name}': {} values for dims {dims:?}",
        data.len()
    );
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: tensor_proto::DataType::Float as i32,
        raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

/// A dense i64 initializer (shapes, axes).
pub fn tensor_i64(name: &str, dims: &[i64], data: &[i64]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: tensor_proto::DataType::Int64 as i32,
        raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

/// Read an f32 tensor's values, from `raw_data` or `float_data`.
pub fn tensor_values_f32(t: &TensorProto) -> Option<Vec<f32>> {
    if t.data_type != tensor_proto::DataType::Float as i32 {
        return None;
    }
    if !t.raw_data.is_empty() {
        Some(
            t.raw_data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        )
    } else {
        Some(t.float_data.clone())
    }
}

/// Read an int64 tensor's values, from `raw_data` or `int64_data` (empty for other types).
pub fn tensor_values_i64(t: &TensorProto) -> Vec<i64> {
    if t.data_type != tensor_proto::DataType::Int64 as i32 {
        return Vec::new();
    }
    if !t.raw_data.is_empty() {
        t.raw_data
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect()
    } else {
        t.int64_data.clone()
    }
}

/// An integer attribute.
pub fn attr_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_proto::AttributeType::Int as i32,
        i: v,
        ..Default::default()
    }
}

/// A float attribute.
pub fn attr_float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_proto::AttributeType::Float as i32,
        f: v,
        ..Default::default()
    }
}

/// A string attribute (`auto_pad`, `mode`).
pub fn attr_string(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_proto::AttributeType::String as i32,
        s: v.as_bytes().to_vec(),
        ..Default::default()
    }
}

/// An integer-list attribute.
pub fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_proto::AttributeType::Ints as i32,
        ints: v.to_vec(),
        ..Default::default()
    }
}

/// A node of the default domain.
pub fn node(
    op_type: &str,
    name: &str,
    inputs: &[&str],
    outputs: &[&str],
    attributes: Vec<AttributeProto>,
) -> NodeProto {
    NodeProto {
        op_type: op_type.into(),
        name: name.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        attribute: attributes,
        ..Default::default()
    }
}

/// One dimension: `Ok(size)` fixed, `Err(symbol)` symbolic.
pub type Dim<'a> = Result<i64, &'a str>;

/// A float tensor value description with fixed and symbolic dimensions.
pub fn value_info_f32(name: &str, dims: &[Dim<'_>]) -> ValueInfoProto {
    use tensor_shape_proto::{Dimension, dimension::Value};
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Ok(v) => Value::DimValue(*v),
                Err(s) => Value::DimParam(s.to_string()),
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: tensor_proto::DataType::Float as i32,
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A `metadata_props` entry.
pub fn metadata(key: &str, value: &str) -> StringStringEntryProto {
    StringStringEntryProto {
        key: key.into(),
        value: value.into(),
    }
}
