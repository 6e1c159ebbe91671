//! What the features say about a data set: near-duplicates (across splits they leak the
//! answer into validation), images whose neighbours mostly carry another label (likely
//! mislabelled), and images far from everything (outliers). All from one leave-one-out
//! k-NN search.

use super::embedding::Embeddings;
use super::knn::{Index, Metric, Neighbour};

/// Thresholds of the audit.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct AuditConfig {
    /// Neighbours looked at per image.
    pub k: usize,
    /// Two images are near-duplicates when their distance is at most this fraction of the
    /// median nearest-neighbour distance (copies, however many).
    pub duplicate_ratio: f32,
    /// ... or when they are each other's nearest neighbour, closer than the median
    /// nearest-neighbour distance, and at most this fraction of the distance to the next
    /// neighbour of one of them (Lowe's ratio test: a resized or re-encoded copy stands
    /// out from the crowd even when resizing moved its features).
    pub distinct_ratio: f32,
    /// An image is suspect when at least this share of its neighbours agree on one other
    /// label.
    pub mislabel_agreement: f32,
    /// An image is an outlier when its outlier factor (its mean neighbour distance over
    /// its neighbours' own) is this many robust standard deviations (median absolute
    /// deviation x 1.4826) above the median.
    pub outlier_z: f32,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            k: 10,
            duplicate_ratio: 0.1,
            distinct_ratio: 0.6,
            mislabel_agreement: 0.7,
            outlier_z: 5.0,
        }
    }
}

/// Two images that are (nearly) the same.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Duplicate {
    /// Row of the first image.
    pub a: usize,
    /// Row of the second.
    pub b: usize,
    /// Their distance.
    pub distance: f32,
    /// Whether they sit in different splits (leakage).
    pub cross_split: bool,
}

/// An image its neighbours disagree with.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Suspect {
    /// Its row.
    pub index: usize,
    /// The label its neighbours give it.
    pub suggested: String,
    /// Share of neighbours with that label.
    pub agreement: f32,
    /// Its neighbours, nearest first.
    pub neighbours: Vec<usize>,
}

/// An image far from all others.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Outlier {
    /// Its row.
    pub index: usize,
    /// Mean distance to its k neighbours.
    pub mean_distance: f32,
    /// That distance over its neighbours' own mean neighbour distance.
    pub factor: f32,
    /// How many robust standard deviations above the median the factor is.
    pub z: f32,
}

/// The findings, most certain first in each list.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Audit {
    /// Median distance to the nearest neighbour (the scale of the thresholds).
    pub median_nearest: f32,
    /// Mean share of an image's k neighbours that carry its label (see
    /// [`label_agreement`]): how well the features separate the classes.
    pub label_agreement: Option<f64>,
    /// Near-duplicate pairs; cross-split ones first.
    pub duplicates: Vec<Duplicate>,
    /// Likely mislabelled images.
    pub mislabelled: Vec<Suspect>,
    /// Outliers.
    pub outliers: Vec<Outlier>,
}

/// Audit `embeddings` (Euclidean distances).
pub fn audit(embeddings: &Embeddings, config: &AuditConfig) -> Audit {
    let n = embeddings.items.len();
    let index = Index::new(embeddings.data.clone(), embeddings.dim, Metric::Euclidean);
    let neighbours = index.leave_one_out(config.k.max(1));
    let median_nearest = median(
        neighbours
            .iter()
            .filter_map(|nn| nn.first().map(|x| x.distance))
            .collect(),
    );
    let items = &embeddings.items;
    let mut duplicates = Vec::new();
    let nearest = |i: usize| neighbours[i].first().map(|x| x.index);
    // How much closer image i's nearest neighbour is than its next one.
    let distinct = |i: usize| match &neighbours[i][..] {
        [first, second, ..] if second.distance > 0.0 => first.distance / second.distance,
        _ => 1.0,
    };
    for (a, nn) in neighbours.iter().enumerate() {
        for (rank, &Neighbour { index: b, distance }) in nn.iter().enumerate() {
            let copy = distance <= config.duplicate_ratio * median_nearest;
            let stands_out = rank == 0
                && nearest(b) == Some(a)
                && distance < median_nearest
                && distinct(a).min(distinct(b)) <= config.distinct_ratio;
            if !copy && !stands_out {
                break;
            }
            duplicates.push(Duplicate {
                a: a.min(b),
                b: a.max(b),
                distance,
                cross_split: items[a].split != items[b].split,
            });
        }
    }
    // Each pair once (it is usually found from both sides).
    duplicates.sort_by_key(|x| (x.a, x.b));
    duplicates.dedup_by(|x, y| x.a == y.a && x.b == y.b);
    duplicates.sort_by(|x, y| {
        y.cross_split
            .cmp(&x.cross_split)
            .then(x.distance.total_cmp(&y.distance))
    });

    let mut mislabelled = Vec::new();
    for (i, nn) in neighbours.iter().enumerate() {
        let Some(own) = &items[i].label else { continue };
        let mut counts: Vec<(&str, usize)> = Vec::new();
        for x in nn {
            if let Some(l) = &items[x.index].label {
                match counts.iter_mut().find(|(name, _)| name == l) {
                    Some((_, c)) => *c += 1,
                    None => counts.push((l, 1)),
                }
            }
        }
        let Some(&(top, votes)) = counts.iter().max_by_key(|(_, c)| *c) else {
            continue;
        };
        let agreement = votes as f32 / nn.len().max(1) as f32;
        if top != own && agreement >= config.mislabel_agreement {
            mislabelled.push(Suspect {
                index: i,
                suggested: top.to_string(),
                agreement,
                neighbours: nn.iter().map(|x| x.index).collect(),
            });
        }
    }
    mislabelled.sort_by(|a, b| {
        b.agreement
            .total_cmp(&a.agreement)
            .then(a.index.cmp(&b.index))
    });

    // How far an image is from its neighbours, relative to how far they are from theirs
    // (a simplified local outlier factor): a photo among clothes scores ~2, a sparse but
    // ordinary region ~1. Two strays next to each other still stand out.
    let mean_distance: Vec<f32> = neighbours
        .iter()
        .map(|nn| nn.iter().map(|x| x.distance).sum::<f32>() / nn.len().max(1) as f32)
        .collect();
    let factor: Vec<f32> = neighbours
        .iter()
        .enumerate()
        .map(|(i, nn)| {
            let around =
                nn.iter().map(|x| mean_distance[x.index]).sum::<f32>() / nn.len().max(1) as f32;
            if around > 0.0 {
                mean_distance[i] / around
            } else {
                1.0
            }
        })
        .collect();
    let centre = median(factor.clone());
    let spread = 1.4826 * median(factor.iter().map(|d| (d - centre).abs()).collect());
    let mut outliers: Vec<Outlier> = (0..n)
        .filter_map(|i| {
            let z = if spread > 0.0 {
                (factor[i] - centre) / spread
            } else {
                0.0
            };
            (z >= config.outlier_z).then_some(Outlier {
                index: i,
                mean_distance: mean_distance[i],
                factor: factor[i],
                z,
            })
        })
        .collect();
    outliers.sort_by(|a, b| b.z.total_cmp(&a.z));
    let (_, labels) = embeddings.label_indices();
    Audit {
        median_nearest,
        label_agreement: label_agreement(&labels, &neighbours),
        duplicates,
        mislabelled,
        outliers,
    }
}

fn median(mut v: Vec<f32>) -> f32 {
    if v.is_empty() {
        return 0.0;
    }
    let mid = v.len() / 2;
    *v.select_nth_unstable_by(mid, f32::total_cmp).1
}

/// How often neighbours share a label: the mean, over labelled images, of the share of
/// their neighbours (found leave-one-out) that carry the same label. The lecture's
/// "nearest neighbours are semantically similar" as one number; `None` when nothing is
/// labelled.
pub fn label_agreement(labels: &[Option<usize>], neighbours: &[Vec<Neighbour>]) -> Option<f64> {
    let mut total = 0.0;
    let mut counted = 0usize;
    for (i, nn) in neighbours.iter().enumerate() {
        let Some(own) = labels[i] else { continue };
        let same = nn.iter().filter(|x| labels[x.index] == Some(own)).count();
        total += same as f64 / nn.len().max(1) as f64;
        counted += 1;
    }
    (counted > 0).then(|| total / counted as f64)
}
