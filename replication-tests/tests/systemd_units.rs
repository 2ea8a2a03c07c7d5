//! The example systemd units (`examples/systemd/`): systemd reads them without a
//! complaint, they start the binaries with a command line the binaries take, and they
//! hold the settings docs/operations.md relies on (the stop and reload signals, the
//! folders' modes that keep the store private and let a status group reach the control
//! socket, no core dumps).

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use replication_tests::harness::bin;

/// Each example unit, the binary it starts and that binary's server command.
const UNITS: [(&str, &str, &str); 2] =
    [("tether-provider.service", "tether-provider", "serve"), ("tether-consumer.service", "tether-consumer", "run")];

fn unit_path(unit: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/systemd").join(unit)
}

/// The `[Service]` settings of `text`, each key's last value.
fn service_settings(text: &str) -> HashMap<String, String> {
    let mut section = "";
    let mut settings = HashMap::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        if line.starts_with('[') {
            section = line;
        } else if let (Some((key, value)), "[Service]") = (line.split_once('='), section) {
            settings.insert(key.trim().to_owned(), value.trim().to_owned());
        }
    }
    settings
}

#[test]
fn the_example_units_hold_the_settings_the_docs_rely_on() -> Result<()> {
    for (unit, binary, server) in UNITS {
        let text = std::fs::read_to_string(unit_path(unit))?;
        let settings = service_settings(&text);
        let process = binary.trim_start_matches("tether-");
        let expected = [
            ("ExecStart", format!("/usr/local/bin/{binary} {server} -c /etc/tether/{process}.toml")),
            ("KillSignal", "SIGTERM".to_owned()),
            ("ExecReload", "/bin/kill -HUP $MAINPID".to_owned()),
            ("Restart", "on-failure".to_owned()),
            ("StateDirectory", format!("tether/{process}")),
            ("StateDirectoryMode", "0700".to_owned()),
            ("RuntimeDirectory", format!("tether-{process}")),
            ("RuntimeDirectoryMode", "0711".to_owned()),
            ("LimitCORE", "0".to_owned()),
            ("SupplementaryGroups", "tether-monitor".to_owned()),
        ];
        for (key, value) in expected {
            assert_eq!(settings.get(key), Some(&value), "{unit}: {key}");
        }
        // The paths its header tells the configuration to use are the unit's folders.
        for line in [
            format!("#   data_dir     = \"/var/lib/tether/{process}\""),
            format!("#   control      = \"/run/tether-{process}/control.sock\""),
            "#   status_group = \"tether-monitor\"".to_owned(),
        ] {
            assert!(text.contains(&line), "{unit}: {line}");
        }
        // The command line is the binary's own: given a file that is not there, the
        // server says so, rather than that the command line is wrong.
        let missing = tempfile::tempdir()?.path().join(format!("{process}.toml"));
        let out = std::process::Command::new(bin(binary)?).args([server, "-c"]).arg(&missing).output()?;
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && said.contains(&missing.display().to_string()), "{binary}: {said}");
        assert!(!said.contains("Usage"), "{binary}: {said}");
    }
    Ok(())
}

/// `systemd-analyze verify` reads each unit, its `ExecStart` pointed at the binary built
/// here (it checks that the program exists), without a warning. Where systemd is not
/// installed there is nothing to ask.
#[test]
fn systemd_reads_the_example_units_without_a_warning() -> Result<()> {
    let Ok(probe) = std::process::Command::new("systemd-analyze").arg("--version").output() else {
        return Ok(());
    };
    if !probe.status.success() {
        return Ok(());
    }
    let tmp = tempfile::tempdir()?;
    for (unit, binary, _) in UNITS {
        let text = std::fs::read_to_string(unit_path(unit))?;
        let built = bin(binary)?.canonicalize()?;
        let here = tmp.path().join(unit);
        std::fs::write(&here, text.replace(&format!("/usr/local/bin/{binary}"), &built.display().to_string()))?;
        let out = std::process::Command::new("systemd-analyze")
            .arg("verify")
            .arg(&here)
            .output()
            .context("running systemd-analyze verify")?;
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && said.trim().is_empty(), "{unit}: {said}");
    }
    Ok(())
}
