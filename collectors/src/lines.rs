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
            let signal = match std::str::from_utf8(raw) {
                Ok(text) => Signal::from_json(text),
                Err(e) => Err(DecodeError(format!(
                    "not valid UTF-8 (byte {})",
                    e.valid_up_to() + 1
                ))),
            };
            return Some(Ok(Line {
                number: self.number,
                signal,
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
