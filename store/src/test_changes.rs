//! Changes for the crate's unit tests.

use tether_protocol::{Attributes, Change, Dn, Value};

/// An add of `dn` with one value per attribute.
pub(crate) fn add(dn: &str, attrs: &[(&str, &str)]) -> Change {
    let mut a = Attributes::new();
    for (k, v) in attrs {
        a.add(k, [Value::from(*v)]).unwrap();
    }
    Change::Add { dn: Dn::parse(dn).unwrap(), attrs: a }
}

/// The add of the tests' suffix entry, `dc=example,dc=com`.
pub(crate) fn suffix() -> Change {
    add("dc=example,dc=com", &[("objectClass", "domain"), ("dc", "example")])
}
