//! JSON lines: one signal object per line, from a file, stdin or a request
//! body. Used by `remedy replay` and by every transport that carries batches.
//!
//! A bad line never stops the stream: it comes out as a rejection naming its
//! line number and what is wrong, and the lines around it are decoded as usual.
//! Blank lines are skipped.

use std::io::BufRead;

use remedy_engine::{DecodeError, Signal};

/// One input line: its 1-based number and what it decoded to.
#[derive(Debug)]
pub struct Line {
    /// 1-based line number in the input.
    pub number: u64,
    /// The signal, or why the line is not one.
    pub signal: Result<Signal, DecodeError>,
}

/// One line's (or one message's) bytes as a signal, or why they are not
/// one: bytes that are not UTF-8 are a bad line like any other.
pub fn decode(bytes: &[u8]) -> Result<Signal, DecodeError> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Signal::from_json(text),
        Err(e) => Err(DecodeError(format!(
            "not valid UTF-8 (byte {})",
            e.valid_up_to() + 1
        ))),
    }
}

/// Reads JSON-lines signals from any buffered reader.
pub struct JsonLines<R> {
    reader: R,
    buf: Vec<u8>,
    number: u64,
    bytes: u64,
    failed: bool,
}

impl<R: BufRead> JsonLines<R> {
    /// Wraps a reader.
    pub fn new(reader: R) -> Self {
        JsonLines {
            reader,
            buf: Vec::with_capacity(512),
            number: 0,
            bytes: 0,
            failed: false,
        }
    }

    /// Bytes consumed so far (for progress over a file of known size).
    pub fn bytes_read(&self) -> u64 {
        self.bytes
    }
}

impl<R: BufRead> Iterator for JsonLines<R> {
    type Item = std::io::Result<Line>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.failed {
                return None;
            }
            self.buf.clear();
            let read = match self.reader.read_until(b'\n', &mut self.buf) {
                Ok(0) => return None,
                Ok(n) => n,
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            };
            self.bytes += read as u64;
            self.number += 1;
            let raw = self.buf.trim_ascii();
            if raw.is_empty() {
                continue;
            }
            return Some(Ok(Line {
                number: self.number,
                signal: decode(raw),
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_lines_are_rejected_with_their_number_and_the_rest_decode() {
        let input = b"{\"node\":\"n1\",\"kind\":\"hardware\",\"type\":\"a\"}\n\
            not json\n\
            \n\
            {\"node\":\"n2\",\"type\":\"b\"}\n\
            \xff\xfe\n\
            {\"node\":\"n3\",\"kind\":\"resource\",\"type\":\"c\"}";
        let lines: Vec<Line> = JsonLines::new(&input[..]).map(Result::unwrap).collect();
        let summary: Vec<(u64, Result<String, String>)> = lines
            .into_iter()
            .map(|l| {
                (
                    l.number,
                    l.signal.map(|s| s.node).map_err(|e| e.to_string()),
                )
            })
            .collect();
        assert_eq!(summary.len(), 5);
        assert_eq!(summary[0], (1, Ok("n1".into())));
        assert!(matches!(&summary[1], (2, Err(e)) if e.starts_with("not valid JSON")));
        assert_eq!(
            summary[2],
            (4, Err("missing required field \"kind\"".into()))
        );
        assert!(matches!(&summary[3], (5, Err(e)) if e.starts_with("not valid UTF-8")));
        assert_eq!(summary[4], (6, Ok("n3".into())));
    }
}

#[cfg(test)]
mod fuzz {
    //! The decoders over hostile input: random bytes and random JSON never
    //! panic, each line is judged alone, and a valid line is always decoded
    //! whatever surrounds it.
    use proptest::prelude::*;

    use super::JsonLines;

    const VALID: &str = r#"{"node":"n1","kind":"hardware","type":"memory.ecc.uncorrectable","labels":{"rack":"r1"}}"#;

    /// Random JSON values, nested a little.
    fn json() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::Bool),
            any::<f64>().prop_map(|f| serde_json::json!(f)),
            ".{0,12}".prop_map(serde_json::Value::String),
        ];
        leaf.prop_recursive(3, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("node".to_string()),
                        Just("kind".to_string()),
                        Just("type".to_string()),
                        Just("ts".to_string()),
                        Just("labels".to_string()),
                        Just("alerts".to_string()),
                        Just("status".to_string()),
                        "[a-z]{1,6}",
                    ],
                    inner,
                    0..6
                )
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn random_bytes_between_valid_lines_cost_no_valid_line(
            junk in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..80), 0..8),
        ) {
            let mut input = Vec::new();
            let mut expected = 0;
            for bytes in &junk {
                input.extend_from_slice(VALID.as_bytes());
                input.push(b'\n');
                expected += 1;
                input.extend(bytes.iter().copied().filter(|&b| b != b'\n'));
                input.push(b'\n');
            }
            input.extend_from_slice(VALID.as_bytes());
            expected += 1;
            let lines: Vec<_> = JsonLines::new(&input[..]).map(|l| l.expect("reads")).collect();
            let valid = lines.iter().filter(|l| l.signal.is_ok()).count();
            // A junk line may happen to be valid too; the valid ones are never lost.
            prop_assert!(valid >= expected, "{valid} < {expected}");
        }

        #[test]
        fn random_json_never_panics_a_decoder(value in json(), bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let text = value.to_string();
            let _ = remedy_engine::Signal::from_json(&text);
            let _ = crate::alertmanager::signals(&text);
            let wrapped = serde_json::json!({ "version": "4", "alerts": [value] }).to_string();
            let _ = crate::alertmanager::signals(&wrapped);
            let lossy = String::from_utf8_lossy(&bytes);
            let _ = remedy_engine::Signal::from_json(&lossy);
            let _ = crate::alertmanager::signals(&lossy);
        }
    }
}
