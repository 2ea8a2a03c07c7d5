//! `check` of both binaries: a configuration file judged as a start would judge it,
//! with nothing started, created or asked, so that configuration management can refuse
//! a file before it is put in place (`validate:` in Ansible, a pre-commit hook) rather
//! than learn of it from a service that does not come back after a restart.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Output;

use anyhow::{Context, Result};
use replication_tests::harness::{bin, Agreement, Consumer, Provider, ProviderOptions, PEOPLE_SECRET};

const PEOPLE: &str = "ou=people,dc=example,dc=com";

/// `BINARY check -c FILE`.
fn check(binary: &str, file: &Path) -> Result<Output> {
    let mut c = std::process::Command::new(bin(binary)?);
    c.arg("check").arg("-c").arg(file);
    c.output().with_context(|| format!("running {c:?}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A file a start takes passes, with what it sets up on standard output; and nothing
/// is made: no store, no `data_dir`, no control socket.
#[test]
fn a_file_a_start_would_take_passes_and_nothing_is_made() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let p = Provider::configure(&tmp.path().join("p"), &ProviderOptions::default())?;
    let c = Consumer::configure(&tmp.path().join("c"), p.port, &[Agreement::persist("people", PEOPLE, PEOPLE_SECRET)])?;
    for (binary, file, says) in [
        ("tether-provider", &p.config, format!("listen   127.0.0.1:{} (plain TCP)\n", p.port)),
        (
            "tether-consumer",
            &c.config,
            format!("agreement people: refresh-and-persist from 127.0.0.1:{}: {PEOPLE} and below\n", p.port),
        ),
    ] {
        let out = check(binary, file)?;
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert!(out.status.success(), "{binary}: {}\n{stderr}", out.status);
        assert!(stdout.starts_with(&format!("{}: valid\n", file.display())), "{binary}: {stdout}");
        assert!(stdout.contains(&says), "{binary}: {stdout}");
        let folder = file.parent().unwrap();
        assert!(stdout.contains(&format!("  data_dir {}\n", folder.join("data").display())), "{stdout}");
        assert!(stderr.is_empty(), "{binary}: {stderr}");
        assert!(!folder.join("data").exists() && !folder.join("ctl.sock").exists(), "{binary} made something");
    }
    Ok(())
}

/// A value a start refuses, and a file it names that cannot be read, are refused with
/// the file, the key and the reason, and exit status 1: what configuration management
/// acts on.
#[test]
fn a_file_a_start_would_refuse_fails_naming_the_key() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let p = Provider::configure(&tmp.path().join("p"), &ProviderOptions::default())?;
    let c = Consumer::configure(&tmp.path().join("c"), p.port, &[Agreement::persist("people", PEOPLE, PEOPLE_SECRET)])?;

    let good = std::fs::read_to_string(&c.config)?;
    std::fs::write(&c.config, good.replace("mode = \"refresh-and-persist\"", "mode = \"refresh-and-pray\""))?;
    let out = check("tether-consumer", &c.config)?;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("{}: key 'agreement[0].mode'", c.config.display())), "{stderr}");
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    std::fs::write(&c.config, good)?;

    // A secret the file names and a start could not read.
    std::fs::remove_file(c.dir.join("secrets/people.key"))?;
    let out = check("tether-consumer", &c.config)?;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("key 'agreement[0].secret_file'"), "{stderr}");

    std::fs::remove_file(p.dir.join("secrets/writer.key"))?;
    let out = check("tether-provider", &p.config)?;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("key 'writer.secret_file'"), "{stderr}");
    assert!(!p.dir.join("data").exists(), "nothing made");
    Ok(())
}

/// What a start would warn of, `check` warns of, on standard error, and the file still
/// passes: a secret others may read works, and is said to be one.
#[test]
fn what_a_start_would_warn_of_is_warned_of_and_the_file_passes() -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir()?;
    let p = Provider::configure(&tmp.path().join("p"), &ProviderOptions::default())?;
    let secret = p.dir.join("secrets/writer.key");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644))?;
    let out = check("tether-provider", &p.config)?;
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("warning: secret file {} is accessible", secret.display())), "{stderr}");
    assert!(text(&out.stdout).ends_with("  [writer]: `write` may change the directory\n"), "{}", text(&out.stdout));
    Ok(())
}

/// The consumer's `check` warns of what its start would warn of, on standard error, and
/// the file passes: a secret others may read works, and is said to be one.
#[test]
fn the_consumer_s_check_warns_of_what_its_start_would() -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir()?;
    let p = Provider::configure(&tmp.path().join("p"), &ProviderOptions::default())?;
    let c = Consumer::configure(&tmp.path().join("c"), p.port, &[Agreement::persist("people", PEOPLE, PEOPLE_SECRET)])?;
    let secret = c.dir.join("secrets/people.key");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644))?;
    let out = check("tether-consumer", &c.config)?;
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("warning: secret file {} is accessible", secret.display())), "{stderr}");
    assert!(text(&out.stdout).contains("agreement people: refresh-and-persist from "), "{}", text(&out.stdout));
    Ok(())
}
