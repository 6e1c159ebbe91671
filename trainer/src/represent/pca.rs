//! Principal components by power iteration on the centred data (`Xᵀ(X v)`, never the
//! `dim x dim` covariance), deflating after each component. Enough for a 2-D picture of
//! thousands of 1280-d features in well under a second.

use scion_edge::rng::SplitMix64;

/// The data projected on its first `components` principal axes, row-major
/// (`n x components`), and the share of the variance each axis explains.
pub fn project(data: &[f32], dim: usize, components: usize) -> (Vec<f32>, Vec<f32>) {
    let n = data.len() / dim;
    if n == 0 {
        return (Vec::new(), vec![0.0; components]);
    }
    let mut mean = vec![0.0f64; dim];
    for row in data.chunks_exact(dim) {
        row.iter()
            .zip(&mut mean)
            .for_each(|(x, m)| *m += f64::from(*x));
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    let centred: Vec<f64> = data
        .chunks_exact(dim)
        .flat_map(|row| row.iter().zip(&mean).map(|(x, m)| f64::from(*x) - m))
        .collect();
    let total: f64 = centred.iter().map(|x| x * x).sum();
    let mut axes: Vec<Vec<f64>> = Vec::new();
    let mut explained = Vec::new();
    let mut rng = SplitMix64::new(7);
    for _ in 0..components {
        let mut v: Vec<f64> = (0..dim).map(|_| f64::from(rng.next_f32()) - 0.5).collect();
        let mut eigen = 0.0;
        for _ in 0..200 {
            orthogonalise(&mut v, &axes);
            let scores: Vec<f64> = centred.chunks_exact(dim).map(|r| dot(r, &v)).collect();
            let mut next = vec![0.0; dim];
            for (r, s) in centred.chunks_exact(dim).zip(&scores) {
                next.iter_mut().zip(r).for_each(|(a, x)| *a += s * x);
            }
            orthogonalise(&mut next, &axes);
            let norm = dot(&next, &next).sqrt();
            if norm == 0.0 {
                break;
            }
            next.iter_mut().for_each(|a| *a /= norm);
            let change: f64 = next.iter().zip(&v).map(|(a, b)| (a - b).abs()).sum();
            v = next;
            eigen = norm;
            if change < 1e-9 {
                break;
            }
        }
        explained.push(if total > 0.0 {
            (eigen / total) as f32
        } else {
            0.0
        });
        axes.push(v);
    }
    let projected = centred
        .chunks_exact(dim)
        .flat_map(|r| axes.iter().map(move |a| dot(r, a) as f32))
        .collect();
    (projected, explained)
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn orthogonalise(v: &mut [f64], axes: &[Vec<f64>]) {
    for a in axes {
        let d = dot(v, a);
        v.iter_mut().zip(a).for_each(|(x, y)| *x -= d * y);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_axis_of_largest_spread() {
        // Points along (1, 1, 0) with a little spread along (0, 0, 1).
        let mut data = Vec::new();
        for i in 0..50 {
            let t = i as f32 - 25.0;
            data.extend([t, t, 0.1 * ((i % 3) as f32 - 1.0)]);
        }
        let (p, explained) = project(&data, 3, 2);
        assert_eq!(p.len(), 100);
        assert!(explained[0] > 0.99, "{explained:?}");
        // First coordinate is the centred t (t = -25, mean -0.5) times sqrt(2), up to sign.
        assert!((p[0].abs() - 24.5 * 2f32.sqrt()).abs() < 1e-3, "{}", p[0]);
    }
}
