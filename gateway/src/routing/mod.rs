//! Which operator serves a number: one API for the numbers of every configured operator.
//!
//! Data flow: at start the operators' number ranges from configuration become a
//! [`ranges::PrefixTable`] (longest prefix wins), and the number-portability file becomes a
//! [`portability::PortabilityTable`]. [`Router::route`] normalises nothing itself: callers
//! parse the incoming number once with [`Msisdn::parse`], then the portability entry, if any,
//! overrides the range owner.
//!
//! - [`msisdn`]: parsing and normalisation, [`MaskedMsisdn`] for logs.
//! - [`ranges`]: prefixes and `from..to` blocks, the longest-prefix table.
//! - [`portability`]: the `msisdn,operator` override file.

pub mod msisdn;
pub mod portability;
pub mod ranges;

use std::fmt;

use thiserror::Error;

pub use msisdn::{MaskedMsisdn, Msisdn, MsisdnError};
pub use portability::{PortabilityError, PortabilityTable};
pub use ranges::{DuplicatePrefix, NumberRange, PrefixTable};

/// Index of an operator in the configuration's `[[operators]]` list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OperatorId(pub u16);

impl fmt::Display for OperatorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Why a number cannot be routed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RouteError {
    /// No operator range covers the number and it is not in the portability file.
    #[error("no operator serves {0}")]
    UnknownNumber(String),
}

/// Why the router could not be built.
#[derive(Debug, Error)]
pub enum RouterBuildError {
    #[error("more than {} operators", u16::MAX)]
    TooManyOperators,
    #[error("operators[{operator}].ranges: {source}")]
    Duplicate {
        operator: usize,
        source: DuplicatePrefix,
    },
    #[error("routing.portability_file {path}: {source}")]
    Portability {
        path: String,
        source: PortabilityError,
    },
}

/// Number-to-operator routing.
#[derive(Debug, Clone)]
pub struct Router {
    names: Vec<String>,
    ranges: PrefixTable,
    ported: PortabilityTable,
}

impl Router {
    /// A router over named operators with their ranges, and a portability table.
    pub fn new(
        operators: &[(String, Vec<NumberRange>)],
        ported: PortabilityTable,
    ) -> Result<Self, RouterBuildError> {
        if operators.len() > usize::from(u16::MAX) {
            return Err(RouterBuildError::TooManyOperators);
        }
        let mut ranges = PrefixTable::new();
        for (i, (_, list)) in operators.iter().enumerate() {
            let id = OperatorId(i as u16);
            for range in list {
                ranges
                    .insert(range, id)
                    .map_err(|source| RouterBuildError::Duplicate {
                        operator: i,
                        source,
                    })?;
            }
        }
        Ok(Router {
            names: operators.iter().map(|(n, _)| n.clone()).collect(),
            ranges,
            ported,
        })
    }

    /// A router over named operators with their ranges, and the portability file at `path`
    /// (at most `max_entries` numbers; its operator names must be among `operators`).
    pub fn with_portability_file(
        operators: &[(String, Vec<NumberRange>)],
        path: &std::path::Path,
        max_entries: usize,
    ) -> Result<Self, RouterBuildError> {
        let mut router = Router::new(operators, PortabilityTable::new())?;
        router.ported = PortabilityTable::load(path, max_entries, |n| router.operator_id(n))
            .map_err(|source| RouterBuildError::Portability {
                path: path.display().to_string(),
                source,
            })?;
        Ok(router)
    }

    /// The operator serving `msisdn`: its portability entry, else its longest range prefix.
    pub fn route(&self, msisdn: &Msisdn) -> Result<OperatorId, RouteError> {
        self.ported
            .get(msisdn)
            .or_else(|| self.ranges.lookup(msisdn))
            .ok_or_else(|| RouteError::UnknownNumber(msisdn.masked().to_string()))
    }

    /// The configured name of an operator.
    pub fn operator_name(&self, id: OperatorId) -> Option<&str> {
        self.names.get(usize::from(id.0)).map(String::as_str)
    }

    /// The id of the operator with this name.
    pub fn operator_id(&self, name: &str) -> Option<OperatorId> {
        self.names
            .iter()
            .position(|n| n == name)
            .map(|i| OperatorId(i as u16))
    }

    /// Number of ported numbers loaded.
    pub fn ported_len(&self) -> usize {
        self.ported.len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn m(s: &str) -> Msisdn {
        Msisdn::parse(s).unwrap()
    }

    fn router() -> Router {
        let ops = vec![
            (
                "red".to_string(),
                vec!["48600".parse().unwrap(), "48601".parse().unwrap()],
            ),
            (
                "blue".to_string(),
                vec!["48700000000..48709999999".parse().unwrap()],
            ),
        ];
        let mut r = Router::new(&ops, PortabilityTable::new()).unwrap();
        let ported =
            PortabilityTable::read("48600100200,blue\n".as_bytes(), 10, |n| r.operator_id(n))
                .unwrap();
        r.ported = ported;
        r
    }

    #[test]
    fn ranges_route_to_their_operator() {
        let r = router();
        assert_eq!(r.route(&m("48600999999")), Ok(OperatorId(0)));
        assert_eq!(r.route(&m("+48 601 000 000")), Ok(OperatorId(0)));
        assert_eq!(r.route(&m("48705000000")), Ok(OperatorId(1)));
        assert_eq!(r.operator_name(OperatorId(1)), Some("blue"));
    }

    #[test]
    fn portability_overrides_the_range() {
        let r = router();
        assert_eq!(r.route(&m("48600100200")), Ok(OperatorId(1)));
        assert_eq!(r.route(&m("48600100201")), Ok(OperatorId(0)));
    }

    #[test]
    fn unknown_numbers_are_reported_masked() {
        let r = router();
        assert_eq!(
            r.route(&m("49600100200")),
            Err(RouteError::UnknownNumber("49600***200".into()))
        );
    }
}
