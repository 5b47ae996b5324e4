//! Which hardware the engine computes on: the CPU (burn's flex backend, always built in) or a
//! CUDA GPU (burn's CUDA backend, only with the `cuda` cargo feature).

use burn_tensor::{Device, Tensor};

use crate::error::{EngineError, Result};

/// A compute backend, picked at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// CPU: SIMD and multi-threaded.
    #[default]
    Cpu,
    /// The first CUDA GPU (needs the `cuda` cargo feature and an NVIDIA driver).
    Cuda,
}

impl Backend {
    /// The name used on command lines and in errors.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Cpu => "cpu",
            Backend::Cuda => "cuda",
        }
    }

    /// The device for inference, checked to work: one small computation runs on it first, so
    /// that a missing GPU or driver is an error here, not a panic in the middle of a run.
    pub fn device(self) -> Result<Device> {
        let device = self.unchecked()?;
        let probe = std::panic::catch_unwind(|| {
            let t = Tensor::<1>::from_floats([1.0, 2.0], &device);
            t.sum().into_scalar::<f32>()
        });
        match probe {
            Ok(3.0) => Ok(device),
            Ok(v) => Err(self.error(format!("a test sum gave {v}, not 3"))),
            Err(panic) => Err(self.error(panic_message(&panic))),
        }
    }

    fn unchecked(self) -> Result<Device> {
        match self {
            Backend::Cpu => Ok(Device::flex()),
            #[cfg(feature = "cuda")]
            Backend::Cuda => Ok(Device::cuda(0)),
            #[cfg(not(feature = "cuda"))]
            Backend::Cuda => Err(self.error(
                "this build has no CUDA backend (build with `--features cuda`)".to_string(),
            )),
        }
    }

    fn error(self, msg: String) -> EngineError {
        EngineError::Device {
            device: self.name().to_string(),
            msg,
        }
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "it failed to start".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_always_there_and_cuda_only_when_built() {
        assert!(Backend::Cpu.device().is_ok());
        if cfg!(not(feature = "cuda")) {
            let e = Backend::Cuda.device().unwrap_err().to_string();
            assert!(
                e.starts_with("device cuda: this build has no CUDA backend"),
                "{e}"
            );
        }
    }
}
