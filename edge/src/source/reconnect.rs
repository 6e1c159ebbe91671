//! Keeping a source alive: reopen after failures with exponential backoff, loop files,
//! and give up only on configuration errors (or a file's end without `--loop`).

use std::time::{Duration, Instant};

use super::{Frame, FrameSource, SourceError, SourceErrorKind, SourceUri};

/// Exponential backoff between reopen attempts.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    /// Start at `initial`, double up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            current: initial,
        }
    }

    /// The next wait; each call doubles the one after, up to the maximum.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.current;
        self.current = (self.current * 2).min(self.max);
        delay
    }

    /// Back to the initial wait (after a source delivered frames again).
    pub fn reset(&mut self) {
        self.current = self.initial;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(Duration::from_millis(250), Duration::from_secs(10))
    }
}

/// How a source is opened (GStreamer in the service; anything in tests).
pub type Opener = Box<dyn FnMut(&SourceUri) -> Result<Box<dyn FrameSource>, SourceError> + Send>;

/// A source that reopens itself.
pub struct Reconnecting {
    uri: SourceUri,
    text: String,
    open: Opener,
    source: Option<Box<dyn FrameSource>>,
    backoff: Backoff,
    loop_files: bool,
    retry_at: Option<Instant>,
    reconnects: u64,
    sequence_base: u64,
    last_sequence: u64,
}

impl Reconnecting {
    /// Keep `uri` open with `open`; `loop_files` restarts a file at its end.
    pub fn new(uri: SourceUri, open: Opener, backoff: Backoff, loop_files: bool) -> Self {
        Reconnecting {
            text: uri.to_string(),
            uri,
            open,
            source: None,
            backoff,
            loop_files,
            retry_at: None,
            reconnects: 0,
            sequence_base: 0,
            last_sequence: 0,
        }
    }

    /// Try again after `delay`.
    fn retry_after(&mut self, error: &SourceError, delay: Duration) {
        tracing::warn!("{error}; reopening in {:.1}s", delay.as_secs_f64());
        self.retry_at = Some(Instant::now() + delay);
    }

    /// A running source failed or ended: drop it and reopen after `delay`, numbering the
    /// next source's frames after this one's.
    fn lost(&mut self, error: &SourceError, delay: Duration) {
        self.source = None;
        self.reconnects += 1;
        self.sequence_base = self.last_sequence + 1;
        self.retry_after(error, delay);
    }
}

impl FrameSource for Reconnecting {
    fn next_frame(&mut self, timeout: Duration) -> Result<Option<Frame>, SourceError> {
        if self.source.is_none() {
            if let Some(at) = self.retry_at {
                let now = Instant::now();
                if now < at {
                    std::thread::sleep((at - now).min(timeout));
                    return Ok(None);
                }
            }
            match (self.open)(&self.uri) {
                Ok(source) => {
                    tracing::info!("source {} open", self.text);
                    self.source = Some(source);
                    self.retry_at = None;
                }
                Err(e) if e.kind() == SourceErrorKind::Config => return Err(e),
                Err(e) => {
                    let delay = self.backoff.next_delay();
                    self.retry_after(&e, delay);
                    return Ok(None);
                }
            }
        }
        let source = self.source.as_mut().expect("opened above");
        match source.next_frame(timeout) {
            Ok(Some(mut frame)) => {
                self.backoff.reset();
                frame.sequence += self.sequence_base;
                self.last_sequence = frame.sequence;
                Ok(Some(frame))
            }
            Ok(None) => Ok(None),
            Err(e) => match e.kind() {
                SourceErrorKind::Config => Err(e),
                SourceErrorKind::Ended if !(self.uri.is_finite() && self.loop_files) => {
                    if self.uri.is_finite() {
                        Err(e)
                    } else {
                        // A live stream that ends (server restart): reopen.
                        let delay = self.backoff.next_delay();
                        self.lost(&e, delay);
                        Ok(None)
                    }
                }
                SourceErrorKind::Ended => {
                    self.lost(&e, Duration::ZERO);
                    Ok(None)
                }
                _ => {
                    let delay = self.backoff.next_delay();
                    self.lost(&e, delay);
                    Ok(None)
                }
            },
        }
    }

    fn uri(&self) -> &str {
        &self.text
    }

    fn reconnects(&self) -> u64 {
        self.reconnects
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preprocess::RgbImage;
    use std::sync::{Arc, Mutex};

    /// A scripted source: yields `frames` frames, then fails with `then`.
    struct Scripted {
        frames: u64,
        given: u64,
        then: fn() -> SourceError,
    }

    impl FrameSource for Scripted {
        fn next_frame(&mut self, _: Duration) -> Result<Option<Frame>, SourceError> {
            if self.given == self.frames {
                return Err((self.then)());
            }
            self.given += 1;
            Ok(Some(Frame {
                image: RgbImage {
                    width: 1,
                    height: 1,
                    pixels: vec![0; 3],
                },
                captured: Instant::now(),
                sequence: self.given - 1,
                dropped: 0,
            }))
        }
        fn uri(&self) -> &str {
            "scripted"
        }
    }

    fn failed() -> SourceError {
        SourceError::Failed {
            uri: "x".into(),
            message: "unplugged".into(),
        }
    }

    fn ended() -> SourceError {
        SourceError::Ended { uri: "x".into() }
    }

    #[test]
    fn backoff_doubles_up_to_its_maximum_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let waits: Vec<u128> = (0..4).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(waits, [100, 200, 350, 350]);
        b.reset();
        assert_eq!(b.next_delay().as_millis(), 100);
    }

    #[test]
    fn a_failing_source_is_reopened_and_sequence_numbers_keep_rising() {
        let opens = Arc::new(Mutex::new(0));
        let counter = opens.clone();
        let mut source = Reconnecting::new(
            "test://ball".parse().expect("uri"),
            Box::new(move |_| {
                *counter.lock().expect("lock") += 1;
                Ok(Box::new(Scripted {
                    frames: 2,
                    given: 0,
                    then: failed,
                }))
            }),
            Backoff::new(Duration::from_millis(1), Duration::from_millis(4)),
            false,
        );
        let mut sequences = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while sequences.len() < 6 && Instant::now() < deadline {
            if let Some(f) = source
                .next_frame(Duration::from_millis(10))
                .expect("never gives up")
            {
                sequences.push(f.sequence);
            }
        }
        assert_eq!(sequences, [0, 1, 2, 3, 4, 5]);
        assert_eq!(*opens.lock().expect("lock"), 3);
        assert_eq!(source.reconnects(), 2);
    }

    #[test]
    fn a_file_ends_unless_looped_and_config_errors_are_final() {
        let file = || -> Opener {
            Box::new(|_| {
                Ok(Box::new(Scripted {
                    frames: 1,
                    given: 0,
                    then: ended,
                }))
            })
        };
        let uri: SourceUri = "file:///v.avi".parse().expect("uri");
        let mut once = Reconnecting::new(uri.clone(), file(), Backoff::default(), false);
        assert!(once.next_frame(Duration::ZERO).expect("frame").is_some());
        let err = once.next_frame(Duration::ZERO).expect_err("ended");
        assert_eq!(err.kind(), SourceErrorKind::Ended);

        let mut looped = Reconnecting::new(uri, file(), Backoff::default(), true);
        let frames = (0..6)
            .filter_map(|_| looped.next_frame(Duration::ZERO).expect("loops"))
            .count();
        assert_eq!(frames, 3);

        let mut bad = Reconnecting::new(
            "test://ball".parse().expect("uri"),
            Box::new(|u| Err(SourceError::NotCompiled { uri: u.to_string() })),
            Backoff::default(),
            false,
        );
        assert_eq!(
            bad.next_frame(Duration::ZERO).expect_err("config").kind(),
            SourceErrorKind::Config
        );
    }
}
