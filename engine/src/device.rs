//! Where encoder models run (the pg_ai.device setting): the CPU, or the first CUDA GPU in a build with the cuda
//! feature (scripts/build-cuda.sh). Other models run on the CPU whatever it says.
//!
//! On a GPU an encoder runs on candle's own operations, which have CUDA kernels. pg_ai's CPU kernels that `cpu_kernels`
//! gates (engine::kernels::packed, engine::kernels::vnni, engine::kernels::matvec, an encoder's attention and GELU)
//! serve tensors on the CPU only; `PG_AI_PORTABLE=1` in the environment turns them off there too, so that
//! engine/tests/golden.rs runs an encoder's GPU code path, and the products CPUs without AVX-512 take, on any machine.

use crate::error::{AiError, ErrorKind, Result};
use candle_core::Device;
use std::sync::Mutex;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Placement {
    #[default]
    Cpu,
    Cuda,
}

impl Placement {
    /// The device to load onto. The GPU's context is made once per process and then shared: making one takes
    /// hundreds of milliseconds and memory on the GPU.
    pub fn device(self) -> Result<Device> {
        static GPU: Mutex<Option<Device>> = Mutex::new(None);
        if self == Placement::Cpu {
            return Ok(Device::Cpu);
        }
        if !candle_core::utils::cuda_is_available() {
            return Err(AiError::new(ErrorKind::Unsupported, "this build of pg_ai has no CUDA support")
                .with_hint("Build it with scripts/build-cuda.sh, or SET pg_ai.device = 'cpu'."));
        }
        let mut gpu = GPU.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if gpu.is_none() {
            *gpu = Some(Device::new_cuda(0).map_err(|e| {
                AiError::new(ErrorKind::System, format!("cannot open the GPU: {e}")).with_hint(
                    "Check that nvidia-smi sees the GPU from the server's user, or SET pg_ai.device = 'cpu'.",
                )
            })?);
        }
        Ok(gpu.clone().expect("set above"))
    }
}

/// Whether pg_ai's own CPU kernels serve tensors on `device`: on the CPU, unless `portable()`.
pub fn cpu_kernels(device: &Device) -> bool {
    device.is_cpu() && !crate::kernels::cpu::portable()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_is_the_default_and_cuda_needs_the_feature() {
        assert_eq!(Placement::default(), Placement::Cpu);
        assert!(Placement::Cpu.device().unwrap().is_cpu());
        if !candle_core::utils::cuda_is_available() {
            let e = Placement::Cuda.device().unwrap_err();
            assert_eq!(e.kind, ErrorKind::Unsupported);
            assert!(e.hint.unwrap().contains("scripts/build-cuda.sh"));
        }
    }
}
