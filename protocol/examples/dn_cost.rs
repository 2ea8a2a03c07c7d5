//! Instruction cost of DN work, for callgrind: every replicated entry's DN is parsed,
//! normalized and rendered on each decode and encode, so these few thousand instructions
//! per DN are paid once per entry on the hot path.
//!
//! The example runs one operation `N` times on one DN shape inside `measure`, a function
//! callgrind can count alone (setup and the process around it excluded):
//!
//! ```text
//! cargo build --release -p tether-protocol --example dn_cost
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null --toggle-collect='dn_cost::measure' \
//!     target/release/examples/dn_cost parse simple 10000
//! ```
//!
//! and the `Collected` figure divided by `N` is instructions per operation (each including
//! freeing what it built). Without arguments it lists the operations and shapes. Wall time
//! is not the point: on a shared machine instruction counts are the stable measure.

use std::hint::black_box;
use std::process::ExitCode;

use tether_protocol::codec;
use tether_protocol::dn::normalize_text;
use tether_protocol::{Dn, Rdn};

/// The DN shapes measured: what a directory of people mostly holds, and the rarer forms
/// that take the parser's slower paths.
const SHAPES: [(&str, &str); 6] = [
    ("simple", "uid=u0001234,ou=people,dc=example,dc=com"),
    ("multi", "cn=John Smith+sn=Smith,ou=people,dc=example,dc=com"),
    ("escaped", "cn=Smith\\, John \\2B Co,ou=people,dc=example,dc=com"),
    ("spaced", "CN = John  Smith , OU=People, DC=Example, DC=Com"),
    ("unicode", "cn=ÉLODIE ŞAHİN,ou=people,dc=example,dc=com"),
    ("hex", "1.3.6.1.4.1.1466.0=#04024869,ou=people,dc=example,dc=com"),
];

/// The operations measured, each over one DN of the chosen shape.
/// `encode_str` and `decode_str` move the DN's text as a plain string: the codec's own
/// share of `encode` and `decode`.
const OPS: [&str; 10] = [
    "parse",
    "decode",
    "decode_str",
    "encode",
    "encode_str",
    "display",
    "tree_key",
    "rdn_new",
    "normalize_text",
    "clone",
];

/// What `measure` works on, prepared outside it so callgrind does not count the setup.
struct Inputs {
    text: String,
    /// The DN as rendered, what `encode` sends.
    shown: String,
    dn: Dn,
    bytes: Vec<u8>,
    /// The leaf RDN's AVAs once per iteration, consumed by `rdn_new`.
    avas: Vec<Vec<tether_protocol::dn::Ava>>,
    /// The leaf's first value as written, for `normalize_text`.
    value: String,
}

#[inline(never)]
fn measure(op: &str, n: usize, inputs: &mut Inputs) -> usize {
    let mut sink = 0usize;
    match op {
        "parse" => {
            for _ in 0..n {
                sink += Dn::parse(black_box(&inputs.text)).map_or(0, |d| d.depth());
            }
        }
        "decode" => {
            for _ in 0..n {
                sink += codec::decode::<Dn>(black_box(&inputs.bytes)).map_or(0, |d| d.depth());
            }
        }
        "encode" => {
            for _ in 0..n {
                sink += codec::encode(black_box(&inputs.dn)).map_or(0, |b| b.len());
            }
        }
        "decode_str" => {
            for _ in 0..n {
                sink += codec::decode::<String>(black_box(&inputs.bytes)).map_or(0, |s| s.len());
            }
        }
        "encode_str" => {
            for _ in 0..n {
                sink += codec::encode(black_box(&inputs.shown)).map_or(0, |b| b.len());
            }
        }
        "display" => {
            for _ in 0..n {
                sink += black_box(&inputs.dn).to_string().len();
            }
        }
        "tree_key" => {
            for _ in 0..n {
                sink += black_box(&inputs.dn).tree_key().len();
            }
        }
        "rdn_new" => {
            for avas in inputs.avas.drain(..) {
                sink += Rdn::new(black_box(avas)).map_or(0, |r| r.normalized().len());
            }
        }
        "normalize_text" => {
            for _ in 0..n {
                sink += normalize_text(black_box(&inputs.value)).len();
            }
        }
        "clone" => {
            for _ in 0..n {
                sink += black_box(&inputs.dn).clone().depth();
            }
        }
        _ => {}
    }
    sink
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let shape = args.get(1).and_then(|s| SHAPES.iter().find(|(name, _)| name == s));
    let (Some(op), Some((_, text)), Some(n)) = (
        args.first().filter(|op| OPS.contains(&op.as_str())),
        shape,
        args.get(2).and_then(|n| n.parse::<usize>().ok()),
    ) else {
        eprintln!("usage: dn_cost OP SHAPE N");
        eprintln!("  OP:    {}", OPS.join(" "));
        for (name, text) in SHAPES {
            eprintln!("  SHAPE: {name:8} {text}");
        }
        return ExitCode::FAILURE;
    };
    let dn = match Dn::parse(text) {
        Ok(dn) => dn,
        Err(err) => {
            eprintln!("shape {text:?} does not parse: {err}");
            return ExitCode::FAILURE;
        }
    };
    let bytes = match codec::encode(&dn) {
        Ok(bytes) => bytes,
        Err(err) => {
            eprintln!("shape {text:?} does not encode: {err}");
            return ExitCode::FAILURE;
        }
    };
    // rdn_new builds the leaf RDN from its AVAs, n copies made here.
    let avas =
        if op == "rdn_new" { dn.rdn().map(|r| vec![r.avas().to_vec(); n]).unwrap_or_default() } else { Vec::new() };
    let value = dn.rdn().and_then(|r| r.avas()[0].value_str()).unwrap_or_default().to_owned();
    let mut inputs = Inputs { text: (*text).to_owned(), shown: dn.to_string(), dn, bytes, avas, value };
    let sink = measure(op, n, &mut inputs);
    println!("{op} {}: {n} iterations ({sink})", args[1]);
    ExitCode::SUCCESS
}
