//! Printing `subsetq search`'s table.

use subsetq_pipeline::search::{Comparison, LayerReport};
use subsetq_pipeline::SearchOptions;

fn short(name: &str, width: usize) -> String {
    if name.chars().count() <= width {
        name.to_string()
    } else {
        let tail: String = name
            .chars()
            .rev()
            .take(width - 1)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        format!("…{tail}")
    }
}

/// A layer's error over the Lloyd-Max error with as many magnitudes.
fn lloyd_max_ratio(r: &LayerReport) -> f64 {
    if r.lloyd_max_error > 0.0 {
        r.l2_error / r.lloyd_max_error
    } else {
        1.0
    }
}

/// The per-layer table and the SQ-vs-baselines summary.
pub fn print_table(
    reports: &[LayerReport],
    comparisons: &[Comparison],
    opts: &SearchOptions,
    total_seconds: f64,
) {
    println!(
        "universal set {} · method {:?} · {} bits (first/last layers: {}-bit uniform)",
        opts.uset, opts.method, opts.bits, opts.first_last_bits
    );
    println!(
        "{:<34} {:>8} {:>2} {:<5} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6}  subset",
        "layer",
        "weights",
        "b",
        "quant",
        "alpha",
        "error",
        "uniform",
        "uni-mse",
        "pot",
        "apot",
        "umse/ch",
        "/LM"
    );
    for r in reports {
        let b = |n: &str| r.baseline(n).map_or(f64::NAN, |e| e.per_tensor);
        let per_ch = r
            .baseline("uniform_mse")
            .map_or(f64::NAN, |e| e.per_channel);
        let subset = if r.quantizer == "sq" {
            r.subset
                .iter()
                .map(|v| format!("{v:.4}"))
                .collect::<Vec<_>>()
                .join(" ")
        } else {
            format!("{} uniform levels", r.subset.len())
        };
        let lm = lloyd_max_ratio(r);
        println!(
            "{:<34} {:>8} {:>2} {:<5} {:>7.4} {:>8.4} {:>8.4} {:>8.4} {:>8.4} {:>8.4} {:>8.4} {:>6.3}  {}",
            short(&r.name, 34),
            r.numel,
            r.bits,
            r.quantizer,
            r.alpha,
            r.l2_error,
            b("uniform"),
            b("uniform_mse"),
            b("pot"),
            b("apot"),
            per_ch,
            lm,
            subset
        );
    }
    let search: f64 = reports.iter().map(|r| r.search_seconds).sum();
    println!(
        "\n{} layers, {} weights · subset search {:.3} s · everything (load, baselines, Lloyd-Max) {:.3} s",
        reports.len(),
        reports.iter().map(|r| r.numel).sum::<usize>(),
        search,
        total_seconds
    );
    println!(
        "error = ‖|x| − |Q(x)|‖₂ on x = w / max|w|; /LM = error ÷ Lloyd-Max error (k-means with {} magnitudes)",
        1 << (opts.bits - 1)
    );
    let sq_lm: Vec<f64> = reports
        .iter()
        .filter(|r| r.quantizer == "sq")
        .map(lloyd_max_ratio)
        .collect();
    if !sq_lm.is_empty() {
        println!(
            "SQ ÷ Lloyd-Max over the {} SQ layers: mean {:.3}, max {:.3}",
            sq_lm.len(),
            sq_lm.iter().sum::<f64>() / sq_lm.len() as f64,
            sq_lm.iter().cloned().fold(0.0, f64::max)
        );
    }
    println!(
        "SQ (per tensor) vs baselines over the {} SQ layers:",
        comparisons.first().map_or(0, |c| c.layers)
    );
    for c in comparisons {
        println!(
            "  {:<12} SQ lower on {:>3}/{} layers, mean error ratio {:.3} · vs per-channel: lower on {:>3}/{}, ratio {:.3}",
            c.baseline, c.sq_wins, c.layers, c.mean_error_ratio, c.sq_wins_vs_per_channel, c.layers, c.mean_error_ratio_vs_per_channel
        );
    }
}
