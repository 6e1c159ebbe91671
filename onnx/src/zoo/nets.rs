//! The architectures, layer for layer as published (channel counts scaled by the width).

use super::{Net, Style};
use crate::{Error, Result};

/// The architectures scion builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// AlexNet as in Caffe's bvlc_alexnet: grouped convolutions, LRN, fc6/fc7/fc8.
    AlexNet,
    /// VGG-16 (configuration D), no batch norm.
    Vgg16,
    /// ResNet-18: basic blocks.
    ResNet18,
    /// ResNet-50: bottleneck blocks.
    ResNet50,
    /// SqueezeNet 1.1: fire modules, a 1x1 convolution as classifier.
    SqueezeNet11,
    /// GoogLeNet (Inception v1) without auxiliary classifiers.
    GoogLeNet,
    /// DenseNet-121: dense blocks of 6, 12, 24, 16 layers.
    DenseNet121,
    /// ShuffleNet v2 (1.0x): channel split and shuffle.
    ShuffleNetV2,
    /// MobileNet V2: inverted residuals, ReLU6.
    MobileNetV2,
    /// MobileNet V3 Small: squeeze-excitation, hard-swish.
    MobileNetV3Small,
}

impl Arch {
    /// Every architecture.
    pub const ALL: [Arch; 10] = [
        Arch::AlexNet,
        Arch::Vgg16,
        Arch::ResNet18,
        Arch::ResNet50,
        Arch::SqueezeNet11,
        Arch::GoogLeNet,
        Arch::DenseNet121,
        Arch::ShuffleNetV2,
        Arch::MobileNetV2,
        Arch::MobileNetV3Small,
    ];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Arch::AlexNet => "alexnet",
            Arch::Vgg16 => "vgg16",
            Arch::ResNet18 => "resnet18",
            Arch::ResNet50 => "resnet50",
            Arch::SqueezeNet11 => "squeezenet1.1",
            Arch::GoogLeNet => "googlenet",
            Arch::DenseNet121 => "densenet121",
            Arch::ShuffleNetV2 => "shufflenet-v2",
            Arch::MobileNetV2 => "mobilenet-v2",
            Arch::MobileNetV3Small => "mobilenet-v3-small",
        }
    }
}

impl std::str::FromStr for Arch {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Arch::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown architecture '{s}' (one of {})",
                    Arch::ALL.map(Arch::name).join(", ")
                )
            })
    }
}

pub(super) fn build(arch: Arch, net: &mut Net) -> Result<String> {
    let x = "input".to_string();
    let classes = net.options.classes;
    let features = match arch {
        Arch::AlexNet => return alexnet(net, x, classes),
        Arch::Vgg16 => return vgg16(net, x, classes),
        Arch::SqueezeNet11 => return squeezenet(net, x, classes),
        Arch::ResNet18 => resnet(net, x, false)?,
        Arch::ResNet50 => resnet(net, x, true)?,
        Arch::GoogLeNet => googlenet(net, x)?,
        Arch::DenseNet121 => densenet(net, x)?,
        Arch::ShuffleNetV2 => shufflenet(net, x)?,
        Arch::MobileNetV2 => mobilenet_v2(net, x)?,
        Arch::MobileNetV3Small => mobilenet_v3(net, x)?,
    };
    let pooled = net.scoped("avgpool", |n| Ok(n.global_pool(&features)))?;
    let flat = net.flatten(&pooled, true);
    net.scoped("fc", |n| Ok(n.fc(&flat, classes)))
}

fn check_size(net: &Net, x: &str, arch: &str) -> Result<()> {
    let [_, h, w] = net.shape(x);
    if h < 1 || w < 1 {
        return Err(Error::Import(format!(
            "{arch}: the input size {} is too small",
            net.options.input_size
        )));
    }
    Ok(())
}

fn alexnet(net: &mut Net, x: String, classes: i64) -> Result<String> {
    let convs: [(i64, i64, i64, i64, i64); 5] = [
        // channels, kernel, stride, pad, groups
        (96, 11, 4, 2, 1),
        (256, 5, 1, 2, 2),
        (384, 3, 1, 1, 1),
        (384, 3, 1, 1, 2),
        (256, 3, 1, 1, 2),
    ];
    let mut x = x;
    for (i, (c, k, s, p, g)) in convs.into_iter().enumerate() {
        let scope = format!("features/features.{}", i * 3);
        let ch = net.ch(c);
        x = net.scoped(&scope, |n| {
            let y = n.conv(&x, ch, k, s, p, g, true);
            let mut y = n.relu(&y);
            if i < 2 {
                y = n.lrn(&y);
            }
            if matches!(i, 0 | 1 | 4) {
                y = n.pool("MaxPool", &y, 3, 2, 0, false);
            }
            Ok(y)
        })?;
    }
    check_size(net, &x, "alexnet")?;
    classifier(net, &x, [1, 4], classes)
}

fn vgg16(net: &mut Net, x: String, classes: i64) -> Result<String> {
    let stages: [(i64, usize); 5] = [(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)];
    let mut x = x;
    let mut index = 0;
    for (c, repeats) in stages {
        let ch = net.ch(c);
        for r in 0..repeats {
            x = net.scoped(&format!("features/features.{index}"), |n| {
                let y = n.conv(&x, ch, 3, 1, 1, 1, true);
                let y = n.relu(&y);
                Ok(if r + 1 == repeats {
                    n.pool("MaxPool", &y, 2, 2, 0, false)
                } else {
                    y
                })
            })?;
            index += 2;
        }
    }
    check_size(net, &x, "vgg16")?;
    classifier(net, &x, [0, 3], classes)
}

/// AlexNet's and VGG's head: flatten, fc6 and fc7 with ReLU (their modules numbered as
/// torchvision's `classifier.N`), the classes.
fn classifier(net: &mut Net, x: &str, modules: [usize; 2], classes: i64) -> Result<String> {
    let mut y = net.flatten(x, false);
    for m in modules {
        let width = net.ch(4096);
        y = net.scoped(&format!("classifier/classifier.{m}"), |n| {
            let z = n.fc(&y, width);
            Ok(n.relu(&z))
        })?;
    }
    net.scoped("classifier/classifier.6", |n| Ok(n.fc(&y, classes)))
}

fn resnet(net: &mut Net, x: String, bottleneck: bool) -> Result<String> {
    let stem = net.ch(64);
    let mut x = net.scoped("conv1", |n| Ok(n.conv(&x, stem, 7, 2, 3, 1, false)))?;
    x = net.scoped("bn1", |n| Ok(n.bn(&x, 1.0)))?;
    x = net.scoped("relu", |n| Ok(n.relu(&x)))?;
    x = net.scoped("maxpool", |n| Ok(n.pool("MaxPool", &x, 3, 2, 1, false)))?;
    let repeats: [usize; 4] = if bottleneck {
        [3, 4, 6, 3]
    } else {
        [2, 2, 2, 2]
    };
    let expansion = if bottleneck { 4 } else { 1 };
    for (stage, &r) in repeats.iter().enumerate() {
        let width = net.ch(64 << stage);
        for b in 0..r {
            let stride = if b == 0 && stage > 0 { 2 } else { 1 };
            let scope = format!("layer{}/layer{}.{b}", stage + 1, stage + 1);
            x = net.scoped(&scope, |n| {
                let input = x.clone();
                let in_ch = n.shape(&input)[0];
                let out_ch = width * expansion;
                let branch = if bottleneck {
                    let y = n.scoped("conv1", |n| Ok(n.conv(&input, width, 1, 1, 0, 1, false)))?;
                    let y = n.scoped("bn1", |n| Ok(n.bn(&y, 1.0)))?;
                    let y = n.relu(&y);
                    let y = n.scoped("conv2", |n| Ok(n.conv(&y, width, 3, stride, 1, 1, false)))?;
                    let y = n.scoped("bn2", |n| Ok(n.bn(&y, 1.0)))?;
                    let y = n.relu(&y);
                    let y = n.scoped("conv3", |n| Ok(n.conv(&y, out_ch, 1, 1, 0, 1, false)))?;
                    n.scoped("bn3", |n| Ok(n.bn(&y, 0.3)))?
                } else {
                    let y = n.scoped("conv1", |n| {
                        Ok(n.conv(&input, width, 3, stride, 1, 1, false))
                    })?;
                    let y = n.scoped("bn1", |n| Ok(n.bn(&y, 1.0)))?;
                    let y = n.relu(&y);
                    let y = n.scoped("conv2", |n| Ok(n.conv(&y, width, 3, 1, 1, 1, false)))?;
                    n.scoped("bn2", |n| Ok(n.bn(&y, 0.3)))?
                };
                let skip = if stride != 1 || in_ch != out_ch {
                    n.scoped("downsample", |n| {
                        let y = n.conv(&input, out_ch, 1, stride, 0, 1, false);
                        Ok(n.bn(&y, 1.0))
                    })?
                } else {
                    input
                };
                let sum = n.residual(&branch, &skip);
                Ok(n.relu(&sum))
            })?;
        }
    }
    check_size(net, &x, "resnet")?;
    Ok(x)
}

fn squeezenet(net: &mut Net, x: String, classes: i64) -> Result<String> {
    let stem = net.ch(64);
    let mut x = net.scoped("features/features.0", |n| {
        let y = n.conv(&x, stem, 3, 2, 0, 1, true);
        Ok(n.relu(&y))
    })?;
    x = net.scoped("features/features.2", |n| {
        Ok(n.pool("MaxPool", &x, 3, 2, 0, true))
    })?;
    let fires: [(i64, i64); 8] = [
        (16, 64),
        (16, 64),
        (32, 128),
        (32, 128),
        (48, 192),
        (48, 192),
        (64, 256),
        (64, 256),
    ];
    let mut index = 3;
    for (i, (s, e)) in fires.into_iter().enumerate() {
        let (s, e) = (net.ch(s), net.ch(e));
        x = net.scoped(&format!("features/features.{index}"), |n| {
            let sq = n.conv(&x, s, 1, 1, 0, 1, true);
            let sq = n.relu(&sq);
            let a = n.conv(&sq, e, 1, 1, 0, 1, true);
            let a = n.relu(&a);
            let b = n.conv(&sq, e, 3, 1, 1, 1, true);
            let b = n.relu(&b);
            Ok(n.concat(&[a, b]))
        })?;
        index += 1;
        if i == 1 || i == 3 {
            x = net.scoped(&format!("features/features.{index}"), |n| {
                Ok(n.pool("MaxPool", &x, 3, 2, 0, true))
            })?;
            index += 1;
        }
    }
    check_size(net, &x, "squeezenet1.1")?;
    // The classifier: Dropout (caffe2), a 1x1 convolution to the classes, ReLU, pooling.
    let x = net.scoped("classifier/classifier.1", |n| {
        let y = if n.style() == Style::Caffe2 {
            n.unary(
                "Dropout",
                &x,
                vec![crate::builder::attr_float("ratio", 0.5)],
            )
        } else {
            x.clone()
        };
        let y = n.conv(&y, classes, 1, 1, 0, 1, true);
        Ok(n.relu(&y))
    })?;
    let pooled = net.scoped("classifier/classifier.3", |n| Ok(n.global_pool(&x)))?;
    Ok(match net.style() {
        Style::Torch => net.flatten(&pooled, true),
        Style::Caffe2 => net.unary(
            "Squeeze",
            &pooled,
            vec![crate::builder::attr_ints("axes", &[2, 3])],
        ),
    })
}

fn googlenet(net: &mut Net, x: String) -> Result<String> {
    let (c64, c192) = (net.ch(64), net.ch(192));
    let mut x = net.scoped("conv1", |n| Ok(n.conv_bn_relu(&x, c64, 7, 2, 3)))?;
    x = net.scoped("maxpool1", |n| Ok(n.pool("MaxPool", &x, 3, 2, 0, true)))?;
    if net.style() == Style::Caffe2 {
        x = net.lrn(&x);
    }
    x = net.scoped("conv2", |n| Ok(n.conv_bn_relu(&x, c64, 1, 1, 0)))?;
    x = net.scoped("conv3", |n| Ok(n.conv_bn_relu(&x, c192, 3, 1, 1)))?;
    if net.style() == Style::Caffe2 {
        x = net.lrn(&x);
    }
    x = net.scoped("maxpool2", |n| Ok(n.pool("MaxPool", &x, 3, 2, 0, true)))?;
    // (1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj)
    let modules: [(&str, [i64; 6]); 9] = [
        ("inception3a", [64, 96, 128, 16, 32, 32]),
        ("inception3b", [128, 128, 192, 32, 96, 64]),
        ("inception4a", [192, 96, 208, 16, 48, 64]),
        ("inception4b", [160, 112, 224, 24, 64, 64]),
        ("inception4c", [128, 128, 256, 24, 64, 64]),
        ("inception4d", [112, 144, 288, 32, 64, 64]),
        ("inception4e", [256, 160, 320, 32, 128, 128]),
        ("inception5a", [256, 160, 320, 32, 128, 128]),
        ("inception5b", [384, 192, 384, 48, 128, 128]),
    ];
    for (name, c) in modules {
        let c = c.map(|v| net.ch(v));
        x = net.scoped(name, |n| {
            let b1 = n.scoped("branch1", |n| Ok(n.conv_bn_relu(&x, c[0], 1, 1, 0)))?;
            let b2 = n.scoped("branch2", |n| {
                let y = n.conv_bn_relu(&x, c[1], 1, 1, 0);
                Ok(n.conv_bn_relu(&y, c[2], 3, 1, 1))
            })?;
            let b3 = n.scoped("branch3", |n| {
                let y = n.conv_bn_relu(&x, c[3], 1, 1, 0);
                Ok(n.conv_bn_relu(&y, c[4], 3, 1, 1))
            })?;
            let b4 = n.scoped("branch4", |n| {
                let y = n.pool("MaxPool", &x, 3, 1, 1, true);
                Ok(n.conv_bn_relu(&y, c[5], 1, 1, 0))
            })?;
            Ok(n.concat(&[b1, b2, b3, b4]))
        })?;
        if name == "inception3b" || name == "inception4e" {
            let pool = if name == "inception3b" {
                "maxpool3"
            } else {
                "maxpool4"
            };
            x = net.scoped(pool, |n| Ok(n.pool("MaxPool", &x, 3, 2, 0, true)))?;
        }
    }
    check_size(net, &x, "googlenet")?;
    Ok(x)
}

fn densenet(net: &mut Net, x: String) -> Result<String> {
    let growth = net.ch(32);
    let stem = net.ch(64);
    let mut x = net.scoped(
        "features/conv0",
        |n| Ok(n.conv(&x, stem, 7, 2, 3, 1, false)),
    )?;
    x = net.scoped("features/norm0", |n| Ok(n.bn(&x, 1.0)))?;
    x = net.relu(&x);
    x = net.scoped("features/pool0", |n| {
        Ok(n.pool("MaxPool", &x, 3, 2, 1, false))
    })?;
    for (b, layers) in [6usize, 12, 24, 16].into_iter().enumerate() {
        for l in 0..layers {
            let scope = format!("features/denseblock{}/denselayer{}", b + 1, l + 1);
            x = net.scoped(&scope, |n| {
                let y = n.bn(&x, 1.0);
                let y = n.relu(&y);
                let y = n.conv(&y, 4 * growth, 1, 1, 0, 1, false);
                let y = n.bn(&y, 1.0);
                let y = n.relu(&y);
                let y = n.conv(&y, growth, 3, 1, 1, 1, false);
                Ok(n.concat(&[x.clone(), y]))
            })?;
        }
        if b < 3 {
            x = net.scoped(&format!("features/transition{}", b + 1), |n| {
                let c = n.shape(&x)[0] / 2;
                let y = n.bn(&x, 1.0);
                let y = n.relu(&y);
                let y = n.conv(&y, c, 1, 1, 0, 1, false);
                Ok(n.pool("AveragePool", &y, 2, 2, 0, false))
            })?;
        }
    }
    x = net.scoped("features/norm5", |n| Ok(n.bn(&x, 1.0)))?;
    let x = net.relu(&x);
    check_size(net, &x, "densenet121")?;
    Ok(x)
}

fn shufflenet(net: &mut Net, x: String) -> Result<String> {
    let stem = net.ch(24);
    let mut x = net.scoped("conv1", |n| Ok(n.conv_bn_relu(&x, stem, 3, 2, 1)))?;
    x = net.scoped("maxpool", |n| Ok(n.pool("MaxPool", &x, 3, 2, 1, false)))?;
    for (stage, (out, repeats)) in [(116i64, 4usize), (232, 8), (464, 4)]
        .into_iter()
        .enumerate()
    {
        let out = net.ch(out);
        for u in 0..repeats {
            let scope = format!("stage{}/stage{}.{u}", stage + 2, stage + 2);
            x = net.scoped(&scope, |n| {
                let half = out / 2;
                let (keep, branch_in, stride) = if u == 0 {
                    let b1 = n.scoped("branch1", |n| {
                        let in_ch = n.shape(&x)[0];
                        let y = n.conv(&x, in_ch, 3, 2, 1, in_ch, false);
                        let y = n.bn(&y, 1.0);
                        let y = n.conv(&y, half, 1, 1, 0, 1, false);
                        let y = n.bn(&y, 1.0);
                        Ok(n.relu(&y))
                    })?;
                    (b1, x.clone(), 2)
                } else {
                    let (a, b) = n.halves(&x);
                    (a, b, 1)
                };
                let b2 = n.scoped("branch2", |n| {
                    let y = n.conv_bn_relu(&branch_in, half, 1, 1, 0);
                    let y = n.conv(&y, half, 3, stride, 1, half, false);
                    let y = n.bn(&y, 1.0);
                    Ok(n.conv_bn_relu(&y, half, 1, 1, 0))
                })?;
                let joined = n.concat(&[keep, b2]);
                Ok(n.channel_shuffle(&joined, 2))
            })?;
        }
    }
    let last = net.ch(1024);
    x = net.scoped("conv5", |n| Ok(n.conv_bn_relu(&x, last, 1, 1, 0)))?;
    check_size(net, &x, "shufflenet-v2")?;
    Ok(x)
}

fn mobilenet_v2(net: &mut Net, x: String) -> Result<String> {
    let stem = net.ch(32);
    let caffe = net.style() == Style::Caffe2;
    let mut x = net.scoped("features/features.0", |n| {
        let y = if caffe {
            n.conv_same(&x, stem, 3, 2, 1)
        } else {
            n.conv(&x, stem, 3, 2, 1, 1, false)
        };
        let y = n.bn(&y, 1.0);
        Ok(n.relu6(&y))
    })?;
    // (expansion, channels, repeats, stride)
    let table: [(i64, i64, usize, i64); 7] = [
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    ];
    let mut index = 1;
    for (t, c, n_rep, s) in table {
        let c = net.ch(c);
        for r in 0..n_rep {
            let stride = if r == 0 { s } else { 1 };
            x = net.scoped(&format!("features/features.{index}"), |n| {
                let in_ch = n.shape(&x)[0];
                let hidden = in_ch * t;
                let mut y = x.clone();
                if t != 1 {
                    y = n.conv(&y, hidden, 1, 1, 0, 1, false);
                    y = n.bn(&y, 1.0);
                    y = n.relu6(&y);
                }
                y = if caffe && stride == 2 {
                    n.conv_same(&y, hidden, 3, 2, hidden)
                } else {
                    n.conv(&y, hidden, 3, stride, 1, hidden, false)
                };
                y = n.bn(&y, 1.0);
                y = n.relu6(&y);
                y = n.conv(&y, c, 1, 1, 0, 1, false);
                let residual = stride == 1 && in_ch == c;
                y = n.bn(&y, if residual { 0.3 } else { 1.0 });
                Ok(if residual { n.residual(&x, &y) } else { y })
            })?;
            index += 1;
        }
    }
    let last = net.ch(1280);
    x = net.scoped(&format!("features/features.{index}"), |n| {
        let y = n.conv(&x, last, 1, 1, 0, 1, false);
        let y = n.bn(&y, 1.0);
        Ok(n.relu6(&y))
    })?;
    check_size(net, &x, "mobilenet-v2")?;
    Ok(x)
}

fn mobilenet_v3(net: &mut Net, x: String) -> Result<String> {
    let stem = net.ch(16);
    let mut x = net.scoped("features/features.0", |n| {
        let y = n.conv(&x, stem, 3, 2, 1, 1, false);
        let y = n.bn(&y, 1.0);
        Ok(n.hardswish(&y))
    })?;
    // (kernel, expanded, out, squeeze-excite, hard-swish, stride) of V3-Small.
    let table: [(i64, i64, i64, bool, bool, i64); 11] = [
        (3, 16, 16, true, false, 2),
        (3, 72, 24, false, false, 2),
        (3, 88, 24, false, false, 1),
        (5, 96, 40, true, true, 2),
        (5, 240, 40, true, true, 1),
        (5, 240, 40, true, true, 1),
        (5, 120, 48, true, true, 1),
        (5, 144, 48, true, true, 1),
        (5, 288, 96, true, true, 2),
        (5, 576, 96, true, true, 1),
        (5, 576, 96, true, true, 1),
    ];
    for (i, (k, exp, out, se, hs, s)) in table.into_iter().enumerate() {
        let (exp, out) = (net.ch(exp), net.ch(out));
        x = net.scoped(&format!("features/features.{}", i + 1), |n| {
            let in_ch = n.shape(&x)[0];
            let act = |n: &mut Net, y: &str| if hs { n.hardswish(y) } else { n.relu(y) };
            let mut y = x.clone();
            if exp != in_ch {
                y = n.conv(&y, exp, 1, 1, 0, 1, false);
                y = n.bn(&y, 1.0);
                y = act(n, &y);
            }
            y = n.conv(&y, exp, k, s, k / 2, exp, false);
            y = n.bn(&y, 1.0);
            y = act(n, &y);
            if se {
                let reduced = ((exp / 4 + 7) / 8 * 8).max(8);
                y = n.squeeze_excite(&y, reduced);
            }
            y = n.conv(&y, out, 1, 1, 0, 1, false);
            let residual = s == 1 && in_ch == out;
            y = n.bn(&y, if residual { 0.3 } else { 1.0 });
            Ok(if residual { n.residual(&x, &y) } else { y })
        })?;
    }
    let last = net.ch(576);
    x = net.scoped("features/features.12", |n| {
        let y = n.conv(&x, last, 1, 1, 0, 1, false);
        let y = n.bn(&y, 1.0);
        Ok(n.hardswish(&y))
    })?;
    check_size(net, &x, "mobilenet-v3-small")?;
    Ok(x)
}
