//! `subsetq cost`: the hardware cost of a compact quantized model, per layer and in total.

use std::path::PathBuf;

use anyhow::Result;
use subsetq_pipeline::cost::cost;
use subsetq_pipeline::write::{refuse_to_overwrite_input, write_json};

use crate::flags::PreprocessArgs;
use crate::load_model;

#[derive(clap::Args)]
pub struct CostArgs {
    /// A model written by `subsetq quantize` (compact form; read only).
    model: PathBuf,
    /// Write the report as JSON here (atomically).
    #[arg(long)]
    json: Option<PathBuf>,
    #[command(flatten)]
    preprocess: PreprocessArgs,
}

pub fn run(args: &CostArgs) -> Result<()> {
    if let Some(json) = &args.json {
        refuse_to_overwrite_input(json, &args.model)?;
    }
    let model = load_model(&args.model)?;
    let pre = args.preprocess.resolve_if_any(&args.model, Some(&model))?;
    let report = cost(&model, pre.as_ref())?;
    println!(
        "{:<36} {:>2} {:<11} {:>9} {:>12} {:>10} {:>6} {:>12} {:>12} {:>10} {:>10}",
        "layer",
        "b",
        "quantizer",
        "weights",
        "MACs",
        "kbit",
        "x fp32",
        "shifts",
        "adds",
        "pJ",
        "pJ unif"
    );
    for l in &report.layers {
        println!(
            "{:<36} {:>2} {:<11} {:>9} {:>12} {:>10.1} {:>6.2} {:>12} {:>12} {:>10.0} {:>10.0}",
            l.name,
            l.bits,
            l.quantizer,
            l.weights,
            l.macs,
            l.storage_bits as f64 / 1e3,
            l.float_bits as f64 / l.storage_bits.max(1) as f64,
            if l.shift_add {
                l.shifts.to_string()
            } else {
                "-".into()
            },
            if l.shift_add {
                l.product_adds.to_string()
            } else {
                "-".into()
            },
            l.energy_pj,
            l.uniform_energy_pj
        );
    }
    println!(
        "total: {} MACs per image; weights {:.1} kbit ({:.2}× smaller than fp32's {:.1} kbit); \
         energy {:.3} µJ (uniform multiplies at the same bits {:.3} µJ, fp32 {:.3} µJ)",
        report.macs,
        report.storage_bits as f64 / 1e3,
        report.float_bits as f64 / report.storage_bits.max(1) as f64,
        report.float_bits as f64 / 1e3,
        report.energy_pj / 1e6,
        report.uniform_energy_pj / 1e6,
        report.float_energy_pj / 1e6
    );
    println!("{}", report.energy_source);
    if let Some(path) = &args.json {
        write_json(path, &report)?;
    }
    Ok(())
}
