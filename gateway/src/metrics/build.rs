//! `gateway_build_info`: one constant sample whose labels say which build runs.
//!
//! Registered by [`super::Metrics::new`]; dashboards join on it to show versions per instance.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

/// Labels of the build info sample.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct BuildInfo {
    /// Crate version.
    pub version: String,
    /// `debug` or `release`.
    pub profile: String,
}

impl BuildInfo {
    /// This binary's build.
    pub fn current() -> Self {
        Self {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            profile: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            }
            .to_owned(),
        }
    }
}

/// Registers `build` (an info metric named `build`, sample `build_info` under the prefix).
pub fn register(registry: &mut Registry, build: &BuildInfo) {
    registry.register(
        "build",
        "Build of the running gateway",
        Info::new(build.clone()),
    );
}
