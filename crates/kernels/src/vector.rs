//! The SIMD instruction sets the float training kernels are compiled for, chosen at run time,
//! and the few vector operations they are written over (one generic body per kernel).

/// Every instruction set of the training kernels this CPU has (the tests run each).
#[cfg(test)]
pub(crate) fn available() -> Vec<Simd> {
    let mut all = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("fma") {
            all.push(Simd::Avx512);
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            all.push(Simd::Avx2);
        }
    }
    all
}

/// The instruction set the training kernels run with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Simd {
    /// 16 lanes.
    Avx512,
    /// 8 lanes.
    Avx2,
}

/// The best instruction set this CPU has for the training kernels, if any.
pub(crate) fn simd() -> Option<Simd> {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("fma") {
            return Some(Simd::Avx512);
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return Some(Simd::Avx2);
        }
    }
    None
}

/// The vector types of each instruction set behind one trait.
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use std::arch::x86_64::*;

    /// The few vector operations the kernels use. Every function needs the instruction set of
    /// its type, which the callers' `target_feature` provides.
    pub(crate) trait Vector: Copy {
        const LANES: usize;
        unsafe fn zero() -> Self;
        /// `LANES` floats from `p` (unaligned).
        unsafe fn load(p: *const f32) -> Self;
        unsafe fn splat(v: f32) -> Self;
        /// `a · b + c`, rounded once.
        unsafe fn fma(a: Self, b: Self, c: Self) -> Self;
        unsafe fn add(a: Self, b: Self) -> Self;
        unsafe fn store(self, p: *mut f32);
        /// The sum of the lanes, in one fixed order.
        unsafe fn sum(self) -> f32;
    }

    impl Vector for __m512 {
        const LANES: usize = 16;
        #[inline(always)]
        unsafe fn zero() -> Self {
            _mm512_setzero_ps()
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            _mm512_loadu_ps(p)
        }
        #[inline(always)]
        unsafe fn splat(v: f32) -> Self {
            _mm512_set1_ps(v)
        }
        #[inline(always)]
        unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
            _mm512_fmadd_ps(a, b, c)
        }
        #[inline(always)]
        unsafe fn add(a: Self, b: Self) -> Self {
            _mm512_add_ps(a, b)
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            _mm512_storeu_ps(p, self)
        }
        #[inline(always)]
        unsafe fn sum(self) -> f32 {
            let half = _mm256_add_ps(
                _mm512_castps512_ps256(self),
                _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(self), 1)),
            );
            half.sum()
        }
    }

    impl Vector for __m256 {
        const LANES: usize = 8;
        #[inline(always)]
        unsafe fn zero() -> Self {
            _mm256_setzero_ps()
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            _mm256_loadu_ps(p)
        }
        #[inline(always)]
        unsafe fn splat(v: f32) -> Self {
            _mm256_set1_ps(v)
        }
        #[inline(always)]
        unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
            _mm256_fmadd_ps(a, b, c)
        }
        #[inline(always)]
        unsafe fn add(a: Self, b: Self) -> Self {
            _mm256_add_ps(a, b)
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            _mm256_storeu_ps(p, self)
        }
        #[inline(always)]
        unsafe fn sum(self) -> f32 {
            let s = _mm_add_ps(_mm256_castps256_ps128(self), _mm256_extractf128_ps(self, 1));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)))
        }
    }
}
