//! The paper's reconstruction hyper-parameters, in one place: the regulariser's weight `λ(t)`,
//! the peak learning rate by bit width, its cosine decay, and Adam's constants.

/// Share of the steps, in percent, that run with `λ = 0` (pure output matching) first.
pub const WARMUP_PERCENT: usize = 20;
/// `λ` right after the warm-up.
pub const LAMBDA_START: f64 = 1e-2;
/// `λ` at the last step; it falls linearly from [`LAMBDA_START`].
pub const LAMBDA_END: f64 = 1e-3;

/// Bit widths from this one up get [`LR_HIGH_BITS`], narrower ones [`LR_LOW_BITS`].
pub const LR_BITS_THRESHOLD: u32 = 4;
/// Peak learning rate at 4 bits and more.
pub const LR_HIGH_BITS: f64 = 1e-4;
/// Peak learning rate below 4 bits (3 and 2 bits start further from the float weights).
pub const LR_LOW_BITS: f64 = 5e-4;

/// Adam's first-moment decay.
pub const ADAM_BETA1: f64 = 0.9;
/// Adam's second-moment decay.
pub const ADAM_BETA2: f64 = 0.999;
/// Adam's denominator guard.
pub const ADAM_EPS: f64 = 1e-8;

/// `λ(t)`: 0 for the first [`WARMUP_PERCENT`] of the steps, then [`LAMBDA_START`] falling
/// linearly to [`LAMBDA_END`].
pub fn lambda(step: usize, iters: usize) -> f64 {
    // Integer arithmetic (wide enough not to overflow): the warm-up is exactly 20 % rounded
    // down, with no float rounding at the edge.
    let warmup = (iters as u128 * WARMUP_PERCENT as u128 / 100) as usize;
    if step < warmup || iters <= warmup {
        return 0.0;
    }
    let t = (step - warmup) as f64 / (iters - warmup).max(1) as f64;
    LAMBDA_START + (LAMBDA_END - LAMBDA_START) * t
}

/// The paper's peak learning rate for weights of `bits` bits: 1e-4 at 4 bits and more, 5e-4
/// below.
pub fn paper_lr(bits: u32) -> f64 {
    if bits >= LR_BITS_THRESHOLD {
        LR_HIGH_BITS
    } else {
        LR_LOW_BITS
    }
}

/// The learning rate at `step` of `iters`: `peak` on a cosine down to 0.
pub fn cosine_lr(peak: f64, step: usize, iters: usize) -> f64 {
    peak * 0.5 * (1.0 + (std::f64::consts::PI * step as f64 / iters as f64).cos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lambda_schedule() {
        assert_eq!(lambda(0, 100), 0.0);
        assert_eq!(lambda(19, 100), 0.0);
        assert!((lambda(20, 100) - 1e-2).abs() < 1e-12);
        assert!(lambda(99, 100) > 1e-3 && lambda(99, 100) < 1.2e-3);
        // The warm-up is a fifth of the steps, rounded down.
        assert_eq!(lambda(1, 7), 1e-2);
        assert_eq!(lambda(0, 0), 0.0);
    }

    #[test]
    fn lr_by_bits() {
        assert_eq!(paper_lr(8), 1e-4);
        assert_eq!(paper_lr(4), 1e-4);
        assert_eq!(paper_lr(3), 5e-4);
        assert_eq!(paper_lr(2), 5e-4);
    }

    #[test]
    fn cosine_starts_at_peak_and_ends_near_zero() {
        assert_eq!(cosine_lr(1e-4, 0, 10), 1e-4);
        assert!((cosine_lr(1e-4, 5, 10) - 5e-5).abs() < 1e-18);
        assert!(cosine_lr(1e-4, 9, 10) < 3e-6);
    }
}
