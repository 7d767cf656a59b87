//! The number-portability override file: numbers that moved to another operator than the one
//! their range belongs to.
//!
//! Format: one `msisdn,operator` per line (operator by its configured name), `#` comments and
//! blank lines ignored, e.g. `48600100200,blue`. The file is read once at start into a
//! `HashMap<u64, OperatorId>`; lines and entries are bounded so a wrong file cannot exhaust
//! memory, and every error names the line.

use std::collections::HashMap;
use std::io::{BufRead, Read};
use std::path::Path;

use thiserror::Error;

use super::msisdn::{Msisdn, MsisdnError};
use super::OperatorId;

/// Longest line accepted (a number, a comma, an operator name, some blanks).
pub const MAX_LINE: usize = 256;
/// Default bound on entries (about 400 MB at most for the table).
pub const DEFAULT_MAX_ENTRIES: usize = 20_000_000;

/// Why the portability file was refused.
#[derive(Debug, Error)]
pub enum PortabilityError {
    #[error("reading portability file: {0}")]
    Io(#[from] std::io::Error),
    #[error("portability file line {line}: longer than {MAX_LINE} bytes")]
    LineTooLong { line: usize },
    #[error("portability file line {line}: not UTF-8")]
    NotUtf8 { line: usize },
    #[error("portability file line {line}: expected `msisdn,operator`")]
    Syntax { line: usize },
    #[error("portability file line {line}: {source}")]
    BadMsisdn { line: usize, source: MsisdnError },
    #[error("portability file line {line}: unknown operator {name:?}")]
    UnknownOperator { line: usize, name: String },
    #[error("portability file line {line}: number already listed on line {first_line}")]
    Duplicate { line: usize, first_line: usize },
    #[error("portability file line {line}: more than {max} entries")]
    TooMany { line: usize, max: usize },
}

impl PortabilityError {
    /// The line the error is on, if it is about one.
    pub fn line(&self) -> Option<usize> {
        match self {
            PortabilityError::Io(_) => None,
            PortabilityError::LineTooLong { line }
            | PortabilityError::NotUtf8 { line }
            | PortabilityError::Syntax { line }
            | PortabilityError::BadMsisdn { line, .. }
            | PortabilityError::UnknownOperator { line, .. }
            | PortabilityError::Duplicate { line, .. }
            | PortabilityError::TooMany { line, .. } => Some(*line),
        }
    }
}

/// Ported numbers and their operator.
#[derive(Debug, Clone, Default)]
pub struct PortabilityTable {
    entries: HashMap<u64, OperatorId>,
}

impl PortabilityTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Read a file; `operator` resolves names to ids.
    pub fn load(
        path: &Path,
        max_entries: usize,
        operator: impl Fn(&str) -> Option<OperatorId>,
    ) -> Result<Self, PortabilityError> {
        let file = std::fs::File::open(path)?;
        Self::read(std::io::BufReader::new(file), max_entries, operator)
    }

    /// Read from any buffered reader (see the module doc for the format).
    pub fn read(
        mut reader: impl BufRead,
        max_entries: usize,
        operator: impl Fn(&str) -> Option<OperatorId>,
    ) -> Result<Self, PortabilityError> {
        let mut entries: HashMap<u64, (OperatorId, usize)> = HashMap::new();
        let mut buf = Vec::with_capacity(MAX_LINE + 1);
        let mut line = 0usize;
        loop {
            buf.clear();
            line += 1;
            let n = (&mut reader)
                .take(MAX_LINE as u64 + 1)
                .read_until(b'\n', &mut buf)?;
            if n == 0 {
                break;
            }
            if buf.last() == Some(&b'\n') {
                buf.pop();
            } else if buf.len() > MAX_LINE {
                return Err(PortabilityError::LineTooLong { line });
            }
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
            let text = std::str::from_utf8(&buf).map_err(|_| PortabilityError::NotUtf8 { line })?;
            let text = text.trim();
            if text.is_empty() || text.starts_with('#') {
                continue;
            }
            let (number, name) = text
                .split_once(',')
                .ok_or(PortabilityError::Syntax { line })?;
            let (number, name) = (number.trim(), name.trim());
            if name.is_empty() || name.contains(',') {
                return Err(PortabilityError::Syntax { line });
            }
            let msisdn = Msisdn::parse(number)
                .map_err(|source| PortabilityError::BadMsisdn { line, source })?;
            let id = operator(name).ok_or_else(|| PortabilityError::UnknownOperator {
                line,
                name: name.into(),
            })?;
            if let Some(&(_, first_line)) = entries.get(&msisdn.as_u64()) {
                return Err(PortabilityError::Duplicate { line, first_line });
            }
            if entries.len() >= max_entries {
                return Err(PortabilityError::TooMany {
                    line,
                    max: max_entries,
                });
            }
            entries.insert(msisdn.as_u64(), (id, line));
        }
        Ok(PortabilityTable {
            entries: entries.into_iter().map(|(k, (id, _))| (k, id)).collect(),
        })
    }

    /// Add or replace one entry.
    pub fn insert(&mut self, msisdn: &Msisdn, operator: OperatorId) {
        self.entries.insert(msisdn.as_u64(), operator);
    }

    /// The operator a number was ported to.
    pub fn get(&self, msisdn: &Msisdn) -> Option<OperatorId> {
        self.entries.get(&msisdn.as_u64()).copied()
    }

    /// Number of ported numbers.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no number is ported.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ops(name: &str) -> Option<OperatorId> {
        match name {
            "red" => Some(OperatorId(0)),
            "blue" => Some(OperatorId(1)),
            _ => None,
        }
    }

    fn read(text: &str) -> Result<PortabilityTable, PortabilityError> {
        PortabilityTable::read(text.as_bytes(), 10, ops)
    }

    #[test]
    fn lines_comments_and_number_forms_are_read() {
        let t = read("# ported numbers\n\n48600100200,blue\r\n+48 601 000 001 , red\n").unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(
            t.get(&Msisdn::parse("48600100200").unwrap()),
            Some(OperatorId(1))
        );
        assert_eq!(
            t.get(&Msisdn::parse("48601000001").unwrap()),
            Some(OperatorId(0))
        );
    }

    #[test]
    fn errors_name_the_line() {
        assert!(matches!(
            read("48600100200,blue\n48600100201\n"),
            Err(PortabilityError::Syntax { line: 2 })
        ));
        assert!(matches!(
            read("\n\n0600100200,blue"),
            Err(PortabilityError::BadMsisdn { line: 3, .. })
        ));
        assert!(matches!(
            read("48600100200,green"),
            Err(PortabilityError::UnknownOperator { line: 1, .. })
        ));
        assert!(matches!(
            read("48600100200,blue\n#\n+48600100200,red"),
            Err(PortabilityError::Duplicate {
                line: 3,
                first_line: 1
            })
        ));
        let long = format!("48600100200,{}\n", "x".repeat(400));
        assert!(matches!(
            read(&long),
            Err(PortabilityError::LineTooLong { line: 1 })
        ));
        assert!(matches!(
            PortabilityTable::read(&b"48600100200,blue\n\xff\n"[..], 10, ops),
            Err(PortabilityError::NotUtf8 { line: 2 })
        ));
    }

    #[test]
    fn entry_count_is_bounded() {
        let text: String = (0..11).map(|i| format!("4860010{i:04},red\n")).collect();
        assert!(matches!(
            read(&text),
            Err(PortabilityError::TooMany { line: 11, max: 10 })
        ));
    }
}
