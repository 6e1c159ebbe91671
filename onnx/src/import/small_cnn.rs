//! A small CNN for quick from-scratch runs on small images (Fashion-MNIST, CIFAR-sized):
//! three blocks of 3x3 convolution, batch norm and ReLU (the first two followed by 2x2
//! max pooling), global average pooling to a 128-wide feature vector, and a placeholder
//! 10-class classifier. There are no published weights: the weights are He-initialised
//! from a seed, and `scion train --from-scratch` trains every layer (and replaces the
//! classifier). Block names follow the `blocks.N` convention `--unfreeze last:N` reads.

use crate::Result;
use crate::builder;
use crate::card::{
    self, ColorOrder, Layout, ModelCard, Preprocessing, Provenance, Resize, ResizeFilter,
    TensorNames,
};
use crate::pb::{GraphProto, ModelProto};

/// Output channels of the three blocks.
pub const CHANNELS: [i64; 3] = [32, 64, 128];
const CLASSES: i64 = 10;

/// Build the network for `size` x `size` inputs, weights drawn from `seed`.
pub fn build(size: u32, seed: u64) -> Result<ModelProto> {
    let mut rng = seed ^ 0x5EED_C0DE;
    let mut normal = move |std: f32| -> f32 {
        // SplitMix64 + Box-Muller, so the file depends on the seed alone.
        let mut next = || {
            rng = rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = rng;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
        };
        let (u1, u2) = (next().max(1e-12), next());
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32 * std
    };
    let mut nodes = Vec::new();
    let mut initializers = Vec::new();
    let mut x = "input".to_string();
    let mut in_ch = 3i64;
    for (i, &out_ch) in CHANNELS.iter().enumerate() {
        let p = format!("blocks.{i}");
        let fan_in = (in_ch * 9) as f32;
        let weight: Vec<f32> = (0..out_ch * in_ch * 9)
            .map(|_| normal((2.0 / fan_in).sqrt()))
            .collect();
        initializers.push(builder::tensor_f32(
            &format!("{p}.conv.weight"),
            &[out_ch, in_ch, 3, 3],
            weight,
        ));
        for (name, value) in [("weight", 1.0), ("bias", 0.0), ("mean", 0.0), ("var", 1.0)] {
            initializers.push(builder::tensor_f32(
                &format!("{p}.bn.{name}"),
                &[out_ch],
                vec![value; out_ch as usize],
            ));
        }
        nodes.push(builder::node(
            "Conv",
            &format!("{p}.conv"),
            &[&x, &format!("{p}.conv.weight")],
            &[&format!("{p}.conv")],
            vec![
                builder::attr_ints("kernel_shape", &[3, 3]),
                builder::attr_ints("pads", &[1, 1, 1, 1]),
            ],
        ));
        nodes.push(builder::node(
            "BatchNormalization",
            &format!("{p}.bn"),
            &[
                &format!("{p}.conv"),
                &format!("{p}.bn.weight"),
                &format!("{p}.bn.bias"),
                &format!("{p}.bn.mean"),
                &format!("{p}.bn.var"),
            ],
            &[&format!("{p}.bn")],
            vec![builder::attr_float("epsilon", 1e-5)],
        ));
        nodes.push(builder::node(
            "Relu",
            &format!("{p}.relu"),
            &[&format!("{p}.bn")],
            &[&format!("{p}.relu")],
            vec![],
        ));
        x = format!("{p}.relu");
        if i + 1 < CHANNELS.len() {
            nodes.push(builder::node(
                "MaxPool",
                &format!("{p}.pool"),
                &[&x],
                &[&format!("{p}.pool")],
                vec![
                    builder::attr_ints("kernel_shape", &[2, 2]),
                    builder::attr_ints("strides", &[2, 2]),
                ],
            ));
            x = format!("{p}.pool");
        }
        in_ch = out_ch;
    }
    nodes.push(builder::node(
        "GlobalAveragePool",
        "head.pool",
        &[&x],
        &["head.pool"],
        vec![],
    ));
    nodes.push(builder::node(
        "Flatten",
        "head.flatten",
        &["head.pool"],
        &["features"],
        vec![builder::attr_int("axis", 1)],
    ));
    let width = in_ch;
    let weight: Vec<f32> = (0..CLASSES * width)
        .map(|_| normal((1.0 / width as f32).sqrt()))
        .collect();
    initializers.push(builder::tensor_f32(
        "classifier.weight",
        &[CLASSES, width],
        weight,
    ));
    initializers.push(builder::tensor_f32(
        "classifier.bias",
        &[CLASSES],
        vec![0.0; CLASSES as usize],
    ));
    nodes.push(builder::node(
        "Gemm",
        "classifier",
        &["features", "classifier.weight", "classifier.bias"],
        &["logits"],
        vec![builder::attr_int("transB", 1)],
    ));
    let mut model = super::classifier_model(
        GraphProto {
            name: "small-cnn".into(),
            node: nodes,
            initializer: initializers,
            ..Default::default()
        },
        i64::from(size),
        CLASSES,
        width,
        format!("small CNN for {size} px inputs, untrained (seed {seed})"),
    )?;
    let card = ModelCard {
        version: card::CARD_VERSION,
        name: "small-cnn".into(),
        labels: (0..CLASSES).map(|c| format!("untrained {c}")).collect(),
        preprocessing: Preprocessing {
            color: ColorOrder::Rgb,
            resize: Resize::Exact {
                width: size,
                height: size,
            },
            filter: ResizeFilter::Bilinear,
            crop: None,
            scale: 1.0,
            mean: [127.5; 3],
            std: [127.5; 3],
            layout: Layout::Nchw,
        },
        tensors: TensorNames {
            input: "input".into(),
            features: Some("features".into()),
            logits: Some("logits".into()),
            probs: None,
        },
        provenance: Provenance {
            created_by: format!("scion-onnx {}", env!("CARGO_PKG_VERSION")),
            source: format!("small-cnn, He-initialised from seed {seed} (no pretrained weights)"),
            license: Some("Apache-2.0".into()),
            ..Default::default()
        },
        calibration: None,
        unknown: None,
    };
    card.check_against(&model)?;
    card.write_to(&mut model);
    Ok(model)
}
