//! Test videos encoded with GStreamer from the sample photos.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

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

/// Serve MJPEG over TCP as `multipartdemux` reads it: `connections` times, `frames` each,
/// closing the connection after each batch (a camera that goes away and comes back).
pub fn mjpeg_server(frames: usize, connections: usize) -> (u16, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let image = image::open(photo("gold_fish.jpg"))
        .expect("photo")
        .to_rgb8();
    let small = image::imageops::resize(&image, 320, 240, image::imageops::FilterType::Triangle);
    let mut jpeg = Vec::new();
    small
        .write_to(
            &mut std::io::Cursor::new(&mut jpeg),
            image::ImageFormat::Jpeg,
        )
        .expect("encode");
    let handle = std::thread::spawn(move || {
        for _ in 0..connections {
            let Ok((mut stream, _)) = listener.accept() else {
                return;
            };
            for _ in 0..frames {
                let header = format!(
                    "--ThisRandomString\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
                    jpeg.len()
                );
                let sent = stream
                    .write_all(header.as_bytes())
                    .and_then(|_| stream.write_all(&jpeg))
                    .and_then(|_| stream.write_all(b"\r\n"));
                if sent.is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            // The camera goes away.
            drop(stream);
        }
    });
    (port, handle)
}
