//! `subsetq bench search`: search speed of `fast` and `dp` on a whole model, and the `reference`
//! port timed on a sample of candidates of the largest layer and extrapolated, in one run.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use rayon::prelude::*;
use subsetq_core::{
    candidates, levels_for_bits, normalize, search_prepared, Magnitudes, Method, UniversalSet,
};

use subsetq_pipeline::write::{refuse_to_overwrite_input, write_json};
use subsetq_pipeline::{policy, weight_layers};

use crate::load_model;

#[derive(clap::Args)]
pub struct BenchSearchArgs {
    /// The ONNX model (read only).
    model: PathBuf,
    /// Bits per weight (sign + index), 2..=8.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(2..=8))]
    bits: u32,
    /// Universal set (see `subsetq search --help`).
    #[arg(long, default_value = "paper")]
    uset: String,
    /// Candidate subsets of the largest layer to run through the reference port.
    #[arg(long, default_value_t = 8)]
    sample: usize,
    /// Write the measurements as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

struct Prepared {
    name: String,
    x: Vec<f32>,
}

/// Times the whole-model search with one method (normalising and sorting included).
fn time_method(
    layers: &[Prepared],
    uset: &UniversalSet,
    bits: u32,
    method: Method,
    label: &str,
) -> Result<(f64, Vec<f64>)> {
    let bar = progress(layers.len(), label);
    let started = Instant::now();
    let mut errors = Vec::with_capacity(layers.len());
    for l in layers {
        let (_, x) = normalize(&l.x).with_context(|| l.name.clone())?;
        let m = Magnitudes::new(&x);
        errors.push(
            search_prepared(&x, &m, uset, bits, method)
                .with_context(|| l.name.clone())?
                .l2_error,
        );
        bar.inc(1);
    }
    let secs = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    Ok((secs, errors))
}

pub fn run(args: &BenchSearchArgs) -> Result<()> {
    let uset = UniversalSet::parse(&args.uset)?;
    let k = levels_for_bits(args.bits)?;
    if args.sample == 0 {
        anyhow::bail!("--sample must be at least 1");
    }
    if let Some(json) = &args.json {
        refuse_to_overwrite_input(json, &args.model)?;
    }
    let model = load_model(&args.model)?;
    let layers: Vec<Prepared> = weight_layers(&model, &args.model.display().to_string())?
        .into_iter()
        .filter(|l| !policy::keeps_high_precision(l.role))
        .map(|l| Prepared {
            name: l.name,
            x: l.data,
        })
        .collect();
    anyhow::ensure!(
        !layers.is_empty(),
        "no layer besides the first and last to search"
    );
    let weights: usize = layers.iter().map(|l| l.x.len()).sum();
    let threads = rayon::current_num_threads();
    println!(
        "bench search: {} · {}-bit · universal set {} · {} layers (first/last excluded), {} weights · {} threads",
        args.model.display(), args.bits, uset, layers.len(), weights, threads
    );

    let (fast_s, fast_err) = time_method(&layers, &uset, args.bits, Method::Fast, "fast")?;
    let (dp_s, dp_err) = time_method(&layers, &uset, args.bits, Method::Dp, "dp")?;
    let dp_not_worse = fast_err
        .iter()
        .zip(&dp_err)
        .filter(|(f, d)| **d <= **f * (1.0 + 1e-9))
        .count();
    let dp_ratio = fast_err
        .iter()
        .zip(&dp_err)
        .map(|(f, d)| if *f > 0.0 { d / f } else { 1.0 })
        .sum::<f64>()
        / layers.len() as f64;

    // Reference: a sample of the largest layer's candidates, same parallelism as `fast`.
    let big = layers
        .iter()
        .max_by_key(|l| l.x.len())
        .context("no layers")?;
    let (_, x) = normalize(&big.x)?;
    let m = Magnitudes::new(&x);
    let xs: Vec<f64> = x.iter().map(|v| f64::from(*v)).collect();
    let cands = candidates(&uset, k)?;
    let step = (cands.len() / args.sample).max(1);
    let sample: Vec<&Vec<f64>> = cands.iter().step_by(step).take(args.sample).collect();
    let bar = progress(sample.len(), "reference");
    let started = Instant::now();
    let ref_fits: Vec<_> = sample
        .par_iter()
        .map(|s| {
            let f = subsetq_core::reference_fit(&xs, s);
            bar.inc(1);
            f
        })
        .collect();
    let ref_sample_s = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let fast_fits: Vec<_> = sample
        .iter()
        .map(|s| subsetq_core::fast_fit(&m, s))
        .collect();
    let max_rel = ref_fits
        .iter()
        .zip(&fast_fits)
        .map(|(r, f)| {
            ((r.l2_error - f.l2_error).abs() / r.l2_error.max(1e-30))
                .max((r.alpha - f.alpha).abs() / r.alpha.abs().max(1e-30))
        })
        .fold(0.0, f64::max);
    let per_candidate = ref_sample_s / sample.len() as f64;
    let ref_layer_s = per_candidate * cands.len() as f64;
    // The reference's per-candidate cost is linear in the layer's size.
    let ref_model_s: f64 = layers
        .iter()
        .map(|l| per_candidate * (l.x.len() as f64 / big.x.len() as f64) * cands.len() as f64)
        .sum();

    println!("{:<56} {:>12}", "method", "seconds");
    println!("{:<56} {:>12.3}", "fast (whole model, measured)", fast_s);
    println!("{:<56} {:>12.3}", "dp (whole model, measured)", dp_s);
    println!(
        "{:<56} {:>12.4}",
        format!("reference, per candidate ({} weights)", big.x.len()),
        per_candidate
    );
    println!(
        "{:<56} {:>12.1}",
        format!(
            "reference, that layer ({} candidates, extrapolated)",
            cands.len()
        ),
        ref_layer_s
    );
    println!(
        "{:<56} {:>12.1}",
        "reference, whole model (extrapolated)", ref_model_s
    );
    println!(
        "ratios: reference/fast {:.0}× · reference/dp {:.0}× · fast/dp {:.2}×",
        ref_model_s / fast_s,
        ref_model_s / dp_s,
        fast_s / dp_s
    );
    println!(
        "checks: fast vs reference on the {} sampled candidates of {}: max relative difference (α, error) {:.2e}",
        sample.len(), big.name, max_rel
    );
    println!("        dp error ≤ fast error on {dp_not_worse}/{} layers, mean dp/fast error {dp_ratio:.5}", layers.len());
    if let Some(path) = &args.json {
        let doc = serde_json::json!({
            "model": args.model.display().to_string(),
            "bits": args.bits,
            "uset": uset.spec(),
            "threads": threads,
            "layers": layers.len(),
            "weights": weights,
            "fast_seconds": fast_s,
            "dp_seconds": dp_s,
            "reference_layer": big.name,
            "reference_sampled_candidates": sample.len(),
            "reference_seconds_per_candidate": per_candidate,
            "reference_layer_seconds_extrapolated": ref_layer_s,
            "reference_model_seconds_extrapolated": ref_model_s,
            "ratio_reference_over_fast": ref_model_s / fast_s,
            "fast_vs_reference_max_relative_difference": max_rel,
            "dp_not_worse_layers": dp_not_worse,
            "mean_dp_over_fast_error": dp_ratio,
        });
        write_json(path, &doc)?;
    }
    Ok(())
}

/// A counter on stderr for the benchmark's loops (some of them parallel).
fn progress(len: usize, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len as u64);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {elapsed}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(what.to_string());
    bar
}
