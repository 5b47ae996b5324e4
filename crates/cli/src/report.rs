//! `subsetq report`: one self-contained HTML page of how a model quantizes.

use std::path::PathBuf;

use anyhow::Result;
use subsetq_data::LabelSource;
use subsetq_pipeline::data::load_data;
use subsetq_pipeline::progress::Bar;
use subsetq_pipeline::write::refuse_to_overwrite_input;
use subsetq_pipeline::Granularity;
use subsetq_report::{build, CurveData};

use crate::flags::PreprocessArgs;
use crate::{load_model, CommonArgs};

#[derive(clap::Args)]
pub struct ReportArgs {
    /// The ONNX model (FP32; read only).
    model: PathBuf,
    /// Where to write the HTML page (atomically).
    #[arg(short, long)]
    output: PathBuf,
    /// Bits of the middle layers for the histograms, errors and cost.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(2..=8))]
    bits: u32,
    #[command(flatten)]
    common: CommonArgs,
    /// Images to score every quantizer on (search only, at --curve-bits): top-1 where they
    /// are labelled, else agreement with the FP32 model.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Use the first N images of --data.
    #[arg(long, default_value_t = 1000)]
    limit: usize,
    /// Bits of the accuracy curve.
    #[arg(long, value_delimiter = ',', default_values_t = [2u32, 3, 4],
          value_parser = clap::value_parser!(u32).range(2..=8))]
    curve_bits: Vec<u32>,
    #[command(flatten)]
    preprocess: PreprocessArgs,
}

pub fn run(args: &ReportArgs) -> Result<()> {
    refuse_to_overwrite_input(&args.output, &args.model)?;
    let model = load_model(&args.model)?;
    let search = args.common.options(args.bits, Granularity::Channel)?;
    let pre = match &args.data {
        Some(_) => Some(args.preprocess.resolve(&args.model, Some(&model))?),
        None => args.preprocess.resolve_if_any(&args.model, Some(&model))?,
    };
    let mut bar = Bar::new();
    let data = match (&args.data, &pre) {
        (Some(path), Some(pre)) => Some(load_data(
            path,
            pre,
            LabelSource::Auto,
            Some(args.limit),
            &mut |p| bar.update(p),
        )?),
        _ => None,
    };
    let curve = match (&data, &pre) {
        (Some(data), Some(pre)) => Some(CurveData {
            data,
            pre,
            bits: args.curve_bits.clone(),
        }),
        _ => None,
    };
    let name = args.model.display().to_string();
    let report = build(&model, &name, &search, pre.as_ref(), curve, &mut |p| {
        bar.update(p)
    })?;
    bar.finish();
    let bytes = report.write(&args.output)?;
    println!(
        "wrote {} ({} layers, {bytes} bytes)",
        args.output.display(),
        report.layers.len()
    );
    Ok(())
}
