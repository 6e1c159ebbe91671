//! An `Arbitrary` ONNX graph of real operators: what a fuzzer needs to get past protobuf
//! decoding and into the normaliser, shape inference and the feature search. Every node
//! reads values made before it (the image input, initializers, earlier outputs), so the
//! graphs are mostly well formed and the odd ones are odd in the ways exporters are.

use arbitrary::{Arbitrary, Unstructured};
use scion_onnx::builder::{self, attr_float, attr_int, attr_ints, node, value_info_f32};
use scion_onnx::pb::{GraphProto, ModelProto, OperatorSetIdProto};

/// Operators torchvision, tf2onnx and the model zoo emit, with their usual arities.
const OPS: &[(&str, usize)] = &[
    ("Conv", 2),
    ("Conv", 3),
    ("Relu", 1),
    ("Clip", 1),
    ("Clip", 3),
    ("Sigmoid", 1),
    ("HardSigmoid", 1),
    ("HardSwish", 1),
    ("BatchNormalization", 5),
    ("Add", 2),
    ("Mul", 2),
    ("Sub", 2),
    ("Div", 2),
    ("MaxPool", 1),
    ("AveragePool", 1),
    ("GlobalAveragePool", 1),
    ("ReduceMean", 1),
    ("ReduceMean", 2),
    ("Flatten", 1),
    ("Reshape", 2),
    ("Squeeze", 1),
    ("Squeeze", 2),
    ("Unsqueeze", 2),
    ("Transpose", 1),
    ("Gemm", 3),
    ("MatMul", 2),
    ("Softmax", 1),
    ("Concat", 2),
    ("Pad", 2),
    ("Identity", 1),
    ("Dropout", 1),
    ("Shape", 1),
    ("Gather", 2),
    ("Constant", 0),
    ("DequantizeLinear", 3),
    ("QuantizeLinear", 3),
];

/// A generated model: the protobuf a fuzzer input describes.
#[derive(Debug)]
pub struct FuzzModel(pub ModelProto);

#[derive(Debug, Arbitrary)]
struct Init {
    dims: Vec<u8>,
    int64: bool,
    seed: u32,
}

#[derive(Debug, Arbitrary)]
struct Node {
    op: u8,
    inputs: [u8; 3],
    attr: u8,
    value: i8,
}

#[derive(Debug, Arbitrary)]
struct Plan {
    opset: u8,
    nhwc: bool,
    size: u8,
    symbolic_batch: bool,
    inits: Vec<Init>,
    nodes: Vec<Node>,
    outputs: Vec<u8>,
    card: Option<String>,
}

impl<'a> Arbitrary<'a> for FuzzModel {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(FuzzModel(build(Plan::arbitrary(u)?)))
    }
}

fn build(plan: Plan) -> ModelProto {
    let size = i64::from(plan.size % 64);
    let batch = if plan.symbolic_batch { Err("N") } else { Ok(1) };
    let dims = if plan.nhwc {
        [batch, Ok(size), Ok(size), Ok(3)]
    } else {
        [batch, Ok(3), Ok(size), Ok(size)]
    };
    let mut graph = GraphProto {
        name: "fuzz".into(),
        input: vec![value_info_f32("image", &dims)],
        ..Default::default()
    };
    let mut values = vec!["image".to_string()];
    for (i, init) in plan.inits.iter().take(16).enumerate() {
        let name = format!("w{i}");
        let shape: Vec<i64> = init.dims.iter().take(4).map(|d| i64::from(d % 9)).collect();
        let len: i64 = shape.iter().product();
        let len = len.clamp(0, 4096) as usize;
        let mut state = init.seed;
        let mut next = || {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            state
        };
        graph.initializer.push(if init.int64 {
            let data: Vec<i64> = (0..len).map(|_| i64::from(next() % 7) - 3).collect();
            builder::tensor_i64(&name, &shape, &data)
        } else {
            let data = (0..len)
                .map(|_| (next() % 2001) as f32 / 1000.0 - 1.0)
                .collect();
            builder::tensor_f32(&name, &shape, data)
        });
        values.push(name);
    }
    for (i, spec) in plan.nodes.iter().take(48).enumerate() {
        let (op, arity) = OPS[usize::from(spec.op) % OPS.len()];
        let inputs: Vec<&str> = spec.inputs[..arity.min(3)]
            .iter()
            .map(|&k| values[usize::from(k) % values.len()].as_str())
            .collect();
        let out = format!("v{i}");
        let v = i64::from(spec.value);
        let attributes = match (op, spec.attr % 4) {
            (_, 0) => vec![],
            ("Conv" | "MaxPool" | "AveragePool", 1) => {
                vec![attr_ints("kernel_shape", &[v.rem_euclid(4) + 1; 2])]
            }
            ("Conv" | "MaxPool" | "AveragePool", 2) => vec![
                attr_ints("strides", &[v.rem_euclid(3) + 1; 2]),
                attr_ints("pads", &[v.rem_euclid(3); 4]),
            ],
            ("Conv", 3) => vec![attr_int("group", v.rem_euclid(4) + 1)],
            ("Flatten" | "Softmax" | "Concat" | "Gather", _) => vec![attr_int("axis", v % 5)],
            ("Transpose", _) => vec![attr_ints("perm", &[0, 2, 3, 1])],
            ("Squeeze" | "Unsqueeze" | "ReduceMean", _) => vec![attr_ints("axes", &[v % 5])],
            ("Gemm", _) => vec![attr_int("transB", v & 1), attr_float("alpha", 1.0)],
            ("Clip", _) => vec![attr_float("min", 0.0), attr_float("max", 6.0)],
            ("Constant", _) => vec![scion_onnx::pb::AttributeProto {
                name: "value".into(),
                r#type: scion_onnx::pb::attribute_proto::AttributeType::Tensor as i32,
                t: Some(builder::tensor_i64("", &[2], &[1, v])),
                ..Default::default()
            }],
            _ => vec![attr_int("axis", v % 5)],
        };
        let outs = [out.as_str()];
        graph
            .node
            .push(node(op, &format!("n{i}"), &inputs, &outs, attributes));
        values.push(out);
    }
    let mut outputs: Vec<String> = plan
        .outputs
        .iter()
        .take(3)
        .map(|&k| values[usize::from(k) % values.len()].clone())
        .collect();
    if outputs.is_empty() {
        outputs.push(values.last().cloned().unwrap_or_default());
    }
    outputs.dedup();
    graph.output = outputs
        .iter()
        .map(|name| value_info_f32(name, &[]))
        .collect();
    let mut model = ModelProto {
        ir_version: 8,
        producer_name: "scion-fuzz".into(),
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: i64::from(plan.opset % 22),
        }],
        graph: Some(graph),
        ..Default::default()
    };
    if let Some(card) = plan.card {
        model
            .metadata_props
            .push(builder::metadata("scion.card", &card));
    }
    model
}

/// The generated model as file bytes.
pub fn encode(model: &FuzzModel) -> Vec<u8> {
    scion_onnx::io::encode(&model.0)
}
