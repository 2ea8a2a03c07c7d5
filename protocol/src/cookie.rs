//! Cookies: a consumer's replication position, `(history id, csn)`.
//!
//! A CSN alone names a position only within one line of history. A provider store can be
//! copied and later restored, and the restored store then assigns the same CSNs to other
//! changes than the ones its consumers may already hold. So the position is named by the
//! history it belongs to as well: a provider starts a new [`HistoryId`] every time it
//! starts serving, and remembers where each earlier one ended. A cookie is trusted only
//! if its history is one the store remembers and its CSN lies within it; a restored copy
//! cannot remember the ids minted after it was taken, so a consumer that followed them
//! is reloaded instead of resumed into a fork.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::csn::Csn;

/// Identifies one provider store; generated when the store is created, and kept by every
/// copy of it. Cookies name a [`HistoryId`] instead, since copies of one store can part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StoreId(pub [u8; 16]);

impl StoreId {
    /// A fresh random id, for a newly created store.
    pub fn new_random() -> Self {
        Self(*uuid::Uuid::new_v4().as_bytes())
    }
}

impl fmt::Display for StoreId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&uuid::Uuid::from_bytes(self.0).hyphenated(), f)
    }
}

/// One stretch of a provider store's history: from one start of the provider to the
/// next (see the module overview). A store's first history id is its [`StoreId`], so
/// cookies issued before histories were kept stay valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct HistoryId(pub [u8; 16]);

impl HistoryId {
    /// A fresh random id, for a new stretch of history.
    pub fn new_random() -> Self {
        Self(*uuid::Uuid::new_v4().as_bytes())
    }
}

impl From<StoreId> for HistoryId {
    fn from(id: StoreId) -> Self {
        Self(id.0)
    }
}

impl fmt::Display for HistoryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&uuid::Uuid::from_bytes(self.0).hyphenated(), f)
    }
}

/// A consumer's position: every change of history `history` up to and including `csn`
/// is reflected in its replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Cookie {
    /// The stretch of the provider's history the position refers to.
    pub history: HistoryId,
    /// The last change covered.
    pub csn: Csn,
}

/// Why a cookie's text form was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid cookie {0:?}: expected <history-uuid>#<csn>")]
pub struct CookieParseError(String);

/// Text form for humans and status output: `<history-uuid>#<csn>`.
impl fmt::Display for Cookie {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.history, self.csn)
    }
}

impl FromStr for Cookie {
    type Err = CookieParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || CookieParseError(s.to_owned());
        let (id, csn) = s.split_once('#').ok_or_else(err)?;
        let id = uuid::Uuid::parse_str(id).map_err(|_| err())?;
        let csn = csn.parse().map_err(|_| err())?;
        Ok(Cookie { history: HistoryId(*id.as_bytes()), csn })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_round_trips() {
        let c = Cookie { history: HistoryId::new_random(), csn: Csn(42) };
        let text = c.to_string();
        assert!(text.ends_with("#42"));
        assert_eq!(text.parse::<Cookie>(), Ok(c));
        assert!("nope".parse::<Cookie>().is_err());
        assert!("123#4".parse::<Cookie>().is_err());
    }

    /// A cookie is exactly two parts: anything missing, or anything after the CSN, is
    /// refused rather than read as some other position.
    #[test]
    fn a_cookie_with_a_part_missing_or_more_after_its_csn_is_refused() {
        let text = Cookie { history: HistoryId([7; 16]), csn: Csn(42) }.to_string();
        let history = text.strip_suffix("#42").unwrap();
        for bad in
            [format!("{text}#7"), format!("{text}#"), format!("{history}#"), "#42".to_owned(), history.to_owned()]
        {
            assert_eq!(bad.parse::<Cookie>(), Err(CookieParseError(bad.clone())), "{bad}");
        }
    }
}
