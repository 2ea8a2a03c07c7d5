//! Generated test data: a directory of people under two branches, and change workloads
//! of every kind (add, modify add/delete/replace/increment, delete, modrdn, and moves between the
//! branches, i.e. into and out of an agreement on one of them). The generator tracks the
//! directory it produced, so every change it emits is valid and `write` applies all of them.

use std::fmt::Write as _;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The suffix of generated directories.
pub const SUFFIX: &str = "dc=example,dc=com";
/// Branch most agreements replicate.
pub const PEOPLE: &str = "ou=people,dc=example,dc=com";
/// The other branch; moves between the two cross an agreement's scope.
pub const OTHERS: &str = "ou=others,dc=example,dc=com";

/// A generated directory and the generator of changes against it.
#[derive(Debug)]
pub struct Workload {
    /// Live entries: (uid, in people?).
    live: Vec<(String, bool)>,
    /// Next fresh uid number.
    next: u64,
    /// Deterministic randomness.
    rng: StdRng,
}

impl Workload {
    /// A directory of `n` people (about 4 in 5 under `ou=people`), from `seed`.
    pub fn new(n: usize, seed: u64) -> Self {
        let mut w = Self { live: Vec::new(), next: 0, rng: StdRng::seed_from_u64(seed) };
        for _ in 0..n {
            let people = w.rng.gen_ratio(4, 5);
            let uid = w.fresh();
            w.live.push((uid, people));
        }
        w
    }

    fn fresh(&mut self) -> String {
        self.next += 1;
        format!("p{:06}", self.next)
    }

    fn dn(uid: &str, people: bool) -> String {
        format!("uid={uid},{}", if people { PEOPLE } else { OTHERS })
    }

    fn person(&mut self, uid: &str, people: bool) -> String {
        let n: u32 = self.rng.gen_range(0..1000);
        format!(
            "dn: {}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: Person {uid}\nsn: Family{n}\nmail: {uid}@example.com\n\
             employeeNumber: {n}\ndescription: generated\n",
            Self::dn(uid, people)
        )
    }

    /// The initial directory as LDIF content records (parents first).
    pub fn initial_ldif(&mut self) -> String {
        let mut out = format!("dn: {SUFFIX}\nobjectClass: domain\ndc: example\n\n");
        for ou in ["people", "others"] {
            let _ = write!(out, "dn: ou={ou},{SUFFIX}\nobjectClass: organizationalUnit\nou: {ou}\n\n");
        }
        let live = self.live.clone();
        for (uid, people) in live {
            out.push_str(&self.person(&uid, people));
            out.push('\n');
        }
        out
    }

    /// `n` new people as LDIF content records, for a further offline load into the
    /// directory generated so far.
    pub fn more_people(&mut self, n: usize) -> String {
        let mut out = String::new();
        for _ in 0..n {
            let uid = self.fresh();
            let people = self.rng.gen_ratio(4, 5);
            out.push_str(&self.person(&uid, people));
            out.push('\n');
            self.live.push((uid, people));
        }
        out
    }

    /// `n` valid change records of every kind, as LDIF.
    pub fn changes(&mut self, n: usize) -> String {
        let mut out = String::new();
        for _ in 0..n {
            let kind = if self.live.len() < 4 { 0 } else { self.rng.gen_range(0..8) };
            match kind {
                0 => {
                    let uid = self.fresh();
                    let people = self.rng.gen_bool(0.7);
                    let record = self.person(&uid, people);
                    out.push_str(&record.replacen('\n', "\nchangetype: add\n", 1));
                    self.live.push((uid, people));
                }
                1 | 2 => {
                    let (uid, people) = self.pick();
                    let v: u32 = self.rng.gen_range(0..100_000);
                    let _ = write!(out, "dn: {}\nchangetype: modify\nreplace: sn\nsn: Family{v}\n-\nreplace: telephoneNumber\ntelephoneNumber: +47 {v}\n-\n", Self::dn(&uid, people));
                }
                3 => {
                    let (uid, people) = self.pick();
                    let _ = write!(out, "dn: {}\nchangetype: modify\ndelete: description\n-\nadd: description\ndescription: changed {}\n-\nincrement: employeeNumber\nemployeeNumber: 1\n-\n", Self::dn(&uid, people), self.next);
                }
                4 => {
                    let i = self.rng.gen_range(0..self.live.len());
                    let (uid, people) = self.live.swap_remove(i);
                    let _ = write!(out, "dn: {}\nchangetype: delete\n", Self::dn(&uid, people));
                }
                5 => {
                    // Rename in place.
                    let i = self.rng.gen_range(0..self.live.len());
                    let (uid, people) = self.live[i].clone();
                    let new_uid = self.fresh();
                    let _ = write!(
                        out,
                        "dn: {}\nchangetype: modrdn\nnewrdn: uid={new_uid}\ndeleteoldrdn: 1\n",
                        Self::dn(&uid, people)
                    );
                    self.live[i] = (new_uid, people);
                }
                _ => {
                    // Move to the other branch: into or out of a people agreement.
                    let i = self.rng.gen_range(0..self.live.len());
                    let (uid, people) = self.live[i].clone();
                    let target = if people { OTHERS } else { PEOPLE };
                    let _ = write!(
                        out,
                        "dn: {}\nchangetype: modrdn\nnewrdn: uid={uid}\ndeleteoldrdn: 1\nnewsuperior: {target}\n",
                        Self::dn(&uid, people)
                    );
                    self.live[i] = (uid, !people);
                }
            }
            out.push('\n');
        }
        out
    }

    fn pick(&mut self) -> (String, bool) {
        let i = self.rng.gen_range(0..self.live.len());
        self.live[i].clone()
    }

    /// Replaces the model of the directory with `live` (uid, under `ou=people`?), read
    /// back from the provider after a write whose outcome is unknown. Fresh uids keep
    /// counting from where they were, so they stay unique.
    pub fn resync(&mut self, live: Vec<(String, bool)>) {
        self.live = live;
    }

    /// Number of live people entries.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }
}
