//! Test videos encoded with GStreamer from the sample photos.

use std::path::{Path, PathBuf};

use gstreamer as gst;
use gstreamer::prelude::*;

use super::photo;

/// Encode `frames` (photo name, copies) as an MJPEG AVI at 10 fps, 320x240.
pub fn encode_video(dir: &Path, frames: &[(&str, usize)]) -> PathBuf {
    let mut index = 0;
    for (name, copies) in frames {
        let image = image::open(photo(name)).expect("photo").to_rgb8();
        let small =
            image::imageops::resize(&image, 320, 240, image::imageops::FilterType::Triangle);
        for _ in 0..*copies {
            small
                .save(dir.join(format!("frame{index:03}.jpg")))
                .expect("write frame");
            index += 1;
        }
    }
    let video = dir.join("photos.avi");
    gst::init().expect("GStreamer");
    let pipeline = gst::parse::launch(&format!(
        "multifilesrc location=\"{}/frame%03d.jpg\" index=0 stop-index={} \
         caps=\"image/jpeg,framerate=10/1\" ! jpegdec ! videoconvert ! jpegenc ! avimux ! \
         filesink location=\"{}\"",
        dir.display(),
        index - 1,
        video.display()
    ))
    .expect("encoding pipeline");
    pipeline.set_state(gst::State::Playing).expect("play");
    let bus = pipeline.bus().expect("bus");
    let message = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(60),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .expect("the encoder finishes");
    assert!(
        matches!(message.view(), gst::MessageView::Eos(_)),
        "{message:?}"
    );
    pipeline.set_state(gst::State::Null).expect("stop");
    video
}
