//! Change sequence numbers: the provider's total order of committed changes.
//!
//! A counter, not a timestamp: one provider assigns every CSN under its writer lock, so
//! a counter orders changes exactly and no clock step (backwards after an NTP fix, or
//! two changes in one tick) can reorder or tie them. It is what makes an apply
//! idempotent: a replica keeps an entry's state only if its CSN is newer.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A change sequence number, strictly increasing per provider store. Assigned at commit;
/// `Csn::ZERO` means "before any change". A consumer's position is a CSN, and an entry
/// carries the CSN of its last change so applying an older state is a no-op.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Csn(pub u64);

impl Csn {
    /// Before the first change.
    pub const ZERO: Csn = Csn(0);

    /// The CSN after this one.
    pub fn next(self) -> Csn {
        Csn(self.0 + 1)
    }

    /// Big-endian bytes: store keys sort in CSN order.
    pub fn to_key(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }

    /// Reads a key written by [`Csn::to_key`]; `None` if it is not 8 bytes.
    pub fn from_key(key: &[u8]) -> Option<Csn> {
        Some(Csn(u64::from_be_bytes(key.try_into().ok()?)))
    }
}

impl fmt::Display for Csn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for Csn {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Csn(s.parse()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The changelog is a tree keyed by `to_key`, read in key order: its keys must sort
    /// as the CSNs do, across every byte boundary, not only below 256 where most tests'
    /// stores stay.
    #[test]
    fn keys_sort_as_the_csns_they_encode() {
        let csns = [0, 1, 255, 256, 257, 65_535, 65_536, 1 << 32, u64::MAX - 1, u64::MAX].map(Csn);
        let mut by_key = csns;
        by_key.sort_by_key(|c| c.to_key());
        assert_eq!(by_key, csns);
        for csn in csns {
            assert_eq!(Csn::from_key(&csn.to_key()), Some(csn));
        }
        assert_eq!(Csn::from_key(&[0; 7]), None, "a key of another length is no CSN");
    }
}
