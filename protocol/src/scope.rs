//! What part of the tree a search or agreement covers: base DN, scope and filter.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::dn::Dn;
use crate::entry::Entry;
use crate::filter::Filter;

/// How far below the base a search reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Scope {
    /// The base entry only.
    Base,
    /// The base's immediate children (not the base itself), as LDAP's `one`.
    One,
    /// The base and everything below it.
    Subtree,
}

impl Scope {
    /// Whether `dn` lies in this scope under `base`.
    pub fn contains(self, base: &Dn, dn: &Dn) -> bool {
        match self {
            Scope::Base => dn == base,
            Scope::One => dn.is_child_of(base),
            Scope::Subtree => dn.is_descendant_of(base),
        }
    }
}

/// Why a scope word was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid scope {0:?}: expected base, one or subtree")]
pub struct ScopeParseError(String);

impl FromStr for Scope {
    type Err = ScopeParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "base" => Ok(Scope::Base),
            "one" | "onelevel" => Ok(Scope::One),
            "sub" | "subtree" => Ok(Scope::Subtree),
            _ => Err(ScopeParseError(s.to_owned())),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scope::Base => "base",
            Scope::One => "one",
            Scope::Subtree => "subtree",
        })
    }
}

/// A region of the directory: the entries under `base` within `scope` that match
/// `filter`. It is both a search request and what a replication agreement covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchSpec {
    /// Where the region starts.
    pub base: Dn,
    /// How far below `base` it reaches.
    pub scope: Scope,
    /// Which entries in reach belong to it.
    pub filter: Filter,
    /// Attributes to return; empty means all.
    pub attrs: Vec<String>,
}

impl SearchSpec {
    /// Every entry under `base`.
    pub fn subtree(base: Dn) -> Self {
        Self { base, scope: Scope::Subtree, filter: Filter::match_all(), attrs: Vec::new() }
    }

    /// Whether `entry` belongs to the region.
    pub fn contains(&self, entry: &Entry) -> bool {
        self.scope.contains(&self.base, &entry.dn) && self.filter.matches(entry)
    }

    /// Whether this region lies entirely inside `wider` as far as names go (the provider
    /// checks an agreement's request against the widest base it is allowed).
    pub fn is_within(&self, wider_base: &Dn) -> bool {
        self.base.is_descendant_of(wider_base)
    }

    /// Trims an entry to the requested attributes.
    pub fn project(&self, mut entry: Entry) -> Entry {
        if !self.attrs.is_empty() {
            entry.attrs.retain_named(&self.attrs);
        }
        entry
    }
}
