//! What the CPU offers, read once at run time, and the choice of code path that follows.

use std::fmt;

/// The instruction sets the kernels can use. [`Cpu::detect`] reads the running CPU;
/// [`Cpu::scalar`] turns every SIMD path off (the reference the SIMD code is tested against).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cpu {
    /// x86-64 AVX2 and FMA: the SIMD paths of this crate.
    pub avx2: bool,
    /// x86-64 AVX-512 VNNI or AVX-VNNI (reported; the int8 path does not use it yet).
    pub vnni: bool,
    /// AArch64 NEON (reported; the kernels run scalar there).
    pub neon: bool,
}

impl Cpu {
    /// The running CPU.
    pub fn detect() -> Cpu {
        #[cfg(target_arch = "x86_64")]
        {
            Cpu {
                avx2: is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
                vnni: is_x86_feature_detected!("avx512vnni"),
                neon: false,
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            Cpu {
                avx2: false,
                vnni: false,
                neon: std::arch::is_aarch64_feature_detected!("neon"),
            }
        }
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        {
            Cpu::scalar()
        }
    }

    /// No SIMD at all.
    pub fn scalar() -> Cpu {
        Cpu {
            avx2: false,
            vnni: false,
            neon: false,
        }
    }

    /// `cpu` limited to what it really has: a caller cannot turn on what is not there.
    pub(crate) fn use_avx2(self) -> bool {
        self.avx2 && Cpu::detect().avx2
    }
}

impl fmt::Display for Cpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let yes = |b: bool| if b { "yes" } else { "no" };
        write!(
            f,
            "AVX2+FMA {}, VNNI {}, NEON {}",
            yes(self.avx2),
            yes(self.vnni),
            yes(self.neon)
        )
    }
}
