//! Static INT8 quantization in the QDQ format (QuantizeLinear → DequantizeLinear pairs in
//! front of each Conv and Gemm): what TensorRT's explicit quantization builds INT8 kernels
//! from, and what ONNX Runtime's CPU provider runs. Weights are quantized per output channel
//! and symmetric; activations per tensor and symmetric (zero point 0, as TensorRT requires),
//! with the ranges the caller measured on calibration images. Measuring is not done here
//! (this crate runs no inference): [`activation_tensors`] names what to measure, the
//! `calibrate` functions turn measurements into thresholds, and [`Patch::QuantizeQdq`]
//! rewrites the graph.
//!
//! [`Patch::QuantizeQdq`]: crate::patch::Patch::QuantizeQdq

use std::collections::{HashMap, HashSet};

use crate::pb::{GraphProto, ModelProto, TensorProto, tensor_proto};
use crate::{Error, Result, builder, infer};

/// The ops whose inputs get quantized.
const QUANTIZED_OPS: [&str; 2] = ["Conv", "Gemm"];

/// The largest INT8 magnitude used (symmetric: -127..=127).
const QMAX: f32 = 127.0;

/// The float activations feeding a Conv or Gemm: the tensors whose ranges calibration must
/// measure, in graph order.
pub fn activation_tensors(graph: &GraphProto, outputs: &[String]) -> Vec<String> {
    let initializers: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for node in quantized_nodes(graph, outputs)
        .into_iter()
        .map(|i| &graph.node[i])
    {
        if let Some(x) = node.input.first()
            && !initializers.contains(x.as_str())
            && seen.insert(x.clone())
        {
            out.push(x.clone());
        }
    }
    out
}

/// The Conv and Gemm nodes that compute `outputs` (all of them when `outputs` is empty), in
/// graph order. Nodes only other outputs need, such as the unknown rule's distances, stay
/// float.
fn quantized_nodes(graph: &GraphProto, outputs: &[String]) -> Vec<usize> {
    let needed = (!outputs.is_empty())
        .then(|| crate::graph::needed_for(graph, outputs.iter().map(String::as_str)).0);
    (0..graph.node.len())
        .filter(|&i| QUANTIZED_OPS.contains(&graph.node[i].op_type.as_str()))
        .filter(|i| needed.as_ref().is_none_or(|n| n.contains(i)))
        .collect()
}

/// Whether a graph already has QDQ nodes.
pub fn is_quantized(graph: &GraphProto) -> bool {
    graph
        .node
        .iter()
        .any(|n| n.op_type == "QuantizeLinear" || n.op_type == "DequantizeLinear")
}

/// A histogram of `|x|` over `[0, max]`, filled over calibration batches.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// The range's upper end (the largest `|x|` of the first pass).
    pub max: f32,
    /// Counts per bin.
    pub counts: Vec<u64>,
}

impl Histogram {
    /// Bins TensorRT's entropy calibration uses.
    pub const BINS: usize = 2048;

    /// An empty histogram over `[0, max]`.
    pub fn new(max: f32) -> Histogram {
        Histogram {
            max,
            counts: vec![0; Self::BINS],
        }
    }

    /// Count `values`.
    pub fn add(&mut self, values: &[f32]) {
        if self.max <= 0.0 {
            return;
        }
        let scale = Self::BINS as f32 / self.max;
        for v in values {
            let bin = ((v.abs() * scale) as usize).min(Self::BINS - 1);
            self.counts[bin] += 1;
        }
    }

    /// The `|x|` below which `percentile` % of the values lie.
    pub fn percentile(&self, percentile: f64) -> f32 {
        let total: u64 = self.counts.iter().sum();
        if total == 0 {
            return self.max;
        }
        let wanted = (total as f64 * percentile / 100.0).ceil() as u64;
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= wanted {
                return self.max * (i + 1) as f32 / Self::BINS as f32;
            }
        }
        self.max
    }

    /// The threshold minimising the KL divergence between the values and their 128-level
    /// quantization (TensorRT's entropy calibration).
    pub fn entropy_threshold(&self) -> f32 {
        const LEVELS: usize = 128;
        // The first bin holds the exact zeros of ReLU outputs (half of a sparse tensor):
        // every threshold represents them exactly, and counting them pulls the search to
        // thresholds that clip what is not zero.
        let mut bins = self.counts.clone();
        bins[0] = 0;
        let bins = &bins;
        let total: u64 = bins.iter().sum();
        if total == 0 {
            return self.max;
        }
        // A spike in the top bin is a saturated activation (ReLU6, a clip): a real share of
        // the values sits at the maximum, and any lower threshold moves all of them. The KL
        // search would cut it (it cannot represent the spike once its level is merged).
        if bins[Self::BINS - 1] * 100 >= total {
            return self.max;
        }
        let mut best = (f64::INFINITY, Self::BINS);
        for end in (LEVELS..=Self::BINS).step_by(16) {
            // P: the first `end` bins, with everything beyond folded into the last.
            let mut p: Vec<f64> = bins[..end].iter().map(|&c| c as f64).collect();
            let outliers: u64 = bins[end..].iter().sum();
            p[end - 1] += outliers as f64;
            // Q: the first `end` bins merged into LEVELS levels and spread back evenly over
            // the bins where P is non-zero (the outlier bin included, as MXNet and
            // TensorRT do).
            let mut q = vec![0f64; end];
            let per_level = end as f64 / LEVELS as f64;
            for level in 0..LEVELS {
                let start = (level as f64 * per_level).floor() as usize;
                let stop = (((level + 1) as f64 * per_level).floor() as usize).min(end);
                let sum: f64 = bins[start..stop].iter().map(|&c| c as f64).sum();
                let nonzero = p[start..stop].iter().filter(|&&c| c > 0.0).count();
                if nonzero > 0 {
                    for i in start..stop {
                        if p[i] > 0.0 {
                            q[i] = sum / nonzero as f64;
                        }
                    }
                }
            }
            let (sum_p, sum_q): (f64, f64) = (p.iter().sum(), q.iter().sum());
            let mut kl = 0.0;
            for (pi, qi) in p.iter().zip(&q) {
                if *pi > 0.0 {
                    // Smoothed, as MXNet does: an empty Q bin costs, but not infinitely.
                    let qi = if *qi > 0.0 { qi / sum_q } else { 1e-4 };
                    let pi = pi / sum_p;
                    kl += pi * (pi / qi).ln();
                }
            }
            if kl < best.0 {
                best = (kl, end);
            }
        }
        self.max * best.1 as f32 / Self::BINS as f32
    }
}

/// How a weight tensor was quantized, for reports.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedWeight {
    /// The initializer.
    pub name: String,
    /// Output channels (one scale each).
    pub channels: usize,
}

/// Symmetric per-channel INT8 of `values` laid out with `channels` along `axis` of `dims`:
/// the INT8 values and one scale per channel.
pub fn quantize_per_channel(values: &[f32], dims: &[i64], axis: usize) -> (Vec<i8>, Vec<f32>) {
    let channels = dims[axis] as usize;
    let inner: usize = dims[axis + 1..].iter().product::<i64>() as usize;
    let mut max = vec![0f32; channels];
    for (i, v) in values.iter().enumerate() {
        let c = (i / inner) % channels;
        max[c] = max[c].max(v.abs());
    }
    let scales: Vec<f32> = max
        .iter()
        .map(|m| if *m > 0.0 { m / QMAX } else { 1.0 })
        .collect();
    let q = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let c = (i / inner) % channels;
            (v / scales[c]).round().clamp(-QMAX, QMAX) as i8
        })
        .collect();
    (q, scales)
}

fn tensor_i8(name: &str, dims: &[i64], data: &[i8]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: tensor_proto::DataType::Int8 as i32,
        raw_data: data.iter().map(|v| *v as u8).collect(),
        ..Default::default()
    }
}

/// Rewrite the Conv and Gemm nodes computing `outputs` to QDQ: `thresholds` maps each
/// activation of [`activation_tensors`] to its calibrated `|x|` threshold. Returns the
/// weights quantized.
pub(crate) fn quantize_qdq(
    model: &mut ModelProto,
    thresholds: &[(String, f32)],
    outputs: &[String],
) -> Result<Vec<QuantizedWeight>> {
    let opset = infer::opset(model);
    if opset < 13 {
        return Err(Error::Graph(format!(
            "quantization writes per-channel DequantizeLinear, which needs opset 13; this \
             model is opset {opset}"
        )));
    }
    let graph = model.graph.as_mut().expect("checked by Patch::apply");
    if is_quantized(graph) {
        return Err(Error::Graph(
            "the model is already quantized (it has QDQ nodes)".into(),
        ));
    }
    let thresholds: HashMap<&str, f32> = thresholds.iter().map(|(t, v)| (t.as_str(), *v)).collect();
    let selected: HashSet<usize> = quantized_nodes(graph, outputs).into_iter().collect();
    for tensor in activation_tensors(graph, outputs) {
        if !thresholds.contains_key(tensor.as_str()) {
            return Err(Error::Graph(format!(
                "no calibrated range for activation '{tensor}'"
            )));
        }
    }
    let initializers: HashMap<String, TensorProto> = graph
        .initializer
        .iter()
        .map(|t| (t.name.clone(), t.clone()))
        .collect();
    let mut new_nodes = Vec::new();
    let mut new_initializers = Vec::new();
    let mut done_activations: HashSet<String> = HashSet::new();
    let mut done_weights: HashMap<String, String> = HashMap::new();
    let mut report = Vec::new();
    let mut nodes = std::mem::take(&mut graph.node);
    for (index, node) in nodes.iter_mut().enumerate() {
        if !selected.contains(&index) {
            continue;
        }
        // The activation.
        let x = node.input[0].clone();
        let dq = format!("{x}_dequantized");
        if done_activations.insert(x.clone()) {
            let threshold = thresholds[x.as_str()];
            let scale = if threshold > 0.0 {
                threshold / QMAX
            } else {
                1.0
            };
            let (s, z, q) = (
                format!("{x}_scale"),
                format!("{x}_zero_point"),
                format!("{x}_quantized"),
            );
            new_initializers.push(builder::tensor_f32(&s, &[], vec![scale]));
            new_initializers.push(tensor_i8(&z, &[], &[0]));
            new_nodes.push(builder::node(
                "QuantizeLinear",
                &format!("{x}_QuantizeLinear"),
                &[&x, &s, &z],
                &[&q],
                vec![],
            ));
            new_nodes.push(builder::node(
                "DequantizeLinear",
                &format!("{x}_DequantizeLinear"),
                &[&q, &s, &z],
                &[&dq],
                vec![],
            ));
        }
        node.input[0] = dq;
        // The weight, per output channel.
        let Some(w_name) = node.input.get(1).cloned() else {
            continue;
        };
        if let Some(dq) = done_weights.get(&w_name) {
            node.input[1] = dq.clone();
            continue;
        }
        let Some(w) = initializers.get(&w_name) else {
            continue; // a computed weight stays float
        };
        let Some(values) = builder::tensor_values_f32(w) else {
            continue;
        };
        let axis = match node.op_type.as_str() {
            "Conv" => 0,
            // Gemm's output channels are rows of B with transB, columns without.
            _ => {
                let trans_b = infer::attr(node, "transB").is_some_and(|a| a.i == 1);
                if trans_b { 0 } else { 1 }
            }
        };
        if w.dims.len() <= axis {
            continue;
        }
        let (q, scales) = quantize_per_channel(&values, &w.dims, axis);
        let (wq, ws, wz, wdq) = (
            format!("{w_name}_quantized"),
            format!("{w_name}_scale"),
            format!("{w_name}_zero_point"),
            format!("{w_name}_dequantized"),
        );
        let channels = scales.len();
        new_initializers.push(tensor_i8(&wq, &w.dims, &q));
        new_initializers.push(builder::tensor_f32(&ws, &[channels as i64], scales));
        new_initializers.push(tensor_i8(&wz, &[channels as i64], &vec![0; channels]));
        new_nodes.push(builder::node(
            "DequantizeLinear",
            &format!("{w_name}_DequantizeLinear"),
            &[&wq, &ws, &wz],
            &[&wdq],
            vec![builder::attr_int("axis", axis as i64)],
        ));
        node.input[1] = wdq.clone();
        done_weights.insert(w_name.clone(), wdq);
        report.push(QuantizedWeight {
            name: w_name,
            channels,
        });
    }
    // The float weights now unused go; the new nodes go first (their inputs are graph
    // inputs, initializers or earlier tensors), then the order is made topological.
    let still_used: HashSet<String> = nodes
        .iter()
        .chain(&new_nodes)
        .flat_map(|n| n.input.iter().cloned())
        .collect();
    graph
        .initializer
        .retain(|t| still_used.contains(&t.name) || !done_weights.contains_key(&t.name));
    graph.initializer.extend(new_initializers);
    new_nodes.extend(nodes);
    graph.node = new_nodes;
    let order = crate::graph::topological_order(graph)?;
    let mut ordered = Vec::with_capacity(graph.node.len());
    for i in order {
        ordered.push(graph.node[i].clone());
    }
    graph.node = ordered;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_channel_scales_follow_each_channels_largest_weight() {
        // Two output channels of four weights each.
        let values = [0.5, -1.0, 0.25, 0.0, 2.0, 1.0, -0.5, 0.1];
        let (q, scales) = quantize_per_channel(&values, &[2, 1, 2, 2], 0);
        assert_eq!(scales, vec![1.0 / 127.0, 2.0 / 127.0]);
        assert_eq!(q, vec![64, -127, 32, 0, 127, 64, -32, 6]);
        // Along axis 1 (Gemm without transB): columns are channels.
        let (_, scales) = quantize_per_channel(&[1.0, -4.0, 2.0, 0.5], &[2, 2], 1);
        assert_eq!(scales, vec![2.0 / 127.0, 4.0 / 127.0]);
    }

    #[test]
    fn percentile_and_entropy_cut_the_outliers_that_min_max_keeps() {
        // 10,000 values in [0, 1) and ten outliers at 100.
        let mut values: Vec<f32> = (0..10_000).map(|i| i as f32 / 10_000.0).collect();
        values.extend([100.0; 10]);
        let mut h = Histogram::new(100.0);
        h.add(&values);
        let p = h.percentile(99.9);
        assert!((0.9..=1.1).contains(&p), "{p}");
        let e = h.entropy_threshold();
        assert!(e < 50.0, "entropy keeps the bulk, not the outliers: {e}");
        assert_eq!(h.percentile(100.0), 100.0);
    }
}
