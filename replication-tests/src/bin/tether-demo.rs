//! `tether-demo`: a provider and two consumers as real processes on loopback, with their
//! stores in a temporary folder. Loads the sample directory, shows the refresh, live
//! writes arriving, a consumer stopped and restarted catching up by delta, and ends with
//! the convergence check. Run it with `cargo run --release --bin tether-demo`.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use replication_tests::harness::{wait_until, Agreement, Consumer, Grant, Provider, ProviderOptions, PEOPLE_SECRET};

/// How long any one step may take before the demo reports failure.
const STEP: Duration = Duration::from_secs(60);
const PEOPLE: &str = "ou=people,dc=example,dc=com";
const GROUPS: &str = "ou=groups,dc=example,dc=com";
const ALL: &str = "(objectClass=*)";

fn say(msg: &str) {
    println!("==> {msg}");
}

fn converged(p: &Provider, c: &Consumer, agreement: &str, base: &str) -> Result<bool> {
    Ok(p.search(base, "subtree", ALL)? == c.search(agreement, base, "subtree", ALL)?)
}

fn entries(ldif: &str) -> usize {
    ldif.lines().filter(|l| l.starts_with("dn:")).count()
}

/// `tether-demo` takes no arguments; this gives it `--help` and refuses any other, so a
/// mistyped flag does not start the whole demo.
#[derive(Debug, clap::Parser)]
#[command(
    name = "tether-demo",
    version,
    about = "A provider and two consumers on loopback: refresh, live writes, a consumer stopped and caught up \
             by delta, and the convergence check",
    long_about = None,
    after_help = "Uses the tether-provider and tether-consumer of TETHER_BIN_DIR if set, else builds them with \
                  cargo in the source tree it was built from."
)]
struct Cli {}

fn main() -> ExitCode {
    let _ = <Cli as clap::Parser>::parse();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let root = tmp.path();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let examples =
        examples.canonicalize().with_context(|| format!("finding the sample data in {}", examples.display()))?;
    let sample = examples.join("sample.ldif");
    say(&format!("working in {}", root.display()));
    if std::env::var_os(replication_tests::harness::BIN_DIR_ENV).is_none() {
        say("building the provider and consumer binaries (quick once they are built)");
    }
    replication_tests::harness::bin("tether-provider")?;

    let opts = ProviderOptions {
        grants: vec![
            Grant { agreement: "people".into(), secret: PEOPLE_SECRET.into(), base: PEOPLE.into() },
            Grant { agreement: "groups".into(), secret: "groups-secret-for-tests".into(), base: GROUPS.into() },
        ],
        ..ProviderOptions::default()
    };
    let mut provider = Provider::configure(&root.join("provider"), &opts)?;
    let t = Instant::now();
    provider.load(&sample).context("loading the sample")?;
    say(&format!("loaded {} in {:?}", sample.display(), t.elapsed()));
    provider.start()?;
    say(&format!("provider listening on 127.0.0.1:{}", provider.port));

    let people = Agreement::persist("people", PEOPLE, PEOPLE_SECRET);
    let groups = Agreement {
        mode: "refresh-only".into(),
        extra: "interval = \"1s\"\nretry = [\"200ms x1000\"]\n".into(),
        ..Agreement::persist("groups", GROUPS, "groups-secret-for-tests")
    };
    let mut live = Consumer::configure(&root.join("consumer-a"), provider.port, &[people])?;
    let mut poller = Consumer::configure(&root.join("consumer-b"), provider.port, &[groups])?;
    let t = Instant::now();
    live.start()?;
    poller.start()?;
    wait_until(STEP, "consumer A to refresh", || converged(&provider, &live, "people", PEOPLE))?;
    say(&format!(
        "consumer A (refresh-and-persist, {PEOPLE}): {} entries after a {} refresh in {:?}",
        entries(&live.search("people", PEOPLE, "subtree", ALL)?),
        live.agreement_status("people")?["last_refresh"].as_str().unwrap_or("?"),
        t.elapsed()
    ));
    wait_until(STEP, "consumer B to refresh", || converged(&provider, &poller, "groups", GROUPS))?;
    say(&format!(
        "consumer B (refresh-only every 1s, {GROUPS}): {} entries",
        entries(&poller.search("groups", GROUPS, "subtree", ALL)?)
    ));

    let changes = examples.join("changes.ldif");
    say(&format!("writing {}: add a person, modify a group and a person, move one, delete one", changes.display()));
    provider.write_ok(&std::fs::read_to_string(&changes).with_context(|| format!("reading {}", changes.display()))?)?;
    let t = Instant::now();
    wait_until(STEP, "the writes to reach consumer A", || converged(&provider, &live, "people", PEOPLE))?;
    say(&format!("consumer A has them after {:?} (pushed)", t.elapsed()));
    wait_until(STEP, "the writes to reach consumer B", || converged(&provider, &poller, "groups", GROUPS))?;
    say(&format!("consumer B has them after {:?} (next poll)", t.elapsed()));

    say("stopping consumer A (SIGTERM), then 200 more writes");
    let status = live.stop()?;
    if !status.success() {
        bail!("consumer A exited with {status}");
    }
    let mut changes = String::new();
    for i in 0..200 {
        changes.push_str(&format!(
            "dn: uid=u{:04},ou={},{PEOPLE}\nchangetype: modify\nreplace: title\ntitle: Demo title {i}\n-\n\n",
            (i * 4) + 8,
            ["engineering", "sales", "support", "finance"][((i * 4) + 8) % 4]
        ));
    }
    provider.write_ok(&changes)?;
    let t = Instant::now();
    live.start()?;
    wait_until(STEP, "consumer A to catch up", || converged(&provider, &live, "people", PEOPLE))?;
    let refresh = live.agreement_status("people")?["last_refresh"].as_str().unwrap_or("?").to_owned();
    say(&format!("consumer A restarted and caught up by a {refresh} refresh in {:?}", t.elapsed()));
    if refresh != "delta" {
        bail!("expected a delta refresh after a short absence, got {refresh}");
    }

    say("convergence check (canonical LDIF, byte for byte):");
    let mut ok = true;
    for (name, consumer, base) in [("people", &live, PEOPLE), ("groups", &poller, GROUPS)] {
        let p = provider.search(base, "subtree", ALL)?;
        let c = consumer.search(name, base, "subtree", ALL)?;
        let same = p == c;
        ok &= same;
        println!(
            "    {name:<8} {base:<32} provider {:>5} entries  consumer {:>5}  {}",
            entries(&p),
            entries(&c),
            if same { "identical" } else { "DIFFERENT" }
        );
    }
    provider.stop()?;
    live.stop()?;
    poller.stop()?;
    if !ok {
        bail!("replicas differ");
    }
    say("all replicas converged");
    Ok(())
}
