//! A self-contained HTML report of how a model quantizes: per layer the weight histogram
//! with the points SQ chose next to uniform-MSE's and PoT's at the same bits, every
//! quantizer's error per layer, SQ's error over Lloyd-Max's, with data the accuracy of every
//! quantizer against bits and size, and the compact model's hardware cost.
//!
//! [`build`] measures, [`Report::html`] draws (plotters' SVG backend, inlined: no network,
//! no JavaScript). Nothing in it depends on time or threads: the same inputs give the same
//! bytes.

use std::fmt::Write as _;

use plotters::prelude::*;
use subsetq_core::baselines::Baseline;
use subsetq_data::{Dataset, Preprocess};
use subsetq_onnx::Model;
use subsetq_pipeline::cost::{cost, CostReport};
use subsetq_pipeline::eval::{Agreement, Runner, Scores};
use subsetq_pipeline::progress::{report, OnProgress};
use subsetq_pipeline::search::{analyze_layer, choose, LayerReport};
use subsetq_pipeline::{
    policy, quantize, weight_layers, Context, PipelineError, QuantizeOptions, Quantizer,
    SearchOptions, WeightForm,
};

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// Searching, quantizing or evaluating the model.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// Drawing a chart.
    #[error("drawing {chart}: {msg}")]
    Plot {
        /// The chart.
        chart: String,
        /// plotters' message.
        msg: String,
    },
}

/// Result of this crate.
pub type Result<T> = std::result::Result<T, ReportError>;

/// Bins of a layer's weight histogram over [−1, 1].
const BINS: usize = 80;

/// Above this many points (7-bit and 8-bit codebooks) they would cover the histogram: only
/// the histogram is drawn, the caption says so.
const MAX_DRAWN_POINTS: usize = 64;

/// One layer's panel.
pub struct LayerPanel {
    /// The search's report (errors of SQ and the baselines, Lloyd-Max).
    pub report: LayerReport,
    /// Counts of the normalised weights in `BINS` (80) bins over [−1, 1].
    pub histogram: Vec<u64>,
    /// Quantization points (signed, normalised) by quantizer: the chosen one first.
    pub points: Vec<(&'static str, Vec<f64>)>,
}

/// One quantizer at one bit-width on the data.
pub struct CurvePoint {
    /// The quantizer's name.
    pub quantizer: &'static str,
    /// Bits of the middle layers.
    pub bits: u32,
    /// Bytes of codes over all weight layers.
    pub code_bytes: u64,
    /// Top-1 % (labelled data) or top-1 agreement with FP32 %.
    pub accuracy: f64,
}

/// Accuracy of every quantizer against bits, without reconstruction.
pub struct Curve {
    /// What `accuracy` is: "top-1 %" or "top-1 agreement with FP32 %".
    pub metric: &'static str,
    /// The FP32 model's value of the metric.
    pub float: f64,
    /// Images scored.
    pub images: usize,
    /// Every (quantizer, bits).
    pub points: Vec<CurvePoint>,
}

/// Everything the report shows.
pub struct Report {
    /// The model's name.
    pub source: String,
    /// Bits of the middle layers.
    pub bits: u32,
    /// Per weight layer, in graph order.
    pub layers: Vec<LayerPanel>,
    /// With data.
    pub curve: Option<Curve>,
    /// The compact SQ model's cost, for one image.
    pub cost: CostReport,
}

/// The data for the accuracy curve.
pub struct CurveData<'a> {
    /// Images (labelled or not).
    pub data: &'a Dataset,
    /// How the model's inputs are made.
    pub pre: &'a Preprocess,
    /// Bits of the curve's points.
    pub bits: Vec<u32>,
}

/// Searches `model`'s layers at `search`, and with `curve` quantizes it with every quantizer
/// at every bit-width (search only) and scores each on the data. `pre` sizes the cost
/// report's image (else the model's declared input).
pub fn build(
    model: &Model,
    source: &str,
    search: &SearchOptions,
    pre: Option<&Preprocess>,
    curve: Option<CurveData>,
    on_progress: OnProgress,
) -> Result<Report> {
    let folded = model.fold_constants().context_with(|| source.to_string())?;
    let (float, _) = subsetq_onnx::fold_batch_norm(&folded).context_with(|| source.to_string())?;
    let layers = weight_layers(&float, source)?;
    let mut panels = Vec::with_capacity(layers.len());
    for (i, layer) in layers.iter().enumerate() {
        report(on_progress, "layers", i, layers.len(), &layer.name);
        let r = analyze_layer(layer, search)?;
        let chosen = choose(layer, search, Quantizer::Sq)?;
        let mut histogram = vec![0u64; BINS];
        for &v in &chosen.x {
            let b = (((f64::from(v) + 1.0) / 2.0) * BINS as f64).floor();
            histogram[(b.max(0.0) as usize).min(BINS - 1)] += 1;
        }
        let signed = |levels: &[f64], alpha: f64| -> Vec<f64> {
            levels
                .iter()
                .flat_map(|l| [alpha * l, -alpha * l])
                .collect()
        };
        let mut points = vec![(
            chosen.quantizer,
            signed(&chosen.codebook.levels, chosen.codebook.alpha),
        )];
        if !policy::keeps_high_precision(layer.role) {
            for b in [Baseline::UniformMse, Baseline::Pot] {
                let cb = b
                    .fit(&chosen.magnitudes, chosen.bits)
                    .context_with(|| format!("layer {}", layer.name))?;
                points.push((b.name(), signed(&cb.levels, cb.alpha)));
            }
        }
        panels.push(LayerPanel {
            report: r,
            histogram,
            points,
        });
    }
    report(on_progress, "layers", layers.len(), layers.len(), "");
    let sq = quantize(
        model,
        source,
        &QuantizeOptions {
            search: search.clone(),
            ..QuantizeOptions::new(search.bits)
        },
        None,
        on_progress,
    )?;
    let cost = cost(&sq.written()?, pre)?;
    let curve = curve
        .map(|c| accuracy_curve(model, source, search, &c, on_progress))
        .transpose()?;
    Ok(Report {
        source: source.to_string(),
        bits: search.bits,
        layers: panels,
        curve,
        cost,
    })
}

fn accuracy_curve(
    model: &Model,
    source: &str,
    search: &SearchOptions,
    c: &CurveData,
    on_progress: OnProgress,
) -> Result<Curve> {
    let float = Runner::new(model, c.pre)?.outputs(c.data, 64, "eval FP32", on_progress)?;
    let labels = c.data.labels.as_deref();
    let score = |out: &subsetq_pipeline::eval::Outputs| -> Result<f64> {
        Ok(match labels {
            Some(l) => Scores::of(out, l).top1,
            None => Agreement::between(&float, out)?.agreement_top1,
        })
    };
    let mut points = Vec::new();
    for &bits in &c.bits {
        for q in Quantizer::ALL {
            let opts = QuantizeOptions {
                search: SearchOptions {
                    bits,
                    ..search.clone()
                },
                quantizer: q,
                weights: WeightForm::Float,
                ..QuantizeOptions::new(bits)
            };
            let quantized = quantize(model, source, &opts, None, on_progress)?;
            let stage = format!("eval {} W{bits}", q.name());
            let out =
                Runner::new(&quantized.model, c.pre)?.outputs(c.data, 64, &stage, on_progress)?;
            let code_bits: u64 = quantized
                .record
                .layers
                .iter()
                .map(|l| u64::from(l.bits) * l.shape.iter().product::<usize>() as u64)
                .sum();
            points.push(CurvePoint {
                quantizer: q.name(),
                bits,
                code_bytes: code_bits.div_ceil(8),
                accuracy: score(&out)?,
            });
        }
    }
    Ok(Curve {
        metric: if labels.is_some() {
            "top-1 %"
        } else {
            "top-1 agreement with FP32 %"
        },
        float: match labels {
            Some(l) => Scores::of(&float, l).top1,
            None => 100.0,
        },
        images: c.data.n,
        points,
    })
}

/// Colours of the quantizers, the same in every chart.
fn colour(name: &str) -> RGBColor {
    match name {
        "sq" => RGBColor(214, 39, 40),
        "uniform_mse" | "uniform-mse" => RGBColor(31, 119, 180),
        "pot" => RGBColor(44, 160, 44),
        "apot" => RGBColor(148, 103, 189),
        _ => RGBColor(127, 127, 127),
    }
}

fn plot_err(chart: &str) -> impl Fn(String) -> ReportError + '_ {
    move |msg| ReportError::Plot {
        chart: chart.to_string(),
        msg,
    }
}

/// Runs `draw` on an SVG of `size` and returns the SVG text.
fn svg(
    chart: &str,
    size: (u32, u32),
    draw: impl FnOnce(
        &DrawingArea<SVGBackend, plotters::coord::Shift>,
    ) -> std::result::Result<(), String>,
) -> Result<String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, size).into_drawing_area();
        root.fill(&WHITE)
            .map_err(|e| plot_err(chart)(e.to_string()))?;
        draw(&root).map_err(plot_err(chart))?;
        root.present().map_err(|e| plot_err(chart)(e.to_string()))?;
    }
    Ok(out)
}

fn s<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// The series' legend, boxed, at `position`.
fn legend<'a, 'b, X, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'b>, Cartesian2d<X, Y>>,
    position: SeriesLabelPosition,
) -> std::result::Result<(), String>
where
    X: Ranged,
    Y: Ranged,
    'b: 'a,
{
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(position)
        .draw()
        .map_err(s)
}

fn histogram_svg(panel: &LayerPanel) -> Result<String> {
    let r = &panel.report;
    let top = panel.histogram.iter().copied().max().unwrap_or(1).max(1) as f64 * 1.05;
    svg(&r.name, (560, 240), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                format!(
                    "{} ({} weights, {}-bit {}{})",
                    r.name,
                    r.numel,
                    r.bits,
                    r.quantizer,
                    if panel
                        .points
                        .first()
                        .is_some_and(|p| p.1.len() > MAX_DRAWN_POINTS)
                    {
                        ", points not drawn"
                    } else {
                        ""
                    }
                ),
                ("sans-serif", 14),
            )
            .margin(6)
            .x_label_area_size(28)
            .y_label_area_size(44)
            .build_cartesian_2d(-1.05f64..1.05, 0f64..top)
            .map_err(s)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_desc("weight / channel max|w|")
            .y_desc("weights")
            .draw()
            .map_err(s)?;
        let width = 2.0 / BINS as f64;
        chart
            .draw_series(panel.histogram.iter().enumerate().map(|(i, &c)| {
                let x0 = -1.0 + i as f64 * width;
                Rectangle::new(
                    [(x0, 0.0), (x0 + width, c as f64)],
                    RGBColor(190, 190, 190).filled(),
                )
            }))
            .map_err(s)?;
        // Each quantizer's points as ticks of its own height, so that they stay visible
        // where they coincide: the chosen one tallest.
        for (k, (name, points)) in panel.points.iter().enumerate() {
            if points.len() > MAX_DRAWN_POINTS {
                continue;
            }
            let height = top * (1.0 - 0.25 * k as f64);
            let style = colour(name).stroke_width(if k == 0 { 2 } else { 1 });
            chart
                .draw_series(
                    points
                        .iter()
                        .map(|&p| PathElement::new(vec![(p, 0.0), (p, height)], style)),
                )
                .map_err(s)?
                .label(*name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 14, y)], style));
        }
        legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
        Ok(())
    })
}

/// Grouped bars per layer, log scale: each quantizer's error.
fn errors_svg(layers: &[LayerPanel]) -> Result<String> {
    let series: Vec<&str> = ["sq", "uniform", "uniform_mse", "pot", "apot"].to_vec();
    let value = |r: &LayerReport, name: &str| -> f64 {
        if name == "sq" {
            r.l2_error
        } else {
            r.baseline(name).map_or(f64::NAN, |b| b.per_tensor)
        }
    };
    let middle: Vec<&LayerReport> = layers
        .iter()
        .map(|l| &l.report)
        .filter(|r| r.quantizer == "sq")
        .collect();
    let finite = middle
        .iter()
        .flat_map(|r| series.iter().map(|n| value(r, n)))
        .filter(|v| v.is_finite() && *v > 0.0);
    let (lo, hi) = finite.fold((f64::INFINITY, 0f64), |(a, b), v| (a.min(v), b.max(v)));
    let (lo, hi) = if lo.is_finite() {
        // Headroom above the bars for the legend.
        (lo / 2.0, hi * 8.0)
    } else {
        (1e-3, 1.0)
    };
    let n = middle.len().max(1);
    svg("errors", ((22 * n as u32 + 120).max(560), 300), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                "weight error ‖|x| − |Q(x)|‖₂ per layer (log scale)",
                ("sans-serif", 14),
            )
            .margin(6)
            .x_label_area_size(28)
            .y_label_area_size(56)
            .build_cartesian_2d(0f64..n as f64, (lo..hi).log_scale())
            .map_err(s)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_desc("middle layer (graph order)")
            .x_label_formatter(&|x| format!("{}", *x as usize))
            .draw()
            .map_err(s)?;
        let bar = 0.8 / series.len() as f64;
        for (k, name) in series.iter().enumerate() {
            let c = colour(name);
            chart
                .draw_series(middle.iter().enumerate().filter_map(|(i, r)| {
                    let v = value(r, name);
                    let x0 = i as f64 + 0.1 + k as f64 * bar;
                    (v.is_finite() && v > 0.0)
                        .then(|| Rectangle::new([(x0, lo), (x0 + bar, v)], c.filled()))
                }))
                .map_err(s)?
                .label(*name)
                .legend(move |(x, y)| Rectangle::new([(x, y - 4), (x + 10, y + 4)], c.filled()));
        }
        legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
        Ok(())
    })
}

/// SQ's error over Lloyd-Max's per middle layer: how far SQ is from the best K magnitudes.
fn lloyd_max_svg(layers: &[LayerPanel]) -> Result<String> {
    let ratios: Vec<f64> = layers
        .iter()
        .map(|l| &l.report)
        .filter(|r| r.quantizer == "sq")
        .map(|r| {
            if r.lloyd_max_error > 0.0 {
                r.l2_error / r.lloyd_max_error
            } else {
                1.0
            }
        })
        .collect();
    let n = ratios.len().max(1);
    let hi = ratios.iter().copied().fold(1.0f64, f64::max) * 1.05;
    svg(
        "sq-over-lloyd-max",
        ((22 * n as u32 + 120).max(560), 240),
        |root| {
            let mut chart = ChartBuilder::on(root)
                .caption(
                    "SQ error ÷ Lloyd-Max error (1 = the best K magnitudes)",
                    ("sans-serif", 14),
                )
                .margin(6)
                .x_label_area_size(28)
                .y_label_area_size(44)
                .build_cartesian_2d(0f64..n as f64, 0.9f64..hi)
                .map_err(s)?;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_desc("middle layer (graph order)")
                .x_label_formatter(&|x| format!("{}", *x as usize))
                .draw()
                .map_err(s)?;
            chart
                .draw_series(ratios.iter().enumerate().map(|(i, &v)| {
                    Rectangle::new(
                        [(i as f64 + 0.15, 0.9), (i as f64 + 0.85, v)],
                        colour("sq").filled(),
                    )
                }))
                .map_err(s)?;
            Ok(())
        },
    )
}

/// Accuracy of each quantizer against `x` (bits or kilobytes of codes).
fn curve_svg(curve: &Curve, by_size: bool) -> Result<String> {
    let x_of = |p: &CurvePoint| {
        if by_size {
            p.code_bytes as f64 / 1024.0
        } else {
            f64::from(p.bits)
        }
    };
    let xs = curve.points.iter().map(x_of);
    let (x0, x1) = xs.fold((f64::INFINITY, 0f64), |(a, b), v| (a.min(v), b.max(v)));
    let (x0, x1) = if x0.is_finite() {
        (x0 * 0.95, x1 * 1.05)
    } else {
        (0.0, 1.0)
    };
    let name = if by_size {
        "accuracy-vs-size"
    } else {
        "accuracy-vs-bits"
    };
    svg(name, (560, 300), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                format!(
                    "{} on {} images, search only (FP32: {:.2})",
                    curve.metric, curve.images, curve.float
                ),
                ("sans-serif", 14),
            )
            .margin(6)
            .x_label_area_size(28)
            .y_label_area_size(44)
            .build_cartesian_2d(x0..x1, 0f64..100.5)
            .map_err(s)?;
        chart
            .configure_mesh()
            .x_desc(if by_size {
                "KiB of codes"
            } else {
                "bits (middle layers)"
            })
            .y_desc(curve.metric)
            .draw()
            .map_err(s)?;
        chart
            .draw_series(LineSeries::new(
                [(x0, curve.float), (x1, curve.float)],
                BLACK.stroke_width(1),
            ))
            .map_err(s)?
            .label("FP32")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 14, y)], BLACK));
        for q in Quantizer::ALL {
            let c = colour(q.name());
            let pts: Vec<(f64, f64)> = curve
                .points
                .iter()
                .filter(|p| p.quantizer == q.name())
                .map(|p| (x_of(p), p.accuracy))
                .collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
                .map_err(s)?
                .label(q.name())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 14, y)], c));
            chart
                .draw_series(pts.into_iter().map(|p| Circle::new(p, 3, c.filled())))
                .map_err(s)?;
        }
        legend(&mut chart, SeriesLabelPosition::LowerRight)?;
        Ok(())
    })
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

impl Report {
    /// Writes [`Report::html`] to `path` atomically; returns its bytes.
    pub fn write(&self, path: &std::path::Path) -> Result<usize> {
        let html = self.html()?;
        subsetq_onnx::write_atomically(path, html.as_bytes()).map_err(|source| {
            PipelineError::Write {
                path: path.to_path_buf(),
                source,
            }
        })?;
        Ok(html.len())
    }

    /// The report as one HTML page: every chart an inline SVG.
    pub fn html(&self) -> Result<String> {
        let mut h = String::new();
        let name = escape(&self.source);
        // `write!` to a String cannot fail.
        let _ = write!(
            h,
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <title>subsetq report: {name}</title><style>\
             body{{font-family:sans-serif;margin:24px;color:#222}}\
             table{{border-collapse:collapse;font-size:13px}}\
             td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}}\
             th{{background:#f0f0f0}} td:first-child{{text-align:left}}\
             .layers{{display:flex;flex-wrap:wrap;gap:8px}}\
             </style></head><body>\n<h1>subsetq report: {name}</h1>\n\
             <p>{} weight layers; middle layers at {} bits (SQ, the paper's universal set \
             unless stated in the record), first and last uniform. Weights normalised by \
             their output channel's max|w|.</p>\n",
            self.layers.len(),
            self.bits
        );
        h.push_str("<h2>Errors per layer</h2>\n");
        h.push_str(&errors_svg(&self.layers)?);
        h.push_str(&lloyd_max_svg(&self.layers)?);
        if let Some(curve) = &self.curve {
            h.push_str("\n<h2>Accuracy against bits and size</h2>\n<div class=\"layers\">");
            h.push_str(&curve_svg(curve, false)?);
            h.push_str(&curve_svg(curve, true)?);
            h.push_str("</div>\n");
        }
        self.cost_table(&mut h);
        h.push_str("\n<h2>Layers</h2>\n<div class=\"layers\">\n");
        for (i, panel) in self.layers.iter().enumerate() {
            let _ = writeln!(h, "<section class=\"layer\" id=\"layer-{i}\">");
            h.push_str(&histogram_svg(panel)?);
            h.push_str("</section>\n");
        }
        h.push_str("</div>\n</body></html>\n");
        Ok(h)
    }

    fn cost_table(&self, h: &mut String) {
        let c = &self.cost;
        let _ = write!(
            h,
            "\n<h2>Hardware cost of the compact W{} model (one image)</h2>\n\
             <p>{} MACs; weight storage {:.1} kbit ({:.2}× below FP32); energy {:.3} µJ with \
             SQ's shifts and adds against {:.3} µJ for uniform multiplies at the same bits and \
             {:.3} µJ in FP32 ({}).</p>\n<table><tr><th>layer</th><th>bits</th>\
             <th>quantizer</th><th>weights</th><th>MACs</th><th>storage kbit</th>\
             <th>shift-add</th><th>energy pJ</th><th>uniform pJ</th></tr>\n",
            self.bits,
            c.macs,
            c.storage_bits as f64 / 1000.0,
            c.float_bits as f64 / c.storage_bits.max(1) as f64,
            c.energy_pj / 1e6,
            c.uniform_energy_pj / 1e6,
            c.float_energy_pj / 1e6,
            escape(&c.energy_source)
        );
        for l in &c.layers {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td>\
                 <td>{}</td><td>{:.0}</td><td>{:.0}</td></tr>",
                escape(&l.name),
                l.bits,
                escape(&l.quantizer),
                l.weights,
                l.macs,
                l.storage_bits as f64 / 1000.0,
                if l.shift_add { "yes" } else { "no" },
                l.energy_pj,
                l.uniform_energy_pj
            );
        }
        h.push_str("</table>\n");
    }
}
