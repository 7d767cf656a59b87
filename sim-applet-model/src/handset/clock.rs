//! Virtual time: milliseconds since an arbitrary epoch chosen by the driver (the SMSC simulator
//! or a test). Nothing in this crate reads a real clock.

/// A point in virtual time, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct VirtualInstant(pub u64);

impl VirtualInstant {
    /// From milliseconds.
    pub const fn from_millis(ms: u64) -> Self {
        VirtualInstant(ms)
    }

    /// As milliseconds.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// Later by `ms` (saturating: the far future stays the far future).
    pub const fn add_millis(self, ms: u64) -> Self {
        VirtualInstant(self.0.saturating_add(ms))
    }

    /// Later by `s` seconds.
    pub const fn add_secs(self, s: u64) -> Self {
        self.add_millis(s.saturating_mul(1000))
    }
}
