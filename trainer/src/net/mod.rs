//! A differentiable interpreter of ONNX CNN graphs on burn: the graph's float initializers
//! become parameters (trainable, or frozen per the caller), its nodes a program of burn
//! operations in topological order. This is what lets scion fine-tune any imported backbone
//! deeper than the head without a model definition in Rust.

pub mod freeze;
mod ops;
mod value;

use std::collections::{HashMap, HashSet};

use burn::module::Param;
use burn::prelude::*;
use scion_onnx::builder::tensor_values_f32;
use scion_onnx::pb::{ModelProto, tensor_proto::DataType};

pub use ops::{AutoPad, Op, Window};
pub use value::Value;

/// The graph cannot be interpreted.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// An operator, attribute or input form the interpreter does not handle.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// Shapes or ranks that do not fit.
    #[error("shape: {0}")]
    Shape(String),
    /// The model is not a usable graph.
    #[error(transparent)]
    Graph(#[from] scion_onnx::Error),
}

/// The parameters: one flat tensor per float initializer, reshaped at use.
#[derive(Module, Debug)]
pub struct GraphParams {
    values: Vec<Param<Tensor<1>>>,
}

/// Where a node reads an input from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// A value computed earlier (or the graph input), by slot.
    Slot(usize),
    /// An initializer, by parameter index.
    Param(usize),
    /// An optional input left empty, or a constant consumed at parse time.
    None,
}

#[derive(Debug, Clone)]
struct Step {
    op: Op,
    name: String,
    inputs: Vec<Source>,
    outputs: Vec<usize>,
}

/// A parsed graph: what to compute, in order. The numbers live in [`GraphParams`].
#[derive(Debug, Clone)]
pub struct Program {
    steps: Vec<Step>,
    input: usize,
    outputs: Vec<(String, usize)>,
    slots: usize,
    /// Per parameter: initializer name and shape.
    params: Vec<(String, Vec<usize>)>,
    /// Batch-norm steps whose running statistics update while training: (step, mean
    /// param, var param, momentum).
    bn_updates: Vec<(usize, usize, usize, f64)>,
}

/// What a forward pass produced.
pub struct Forward {
    /// The requested outputs by name.
    pub outputs: HashMap<String, Value>,
    /// New running statistics of training-mode batch norms: (param index, value).
    pub running_stats: Vec<(usize, Tensor<1>)>,
}

/// How to read a graph into a [`Program`].
#[derive(Debug, Clone, Default)]
pub struct LoadOptions<'a> {
    /// Initializers that get gradients. Batch-norm running statistics never do.
    pub trainable: HashSet<String>,
    /// Start at this tensor instead of the graph input: only what depends on it runs, and
    /// it is what [`Program::forward`] is fed (e.g. a cached frozen prefix's output).
    pub start: Option<&'a str>,
    /// The tensors to return (default: the graph outputs). Only what they need runs.
    pub outputs: Option<&'a [String]>,
    /// Keep every batch norm in inference mode (running statistics, no update), even
    /// where its scale trains.
    pub freeze_batch_norm: bool,
}

impl Program {
    /// Parse `model`. Batch norms whose scale is trainable run in training mode (batch
    /// statistics, running update) unless `freeze_batch_norm`.
    pub fn load(
        model: &ModelProto,
        options: &LoadOptions<'_>,
        device: &Device,
    ) -> Result<(Program, GraphParams), NetError> {
        let trainable = &options.trainable;
        let graph = model
            .graph
            .as_ref()
            .ok_or_else(|| scion_onnx::Error::Graph("the model has no graph".into()))?;
        let order = scion_onnx::graph::topological_order(graph)?;
        let mut floats = HashMap::new();
        let mut ints = HashMap::new();
        for t in &graph.initializer {
            if let Some(v) = tensor_values_f32(t) {
                floats.insert(t.name.clone(), v);
            } else if t.data_type == DataType::Int64 as i32 {
                ints.insert(t.name.clone(), scion_onnx::builder::tensor_values_i64(t));
            } else {
                return Err(NetError::Unsupported(format!(
                    "initializer '{}' of data type {}",
                    t.name, t.data_type
                )));
            }
        }
        let constants = ops::Constants {
            ints: &ints,
            floats: &floats,
            opset: scion_onnx::infer::opset(model),
        };
        let init_names: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
        let inputs: Vec<&str> = graph
            .input
            .iter()
            .map(|i| i.name.as_str())
            .filter(|n| !init_names.contains(n))
            .collect();
        let input_name = match (options.start, &inputs[..]) {
            (Some(start), _) => start,
            (None, [only]) => only,
            (None, _) => {
                return Err(NetError::Unsupported(format!(
                    "graphs with {} inputs (one image input expected)",
                    inputs.len()
                )));
            }
        };
        let wanted: Vec<String> = match options.outputs {
            Some(o) => o.to_vec(),
            None => graph.output.iter().map(|o| o.name.clone()).collect(),
        };
        let order = needed_between(graph, &order, input_name, &wanted)?;
        // Running statistics are state, not parameters.
        let statistics: HashSet<&str> = graph
            .node
            .iter()
            .filter(|n| n.op_type == "BatchNormalization")
            .flat_map(|n| n.input.iter().skip(3).map(String::as_str))
            .collect();

        let mut slot_of: HashMap<String, usize> = HashMap::new();
        slot_of.insert(input_name.to_string(), 0);
        let mut params = Vec::new();
        let mut param_values = Vec::new();
        let mut param_of: HashMap<String, usize> = HashMap::new();
        let mut steps = Vec::new();
        let mut bn_updates = Vec::new();
        for &n in &order {
            let node = &graph.node[n];
            let op = Op::parse(node, &constants)?;
            let mut sources = Vec::new();
            for (k, name) in node.input.iter().enumerate() {
                let source = if name.is_empty() || ops::constant_input(&node.op_type, k) {
                    Source::None
                } else if let Some(&s) = slot_of.get(name) {
                    Source::Slot(s)
                } else if let Some(values) = floats.get(name) {
                    let index = *param_of.entry(name.clone()).or_insert_with(|| {
                        let t = graph.initializer.iter().find(|t| &t.name == name);
                        let shape = t.map_or(vec![values.len()], |t| {
                            t.dims.iter().map(|&d| d as usize).collect()
                        });
                        let tensor = Tensor::<1>::from_data(
                            TensorData::new(values.clone(), [values.len()]),
                            device,
                        );
                        let trains =
                            trainable.contains(name) && !statistics.contains(name.as_str());
                        param_values.push(Param::from_tensor(tensor).set_require_grad(trains));
                        params.push((name.clone(), shape));
                        params.len() - 1
                    });
                    Source::Param(index)
                } else {
                    return Err(NetError::Shape(format!(
                        "node '{}' reads '{name}', which nothing produces",
                        node.name
                    )));
                };
                sources.push(source);
            }
            if let Op::BatchNorm { momentum, .. } = op
                && !options.freeze_batch_norm
                && node.input.get(1).is_some_and(|s| trainable.contains(s))
                && let (Source::Param(mean), Source::Param(var)) = (sources[3], sources[4])
            {
                bn_updates.push((steps.len(), mean, var, momentum));
            }
            let mut outputs = Vec::with_capacity(op.outputs());
            for k in 0..op.outputs() {
                let slot = slot_of.len();
                let out_name = node.output.get(k).cloned().unwrap_or_default();
                slot_of.insert(
                    if out_name.is_empty() {
                        format!("{}#{k}", node.name)
                    } else {
                        out_name
                    },
                    slot,
                );
                outputs.push(slot);
            }
            steps.push(Step {
                op,
                name: scion_onnx::infer::display_name(node).to_string(),
                inputs: sources,
                outputs,
            });
        }
        let outputs = wanted
            .into_iter()
            .map(|name| match slot_of.get(&name) {
                Some(&s) => Ok((name, s)),
                None => Err(NetError::Shape(format!("no tensor named '{name}'"))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let program = Program {
            steps,
            input: 0,
            outputs,
            slots: slot_of.len(),
            params,
            bn_updates,
        };
        Ok((
            program,
            GraphParams {
                values: param_values,
            },
        ))
    }

    /// Re-initialise every trainable parameter for training from scratch: He-normal
    /// convolution and dense weights (std `sqrt(2 / fan_in)`), zero biases, batch norms
    /// at scale 1, shift 0, mean 0, variance 1. Seeded, so a run can be repeated.
    pub fn initialise(&self, params: &mut GraphParams, seed: u64) {
        let mut rng = scion_edge::rng::SplitMix64::new(seed ^ 0x4E11_7000);
        let mut done = HashSet::new();
        for step in &self.steps {
            for (k, source) in step.inputs.iter().enumerate() {
                let Source::Param(p) = *source else { continue };
                if !done.insert(p) {
                    continue;
                }
                let shape = &self.params[p].1;
                let len: usize = shape.iter().product();
                let trains = params.values[p].is_require_grad();
                let values = match (&step.op, k) {
                    (Op::Conv { .. }, 1) if trains => {
                        let fan_in: usize = shape.iter().skip(1).product();
                        he_normal(&mut rng, len, fan_in)
                    }
                    (Op::Gemm { trans_b, .. }, 1) if trains && shape.len() == 2 => {
                        he_normal(&mut rng, len, if *trans_b { shape[1] } else { shape[0] })
                    }
                    (Op::MatMul, 1) if trains && shape.len() == 2 => {
                        he_normal(&mut rng, len, shape[0])
                    }
                    (Op::Conv { .. }, 2) | (Op::Gemm { .. }, 2) if trains => vec![0.0; len],
                    (Op::BatchNorm { .. }, 1) if trains => vec![1.0; len],
                    (Op::BatchNorm { .. }, 2) if trains => vec![0.0; len],
                    (Op::BatchNorm { .. }, 3 | 4) => {
                        // Statistics follow their layer's scale.
                        let scale_trains = matches!(step.inputs[1], Source::Param(s)
                            if params.values[s].is_require_grad());
                        if !scale_trains {
                            continue;
                        }
                        vec![if k == 3 { 0.0 } else { 1.0 }; len]
                    }
                    _ => continue,
                };
                let device = params.values[p].val().device();
                params.set(
                    p,
                    Tensor::<1>::from_data(TensorData::new(values, [len]), &device),
                );
            }
        }
    }

    /// Names and shapes of the parameters, in [`GraphParams`] order.
    pub fn parameters(&self) -> &[(String, Vec<usize>)] {
        &self.params
    }

    /// Run the graph on `input` (`[batch, channels, height, width]` images, or the
    /// start tensor's shape).
    pub fn forward(
        &self,
        params: &GraphParams,
        input: impl Into<Value>,
        training: bool,
    ) -> Result<Forward, NetError> {
        let mut slots: Vec<Option<Value>> = vec![None; self.slots];
        // How many more steps read each slot, so values are moved, not cloned, at their
        // last use.
        let mut reads = vec![0usize; self.slots];
        for step in &self.steps {
            for s in &step.inputs {
                if let Source::Slot(i) = s {
                    reads[*i] += 1;
                }
            }
        }
        for (_, s) in &self.outputs {
            reads[*s] += 1;
        }
        slots[self.input] = Some(input.into());
        let mut running_stats = Vec::new();
        for (k, step) in self.steps.iter().enumerate() {
            let mut inputs = Vec::with_capacity(step.inputs.len());
            for source in &step.inputs {
                inputs.push(match *source {
                    Source::Slot(i) => {
                        reads[i] -= 1;
                        let v = if reads[i] == 0 {
                            slots[i].take()
                        } else {
                            slots[i].clone()
                        };
                        Some(v.ok_or_else(|| {
                            NetError::Shape(format!("node '{}': input not computed", step.name))
                        })?)
                    }
                    Source::Param(p) => {
                        Some(Value::from_flat(params.values[p].val(), &self.params[p].1)?)
                    }
                    Source::None => None,
                });
            }
            let bn_training = self.bn_updates.iter().find(|u| u.0 == k);
            let (values, stats) = step
                .op
                .apply(
                    inputs,
                    training && (bn_training.is_some() || !matches!(step.op, Op::BatchNorm { .. })),
                )
                .map_err(|e| match e {
                    NetError::Shape(m) => NetError::Shape(format!("node '{}': {m}", step.name)),
                    other => other,
                })?;
            if let (Some(&(_, mean, var, momentum)), Some((batch_mean, batch_var))) =
                (bn_training, stats)
            {
                let old_mean = params.values[mean].val().detach();
                let old_var = params.values[var].val().detach();
                running_stats.push((
                    mean,
                    old_mean.mul_scalar(momentum) + batch_mean.detach().mul_scalar(1.0 - momentum),
                ));
                running_stats.push((
                    var,
                    old_var.mul_scalar(momentum) + batch_var.detach().mul_scalar(1.0 - momentum),
                ));
            }
            for (&slot, value) in step.outputs.iter().zip(values) {
                slots[slot] = Some(value);
            }
        }
        let outputs = self
            .outputs
            .iter()
            .map(|(name, s)| {
                let v = slots[*s]
                    .clone()
                    .ok_or_else(|| NetError::Shape(format!("output '{name}' was not computed")))?;
                Ok((name.clone(), v))
            })
            .collect::<Result<_, NetError>>()?;
        Ok(Forward {
            outputs,
            running_stats,
        })
    }
}

/// `len` samples of N(0, 2 / fan_in) (Box-Muller on the seeded generator).
fn he_normal(rng: &mut scion_edge::rng::SplitMix64, len: usize, fan_in: usize) -> Vec<f32> {
    let std = (2.0 / fan_in.max(1) as f64).sqrt();
    (0..len)
        .map(|_| {
            let u1 = ((rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64).max(1e-12);
            let u2 = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
            ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos() * std) as f32
        })
        .collect()
}

/// The nodes, in `order`, that depend on `start` and that `outputs` need.
fn needed_between(
    graph: &scion_onnx::pb::GraphProto,
    order: &[usize],
    start: &str,
    outputs: &[String],
) -> Result<Vec<usize>, NetError> {
    let producers = scion_onnx::graph::producers(graph);
    let mut needed = HashSet::new();
    let mut stack: Vec<&str> = outputs.iter().map(String::as_str).collect();
    while let Some(t) = stack.pop() {
        if t != start
            && let Some(&p) = producers.get(t)
            && needed.insert(p)
        {
            stack.extend(graph.node[p].input.iter().map(String::as_str));
        }
    }
    let mut reached: HashSet<&str> = HashSet::from([start]);
    let mut kept = Vec::new();
    for &n in order {
        let node = &graph.node[n];
        if needed.contains(&n) && node.input.iter().any(|i| reached.contains(i.as_str())) {
            reached.extend(node.output.iter().map(String::as_str));
            kept.push(n);
        }
    }
    if !outputs.iter().all(|o| reached.contains(o.as_str())) {
        return Err(NetError::Shape(format!(
            "the outputs {outputs:?} do not all depend on '{start}'"
        )));
    }
    Ok(kept)
}

impl GraphParams {
    /// The parameters that change in training (trainable ones, and the running
    /// statistics of training-mode batch norms), by initializer name: what is written
    /// back into the ONNX.
    pub fn trained(&self, program: &Program) -> Vec<(String, Vec<f32>)> {
        let mut changing: HashSet<usize> = program
            .bn_updates
            .iter()
            .flat_map(|&(_, mean, var, _)| [mean, var])
            .collect();
        changing.extend(
            self.values
                .iter()
                .enumerate()
                .filter(|(_, p)| p.is_require_grad())
                .map(|(i, _)| i),
        );
        let mut indices: Vec<usize> = changing.into_iter().collect();
        indices.sort_unstable();
        indices
            .into_iter()
            .map(|i| {
                let v = self.values[i]
                    .val()
                    .into_data()
                    .try_into_vec_as::<f32>()
                    .expect("parameters are f32");
                (program.params[i].0.clone(), v)
            })
            .collect()
    }

    /// How many values train.
    pub fn trainable_len(&self) -> usize {
        self.values
            .iter()
            .filter(|p| p.is_require_grad())
            .map(|p| p.val().dims()[0])
            .sum()
    }

    /// The current values of every parameter, flat, in program order.
    pub fn values(&self) -> Vec<Vec<f32>> {
        self.values
            .iter()
            .map(|p| {
                p.val()
                    .into_data()
                    .try_into_vec_as::<f32>()
                    .expect("parameters are f32")
            })
            .collect()
    }

    /// The gradient of parameter `index` after `backward`, if it has one (frozen
    /// parameters do not).
    pub fn grad(&self, index: usize, grads: &burn::tensor::Gradients) -> Option<Vec<f32>> {
        self.values[index].val().grad(grads).map(|g| {
            g.into_data()
                .try_into_vec_as::<f32>()
                .expect("gradients are f32")
        })
    }

    /// Replace parameter `index` (e.g. a running statistic after a training step),
    /// keeping its identity and whether it trains.
    pub fn set(&mut self, index: usize, value: Tensor<1>) {
        let old = &self.values[index];
        let require_grad = old.is_require_grad();
        self.values[index] = Param::initialized(old.id, value).set_require_grad(require_grad);
    }
}
