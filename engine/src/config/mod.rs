//! Configuration: the model's (`config.json`) and the engine's (cache and scheduler knobs).
pub mod device;
pub mod engine_config;
pub mod model_config;

pub use device::Device;
pub use engine_config::{
    CacheConfig, CustomAllReduce, EngineConfig, ParallelConfig, SchedulerConfig,
};
pub use model_config::{Llama3RopeScaling, ModelConfig};
