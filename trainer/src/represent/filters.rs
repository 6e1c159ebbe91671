//! The first convolution's filters: the weights that meet the pixels, which in a trained
//! network look like oriented edges and colour blobs.

use scion_onnx::pb::ModelProto;

/// A convolution's weights `[out, in, kh, kw]`.
#[derive(Debug, Clone)]
pub struct ConvFilters {
    /// The node's name.
    pub node: String,
    /// Number of filters.
    pub out: usize,
    /// Input channels per filter.
    pub inputs: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Row-major weights.
    pub weights: Vec<f32>,
}

impl ConvFilters {
    /// Filter `f`'s weights (`in x kh x kw`).
    pub fn filter(&self, f: usize) -> &[f32] {
        let len = self.inputs * self.kh * self.kw;
        &self.weights[f * len..(f + 1) * len]
    }
}

/// The first `Conv` in execution order whose weights are stored in the model.
pub fn first_conv(model: &ModelProto) -> Result<ConvFilters, String> {
    let graph = model.graph.as_ref().ok_or("the model has no graph")?;
    let order = scion_onnx::graph::topological_order(graph).map_err(|e| e.to_string())?;
    for i in order {
        let node = &graph.node[i];
        if node.op_type != "Conv" {
            continue;
        }
        let Some(weight) = node
            .input
            .get(1)
            .and_then(|w| graph.initializer.iter().find(|t| &t.name == w))
        else {
            continue;
        };
        let dims: Vec<usize> = weight.dims.iter().map(|&d| d.max(0) as usize).collect();
        let [out, inputs, kh, kw] = dims[..] else {
            continue;
        };
        let weights = scion_onnx::builder::tensor_values_f32(weight)
            .ok_or_else(|| format!("Conv '{}': weights are not float", node.name))?;
        if weights.len() != out * inputs * kh * kw {
            return Err(format!(
                "Conv '{}': {} weights for shape {dims:?}",
                node.name,
                weights.len()
            ));
        }
        return Ok(ConvFilters {
            node: node.name.clone(),
            out,
            inputs,
            kh,
            kw,
            weights,
        });
    }
    Err("the model has no convolution with stored 2-D weights".into())
}
