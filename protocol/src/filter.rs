//! LDAP search filters (RFC 4515): the type, its evaluation against an entry, and its
//! canonical string form. The string parser lives in `filter_parse`.
//!
//! Matching follows the module rule of `entry`: names ignore case and `;options`
//! (so `(cn=x)` also looks at `cn;lang-en`), text values compare case-folded, and
//! ordering compares integers numerically when both sides are integers.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::entry::{Entry, Value};

/// A search filter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Filter {
    /// All of the sub-filters match (an empty list is true).
    And(Vec<Filter>),
    /// Any of the sub-filters matches (an empty list is false).
    Or(Vec<Filter>),
    /// The sub-filter does not match.
    Not(Box<Filter>),
    /// `(attr=value)`.
    Equality {
        /// Attribute name.
        attr: String,
        /// Value to compare with.
        value: Value,
    },
    /// `(attr=initial*any*...*final)`.
    Substring {
        /// Attribute name.
        attr: String,
        /// Leading part, if the pattern does not start with `*`.
        initial: Option<Value>,
        /// Middle parts, in order.
        any: Vec<Value>,
        /// Trailing part, if the pattern does not end with `*`.
        final_: Option<Value>,
    },
    /// `(attr>=value)`.
    GreaterOrEqual {
        /// Attribute name.
        attr: String,
        /// Lower bound.
        value: Value,
    },
    /// `(attr<=value)`.
    LessOrEqual {
        /// Attribute name.
        attr: String,
        /// Upper bound.
        value: Value,
    },
    /// `(attr=*)`.
    Present {
        /// Attribute name.
        attr: String,
    },
    /// `(attr~=value)`: without a phonetic rule, evaluated as equality.
    Approx {
        /// Attribute name.
        attr: String,
        /// Value to compare with.
        value: Value,
    },
}

impl Filter {
    /// `(objectClass=*)`, which every entry matches.
    pub fn match_all() -> Self {
        Filter::Present { attr: "objectClass".to_owned() }
    }

    /// Whether `entry` matches the filter.
    pub fn matches(&self, entry: &Entry) -> bool {
        match self {
            Filter::And(fs) => fs.iter().all(|f| f.matches(entry)),
            Filter::Or(fs) => fs.iter().any(|f| f.matches(entry)),
            Filter::Not(f) => !f.matches(entry),
            Filter::Present { attr } => values_of(entry, attr).next().is_some(),
            Filter::Equality { attr, value } | Filter::Approx { attr, value } => {
                values_of(entry, attr).any(|v| v.matches(value))
            }
            Filter::GreaterOrEqual { attr, value } => {
                values_of(entry, attr).any(|v| compare(v, value) != Ordering::Less)
            }
            Filter::LessOrEqual { attr, value } => {
                values_of(entry, attr).any(|v| compare(v, value) != Ordering::Greater)
            }
            Filter::Substring { attr, initial, any, final_ } => {
                values_of(entry, attr).any(|v| substring_match(v, initial.as_ref(), any, final_.as_ref()))
            }
        }
    }
}

/// Values of `attr` and of its subtypes with options (`cn;lang-en` for `cn`).
fn values_of<'a>(entry: &'a Entry, attr: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    let wanted = attr.to_ascii_lowercase();
    let exact_options = wanted.contains(';');
    entry
        .attrs
        .iter()
        .filter(move |a| {
            let name = a.name.to_ascii_lowercase();
            name == wanted || (!exact_options && name.split(';').next() == Some(wanted.as_str()))
        })
        .flat_map(|a| a.values.iter())
}

/// Ordering match: integers numerically, everything else by normalized bytes.
fn compare(a: &Value, b: &Value) -> Ordering {
    let (na, nb) = (a.normalized(), b.normalized());
    let as_int = |v: &[u8]| std::str::from_utf8(v).ok().and_then(|s| s.parse::<i128>().ok());
    match (as_int(&na), as_int(&nb)) {
        (Some(x), Some(y)) => x.cmp(&y),
        _ => na.cmp(&nb),
    }
}

fn substring_match(value: &Value, initial: Option<&Value>, any: &[Value], final_: Option<&Value>) -> bool {
    let hay = value.normalized();
    let mut rest: &[u8] = &hay;
    if let Some(init) = initial {
        let init = init.normalized();
        match rest.strip_prefix(init.as_slice()) {
            Some(r) => rest = r,
            None => return false,
        }
    }
    for part in any {
        let part = part.normalized();
        match find(rest, &part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    match final_ {
        Some(fin) => rest.ends_with(&fin.normalized()),
        None => true,
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// RFC 4515 §3 value escaping: `*`, `(`, `)`, `\` and NUL, plus non-UTF-8 octets.
fn write_value(f: &mut fmt::Formatter<'_>, value: &Value) -> fmt::Result {
    match value.as_str() {
        Some(s) => {
            for c in s.chars() {
                match c {
                    '*' | '(' | ')' | '\\' | '\0' => write!(f, "\\{:02x}", c as u32)?,
                    c => write!(f, "{c}")?,
                }
            }
            Ok(())
        }
        None => value.as_bytes().iter().try_for_each(|b| write!(f, "\\{b:02x}")),
    }
}

/// The RFC 4515 string form; parsing it gives back an equal filter.
impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Filter::And(fs) | Filter::Or(fs) => {
                f.write_str(if matches!(self, Filter::And(_)) { "(&" } else { "(|" })?;
                for sub in fs {
                    write!(f, "{sub}")?;
                }
                f.write_str(")")
            }
            Filter::Not(sub) => write!(f, "(!{sub})"),
            Filter::Present { attr } => write!(f, "({attr}=*)"),
            Filter::Equality { attr, value }
            | Filter::Approx { attr, value }
            | Filter::GreaterOrEqual { attr, value }
            | Filter::LessOrEqual { attr, value } => {
                let op = match self {
                    Filter::Equality { .. } => "=",
                    Filter::Approx { .. } => "~=",
                    Filter::GreaterOrEqual { .. } => ">=",
                    _ => "<=",
                };
                write!(f, "({attr}{op}")?;
                write_value(f, value)?;
                f.write_str(")")
            }
            Filter::Substring { attr, initial, any, final_ } => {
                write!(f, "({attr}=")?;
                if let Some(v) = initial {
                    write_value(f, v)?;
                }
                f.write_str("*")?;
                for v in any {
                    write_value(f, v)?;
                    f.write_str("*")?;
                }
                if let Some(v) = final_ {
                    write_value(f, v)?;
                }
                f.write_str(")")
            }
        }
    }
}
