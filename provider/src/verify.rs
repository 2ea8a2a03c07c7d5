//! `tether-provider verify`: what the check of a stopped store or a backup's copy
//! ([`Directory::verify`](tether_store::Directory::verify)) says.
//!
//! A sound store is said on standard output; one that is not, with each problem, is
//! the command's error (exit status 1), so a script restoring a backup can stop on it.

use tether_store::Verified;

/// What `verify` says of the store at `path`: `Ok` with the line for a sound one, `Err`
/// with the problems of one that is not.
pub fn said(found: &Verified, path: &str) -> Result<String, String> {
    let read = format!("{} entries and {} changelog records, up to csn {}", found.entries, found.changelog, found.csn);
    if found.problems.is_empty() {
        return Ok(format!(
            "the store at {path} is sound: {read}; every entry is stored under its own name, below its parent, in \
             the UUID index and as of its last change in the changelog, and the entry count is right\n"
        ));
    }
    let count = found.problems.count();
    Err(format!(
        "the store at {path} is not sound: {count} problem{} in {read} (sled read every record: its files are \
         whole, but its trees disagree, which no write leaves; restore another backup, or rebuild it from a \
         consumer's replica: see Backup and restore in docs/operations.md){}",
        if count == 1 { "" } else { "s" },
        found.problems
    ))
}

#[cfg(test)]
mod tests {
    use tether_protocol::Csn;
    use tether_store::Problems;

    use super::*;

    fn found(problems: &[&str], more: u64) -> Verified {
        Verified {
            entries: 3,
            changelog: 2,
            csn: Csn(9),
            problems: Problems { said: problems.iter().map(|p| (*p).to_owned()).collect(), more },
        }
    }

    #[test]
    fn a_sound_store_is_said_on_the_output_and_one_that_is_not_as_an_error_listing_its_problems() {
        let sound = said(&found(&[], 0), "/b").expect("sound");
        assert!(sound.starts_with("the store at /b is sound: 3 entries and 2 changelog records, up to csn 9; "));
        let one = said(&found(&["entry a has no parent"], 0), "/b").expect_err("not sound");
        assert!(one.starts_with("the store at /b is not sound: 1 problem in 3 entries"), "{one}");
        assert!(one.ends_with("\n  - entry a has no parent"), "{one}");
        let many = said(&found(&["p", "q"], 7), "/b").expect_err("not sound");
        assert!(many.starts_with("the store at /b is not sound: 9 problems in "), "{many}");
        assert!(many.ends_with("\n  - p\n  - q\n  and 7 more"), "{many}");
    }
}
