//! The preview stream's pictures: the frame with a bar across the top saying the announced
//! label and the frame's own top-1, as JPEG. An 8x8 bitmap font keeps it free of font
//! files, which a flashed board may not have.

use font8x8::UnicodeFonts;

use crate::preprocess::RgbImage;
use crate::serve::hub::PreviewFrame;

/// Text scale (8 px glyphs drawn this many times larger).
const SCALE: u32 = 2;

/// The frame with its label drawn on, as JPEG.
pub fn render_jpeg(frame: &PreviewFrame, quality: i32) -> Result<Vec<u8>, String> {
    let mut image = RgbImage {
        width: frame.image.width,
        height: frame.image.height,
        pixels: frame.image.pixels.clone(),
    };
    let label = frame.label.as_deref().unwrap_or("-");
    let text = match &frame.top1 {
        Some((top, p)) => format!("{label}  (frame {}: {top} {:.0}%)", frame.seq, p * 100.0),
        None => label.to_string(),
    };
    let bar = 8 * SCALE + 8;
    // An announced label gets a green bar, none a grey one.
    let colour = if frame.label.is_some() {
        [0, 110, 40]
    } else {
        [60, 60, 60]
    };
    let (width, height) = (image.width, image.height);
    fill(&mut image, 0, 0, width, bar.min(height), colour);
    draw_text(&mut image, 4, 4, &text, [255, 255, 255]);
    encode_jpeg(&image, quality)
}

/// Encode RGB as JPEG with libjpeg-turbo.
pub fn encode_jpeg(image: &RgbImage, quality: i32) -> Result<Vec<u8>, String> {
    let view = turbojpeg::Image {
        pixels: image.pixels.as_slice(),
        width: image.width as usize,
        pitch: image.width as usize * 3,
        height: image.height as usize,
        format: turbojpeg::PixelFormat::RGB,
    };
    turbojpeg::compress(view, quality, turbojpeg::Subsamp::Sub2x2)
        .map(|buf| buf.to_vec())
        .map_err(|e| e.to_string())
}

fn fill(image: &mut RgbImage, x0: u32, y0: u32, w: u32, h: u32, colour: [u8; 3]) {
    for y in y0..(y0 + h).min(image.height) {
        for x in x0..(x0 + w).min(image.width) {
            let i = ((y * image.width + x) * 3) as usize;
            image.pixels[i..i + 3].copy_from_slice(&colour);
        }
    }
}

/// Draw ASCII text; characters the font lacks become `?`; text past the edge is cut.
fn draw_text(image: &mut RgbImage, x: u32, y: u32, text: &str, colour: [u8; 3]) {
    let mut pen = x;
    for c in text.chars() {
        let glyph = font8x8::BASIC_FONTS
            .get(c)
            .or_else(|| font8x8::BASIC_FONTS.get('?'))
            .unwrap_or([0; 8]);
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                if bits & (1 << col) != 0 {
                    fill(
                        image,
                        pen + col * SCALE,
                        y + row as u32 * SCALE,
                        SCALE,
                        SCALE,
                        colour,
                    );
                }
            }
        }
        pen += 8 * SCALE;
        if pen >= image.width {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_label_is_drawn_and_the_jpeg_decodes() {
        let frame = PreviewFrame {
            image: RgbImage {
                width: 160,
                height: 120,
                pixels: vec![0; 160 * 120 * 3],
            },
            label: Some("goldfish".into()),
            top1: Some(("goldfish".into(), 0.9)),
            seq: 7,
        };
        let jpeg = render_jpeg(&frame, 90).expect("jpeg");
        let decoded = image::load_from_memory(&jpeg).expect("decodes").to_rgb8();
        assert_eq!(decoded.dimensions(), (160, 120));
        // The bar is green, the text white, the rest of the frame black.
        let bright = (0..160)
            .flat_map(|x| (4..20).map(move |y| (x, y)))
            .filter(|&(x, y)| decoded.get_pixel(x, y).0.iter().all(|&c| c > 200))
            .count();
        assert!(bright > 50, "text pixels: {bright}");
        assert!(decoded.get_pixel(150, 22).0[1] > 80);
        assert!(decoded.get_pixel(80, 100).0.iter().all(|&c| c < 30));
    }
}
