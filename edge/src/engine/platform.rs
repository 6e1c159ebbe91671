//! What the machine's GPU stack is, asked of the libraries themselves: the CUDA driver for
//! its GPUs (name, compute capability), TensorRT for its version. Cached engines are keyed
//! by these, and `--device cuda` asks here before burn's CUDA backend would panic.
//!
//! Both are opened with `dlopen` at run time, so one binary runs on machines with and
//! without them, and a CPU machine simply answers "none".
#![allow(unsafe_code)]

use libloading::Library;

/// One CUDA device, as the driver reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CudaDevice {
    /// Ordinal.
    pub ordinal: i32,
    /// Marketing name, e.g. `NVIDIA H200` or `Orin`.
    pub name: String,
    /// Compute capability (major, minor).
    pub compute_capability: (i32, i32),
}

impl CudaDevice {
    /// `NAME (sm_XY)`, for logs and cache keys.
    pub fn describe(&self) -> String {
        format!(
            "{} (sm_{}{})",
            self.name, self.compute_capability.0, self.compute_capability.1
        )
    }
}

const CUDA_DRIVER: &[&str] = &["libcuda.so.1", "libcuda.so"];
const NVINFER: &[&str] = &[
    "libnvinfer.so.10",
    "libnvinfer.so.8",
    "libnvinfer.so.7",
    "libnvinfer.so",
];

fn open_first(names: &[&str]) -> Result<Library, String> {
    let mut last = String::new();
    for name in names {
        // SAFETY: these are the vendor's own libraries; loading them runs only their
        // initialisers, as linking against them would.
        match unsafe { Library::new(*name) } {
            Ok(lib) => return Ok(lib),
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}

type CuInit = unsafe extern "C" fn(u32) -> i32;
type CuDeviceGetCount = unsafe extern "C" fn(*mut i32) -> i32;
type CuDeviceGet = unsafe extern "C" fn(*mut i32, i32) -> i32;
type CuDeviceGetName = unsafe extern "C" fn(*mut std::ffi::c_char, i32, i32) -> i32;
type CuDeviceGetAttribute = unsafe extern "C" fn(*mut i32, i32, i32) -> i32;

const CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: i32 = 75;
const CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: i32 = 76;
const CUDA_ERROR_NO_DEVICE: i32 = 100;

/// The CUDA devices the driver sees. An error says why there are none to ask (no driver
/// library, the driver failing to start); an empty list means a driver without devices.
pub fn cuda_devices() -> Result<Vec<CudaDevice>, String> {
    let lib = open_first(CUDA_DRIVER).map_err(|e| format!("no CUDA driver ({e})"))?;
    let call = |what: &str, status: i32| {
        if status == 0 {
            Ok(())
        } else {
            Err(format!(
                "the CUDA driver's {what} failed with error {status}"
            ))
        }
    };
    // SAFETY: the signatures are those of the CUDA driver API (cuda.h), stable since
    // CUDA 2; every out-pointer is a live local of the declared type and size.
    unsafe {
        let init = lib.get::<CuInit>(b"cuInit").map_err(|e| e.to_string())?;
        match init(0) {
            0 => {}
            CUDA_ERROR_NO_DEVICE => return Ok(Vec::new()),
            status => call("cuInit", status)?,
        }
        let count_fn = lib
            .get::<CuDeviceGetCount>(b"cuDeviceGetCount")
            .map_err(|e| e.to_string())?;
        let get = lib
            .get::<CuDeviceGet>(b"cuDeviceGet")
            .map_err(|e| e.to_string())?;
        let name_fn = lib
            .get::<CuDeviceGetName>(b"cuDeviceGetName")
            .map_err(|e| e.to_string())?;
        let attribute = lib
            .get::<CuDeviceGetAttribute>(b"cuDeviceGetAttribute")
            .map_err(|e| e.to_string())?;
        let mut count = 0;
        call("cuDeviceGetCount", count_fn(&mut count))?;
        let mut devices = Vec::new();
        for ordinal in 0..count {
            let mut device = 0;
            call("cuDeviceGet", get(&mut device, ordinal))?;
            let mut name = [0 as std::ffi::c_char; 256];
            call(
                "cuDeviceGetName",
                name_fn(name.as_mut_ptr(), name.len() as i32, device),
            )?;
            let (mut major, mut minor) = (0, 0);
            call(
                "cuDeviceGetAttribute",
                attribute(
                    &mut major,
                    CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
                    device,
                ),
            )?;
            call(
                "cuDeviceGetAttribute",
                attribute(
                    &mut minor,
                    CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
                    device,
                ),
            )?;
            devices.push(CudaDevice {
                ordinal,
                name: std::ffi::CStr::from_ptr(name.as_ptr())
                    .to_string_lossy()
                    .into_owned(),
                compute_capability: (major, minor),
            });
        }
        Ok(devices)
    }
}

/// The TensorRT library's version (`getInferLibVersion`), or why it cannot be had.
pub fn tensorrt_version() -> Result<String, String> {
    let lib = open_first(NVINFER).map_err(|e| format!("no TensorRT ({e})"))?;
    // SAFETY: `int32_t getInferLibVersion() noexcept` is TensorRT's C entry point (NvInfer.h)
    // since TensorRT 5, taking nothing.
    let version = unsafe {
        let get = lib
            .get::<unsafe extern "C" fn() -> i32>(b"getInferLibVersion")
            .map_err(|e| e.to_string())?;
        get()
    };
    Ok(decode_tensorrt_version(version))
}

/// TensorRT encodes its version as `major*1000 + minor*100 + patch` up to 9, and as
/// `major*10000 + minor*100 + patch` from 10 on.
pub fn decode_tensorrt_version(code: i32) -> String {
    let (major, rest) = if code >= 100_000 {
        (code / 10_000, code % 10_000)
    } else {
        (code / 1000, code % 1000)
    };
    format!("{major}.{}.{}", rest / 100, rest % 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensorrt_versions_decode_in_both_encodings() {
        assert_eq!(decode_tensorrt_version(8502), "8.5.2");
        assert_eq!(decode_tensorrt_version(8601), "8.6.1");
        assert_eq!(decode_tensorrt_version(100_300), "10.3.0");
        assert_eq!(decode_tensorrt_version(101_300), "10.13.0");
    }

    #[test]
    fn a_machine_without_the_libraries_answers_why() {
        // This CI machine has neither; a GPU machine would list its devices instead.
        if let Err(why) = cuda_devices() {
            assert!(why.contains("no CUDA driver"), "{why}");
        }
        if let Err(why) = tensorrt_version() {
            assert!(why.contains("no TensorRT"), "{why}");
        }
    }
}
