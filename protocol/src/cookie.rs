//! Cookies: a consumer's replication position, `(store id, csn)`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::csn::Csn;

/// Identifies one provider store; generated when the store is created. A cookie from a
/// different store is meaningless to this one and is treated as no cookie (full refresh).
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

/// A consumer's position: everything in store `store_id` up to and including `csn` is
/// reflected in its replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Cookie {
    /// The provider store the position refers to.
    pub store_id: StoreId,
    /// The last change covered.
    pub csn: Csn,
}

/// Why a cookie's text form was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid cookie {0:?}: expected <store-uuid>#<csn>")]
pub struct CookieParseError(String);

/// Text form for humans and status output: `<store-uuid>#<csn>`.
impl fmt::Display for Cookie {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.store_id, self.csn)
    }
}

impl FromStr for Cookie {
    type Err = CookieParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || CookieParseError(s.to_owned());
        let (id, csn) = s.split_once('#').ok_or_else(err)?;
        let id = uuid::Uuid::parse_str(id).map_err(|_| err())?;
        let csn = csn.parse().map_err(|_| err())?;
        Ok(Cookie { store_id: StoreId(*id.as_bytes()), csn })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_round_trips() {
        let c = Cookie { store_id: StoreId::new_random(), csn: Csn(42) };
        let text = c.to_string();
        assert!(text.ends_with("#42"));
        assert_eq!(text.parse::<Cookie>(), Ok(c));
        assert!("nope".parse::<Cookie>().is_err());
        assert!("123#4".parse::<Cookie>().is_err());
    }
}
