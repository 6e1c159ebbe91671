//! The GStreamer implementation of [`FrameSource`]: `URI pipeline ! videoconvert !
//! video/x-raw,format=RGB ! appsink max-buffers=1 drop=…` (see [`super::sink`]). A pad
//! probe numbers every frame that reaches the sink, so dropped frames are counted, not
//! guessed.

#[cfg(feature = "gstreamer")]
mod imp {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{Duration, Instant};

    use gstreamer as gst;
    use gstreamer::prelude::*;
    use gstreamer_app::AppSink;
    use gstreamer_video::VideoInfo;

    use crate::preprocess::RgbImage;
    use crate::source::{Frame, FrameSource, SourceError, SourceUri, sink};

    /// A running GStreamer pipeline ending in an RGB appsink.
    pub struct GstSource {
        uri: String,
        pipeline: gst::Pipeline,
        sink: AppSink,
        last_sequence: Option<u64>,
    }

    impl GstSource {
        /// Build and start the pipeline of `uri`; errors the pipeline reports while
        /// starting (no such device, file, codec) are returned here.
        pub fn open(uri: &SourceUri) -> Result<GstSource, SourceError> {
            let text = uri.to_string();
            let open_err = |message: String| SourceError::Open {
                uri: text.clone(),
                message,
            };
            if let SourceUri::File(path) = uri
                && !std::path::Path::new(path).is_file()
            {
                return Err(SourceError::Uri {
                    uri: text.clone(),
                    message: "no such file".into(),
                });
            }
            gst::init().map_err(|e| open_err(format!("GStreamer: {e}")))?;
            let description = format!("{} ! {}", uri.pipeline(), sink(!uri.is_finite()));
            let element = gst::parse::launch(&description).map_err(|e| {
                if matches!(uri, SourceUri::Gst(_) | SourceUri::Test(_)) {
                    SourceError::Uri {
                        uri: text.clone(),
                        message: format!("not a valid pipeline: {e}"),
                    }
                } else {
                    open_err(e.to_string())
                }
            })?;
            let pipeline = element
                .downcast::<gst::Pipeline>()
                .map_err(|_| open_err("not a pipeline".into()))?;
            let sink = pipeline
                .by_name("scion_sink")
                .and_then(|e| e.downcast::<AppSink>().ok())
                .ok_or_else(|| open_err("the RGB sink is missing".into()))?;
            let counter = Arc::new(AtomicU64::new(0));
            if let Some(pad) = sink.static_pad("sink") {
                // Number every frame as it reaches the sink, in the buffer's offset field
                // (free at the end of the pipeline): gaps in the numbers are the drops.
                pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    if let Some(gst::PadProbeData::Buffer(buffer)) = &mut info.data {
                        buffer.make_mut().set_offset(n);
                    }
                    gst::PadProbeReturn::Ok
                });
            }
            let source = GstSource {
                uri: text.clone(),
                pipeline,
                sink,
                last_sequence: None,
            };
            if let Err(e) = source.pipeline.set_state(gst::State::Playing) {
                let detail = source.bus_error().unwrap_or_else(|| e.to_string());
                return Err(open_err(detail));
            }
            // Wait until it runs (or says why not); live sources do not preroll.
            let (result, _, _) = source.pipeline.state(gst::ClockTime::from_seconds(10));
            if let Some(message) = source.bus_error() {
                return Err(open_err(message));
            }
            result.map_err(|e| open_err(e.to_string()))?;
            Ok(source)
        }

        /// The first error on the bus, if any.
        fn bus_error(&self) -> Option<String> {
            let bus = self.pipeline.bus()?;
            while let Some(message) = bus.pop_filtered(&[gst::MessageType::Error]) {
                if let gst::MessageView::Error(e) = message.view() {
                    let origin = e.src().map(|s| s.name().to_string()).unwrap_or_default();
                    return Some(format!("{origin}: {}", e.error()));
                }
            }
            None
        }

        fn frame_of(&mut self, sample: &gst::Sample) -> Result<Frame, SourceError> {
            let failed = |message: String| SourceError::Failed {
                uri: self.uri.clone(),
                message,
            };
            let caps = sample
                .caps()
                .ok_or_else(|| failed("a frame without caps".into()))?;
            let info = VideoInfo::from_caps(caps).map_err(|e| failed(e.to_string()))?;
            let buffer = sample
                .buffer()
                .ok_or_else(|| failed("a frame without data".into()))?;
            let map = buffer.map_readable().map_err(|e| failed(e.to_string()))?;
            let (width, height) = (info.width(), info.height());
            let stride = info.stride()[0] as usize;
            let row = 3 * width as usize;
            let mut pixels = Vec::with_capacity(row * height as usize);
            for y in 0..height as usize {
                let start = y * stride;
                let line = map
                    .get(start..start + row)
                    .ok_or_else(|| failed("a frame shorter than its caps say".into()))?;
                pixels.extend_from_slice(line);
            }
            let sequence = buffer.offset();
            let dropped = match self.last_sequence {
                Some(last) => sequence.saturating_sub(last + 1),
                None => sequence,
            };
            self.last_sequence = Some(sequence);
            Ok(Frame {
                image: RgbImage {
                    width,
                    height,
                    pixels,
                },
                captured: Instant::now(),
                sequence,
                dropped,
            })
        }
    }

    impl FrameSource for GstSource {
        fn next_frame(&mut self, timeout: Duration) -> Result<Option<Frame>, SourceError> {
            if let Some(message) = self.bus_error() {
                return Err(SourceError::Failed {
                    uri: self.uri.clone(),
                    message,
                });
            }
            let wait = gst::ClockTime::from_nseconds(timeout.as_nanos() as u64);
            match self.sink.try_pull_sample(wait) {
                Some(sample) => self.frame_of(&sample).map(Some),
                None if self.sink.is_eos() => Err(SourceError::Ended {
                    uri: self.uri.clone(),
                }),
                None => Ok(None),
            }
        }

        fn uri(&self) -> &str {
            &self.uri
        }
    }

    impl Drop for GstSource {
        fn drop(&mut self) {
            let _ = self.pipeline.set_state(gst::State::Null);
        }
    }
}

#[cfg(not(feature = "gstreamer"))]
mod imp {
    use std::time::Duration;

    use crate::source::{Frame, FrameSource, SourceError, SourceUri};

    /// Without GStreamer every source fails with "not compiled with GStreamer".
    pub struct GstSource {
        uri: String,
    }

    impl GstSource {
        /// Always the "not compiled" error.
        pub fn open(uri: &SourceUri) -> Result<GstSource, SourceError> {
            Err(SourceError::NotCompiled {
                uri: uri.to_string(),
            })
        }
    }

    impl FrameSource for GstSource {
        fn next_frame(&mut self, _: Duration) -> Result<Option<Frame>, SourceError> {
            Err(SourceError::NotCompiled {
                uri: self.uri.clone(),
            })
        }
        fn uri(&self) -> &str {
            &self.uri
        }
    }
}

pub use imp::GstSource;
