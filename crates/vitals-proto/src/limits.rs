//! Hard limits on what an agent may send. The hub enforces every one of them; the agent keeps
//! its own batches within them so that a well-behaved agent is never rejected.

/// Largest WebSocket message or `POST /api/report` body the hub reads (1 MiB).
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;
/// Most samples in one batch.
pub const MAX_SAMPLES_PER_BATCH: usize = 1000;
/// Most CPU cores in one sample.
pub const MAX_CORES: usize = 1024;
/// Most filesystems (and block devices) in one sample.
pub const MAX_DISKS: usize = 256;
/// Most network interfaces in one sample.
pub const MAX_INTERFACES: usize = 256;
/// Most temperature sensors, GPUs or containers in one sample.
pub const MAX_SMALL_LISTS: usize = 256;
/// Most kernel statistics (`kernel` map entries) in one sample.
pub const MAX_KERNEL_STATS: usize = 4096;
/// Longest kernel statistic name in bytes.
pub const MAX_KERNEL_NAME_BYTES: usize = 96;
/// Longest name (disk, interface, sensor, container) in bytes.
pub const MAX_NAME_BYTES: usize = 256;
/// Longest host id in bytes.
pub const MAX_HOST_ID_BYTES: usize = 128;
/// How far ahead of the hub's clock a sample may be stamped, in milliseconds (5 minutes).
pub const MAX_FUTURE_SKEW_MS: i64 = 5 * 60 * 1000;
