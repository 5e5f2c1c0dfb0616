//! Kernel launches with programmatic dependent launch (PDL, sm_90; `cuLaunchKernelEx`).
//!
//! In a decode step of a small model most kernels run for a few microseconds, and between two
//! kernels of a stream the GPU waits for the first grid to drain before the second one's blocks
//! start. With the PDL attribute the next kernel's blocks may start as soon as every block of
//! the previous one has called `griddepcontrol.launch_dependents`; they then wait in
//! `griddepcontrol.wait` until that kernel has finished and its writes are visible. What a
//! kernel does before the wait (a GEMV loads its weights) overlaps the previous kernel's tail.
//! The device side of the protocol is in `cuda/common.cuh`; every kernel of the crate follows it,
//! and a kernel launched without the attribute (or after a cuBLAS kernel) simply starts when the
//! previous one ends, as it would without PDL. Graph capture records the dependency as a
//! programmatic edge, so replays keep the overlap.
//!
//! The builder mirrors cudarc's `launch_builder` (`.arg(...)` in kernel-signature order, then
//! `launch(cfg)`), so each wrapper reads as before; it does not record cudarc's cross-stream
//! events, which [`crate::Gpu::open`] turns off (every launch is on one stream).

use std::ffi::c_void;
use std::sync::Arc;

use cudarc::driver::sys::{
    self, CUlaunchAttribute, CUlaunchAttributeID, CUlaunchAttributeValue, CUlaunchConfig,
};
use cudarc::driver::{
    CudaFunction, CudaSlice, CudaStream, CudaView, CudaViewMut, DevicePtr, DevicePtrMut,
    DriverError, LaunchConfig,
};

/// One argument, as the kernel receives it: a device address, or a plain value's bytes.
enum Arg {
    Ptr(sys::CUdeviceptr),
    Value(*const c_void),
}

/// A launch being built: the function, its stream, its arguments in order.
pub struct Launch<'a> {
    stream: &'a Arc<CudaStream>,
    func: &'a CudaFunction,
    args: Vec<Arg>,
    cluster: Option<(u32, u32, u32)>,
}

/// What can be passed to [`Launch::arg`]: device buffers (by their address) and the scalar
/// types the kernels take (by value).
/// A scalar is read through its reference when the launch is made, so it must live as long
/// as the builder (`'a`), as with cudarc's builder.
pub trait KernelArg<'a> {
    #[doc(hidden)]
    fn push(self, launch: &mut Launch<'a>);
}

impl<'a> Launch<'a> {
    pub fn new(stream: &'a Arc<CudaStream>, func: &'a CudaFunction) -> Self {
        Launch {
            stream,
            func,
            args: Vec::with_capacity(16),
            cluster: None,
        }
    }

    /// Launches the grid in thread block clusters of `dims` blocks (sm_90), which run at once
    /// and may read each other's shared memory; each grid dimension must divide by its own.
    pub fn cluster(&mut self, dims: (u32, u32, u32)) -> &mut Self {
        self.cluster = Some(dims);
        self
    }

    /// Appends the next kernel argument.
    pub fn arg<A: KernelArg<'a>>(&mut self, a: A) -> &mut Self {
        a.push(self);
        self
    }

    /// Launches on the stream with the PDL attribute.
    ///
    /// # Safety
    /// As for cudarc's `LaunchArgs::launch`: the arguments must match the kernel's signature
    /// in number, order and type, and the kernel must stay within the buffers it is given.
    /// Scalars are read through the references given to [`Launch::arg`], which outlive `self`.
    pub unsafe fn launch(&mut self, cfg: LaunchConfig) -> Result<(), DriverError> {
        let mut params: Vec<*mut c_void> = self
            .args
            .iter()
            .map(|a| match a {
                Arg::Ptr(p) => p as *const sys::CUdeviceptr as *mut c_void,
                Arg::Value(v) => *v as *mut c_void,
            })
            .collect();
        let mut attrs = [
            CUlaunchAttribute {
                id: CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION,
                pad: [0; 4],
                value: CUlaunchAttributeValue {
                    programmaticStreamSerializationAllowed: 1,
                },
            },
            CUlaunchAttribute {
                id: CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION,
                pad: [0; 4],
                value: CUlaunchAttributeValue {
                    clusterDim: sys::CUlaunchAttributeValue_union__bindgen_ty_1 {
                        x: self.cluster.map_or(1, |c| c.0),
                        y: self.cluster.map_or(1, |c| c.1),
                        z: self.cluster.map_or(1, |c| c.2),
                    },
                },
            },
        ];
        let config = CUlaunchConfig {
            gridDimX: cfg.grid_dim.0,
            gridDimY: cfg.grid_dim.1,
            gridDimZ: cfg.grid_dim.2,
            blockDimX: cfg.block_dim.0,
            blockDimY: cfg.block_dim.1,
            blockDimZ: cfg.block_dim.2,
            sharedMemBytes: cfg.shared_mem_bytes,
            hStream: self.stream.cu_stream(),
            attrs: attrs.as_mut_ptr(),
            numAttrs: if self.cluster.is_some() { 2 } else { 1 },
        };
        // SAFETY: `config` and `attrs` live across the call; `params` holds one pointer per
        // kernel parameter, each to a live CUdeviceptr in `self.args` or to a caller's scalar
        // (the caller's contract above); the function belongs to the stream's context.
        unsafe {
            sys::cuLaunchKernelEx(
                &config,
                self.func.cu_function(),
                params.as_mut_ptr(),
                std::ptr::null_mut(),
            )
        }
        .result()
    }
}

/// How many clusters of `cluster` blocks of `func` the GPU runs at once, each block of
/// `threads` threads with `shared_mem_bytes` of dynamic shared memory (the occupancy
/// calculator: a cluster's blocks share a GPC, so this can be fewer than the SMs' free block
/// slots divided by the cluster's size).
pub fn max_active_clusters(
    stream: &Arc<CudaStream>,
    func: &CudaFunction,
    threads: u32,
    shared_mem_bytes: u32,
    cluster: (u32, u32, u32),
) -> Result<usize, DriverError> {
    let mut attrs = [CUlaunchAttribute {
        id: CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION,
        pad: [0; 4],
        value: CUlaunchAttributeValue {
            clusterDim: sys::CUlaunchAttributeValue_union__bindgen_ty_1 {
                x: cluster.0,
                y: cluster.1,
                z: cluster.2,
            },
        },
    }];
    // The grid only has to be a whole number of clusters.
    let config = CUlaunchConfig {
        gridDimX: cluster.0,
        gridDimY: cluster.1,
        gridDimZ: cluster.2,
        blockDimX: threads,
        blockDimY: 1,
        blockDimZ: 1,
        sharedMemBytes: shared_mem_bytes,
        hStream: stream.cu_stream(),
        attrs: attrs.as_mut_ptr(),
        numAttrs: 1,
    };
    let mut clusters: std::ffi::c_int = 0;
    // SAFETY: `config` and `attrs` live across the call, which only reads them and writes
    // `clusters`; the function belongs to the stream's context.
    unsafe { sys::cuOccupancyMaxActiveClusters(&mut clusters, func.cu_function(), &config) }
        .result()?;
    Ok(clusters.max(0) as usize)
}

impl<'a, T> KernelArg<'a> for &CudaSlice<T> {
    fn push(self, l: &mut Launch<'a>) {
        let (p, _sync) = self.device_ptr(l.stream);
        l.args.push(Arg::Ptr(p));
    }
}

impl<'a, T> KernelArg<'a> for &mut CudaSlice<T> {
    fn push(self, l: &mut Launch<'a>) {
        let (p, _sync) = self.device_ptr_mut(l.stream);
        l.args.push(Arg::Ptr(p));
    }
}

impl<'a, T> KernelArg<'a> for &CudaView<'_, T> {
    fn push(self, l: &mut Launch<'a>) {
        let (p, _sync) = self.device_ptr(l.stream);
        l.args.push(Arg::Ptr(p));
    }
}

impl<'a, T> KernelArg<'a> for &mut CudaViewMut<'_, T> {
    fn push(self, l: &mut Launch<'a>) {
        let (p, _sync) = self.device_ptr_mut(l.stream);
        l.args.push(Arg::Ptr(p));
    }
}

/// Scalars by value: the kernel copies `size_of::<T>()` bytes from the reference at launch.
macro_rules! scalar_arg {
    ($($t:ty),*) => {$(
        impl<'a> KernelArg<'a> for &'a $t {
            fn push(self, l: &mut Launch<'a>) {
                l.args.push(Arg::Value(self as *const $t as *const c_void));
            }
        }
    )*};
}
scalar_arg!(
    u32,
    i32,
    u64,
    i64,
    f32,
    f64,
    crate::custom_all_reduce::PeerPtrs,
    crate::custom_all_reduce::PushTarget,
    sys::CUtensorMap
);
