//! The bounds of a message load, defined once: the controller refuses a
//! scenario beyond them (naming the line), and a worker refuses the same
//! from any controller.

/// The smallest payload, bytes. The stamp (`conn;seq;time;`) of a run of a
/// million connections, a billion messages each, 100 days long takes 31
/// bytes; a wider one makes its message longer, never truncated.
pub const MIN_PAYLOAD_BYTES: u32 = 32;

/// The largest payload, bytes (16 MiB).
pub const MAX_PAYLOAD_BYTES: u32 = 16 << 20;

/// The shortest message interval on one connection, µs: a million messages
/// per second, so one connection can be driven at any rate it can carry
/// (the interval travels in whole microseconds).
pub const MIN_INTERVAL_US: u64 = 1;
