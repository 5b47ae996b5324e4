//! Adam on plain `f32` vectors, stepped on the host: the moments are stored in `f32`, each
//! update is computed in `f64` (so the result does not depend on the backend's float math).

use rayon::prelude::*;

use super::paper::{ADAM_BETA1, ADAM_BETA2, ADAM_EPS};

/// Parameters per parallel task.
const CHUNK: usize = 1 << 14;

/// Adam state of one parameter vector.
pub(super) struct Adam {
    m: Vec<f32>,
    v: Vec<f32>,
}

impl Adam {
    /// Zero moments for `n` parameters.
    pub(super) fn new(n: usize) -> Adam {
        Adam {
            m: vec![0.0; n],
            v: vec![0.0; n],
        }
    }

    /// One step on `p` with gradient `g` and learning rate `lr`; `t` counts steps from 1 (for
    /// the bias correction).
    pub(super) fn step(&mut self, p: &mut [f32], g: &[f32], lr: f64, t: usize) {
        let c1 = 1.0 - ADAM_BETA1.powi(t as i32);
        let c2 = 1.0 - ADAM_BETA2.powi(t as i32);
        // Element-wise, so the parallel split does not change a bit.
        p.par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK))
            .zip(
                self.m
                    .par_chunks_mut(CHUNK)
                    .zip(self.v.par_chunks_mut(CHUNK)),
            )
            .for_each(|((p, g), (ms, vs))| {
                for (((p, g), m_i), v_i) in p.iter_mut().zip(g).zip(ms).zip(vs) {
                    let gi = f64::from(*g);
                    let m = ADAM_BETA1 * f64::from(*m_i) + (1.0 - ADAM_BETA1) * gi;
                    let v = ADAM_BETA2 * f64::from(*v_i) + (1.0 - ADAM_BETA2) * gi * gi;
                    *m_i = m as f32;
                    *v_i = v as f32;
                    *p -= (lr * (m / c1) / ((v / c2).sqrt() + ADAM_EPS)) as f32;
                }
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_step_moves_by_the_learning_rate_against_the_gradient() {
        // After bias correction the first step is lr · g / (|g| + eps) ≈ lr · sign(g).
        let mut adam = Adam::new(2);
        let mut p = vec![1.0, 1.0];
        adam.step(&mut p, &[0.5, -2.0], 1e-2, 1);
        assert!((p[0] - 0.99).abs() < 1e-6, "{p:?}");
        assert!((p[1] - 1.01).abs() < 1e-6, "{p:?}");
    }
}
