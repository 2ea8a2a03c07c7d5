//! Helpers shared by the store's integration tests.
#![allow(dead_code)]
#![allow(clippy::unwrap_used)]

use tether_protocol::{Attributes, Change, Dn, ModOp, Modification, Rdn, Value};

pub fn dn(s: &str) -> Dn {
    Dn::parse(s).unwrap()
}

pub fn attrs(pairs: &[(&str, &str)]) -> Attributes {
    let mut a = Attributes::new();
    for (k, v) in pairs {
        a.add(k, [Value::from(*v)]).unwrap();
    }
    a
}

pub fn add(d: &str, pairs: &[(&str, &str)]) -> Change {
    Change::Add { dn: dn(d), attrs: attrs(pairs) }
}

pub fn add_ou(d: &str) -> Change {
    let ou = d.split(',').next().unwrap().split('=').nth(1).unwrap();
    add(d, &[("objectClass", "organizationalUnit"), ("ou", ou)])
}

pub fn add_person(d: &str) -> Change {
    let uid = d.split(',').next().unwrap().split('=').nth(1).unwrap();
    add(d, &[("objectClass", "inetOrgPerson"), ("uid", uid), ("cn", uid), ("sn", "Tester")])
}

pub fn modify(d: &str, op: ModOp, attr: &str, values: &[&str]) -> Change {
    Change::Modify {
        dn: dn(d),
        mods: vec![Modification { op, attr: attr.into(), values: values.iter().map(|v| Value::from(*v)).collect() }],
    }
}

pub fn moddn(d: &str, new_rdn: &str, superior: Option<&str>) -> Change {
    Change::ModDn {
        dn: dn(d),
        new_rdn: Rdn::parse(new_rdn).unwrap(),
        delete_old_rdn: true,
        new_superior: superior.map(dn),
    }
}

pub fn delete(d: &str) -> Change {
    Change::Delete { dn: dn(d) }
}

pub const SUFFIX: &str = "dc=example,dc=com";

pub fn base_tree() -> Vec<Change> {
    vec![
        add("dc=example,dc=com", &[("objectClass", "domain"), ("dc", "example")]),
        add_ou("ou=people,dc=example,dc=com"),
        add_ou("ou=groups,dc=example,dc=com"),
    ]
}
