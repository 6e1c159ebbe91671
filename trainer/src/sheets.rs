//! Pictures made of pictures: contact sheets (rows of thumbnails with captions, for
//! neighbours, top-activating images and audit findings), filter and heat-map grids, and
//! the 2-D scatter of a projection. Thumbnails are pasted into an RGB buffer; plotters
//! draws the text on that same buffer with the training plots' font.

use std::path::Path;

use image::{Rgb, RgbImage, imageops::FilterType};
use plotters::prelude::*;

use crate::plots::{PlotError, ensure_font, plot_err, render_png};

/// A coloured frame around a cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// Agrees (e.g. same label as the query).
    Good,
    /// Disagrees.
    Bad,
    /// The reference of its row (the query, the suspect image).
    Reference,
}

/// One picture with a caption.
#[derive(Debug, Clone)]
pub struct Cell {
    /// The picture (scaled to fit the cell).
    pub image: RgbImage,
    /// Up to two short lines under it.
    pub caption: String,
    /// Optional frame.
    pub mark: Option<Mark>,
}

/// A titled row of cells.
#[derive(Debug, Clone)]
pub struct Row {
    /// Text above the row.
    pub title: String,
    /// The pictures.
    pub cells: Vec<Cell>,
}

const MARGIN: u32 = 10;
const GAP: u32 = 8;
const TITLE: u32 = 22;
const CAPTION: u32 = 34;

/// Draw `rows` of `cell`-pixel pictures under `heading`; returns the PNG's size.
pub fn sheet(heading: &str, rows: &[Row], cell: u32, path: &Path) -> Result<(u32, u32), PlotError> {
    ensure_font()?;
    let err = plot_err(path);
    let columns = rows.iter().map(|r| r.cells.len()).max().unwrap_or(1).max(1) as u32;
    let width = (2 * MARGIN + columns * (cell + GAP)).max(420);
    let row_height = TITLE + cell + CAPTION + GAP;
    let height = 2 * MARGIN + TITLE + rows.len().max(1) as u32 * row_height;
    let mut canvas = RgbImage::from_pixel(width, height, Rgb([255, 255, 255]));
    let mut texts: Vec<(String, (i32, i32), u32)> = vec![(heading.into(), (MARGIN as i32, 6), 17)];
    for (r, row) in rows.iter().enumerate() {
        let top = MARGIN + TITLE + r as u32 * row_height;
        texts.push((row.title.clone(), (MARGIN as i32, top as i32 + 2), 14));
        for (c, item) in row.cells.iter().enumerate() {
            let left = MARGIN + c as u32 * (cell + GAP);
            let y = top + TITLE;
            paste_fitted(&mut canvas, &item.image, left, y, cell);
            if let Some(mark) = item.mark {
                frame(&mut canvas, left, y, cell, mark);
            }
            for (l, line) in item.caption.lines().take(2).enumerate() {
                texts.push((
                    fit_text(line, cell),
                    (left as i32, (y + cell + 3 + 15 * l as u32) as i32),
                    12,
                ));
            }
        }
    }
    draw_texts(&mut canvas, &texts).map_err(&err)?;
    canvas.save(path).map_err(|e| err(e.to_string()))?;
    Ok((width, height))
}

/// A picture of an image file scaled to fit `size`, or a grey square with a cross when
/// it cannot be read (a sheet is never lost to one bad file).
pub fn thumbnail(path: &Path, size: u32) -> RgbImage {
    match image::ImageReader::open(path)
        .and_then(|r| r.with_guessed_format())
        .map_err(|e| e.to_string())
        .and_then(|r| r.decode().map_err(|e| e.to_string()))
    {
        Ok(img) => img.thumbnail(size, size).to_rgb8(),
        Err(e) => {
            tracing::warn!("{}: no thumbnail: {e}", path.display());
            let mut img = RgbImage::from_pixel(size, size, Rgb([200, 200, 200]));
            for i in 0..size {
                img.put_pixel(i, i, Rgb([120, 0, 0]));
                img.put_pixel(size - 1 - i, i, Rgb([120, 0, 0]));
            }
            img
        }
    }
}

/// Values (`h x w`, row-major) as a heat map, scaled to the map's own range.
pub fn heatmap(values: &[f32], w: u32, h: u32) -> RgbImage {
    let (lo, hi) = values
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    let span = if hi > lo { hi - lo } else { 1.0 };
    RgbImage::from_fn(w, h, |x, y| {
        Rgb(colour_map((values[(y * w + x) as usize] - lo) / span))
    })
}

/// Viridis-like colour for `t` in [0, 1]: dark blue, through green, to yellow.
pub fn colour_map(t: f32) -> [u8; 3] {
    const STOPS: [[f32; 3]; 5] = [
        [68.0, 1.0, 84.0],
        [59.0, 82.0, 139.0],
        [33.0, 145.0, 140.0],
        [94.0, 201.0, 98.0],
        [253.0, 231.0, 37.0],
    ];
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    } * 4.0;
    let i = (t.floor() as usize).min(3);
    let f = t - i as f32;
    let mix = |c: usize| (STOPS[i][c] + f * (STOPS[i + 1][c] - STOPS[i][c])).round() as u8;
    [mix(0), mix(1), mix(2)]
}

/// A point cloud coloured by class, with a legend: the 2-D projection of features.
pub fn scatter(
    points: &[(f32, f32)],
    classes: &[Option<usize>],
    names: &[String],
    title: &str,
    path: &Path,
) -> Result<(), PlotError> {
    ensure_font()?;
    let err = plot_err(path);
    render_png(path, (900, 720), |root| {
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        let range = |pick: fn(&(f32, f32)) -> f32| {
            let (lo, hi) = points
                .iter()
                .map(pick)
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), v| {
                    (a.min(v), b.max(v))
                });
            let pad = ((hi - lo) * 0.05).max(1e-3);
            (lo - pad)..(hi + pad)
        };
        let (xs, ys) = if points.is_empty() {
            (0.0..1.0, 0.0..1.0)
        } else {
            (range(|p| p.0), range(|p| p.1))
        };
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(14)
            .x_label_area_size(36)
            .y_label_area_size(52)
            .build_cartesian_2d(xs, ys)
            .map_err(|e| err(e.to_string()))?;
        chart
            .configure_mesh()
            .x_desc("component 1")
            .y_desc("component 2")
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(|e| err(e.to_string()))?;
        let groups: Vec<Option<usize>> = (0..names.len()).map(Some).chain([None]).collect();
        for group in groups {
            let members: Vec<(f32, f32)> = points
                .iter()
                .zip(classes)
                .filter(|(_, c)| **c == group)
                .map(|(p, _)| *p)
                .collect();
            if members.is_empty() {
                continue;
            }
            let colour = group.map_or(BLACK.mix(0.5), |g| Palette99::pick(g).mix(0.8));
            let name = group.map_or("unlabelled".to_string(), |g| names[g].clone());
            chart
                .draw_series(
                    members
                        .iter()
                        .map(|&(x, y)| Circle::new((x, y), 3, colour.filled())),
                )
                .map_err(|e| err(e.to_string()))?
                .label(name)
                .legend(move |(x, y)| Circle::new((x + 6, y), 4, colour.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .border_style(BLACK)
            .background_style(WHITE.mix(0.85))
            .label_font(("sans-serif", 13))
            .draw()
            .map_err(|e| err(e.to_string()))?;
        Ok(())
    })
}

fn paste_fitted(canvas: &mut RgbImage, image: &RgbImage, left: u32, top: u32, cell: u32) {
    let (w, h) = image.dimensions();
    let scale = cell as f32 / w.max(h).max(1) as f32;
    let (tw, th) = (
        ((w as f32 * scale).round() as u32).clamp(1, cell),
        ((h as f32 * scale).round() as u32).clamp(1, cell),
    );
    // Small pictures (filters, 7x7 maps) are blown up with hard pixel edges.
    let filter = if scale >= 2.0 {
        FilterType::Nearest
    } else {
        FilterType::Triangle
    };
    let scaled = image::imageops::resize(image, tw, th, filter);
    let (x, y) = (left + (cell - tw) / 2, top + (cell - th) / 2);
    image::imageops::overlay(canvas, &scaled, i64::from(x), i64::from(y));
}

fn frame(canvas: &mut RgbImage, left: u32, top: u32, cell: u32, mark: Mark) {
    let colour = match mark {
        Mark::Good => Rgb([30, 160, 60]),
        Mark::Bad => Rgb([210, 40, 40]),
        Mark::Reference => Rgb([40, 90, 220]),
    };
    let (w, h) = (i64::from(canvas.width()), i64::from(canvas.height()));
    let mut put = |x: i64, y: i64| {
        if (0..w).contains(&x) && (0..h).contains(&y) {
            canvas.put_pixel(x as u32, y as u32, colour);
        }
    };
    let (left, top, cell) = (i64::from(left), i64::from(top), i64::from(cell));
    for t in 1..=3 {
        let (x0, y0, x1, y1) = (left - t, top - t, left + cell - 1 + t, top + cell - 1 + t);
        for x in x0..=x1 {
            put(x, y0);
            put(x, y1);
        }
        for y in y0..=y1 {
            put(x0, y);
            put(x1, y);
        }
    }
}

fn fit_text(line: &str, cell: u32) -> String {
    let max = (cell / 7).max(4) as usize;
    if line.chars().count() > max {
        line.chars().take(max - 1).chain(['…']).collect()
    } else {
        line.to_string()
    }
}

fn draw_texts(canvas: &mut RgbImage, texts: &[(String, (i32, i32), u32)]) -> Result<(), String> {
    let (w, h) = canvas.dimensions();
    let root = BitMapBackend::with_buffer(canvas.as_mut(), (w, h)).into_drawing_area();
    for (text, at, size) in texts {
        root.draw(&Text::new(text.as_str(), *at, ("sans-serif", *size)))
            .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())
}
