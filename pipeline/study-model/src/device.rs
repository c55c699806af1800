//! Device selection: a runtime knob (CLI flag / `DEVICE=` make variable), never part of a config.

use candle_core::Device;

/// Which device to run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceKind {
    /// CPU (always available).
    #[default]
    Cpu,
    /// The first CUDA GPU (needs the `cuda` feature).
    Cuda,
}

/// Errors of device selection.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The name is not a device.
    #[error("unknown device `{0}`: expected `cpu` or `cuda`")]
    Unknown(String),
    /// candle could not open the device.
    #[error(
        "cannot open device {kind:?}: {source}; CUDA needs a build with `DEVICE=cuda` (cargo feature `cuda`) and a GPU"
    )]
    Open {
        /// Which device.
        kind: DeviceKind,
        /// candle's error.
        source: candle_core::Error,
    },
}

impl std::str::FromStr for DeviceKind {
    type Err = DeviceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cpu" => Ok(DeviceKind::Cpu),
            "cuda" => Ok(DeviceKind::Cuda),
            other => Err(DeviceError::Unknown(other.to_owned())),
        }
    }
}

impl DeviceKind {
    /// Open the device.
    pub fn open(self) -> Result<Device, DeviceError> {
        match self {
            DeviceKind::Cpu => Ok(Device::Cpu),
            DeviceKind::Cuda => {
                Device::new_cuda(0).map_err(|source| DeviceError::Open { kind: self, source })
            }
        }
    }

    /// Lower-case name, as recorded in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Cuda => "cuda",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_opens_cpu() {
        let k: DeviceKind = "cpu".parse().expect("cpu");
        assert!(k.open().expect("cpu opens").is_cpu());
        assert!("tpu".parse::<DeviceKind>().is_err());
    }
}
