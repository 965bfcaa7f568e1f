//! NVIDIA GPUs through NVML: utilisation, memory, temperature and power per GPU.
//!
//! `libnvidia-ml.so.1` is loaded at run time: on a machine without the driver [`Gpus::open`]
//! fails and the collector is skipped with one log line, nothing else happens. The NVML path is
//! deliberately thin (no GPU machine is available to test it); values NVML cannot give (power on
//! some boards) are left out rather than guessed. Built only with the `gpu` feature.

use vitals_proto::sample::Gpu;

/// An initialised NVML handle.
pub struct Gpus {
    #[cfg(feature = "gpu")]
    nvml: nvml_wrapper::Nvml,
}

impl std::fmt::Debug for Gpus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Gpus")
    }
}

/// Why GPUs cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("nvml unavailable: {0}")]
    Nvml(String),
    #[error("no nvidia gpu found")]
    NoDevice,
    #[error("built without the gpu feature")]
    Disabled,
}

impl Gpus {
    /// Loads NVML and checks that at least one GPU is present.
    pub fn open() -> Result<Gpus, GpuError> {
        #[cfg(feature = "gpu")]
        {
            let nvml = nvml_wrapper::Nvml::init().map_err(|e| GpuError::Nvml(e.to_string()))?;
            let n = nvml
                .device_count()
                .map_err(|e| GpuError::Nvml(e.to_string()))?;
            if n == 0 {
                return Err(GpuError::NoDevice);
            }
            Ok(Gpus { nvml })
        }
        #[cfg(not(feature = "gpu"))]
        {
            Err(GpuError::Disabled)
        }
    }

    /// Reads every GPU. A GPU whose core figures cannot be read is left out of this reading.
    pub fn read(&self) -> Result<Vec<Gpu>, GpuError> {
        #[cfg(feature = "gpu")]
        {
            use nvml_wrapper::enum_wrappers::device::TemperatureSensor;
            let n = self
                .nvml
                .device_count()
                .map_err(|e| GpuError::Nvml(e.to_string()))?;
            let mut out = Vec::new();
            for i in 0..n.min(vitals_proto::limits::MAX_SMALL_LISTS as u32) {
                let Ok(d) = self.nvml.device_by_index(i) else {
                    continue;
                };
                let (Ok(util), Ok(mem)) = (d.utilization_rates(), d.memory_info()) else {
                    continue;
                };
                let name = d.name().unwrap_or_else(|_| format!("gpu{i}"));
                out.push(Gpu {
                    name,
                    util: f64::from(util.gpu).clamp(0.0, 100.0),
                    mem_used: (mem.used as f64).min(mem.total as f64),
                    mem_total: mem.total as f64,
                    temp_c: d.temperature(TemperatureSensor::Gpu).ok().map(f64::from),
                    power_w: d.power_usage().ok().map(|mw| f64::from(mw) / 1000.0),
                });
            }
            Ok(out)
        }
        #[cfg(not(feature = "gpu"))]
        {
            Err(GpuError::Disabled)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No GPU machine is available: the no-driver path must fail cleanly, never panic.
    #[test]
    fn without_a_driver_open_fails_cleanly() {
        match Gpus::open() {
            Ok(g) => {
                let _ = g.read();
            }
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
}
