//! What remedy's Kafka clients share: the Kafka source (collectors), the
//! decisions publisher and the Kafka command executor (actions) all take an
//! `options` table of librdkafka settings passed through as written, must
//! never show the value of a secret one, and route librdkafka's logs to
//! `tracing`. One definition of each, here, and one [`Producer`] whose
//! sends are confirmed (the publisher and the command executor use it).

#![warn(missing_docs)]

pub mod delivery;

pub use delivery::{Delivered, Producer, Record, Undelivered};

use std::collections::BTreeMap;
use std::fmt;

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;
use serde::de::{self, Deserialize, Deserializer, Visitor};

/// Reads a table of librdkafka settings (an `options` key) whose values are
/// strings, numbers or booleans, as librdkafka's strings. For
/// `#[serde(deserialize_with = "remedy_kafka::options")]`.
pub fn options<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    struct Setting(String);
    impl<'de> Deserialize<'de> for Setting {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl Visitor<'_> for V {
                type Value = Setting;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("a string, number or boolean (a librdkafka setting)")
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<Setting, E> {
                    Ok(Setting(v.to_string()))
                }
                fn visit_i64<E: de::Error>(self, v: i64) -> Result<Setting, E> {
                    Ok(Setting(v.to_string()))
                }
                fn visit_u64<E: de::Error>(self, v: u64) -> Result<Setting, E> {
                    Ok(Setting(v.to_string()))
                }
                fn visit_f64<E: de::Error>(self, v: f64) -> Result<Setting, E> {
                    Ok(Setting(v.to_string()))
                }
                fn visit_bool<E: de::Error>(self, v: bool) -> Result<Setting, E> {
                    Ok(Setting(v.to_string()))
                }
            }
            d.deserialize_any(V)
        }
    }
    let raw = BTreeMap::<String, Setting>::deserialize(d)?;
    Ok(raw.into_iter().map(|(k, v)| (k, v.0)).collect())
}

/// librdkafka settings for Debug output: values of secret settings hidden.
pub struct Redacted<'a>(pub &'a BTreeMap<String, String>);

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, v)| {
                let shown = if is_secret(k) {
                    "<redacted>"
                } else {
                    v.as_str()
                };
                (k, shown)
            }))
            .finish()
    }
}

/// Whether a librdkafka setting holds a secret (passwords, keys, tokens,
/// inline PEM); a `*.location` setting names a file and is not one.
pub fn is_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "token",
        ".pem",
        "sasl.oauthbearer.config",
        "key",
    ]
    .iter()
    .any(|word| key.contains(word))
        && !key.ends_with(".location")
}

/// librdkafka's reason, without the value of a secret setting.
pub fn describe(e: &KafkaError) -> String {
    match e {
        KafkaError::ClientConfig(_, _, key, _) if is_secret(key) => {
            format!("{key}: invalid value (not shown: it is a secret)")
        }
        KafkaError::ClientConfig(_, why, key, value) => format!("{key} = {value:?}: {why}"),
        other => other.to_string(),
    }
}

/// One librdkafka log line as a `tracing` event of target `librdkafka`.
pub fn log(level: RDKafkaLogLevel, facility: &str, message: &str) {
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => {
            tracing::error!(target: "librdkafka", facility, "{message}")
        }
        RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", facility, "{message}"),
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            tracing::info!(target: "librdkafka", facility, "{message}")
        }
        RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", facility, "{message}"),
    }
}

/// A client context that only routes librdkafka's logs and errors to `tracing`.
#[derive(Clone, Copy, Debug, Default)]
pub struct KafkaLog;

impl ClientContext for KafkaLog {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(target: "librdkafka", "{error}: {reason}");
    }
}

impl ConsumerContext for KafkaLog {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_options_stay_out_of_debug_output() {
        let options = BTreeMap::from([
            ("sasl.password".to_string(), "hunter2".to_string()),
            ("ssl.key.pem".to_string(), "-----BEGIN".to_string()),
            ("ssl.certificate.pem".to_string(), "-----CERT".to_string()),
            ("sasl.username".to_string(), "remedy".to_string()),
            (
                "ssl.key.location".to_string(),
                "/etc/remedy/key".to_string(),
            ),
        ]);
        let shown = format!("{:?}", Redacted(&options));
        for secret in ["hunter2", "BEGIN", "CERT"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(
            shown.contains("remedy") && shown.contains("/etc/remedy/key"),
            "{shown}"
        );
    }

    #[test]
    fn options_take_strings_numbers_and_booleans_as_librdkafka_strings() {
        #[derive(serde::Deserialize)]
        struct T {
            #[serde(deserialize_with = "options")]
            options: BTreeMap<String, String>,
        }
        let t: T = toml::from_str(
            r#"options = { "linger.ms" = 5, "enable.idempotence" = true, "acks" = "all" }"#,
        )
        .unwrap();
        assert_eq!(t.options["linger.ms"], "5");
        assert_eq!(t.options["enable.idempotence"], "true");
        assert_eq!(t.options["acks"], "all");
        let e = toml::from_str::<T>(r#"options = { "x" = [1] }"#)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("a string, number or boolean"), "{e}");
    }
}
