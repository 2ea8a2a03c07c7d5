//! Benchmark data: a directory of inetOrgPerson-like entries of about 500 bytes (ten
//! attributes, as in the OpenLDAP comparison the targets come from) and the changes the
//! workloads make to it. Deterministic, so runs compare.

use std::fmt::Write as _;

use anyhow::{Context, Result};
use tether_protocol::ldif::reader::parse_str;
use tether_protocol::Change;

/// Suffix of the benchmark directory.
pub const SUFFIX: &str = "dc=example,dc=com";
/// The branch holding the people.
pub const PEOPLE: &str = "ou=people,dc=example,dc=com";
/// Entries besides the people: the suffix and the branch.
pub const STRUCTURAL: usize = 2;

/// DN of person `i`.
pub fn dn(i: usize) -> String {
    format!("uid=u{i:07},{PEOPLE}")
}

fn person(out: &mut String, i: usize) {
    let given = ["Ada", "Brage", "Cecilie", "Dagny", "Eirik", "Frida", "Gunnar", "Hedda"][i % 8];
    let family = i.wrapping_mul(7919) % 10_000;
    let _ = write!(
        out,
        "dn: {}\nobjectClass: inetOrgPerson\nuid: u{i:07}\ncn: {given} Family{family}\nsn: Family{family}\n\
         givenName: {given}\nmail: u{i:07}@example.com\ntelephoneNumber: +47 2{:07}\ntitle: Engineer grade {}\n\
         employeeNumber: {i}\ndescription: Generated benchmark person {i}; member of team {} at site {}, \
         reachable by mail or telephone during office hours, with a description long enough to make \
         the entry about five hundred bytes like a real directory entry.\n\n",
        dn(i),
        i % 10_000_000,
        i % 7,
        i % 97,
        i % 13
    );
}

/// The initial directory of `n` people as LDIF content records (parents first).
pub fn initial_ldif(n: usize) -> String {
    let mut out = String::with_capacity(n * 560 + 200);
    let _ = write!(out, "dn: {SUFFIX}\nobjectClass: domain\ndc: example\n\n");
    let _ = write!(out, "dn: {PEOPLE}\nobjectClass: organizationalUnit\nou: people\n\n");
    for i in 0..n {
        person(&mut out, i);
    }
    out
}

/// A one-attribute modification of person `i`; `round` makes each distinct.
pub fn modify(i: usize, round: usize) -> Result<Change> {
    let text = format!(
        "dn: {}\nchangetype: modify\nreplace: telephoneNumber\ntelephoneNumber: +47 9{:07}\n-\n",
        dn(i),
        round % 10_000_000
    );
    one(&text)
}

/// The deletion of person `i`.
pub fn delete(i: usize) -> Result<Change> {
    one(&format!("dn: {}\nchangetype: delete\n", dn(i)))
}

fn one(text: &str) -> Result<Change> {
    let record = parse_str(text).context("parsing a generated change")?.into_iter().next().context("no record")?;
    Ok(record.into_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_about_five_hundred_bytes_and_parse() {
        let text = initial_ldif(100);
        let records = parse_str(&text).unwrap();
        assert_eq!(records.len(), 100 + STRUCTURAL);
        let per_entry = (text.len() as f64) / 100.0;
        assert!((450.0..650.0).contains(&per_entry), "{per_entry} bytes per entry");
        assert!(matches!(modify(5, 1).unwrap(), Change::Modify { .. }));
        assert!(matches!(delete(5).unwrap(), Change::Delete { .. }));
    }

    /// The workloads change person `op % people` in round `op`: each change is to that
    /// person, and a person changed again in a later round (fanout's 10,000 changes to
    /// 1,000 people) gets a new value, not the one it already holds.
    #[test]
    fn changes_are_to_the_person_named_and_distinct_from_round_to_round() {
        assert_eq!(modify(5, 1).unwrap().dn().to_string(), dn(5));
        assert_eq!(delete(5).unwrap().dn().to_string(), dn(5));
        assert_ne!(modify(5, 1005).unwrap(), modify(5, 2005).unwrap());
    }
}
