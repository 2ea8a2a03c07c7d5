//! `tether-consumer verify`: what the check of a stopped consumer's replicas
//! ([`ReplicaStore::verify`](tether_store::ReplicaStore::verify)) says.
//!
//! Replicas that are all sound are said on standard output, one line each; any that is
//! not makes the command's error (exit status 1), listing what is wrong with it, so a
//! script can stop on it. A replica is rebuilt by a reload from its provider.

use tether_store::ReplicaVerified;

/// What `verify` says of the replicas in the store at `path`: `Ok` with a line per
/// replica when every one is sound, `Err` with every replica and the problems of those
/// that are not.
pub fn said(found: &[ReplicaVerified], path: &str) -> Result<String, String> {
    let line = |r: &ReplicaVerified| {
        let at = match &r.cookie {
            Some(cookie) => format!("as of csn {}", cookie.csn),
            None => "no position yet".to_owned(),
        };
        match r.problems.count() {
            0 => format!("{}: sound, {} entries, {at}", r.name, r.entries),
            n => format!(
                "{}: not sound, {n} problem{} in {} entries, {at}{}",
                r.name,
                if n == 1 { "" } else { "s" },
                r.entries,
                r.problems
            ),
        }
    };
    let lines: Vec<String> = found.iter().map(line).collect();
    let torn: Vec<&str> = found.iter().filter(|r| !r.problems.is_empty()).map(|r| r.name.as_str()).collect();
    if found.is_empty() {
        return Ok(format!("the store at {path} holds no replica\n"));
    }
    if torn.is_empty() {
        return Ok(format!("the replicas in the store at {path} are sound:\n{}\n", lines.join("\n")));
    }
    Err(format!(
        "the replicas in the store at {path} are not all sound (sled read every record: its files are whole, but \
         the trees of {} disagree, which no apply leaves; `tether-consumer restart` does not mend that: remove the \
         consumer's data_dir, or the agreement and add it again, to reload it from its provider):\n{}",
        torn.join(", "),
        lines.join("\n")
    ))
}

#[cfg(test)]
mod tests {
    use tether_protocol::{Cookie, Csn, HistoryId};
    use tether_store::Problems;

    use super::*;

    fn replica(name: &str, said: &[&str], csn: Option<u64>) -> ReplicaVerified {
        ReplicaVerified {
            name: name.to_owned(),
            entries: 4,
            cookie: csn.map(|csn| Cookie { history: HistoryId::new_random(), csn: Csn(csn) }),
            problems: Problems { said: said.iter().map(|p| (*p).to_owned()).collect(), more: 0 },
        }
    }

    #[test]
    fn sound_replicas_are_said_one_a_line_and_a_torn_one_makes_the_error() {
        let sound = said(&[replica("a", &[], Some(7)), replica("b", &[], None)], "/c").expect("sound");
        assert_eq!(
            sound,
            "the replicas in the store at /c are sound:\na: sound, 4 entries, as of csn 7\nb: sound, 4 entries, no \
             position yet\n"
        );
        let torn = said(&[replica("a", &[], Some(7)), replica("b", &["entry x is lost"], Some(2))], "/c")
            .expect_err("not sound");
        assert!(torn.starts_with("the replicas in the store at /c are not all sound (sled read"), "{torn}");
        assert!(torn.contains("the trees of b disagree"), "{torn}");
        assert!(
            torn.ends_with(
                ":\na: sound, 4 entries, as of csn 7\nb: not sound, 1 problem in 4 entries, as of csn 2\n  - entry x \
                 is lost"
            ),
            "{torn}"
        );
        assert_eq!(said(&[], "/c"), Ok("the store at /c holds no replica\n".to_owned()));
    }
}
