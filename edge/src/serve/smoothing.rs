//! Turning per-frame probabilities into a stable label: an exponential moving average over
//! about N frames, then hysteresis — a new label is announced only when its smoothed
//! probability reaches the threshold and beats the current label's for `hold` frames in a
//! row. A label change is an event, not flicker.

/// Smoothing settings (also the `[smoothing]` section of the service's configuration).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmoothingConfig {
    /// EMA span in frames (1: no smoothing); the weight of a new frame is 2 / (N + 1).
    pub frames: usize,
    /// Smoothed probability a label needs to be announced.
    pub threshold: f32,
    /// Consecutive frames a challenger must lead before it replaces the current label.
    pub hold: usize,
}

impl Default for SmoothingConfig {
    fn default() -> Self {
        SmoothingConfig {
            frames: 5,
            threshold: 0.5,
            hold: 3,
        }
    }
}

/// A change of the announced label.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelChange {
    /// The label before (None at start or after no label was confident).
    pub from: Option<usize>,
    /// The new label (None: nothing is confident any more).
    pub to: Option<usize>,
    /// Its smoothed probability (of `from` when `to` is None).
    pub prob: f32,
}

/// The smoothing state.
#[derive(Debug, Clone)]
pub struct Smoother {
    config: SmoothingConfig,
    average: Vec<f32>,
    current: Option<usize>,
    challenger: Option<(Option<usize>, usize)>,
}

impl Smoother {
    /// A smoother with nothing seen yet.
    pub fn new(config: SmoothingConfig) -> Self {
        Smoother {
            config,
            average: Vec::new(),
            current: None,
            challenger: None,
        }
    }

    /// The smoothed probabilities so far.
    pub fn average(&self) -> &[f32] {
        &self.average
    }

    /// The announced label.
    pub fn current(&self) -> Option<usize> {
        self.current
    }

    /// Add one frame's probabilities; returns the change it causes, if any.
    pub fn update(&mut self, probs: &[f32]) -> Option<LabelChange> {
        if self.average.len() != probs.len() {
            self.average = probs.to_vec();
        } else {
            let alpha = 2.0 / (self.config.frames.max(1) as f32 + 1.0);
            for (a, &p) in self.average.iter_mut().zip(probs) {
                *a += alpha * (p - *a);
            }
        }
        let (best, best_prob) =
            self.average
                .iter()
                .copied()
                .enumerate()
                .fold(
                    (0, f32::NEG_INFINITY),
                    |b, (i, p)| if p > b.1 { (i, p) } else { b },
                );
        let wanted = (best_prob >= self.config.threshold).then_some(best);
        if wanted == self.current {
            self.challenger = None;
            return None;
        }
        let streak = match self.challenger {
            Some((label, n)) if label == wanted => n + 1,
            _ => 1,
        };
        self.challenger = Some((wanted, streak));
        if streak < self.config.hold.max(1) {
            return None;
        }
        let change = LabelChange {
            from: self.current,
            to: wanted,
            prob: match wanted {
                Some(l) => self.average[l],
                None => self.current.map_or(0.0, |c| self.average[c]),
            },
        };
        self.current = wanted;
        self.challenger = None;
        Some(change)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(frames: usize, hold: usize) -> SmoothingConfig {
        SmoothingConfig {
            frames,
            threshold: 0.5,
            hold,
        }
    }

    #[test]
    fn a_steady_label_is_announced_once_after_the_hold() {
        let mut s = Smoother::new(config(1, 3));
        let changes: Vec<_> = (0..6).filter_map(|_| s.update(&[0.9, 0.1])).collect();
        assert_eq!(
            changes,
            [LabelChange {
                from: None,
                to: Some(0),
                prob: 0.9
            }]
        );
    }

    #[test]
    fn single_frame_flicker_is_not_an_event() {
        let mut s = Smoother::new(config(1, 2));
        let frames = [
            [0.9, 0.1],
            [0.9, 0.1],
            [0.1, 0.9],
            [0.9, 0.1],
            [0.1, 0.9],
            [0.9, 0.1],
        ];
        let changes: Vec<_> = frames.iter().filter_map(|p| s.update(p)).collect();
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(s.current(), Some(0));
    }

    #[test]
    fn the_average_follows_an_ema_and_a_real_change_goes_through() {
        let mut s = Smoother::new(config(3, 1));
        s.update(&[1.0, 0.0]);
        s.update(&[0.0, 1.0]);
        // alpha = 2 / (3 + 1) = 0.5
        assert_eq!(s.average(), [0.5, 0.5]);
        let change = (0..5).find_map(|_| s.update(&[0.0, 1.0])).expect("changes");
        assert_eq!((change.from, change.to), (Some(0), Some(1)));
        // Nothing confident any more: announced as no label.
        let mut s = Smoother::new(config(1, 1));
        s.update(&[0.9, 0.1]);
        let change = s.update(&[0.4, 0.3]).expect("drops");
        assert_eq!(change.to, None);
    }
}
