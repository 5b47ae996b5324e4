//! Uniform asymmetric activation quantizers: `x̂ = s · clip(round(x / s), −z, 2^b − 1 − z)`,
//! round half to even (as ONNX's `Round`). The step `s` and zero point `z` are chosen by least
//! squared error over a grid of clipping ranges; reconstruction may learn `s` further.

/// A b-bit uniform activation quantizer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ActivationQuantizer {
    /// Bits of the code.
    pub bits: u32,
    /// Step size.
    pub scale: f32,
    /// Zero point: the code of 0.0.
    pub zero_point: u32,
}

impl ActivationQuantizer {
    /// Lowest value in step units, `−z`.
    pub fn lo(&self) -> f32 {
        -(self.zero_point as f32)
    }

    /// Highest value in step units, `2^b − 1 − z`.
    pub fn hi(&self) -> f32 {
        ((1u64 << self.bits) - 1) as f32 - self.zero_point as f32
    }

    /// The quantized value of `x`.
    pub fn quantize(&self, x: f32) -> f32 {
        self.scale
            * (x / self.scale)
                .round_ties_even()
                .clamp(self.lo(), self.hi())
    }

    /// The quantizer of least squared error on `values` among clipping ranges
    /// `c · [min(0, min x), max(0, max x)]`, c = 0.96^k for k = 0 … 110 (1 down to 0.011).
    /// `None` for empty or
    /// non-finite data, a constant-zero tensor, or bits outside 2..=16.
    pub fn fit(values: &[f32], bits: u32) -> Option<ActivationQuantizer> {
        if !(2..=16).contains(&bits) || values.iter().any(|v| !v.is_finite()) {
            return None;
        }
        let lo = values.iter().copied().fold(0.0f32, f32::min);
        let hi = values.iter().copied().fold(0.0f32, f32::max);
        if hi - lo <= 0.0 {
            return None;
        }
        let levels = ((1u64 << bits) - 1) as f32;
        // A strided sample keeps the fit fast on large activations.
        let stride = (values.len() / 200_000).max(1);
        let sample: Vec<f32> = values.iter().step_by(stride).copied().collect();
        (0..=110)
            .map(|k| {
                let c = 0.96f32.powi(k);
                let scale = c * (hi - lo) / levels;
                let zero_point = ((-c * lo) / scale).round().clamp(0.0, levels) as u32;
                ActivationQuantizer {
                    bits,
                    scale,
                    zero_point,
                }
            })
            .map(|q| {
                let err: f64 = sample
                    .iter()
                    .map(|&x| f64::from(x - q.quantize(x)).powi(2))
                    .sum();
                (err, q)
            })
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, q)| q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn post_relu_data_gets_zero_point_zero_and_clipping_when_it_pays() {
        // Mostly small values and one outlier: clipping the outlier lowers the error.
        let mut x: Vec<f32> = (0..100_000).map(|i| (i % 100) as f32 / 100.0).collect();
        x.push(50.0);
        let q = ActivationQuantizer::fit(&x, 4).unwrap();
        assert_eq!(q.zero_point, 0);
        assert!(q.scale * q.hi() < 50.0, "{q:?}");
        // Values on the grid are kept; others go to the nearest step, inside the range.
        assert_eq!(q.quantize(0.0), 0.0);
        assert_eq!(q.quantize(3.0 * q.scale), 3.0 * q.scale);
        assert_eq!(q.quantize(1e9), q.scale * q.hi());
        assert_eq!(q.quantize(-1.0), 0.0);
    }

    #[test]
    fn signed_data_gets_a_zero_point_and_more_bits_lower_the_error() {
        let x: Vec<f32> = (0..2000)
            .map(|i| ((i * 7919) % 2001) as f32 / 1000.0 - 1.0)
            .collect();
        let err = |bits| {
            let q = ActivationQuantizer::fit(&x, bits).unwrap();
            assert!(q.zero_point > 0);
            x.iter().map(|&v| (v - q.quantize(v)).powi(2)).sum::<f32>()
        };
        assert!(err(8) < err(4) && err(4) < err(2));
        assert!(ActivationQuantizer::fit(&[0.0; 4], 4).is_none());
        assert!(ActivationQuantizer::fit(&[f32::NAN], 4).is_none());
    }
}
