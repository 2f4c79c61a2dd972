//! Sources of signals. Each source turns some transport into decoded
//! [`Signal`](remedy_engine::Signal)s or rejections with a reason, and knows
//! nothing of rules: the engine classifies, the source only delivers.

pub mod kafka;
pub mod lines;
pub mod presets;
pub mod promql;
pub mod scrape;

pub use lines::{JsonLines, Line};
pub use presets::{Preset, PresetState, UnknownPreset};
pub use promql::{instance_host, Poller};
pub use scrape::Scraper;
