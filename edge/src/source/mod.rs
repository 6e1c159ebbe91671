//! Camera and video frame sources, named by URI, behind one trait. Every source delivers
//! the **latest** frame only: a model slower than the camera never builds a queue, it
//! skips frames (and counts them). Sources that end or fail are reopened with exponential
//! backoff by [`Reconnecting`]; files can loop.
//!
//! Files are the exception: they are read at the model's pace, every frame classified.
//!
//! URIs: `csi://N` (Jetson CSI camera via `nvarguscamerasrc`), `v4l2:///dev/videoN`,
//! `file://PATH` (a video file, decoded by `decodebin`), `rtsp://…` (zero latency),
//! `test://PATTERN` (`videotestsrc`, e.g. `test://ball`), `gst://PIPELINE` (any GStreamer
//! pipeline producing video; scion appends the conversion to RGB and its sink).

mod folder;
mod gst;
mod reconnect;

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

pub use folder::ImageFolderSource;
pub use gst::GstSource;
pub use reconnect::{Backoff, Reconnecting};

use crate::preprocess::RgbImage;

/// One captured frame.
#[derive(Debug, Clone)]
pub struct Frame {
    /// The picture, RGB.
    pub image: RgbImage,
    /// When scion received it (the start of the frame's latency).
    pub captured: Instant,
    /// Frames the source delivered before this one, counting those dropped.
    pub sequence: u64,
    /// Frames dropped since the previous one returned, because a newer one arrived.
    pub dropped: u64,
}

/// Why a source gives no frame.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The URI is not one scion knows.
    #[error("source '{uri}': {message}")]
    Uri {
        /// The URI as given.
        uri: String,
        /// What is wrong, with the accepted forms.
        message: String,
    },
    /// The source could not be opened (no camera, no file, pipeline refused).
    #[error("source '{uri}': cannot open: {message}")]
    Open {
        /// The URI.
        uri: String,
        /// The cause, as GStreamer reports it.
        message: String,
    },
    /// The source failed while running (camera unplugged, stream broken).
    #[error("source '{uri}': {message}")]
    Failed {
        /// The URI.
        uri: String,
        /// The cause.
        message: String,
    },
    /// The source ended (end of a file, a stream closed by the server).
    #[error("source '{uri}': ended")]
    Ended {
        /// The URI.
        uri: String,
    },
    /// Built without GStreamer.
    #[error("source '{uri}': scion-edge was not compiled with GStreamer (feature `gstreamer`)")]
    NotCompiled {
        /// The URI.
        uri: String,
    },
}

impl SourceError {
    /// What kind of failure this is, for generic code (retry or give up).
    pub fn kind(&self) -> SourceErrorKind {
        match self {
            SourceError::Uri { .. } | SourceError::NotCompiled { .. } => SourceErrorKind::Config,
            SourceError::Open { .. } => SourceErrorKind::Unavailable,
            SourceError::Failed { .. } => SourceErrorKind::Failed,
            SourceError::Ended { .. } => SourceErrorKind::Ended,
        }
    }
}

/// The kind of a [`SourceError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceErrorKind {
    /// The configuration is wrong: retrying cannot help.
    Config,
    /// Not there now (no device, no server): retry later.
    Unavailable,
    /// Broke while running: reopen.
    Failed,
    /// Ran out of frames: reopen to loop, or stop.
    Ended,
}

/// Something that yields frames.
pub trait FrameSource: Send {
    /// The latest frame, waiting up to `timeout`; `Ok(None)` when none came in time.
    fn next_frame(&mut self, timeout: Duration) -> Result<Option<Frame>, SourceError>;
    /// The URI it reads, for logs and metrics.
    fn uri(&self) -> &str;
    /// Times the source was reopened after an error or an end (see [`Reconnecting`]).
    fn reconnects(&self) -> u64 {
        0
    }
}

/// A parsed source URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceUri {
    /// `csi://N`: Jetson CSI camera sensor N.
    Csi(u32),
    /// `v4l2:///dev/videoN`: a V4L2 device.
    V4l2(String),
    /// `file://PATH`: a video file, or a folder or glob of still images.
    File(String),
    /// `rtsp://…`: an RTSP stream (the whole URI).
    Rtsp(String),
    /// `test://PATTERN`: GStreamer's test source.
    Test(String),
    /// `gst://PIPELINE`: a pipeline description producing video.
    Gst(String),
}

const FORMS: &str = "use csi://N, v4l2:///dev/videoN, file://PATH, rtsp://HOST/PATH, \
                     test://PATTERN or gst://PIPELINE";

impl FromStr for SourceUri {
    type Err = SourceError;

    fn from_str(uri: &str) -> Result<Self, SourceError> {
        let bad = |message: String| SourceError::Uri {
            uri: uri.to_string(),
            message,
        };
        let (scheme, rest) = uri
            .split_once("://")
            .ok_or_else(|| bad(format!("no scheme; {FORMS}")))?;
        let nonempty = |what: &str| {
            if rest.is_empty() {
                Err(bad(format!("{scheme}:// needs {what}")))
            } else {
                Ok(rest.to_string())
            }
        };
        match scheme {
            "csi" => rest
                .parse()
                .map(SourceUri::Csi)
                .map_err(|_| bad("csi:// needs a sensor number, e.g. csi://0".into())),
            "v4l2" => nonempty("a device path, e.g. v4l2:///dev/video0").map(SourceUri::V4l2),
            "file" => nonempty("a path").map(SourceUri::File),
            "rtsp" | "rtsps" => nonempty("a host").map(|_| SourceUri::Rtsp(uri.to_string())),
            "test" => {
                let pattern = if rest.is_empty() { "smpte" } else { rest };
                if pattern
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                {
                    Ok(SourceUri::Test(pattern.to_string()))
                } else {
                    Err(bad(format!(
                        "'{pattern}' is not a videotestsrc pattern name"
                    )))
                }
            }
            "gst" => nonempty("a pipeline").map(SourceUri::Gst),
            other => Err(bad(format!("unknown scheme '{other}'; {FORMS}"))),
        }
    }
}

impl SourceUri {
    /// Whether the source has an end (a file), so `--loop` applies.
    pub fn is_finite(&self) -> bool {
        matches!(self, SourceUri::File(_))
    }

    /// The GStreamer pipeline that produces this source's video, before scion's RGB
    /// conversion and sink. Strings are quoted for `gst_parse_launch`.
    pub fn pipeline(&self) -> String {
        match self {
            SourceUri::Csi(n) => {
                format!("nvarguscamerasrc sensor-id={n} ! video/x-raw(memory:NVMM) ! nvvidconv")
            }
            SourceUri::V4l2(device) => format!("v4l2src device={} ! decodebin", quote(device)),
            SourceUri::File(path) => format!("filesrc location={} ! decodebin", quote(path)),
            SourceUri::Rtsp(uri) => format!(
                "rtspsrc location={} latency=0 drop-on-latency=true ! decodebin",
                quote(uri)
            ),
            SourceUri::Test(pattern) => {
                format!("videotestsrc pattern={pattern} is-live=true ! video/x-raw,framerate=30/1")
            }
            SourceUri::Gst(pipeline) => pipeline.clone(),
        }
    }
}

/// The tail every pipeline gets: convert to packed RGB into an appsink holding one frame.
/// A live source keeps only the newest frame (older ones are dropped and counted); a file
/// waits for the model instead, so every frame of a recording is classified.
pub fn sink(live: bool) -> String {
    format!(
        "videoconvert ! video/x-raw,format=RGB ! appsink name=scion_sink max-buffers=1 drop={live} sync=false"
    )
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

impl fmt::Display for SourceUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceUri::Csi(n) => write!(f, "csi://{n}"),
            SourceUri::V4l2(d) => write!(f, "v4l2://{d}"),
            SourceUri::File(p) => write!(f, "file://{p}"),
            SourceUri::Rtsp(u) => f.write_str(u),
            SourceUri::Test(p) => write!(f, "test://{p}"),
            SourceUri::Gst(p) => write!(f, "gst://{p}"),
        }
    }
}

/// Open `uri` as a latest-frame source.
pub fn open(uri: &SourceUri) -> Result<Box<dyn FrameSource>, SourceError> {
    if let SourceUri::File(path) = uri
        && folder::is_image_collection(path)
    {
        return Ok(Box::new(ImageFolderSource::open(path)?));
    }
    Ok(Box::new(GstSource::open(uri)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_parse_into_pipelines() {
        let cases = [
            (
                "csi://0",
                "nvarguscamerasrc sensor-id=0 ! video/x-raw(memory:NVMM) ! nvvidconv",
            ),
            (
                "v4l2:///dev/video2",
                "v4l2src device=\"/dev/video2\" ! decodebin",
            ),
            (
                "file:///tmp/a b.avi",
                "filesrc location=\"/tmp/a b.avi\" ! decodebin",
            ),
            (
                "rtsp://cam.local/live",
                "rtspsrc location=\"rtsp://cam.local/live\" latency=0 drop-on-latency=true ! decodebin",
            ),
            (
                "test://ball",
                "videotestsrc pattern=ball is-live=true ! video/x-raw,framerate=30/1",
            ),
            (
                "gst://videotestsrc num-buffers=3",
                "videotestsrc num-buffers=3",
            ),
        ];
        for (uri, pipeline) in cases {
            let parsed: SourceUri = uri.parse().expect(uri);
            assert_eq!(parsed.pipeline(), pipeline, "{uri}");
            assert_eq!(parsed.to_string(), uri);
        }
        assert!(
            "file:///x.mp4"
                .parse::<SourceUri>()
                .expect("file")
                .is_finite()
        );
        assert!(
            !"test://ball"
                .parse::<SourceUri>()
                .expect("test")
                .is_finite()
        );
    }

    #[test]
    fn bad_uris_say_what_is_accepted() {
        for (uri, needle) in [
            ("/dev/video0", "no scheme"),
            ("http://x", "unknown scheme 'http'"),
            ("csi://left", "sensor number"),
            ("file://", "needs a path"),
            ("test://ball ! fakesink", "not a videotestsrc pattern"),
        ] {
            let err = uri.parse::<SourceUri>().expect_err(uri);
            assert!(err.to_string().contains(needle), "{uri}: {err}");
            assert_eq!(err.kind(), SourceErrorKind::Config);
        }
    }
}
