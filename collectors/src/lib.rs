//! Sources of signals. Each source owns its run loop: it turns some
//! transport into decoded [`Signal`](remedy_engine::Signal)s or rejections
//! with a reason, delivers them through an [`Intake`] handle and reports
//! its own health through a [`Report`]. None knows a rule: the engine
//! classifies, the source only delivers.
//!
//! | source | module | loop |
//! | --- | --- | --- |
//! | `POST /v1/signals`, `POST /v1/alertmanager` | [`http`], [`alertmanager`] | [`http::routes`] |
//! | Kafka topics | [`kafka`] | [`kafka::run`] |
//! | PromQL queries | [`promql`] | [`promql::run`] |
//! | exposition text | [`scrape`] | [`scrape::run`] |
//! | recorded JSON lines (`replay`) | [`lines`] | the caller's |

#![warn(missing_docs)]

pub mod alertmanager;
pub mod http;
pub mod intake;
pub mod kafka;
pub mod lines;
pub mod presets;
pub mod promql;
pub mod reorder;
pub mod scrape;

pub use intake::{Batch, Intake, IntakeError, Limits, NoReport, Report, Reporter, SourceStatus};
pub use lines::{JsonLines, Line};
pub use presets::{Preset, PresetState, UnknownPreset};
pub use promql::{instance_host, Poller};
pub use scrape::Scraper;
