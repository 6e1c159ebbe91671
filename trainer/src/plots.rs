//! PNG plots of a training run: loss and accuracy curves, and the confusion matrix. Text
//! is drawn with `ab_glyph` from a TrueType file (DejaVu Sans from Debian's
//! `fonts-dejavu-core`), so there is no fontconfig dependency.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::fit::EpochRecord;
use crate::metrics::Metrics;

/// Where the font is looked for, first hit wins (`SCION_FONT` overrides).
pub const FONT_CANDIDATES: [&str; 2] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

/// A plot could not be drawn.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct PlotError {
    /// The file being drawn, or the font.
    pub path: PathBuf,
    /// What went wrong.
    pub message: String,
}

fn font_path() -> Option<PathBuf> {
    std::env::var_os("SCION_FONT")
        .map(PathBuf::from)
        .into_iter()
        .chain(FONT_CANDIDATES.iter().map(PathBuf::from))
        .find(|p| p.is_file())
}

/// Register the font with plotters once per process.
pub(crate) fn ensure_font() -> Result<(), PlotError> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let path = font_path().ok_or_else(|| {
                format!(
                    "no font found (install Debian's fonts-dejavu-core, or set SCION_FONT); looked at {}",
                    FONT_CANDIDATES.join(", ")
                )
            })?;
            let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            // plotters keeps fonts for the life of the process.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
                .map_err(|_| format!("{}: not a usable TrueType font", path.display()))
        })
        .clone()
        .map_err(|message| PlotError {
            path: PathBuf::from("font"),
            message,
        })
}

pub(crate) fn plot_err(path: &Path) -> impl Fn(String) -> PlotError + '_ {
    move |message| PlotError {
        path: path.into(),
        message,
    }
}

/// Draws a picture of `size` pixels and saves it as a PNG with `image`: plotters' own
/// file encoder would pull a second, older copy of the `image` crate into the build.
pub(crate) fn render_png(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(DrawingArea<BitMapBackend<'_>, Shift>) -> Result<(), PlotError>,
) -> Result<(), PlotError> {
    let err = plot_err(path);
    let mut canvas = image::RgbImage::new(size.0, size.1);
    {
        let root = BitMapBackend::with_buffer(canvas.as_mut(), size).into_drawing_area();
        draw(root.clone())?;
        root.present().map_err(|e| err(e.to_string()))?;
    }
    canvas
        .save_with_format(path, image::ImageFormat::Png)
        .map_err(|e| err(e.to_string()))
}

/// Loss (left) and accuracy (right) per epoch, training and validation.
pub fn curves(history: &[EpochRecord], best_epoch: usize, path: &Path) -> Result<(), PlotError> {
    ensure_font()?;
    let err = plot_err(path);
    render_png(path, (1200, 480), |root| {
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        let (left, right) = root.split_horizontally(600);
        let epochs = history.len().max(1) as f64;
        let loss_max = history
            .iter()
            .flat_map(|r| [r.train_loss, r.val_loss])
            .fold(0.0f64, f64::max)
            .max(1e-3)
            * 1.05;
        type Series = [fn(&EpochRecord) -> f64; 2];
        let panels: [(&DrawingArea<_, _>, &str, f64, Series); 2] = [
            (&left, "loss", loss_max, [|r| r.train_loss, |r| r.val_loss]),
            (&right, "accuracy", 1.0, [|r| r.train_acc, |r| r.val_acc]),
        ];
        for (area, name, y_max, series) in panels {
            let mut chart = ChartBuilder::on(area)
                .caption(name, ("sans-serif", 22))
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(52)
                .build_cartesian_2d(0.5f64..epochs + 0.5, 0.0f64..y_max)
                .map_err(|e| err(e.to_string()))?;
            chart
                .configure_mesh()
                .x_desc("epoch")
                .label_style(("sans-serif", 13))
                .draw()
                .map_err(|e| err(e.to_string()))?;
            for (which, colour, get) in [("train", BLUE, series[0]), ("val", RED, series[1])] {
                chart
                    .draw_series(LineSeries::new(
                        history.iter().map(|r| (r.epoch as f64, get(r))),
                        colour.stroke_width(2),
                    ))
                    .map_err(|e| err(e.to_string()))?
                    .label(which)
                    .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], colour));
            }
            if best_epoch > 0 {
                chart
                    .draw_series(std::iter::once(PathElement::new(
                        [(best_epoch as f64, 0.0), (best_epoch as f64, y_max)],
                        BLACK.mix(0.3),
                    )))
                    .map_err(|e| err(e.to_string()))?;
            }
            chart
                .configure_series_labels()
                .border_style(BLACK)
                .background_style(WHITE.mix(0.8))
                .label_font(("sans-serif", 14))
                .draw()
                .map_err(|e| err(e.to_string()))?;
        }
        Ok(())
    })
}

/// The confusion matrix as a heat map, rows normalised (recall on the diagonal), with counts.
pub fn confusion(metrics: &Metrics, path: &Path) -> Result<(), PlotError> {
    ensure_font()?;
    let err = plot_err(path);
    let k = metrics.confusion.len();
    let cell = (560 / k.max(1)).clamp(12, 64) as u32;
    let label_room = 150u32;
    let side = cell * k as u32;
    render_png(
        path,
        (side + label_room + 20, side + label_room + 40),
        |root| {
            root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
            root.draw(&Text::new(
                format!(
                    "confusion (rows: true, columns: predicted), top-1 {:.1}%",
                    100.0 * metrics.top1
                ),
                (10, 8),
                ("sans-serif", 16),
            ))
            .map_err(|e| err(e.to_string()))?;
            let (x0, y0) = (label_room as i32, 40i32);
            let font_size = (cell as f64 * 0.35).clamp(8.0, 14.0);
            for (t, row) in metrics.confusion.iter().enumerate() {
                let total = row.iter().sum::<usize>().max(1) as f64;
                for (p, &count) in row.iter().enumerate() {
                    let share = count as f64 / total;
                    let shade = (255.0 * (1.0 - share)) as u8;
                    let (x, y) = (x0 + (p as u32 * cell) as i32, y0 + (t as u32 * cell) as i32);
                    root.draw(&Rectangle::new(
                        [(x, y), (x + cell as i32, y + cell as i32)],
                        RGBColor(shade, shade, 255).filled(),
                    ))
                    .map_err(|e| err(e.to_string()))?;
                    if count > 0 && cell >= 20 {
                        let colour = if share > 0.5 { WHITE } else { BLACK };
                        root.draw(&Text::new(
                            count.to_string(),
                            (x + 3, y + cell as i32 / 2 - 6),
                            ("sans-serif", font_size).into_font().color(&colour),
                        ))
                        .map_err(|e| err(e.to_string()))?;
                    }
                }
                let name = &metrics.per_class[t].label;
                root.draw(&Text::new(
                    shorten(name),
                    (6, y0 + (t as u32 * cell) as i32 + cell as i32 / 2 - 6),
                    ("sans-serif", font_size),
                ))
                .map_err(|e| err(e.to_string()))?;
                root.draw(&Text::new(
                    shorten(name),
                    (
                        x0 + (t as u32 * cell) as i32 + cell as i32 / 2,
                        y0 + side as i32 + 6,
                    ),
                    ("sans-serif", font_size)
                        .into_font()
                        .transform(FontTransform::Rotate90),
                ))
                .map_err(|e| err(e.to_string()))?;
            }
            Ok(())
        },
    )
}

fn shorten(name: &str) -> String {
    if name.chars().count() > 18 {
        name.chars().take(17).chain(['…']).collect()
    } else {
        name.to_string()
    }
}

/// Bars side by side, one panel per measure: `panels` are (title, values per arm).
pub fn bars(arms: &[String], panels: &[(&str, Vec<f64>)], path: &Path) -> Result<(), PlotError> {
    ensure_font()?;
    let err = plot_err(path);
    let width = 480 * panels.len().max(1) as u32;
    render_png(path, (width, 420), |root| {
        let last = arms.len().saturating_sub(1);
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        let areas = root.split_evenly((1, panels.len().max(1)));
        for (area, (title, values)) in areas.iter().zip(panels) {
            let top = values.iter().copied().fold(0.0f64, f64::max).max(1e-9) * 1.15;
            let mut chart = ChartBuilder::on(area)
                .caption(*title, ("sans-serif", 20))
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(56)
                .build_cartesian_2d((0..last).into_segmented(), 0.0..top)
                .map_err(|e| err(e.to_string()))?;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_label_formatter(&|x| match x {
                    SegmentValue::CenterOf(i) => arms.get(*i).cloned().unwrap_or_default(),
                    _ => String::new(),
                })
                .label_style(("sans-serif", 13))
                .draw()
                .map_err(|e| err(e.to_string()))?;
            chart
                .draw_series(values.iter().enumerate().map(|(i, &v)| {
                    let colour = Palette99::pick(i).filled();
                    let mut bar = Rectangle::new(
                        [
                            (SegmentValue::Exact(i), 0.0),
                            (SegmentValue::Exact(i + 1), v),
                        ],
                        colour,
                    );
                    bar.set_margin(0, 0, 18, 18);
                    bar
                }))
                .map_err(|e| err(e.to_string()))?;
            chart
                .draw_series(values.iter().enumerate().map(|(i, &v)| {
                    let style = TextStyle::from(("sans-serif", 15).into_font())
                        .pos(Pos::new(HPos::Center, VPos::Bottom));
                    Text::new(
                        format_value(v),
                        (SegmentValue::CenterOf(i), v + top * 0.01),
                        style,
                    )
                }))
                .map_err(|e| err(e.to_string()))?;
        }
        Ok(())
    })
}

fn format_value(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// The reliability diagram: accuracy per confidence bin against the diagonal, with the
/// share of images in each bin below, and ECE in the title.
pub fn reliability(metrics: &Metrics, path: &Path) -> Result<(), PlotError> {
    ensure_font()?;
    let err = plot_err(path);
    let r = &metrics.reliability;
    render_png(path, (560, 600), |root| {
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        let (top, bottom) = root.split_vertically(440);
        let bins = r.bins.len().max(1) as f64;
        let mut chart = ChartBuilder::on(&top)
            .caption(
                format!("reliability (ECE {:.3}, Brier {:.3})", r.ece, r.brier),
                ("sans-serif", 20),
            )
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(48)
            .build_cartesian_2d(0.0f64..1.0, 0.0f64..1.0)
            .map_err(|e| err(e.to_string()))?;
        chart
            .configure_mesh()
            .y_desc("accuracy")
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(|e| err(e.to_string()))?;
        chart
            .draw_series(r.bins.iter().enumerate().filter(|(_, b)| b.0 > 0).map(
                |(i, &(_, _, acc))| {
                    let x0 = i as f64 / bins;
                    Rectangle::new([(x0, 0.0), (x0 + 1.0 / bins, acc)], BLUE.mix(0.6).filled())
                },
            ))
            .map_err(|e| err(e.to_string()))?;
        chart
            .draw_series(std::iter::once(PathElement::new(
                [(0.0, 0.0), (1.0, 1.0)],
                RED.stroke_width(2),
            )))
            .map_err(|e| err(e.to_string()))?;
        let total = r.bins.iter().map(|b| b.0).sum::<usize>().max(1) as f64;
        let share_max = r
            .bins
            .iter()
            .map(|b| b.0 as f64 / total)
            .fold(0.0, f64::max)
            .max(1e-3);
        let mut counts = ChartBuilder::on(&bottom)
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(48)
            .build_cartesian_2d(0.0f64..1.0, 0.0f64..share_max)
            .map_err(|e| err(e.to_string()))?;
        counts
            .configure_mesh()
            .x_desc("top-1 confidence")
            .y_desc("share")
            .label_style(("sans-serif", 12))
            .draw()
            .map_err(|e| err(e.to_string()))?;
        counts
            .draw_series(r.bins.iter().enumerate().map(|(i, b)| {
                let x0 = i as f64 / bins;
                Rectangle::new(
                    [(x0, 0.0), (x0 + 1.0 / bins, b.0 as f64 / total)],
                    BLACK.mix(0.5).filled(),
                )
            }))
            .map_err(|e| err(e.to_string()))?;
        Ok(())
    })
}
