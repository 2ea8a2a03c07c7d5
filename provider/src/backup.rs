//! `tether-provider backup`: the store copied while the provider runs
//! ([`Directory::backup`]), served through the control socket, and what the command
//! says of the copy.
//!
//! The copy runs on a blocking thread for as long as the store takes to read (tens of
//! seconds at a million entries). The client waits at most
//! [`ANSWER_WAIT`](tether_protocol::control::ANSWER_WAIT) for each part of an answer,
//! so the progress is sent while it runs; and the copy stops, its files removed, once
//! no one waits for it any more (the command interrupted, or the provider stopping and
//! cutting its control connections), rather than running on behind a shutdown.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tether_protocol::control::{respond, respond_done, ControlError, ControlResponse};
use tether_protocol::frame::FrameWriter;
use tether_store::{BackupProgress, BackupReport, Directory, StoreError};
use tokio::io::AsyncWrite;

pub mod writer;

/// How often a copy under way says how far it has come (well inside the client's wait).
pub const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// What `backup` prints once the copy at `dest` is made.
pub fn said(report: &BackupReport, dest: &str) -> String {
    format!(
        "backed up the store to {dest}: {} entries and {} changelog records, every change up to csn {} of history \
         {} (changes made while it was copied: {}, brought in after it, the last {} with writes held for {:.1} ms)\n\
         to restore it, stop the provider, put the folder in place of its data_dir (as the provider's user, \
         keeping the mode: `cp -a`), and start it: consumers resume by delta, except one that replicated a change \
         made after csn {}, which reloads in full\n",
        report.entries,
        report.changelog,
        report.csn,
        report.history,
        report.caught_up,
        report.caught_up_held,
        report.writes_held.as_secs_f64() * 1000.0,
        report.csn,
    ) + &removed_said(&report.removed_leftovers)
}

/// What `backup` says of the copies that earlier backups' dead processes left beside
/// the destination and this one removed: nothing when there were none.
fn removed_said(removed: &[std::path::PathBuf]) -> String {
    match removed {
        [] => String::new(),
        removed => format!(
            "removed {} left beside it by a backup whose process died (killed, or the machine down): {}\n",
            match removed.len() {
                1 => "the copy".to_owned(),
                n => format!("{n} copies"),
            },
            removed.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// What a copy under way says of how far it has come: a line for standard error, apart
/// from the result a script reads.
pub fn progress_said(p: &BackupProgress) -> String {
    format!("copying: {} keys so far (the directory holds {} entries)\n", p.keys, p.entries)
}

/// Sets its flag when dropped: the copy's thread then abandons it.
struct AbandonOnDrop(Arc<AtomicBool>);

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Answers a `backup` request: copies `dir` into `dest` (absolute), saying how far it
/// has come every 5 s, then what it made, or why it made nothing.
/// The copy is written by `copy_writer`.
pub async fn serve<W: AsyncWrite + Unpin>(
    writer: &mut FrameWriter<W>,
    dir: Arc<Directory>,
    dest: String,
    copy_writer: writer::Writer,
) -> Result<(), ControlError> {
    serve_every(writer, dir, dest, copy_writer, PROGRESS_EVERY).await
}

/// [`serve`], saying how far the copy has come `every` so often.
async fn serve_every<W: AsyncWrite + Unpin>(
    writer: &mut FrameWriter<W>,
    dir: Arc<Directory>,
    dest: String,
    copy_writer: writer::Writer,
    every: Duration,
) -> Result<(), ControlError> {
    if !Path::new(&dest).is_absolute() {
        let refused = format!("backup destination {dest} is not an absolute path; nothing was written");
        return respond(writer, &ControlResponse::Error(refused)).await;
    }
    let abandoned = Arc::new(AtomicBool::new(false));
    // Dropped with this future: when the client goes, or the connection is cut.
    let _abandon = AbandonOnDrop(abandoned.clone());
    let (progress, mut seen) = tokio::sync::watch::channel(None::<BackupProgress>);
    let job = tokio::task::spawn_blocking({
        let dest = dest.clone();
        move || {
            let mut watch = |p: BackupProgress| {
                progress.send_replace(Some(p));
                !abandoned.load(Ordering::Relaxed)
            };
            dir.backup_through(Path::new(&dest), &mut |folder| copy_writer.open(folder), &mut watch)
        }
    });
    tokio::pin!(job);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            done = &mut job => {
                let made = done.unwrap_or_else(|e| Err(StoreError::Corrupt(format!("the copy's thread: {e}"))));
                return match made {
                    Ok(report) => {
                        tracing::info!(
                            dest = %dest,
                            csn = %report.csn,
                            entries = report.entries,
                            changelog = report.changelog,
                            caught_up = report.caught_up,
                            caught_up_held = report.caught_up_held,
                            writes_held_ms = report.writes_held.as_secs_f64() * 1000.0,
                            "backup made"
                        );
                        respond_done(writer, &said(&report, &dest)).await
                    }
                    Err(e) => {
                        tracing::warn!(dest = %dest, error = %e, "backup failed");
                        let said = match e {
                            StoreError::BackupDestination { .. } => e.to_string(),
                            e => format!("backing up the store to {dest}: {e}"),
                        };
                        respond(writer, &ControlResponse::Error(said)).await
                    }
                };
            }
            _ = tick.tick() => {
                let Some(p) = *seen.borrow_and_update() else { continue };
                respond(writer, &ControlResponse::Progress(progress_said(&p))).await?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use tether_protocol::{codec, frame, Attributes, Dn, Value};

    use super::*;

    /// A directory of the suffix and `n` people.
    fn directory(path: &Path, n: usize) -> Arc<Directory> {
        let suffix = Dn::parse("dc=example,dc=com").unwrap();
        let dir = Directory::open(path, &suffix).unwrap();
        let mut entries = Vec::new();
        let mut top = Attributes::new();
        top.add("objectClass", [Value::from("domain")]).unwrap();
        top.add("dc", [Value::from("example")]).unwrap();
        entries.push((suffix, top, None));
        for i in 0..n {
            let mut a = Attributes::new();
            a.add("objectClass", [Value::from("person")]).unwrap();
            a.add("cn", [Value::from(format!("p{i}").as_str())]).unwrap();
            a.add("sn", [Value::from("x".repeat(300).as_str())]).unwrap();
            entries.push((Dn::parse(&format!("cn=p{i},dc=example,dc=com")).unwrap(), a, None));
        }
        dir.bulk_add(&entries).unwrap();
        Arc::new(dir)
    }

    /// A copy longer than the progress interval says how far it has come while it runs
    /// (the client waits at most 30 s for each part of an answer, and a million entries
    /// take longer), as progress, apart from the output, then what it made, and ends the
    /// answer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_long_copy_says_how_far_it_has_come_then_what_it_made() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = directory(&tmp.path().join("store"), 20_000);
        let dest = tmp.path().join("copy").display().to_string();
        let (client, server) = tokio::io::duplex(1 << 16);
        let served = tokio::spawn({
            let dest = dest.clone();
            async move {
                let (_reader, mut writer) = frame::split(server);
                serve_every(&mut writer, dir, dest, writer::Writer::Here, Duration::from_millis(20)).await
            }
        });
        let (mut reader, _writer) = frame::split(client);
        let (mut said, mut progress) = (Vec::new(), Vec::new());
        while let Some(frame) = reader.read_frame().await.unwrap() {
            match codec::decode::<ControlResponse>(&frame).unwrap() {
                ControlResponse::Progress(text) => progress.push(text),
                ControlResponse::Output(text) => said.push(text),
                ControlResponse::Done => break,
                other => panic!("{other:?}"),
            }
        }
        served.await.unwrap().unwrap();
        let [last] = &said[..] else { panic!("the result alone is output: {said:?}") };
        assert!(!progress.is_empty(), "no progress before the result");
        assert!(
            progress.iter().all(|p| p.starts_with("copying: ") && p.ends_with("(the directory holds 20001 entries)\n")),
            "{progress:?}"
        );
        assert!(last.starts_with(&format!("backed up the store to {dest}: 20001 entries and ")), "{last}");
        assert!(Path::new(&dest).join("db").is_file());
    }

    /// A client gone while the copy runs (the command interrupted, or the provider
    /// stopping and cutting the connection off) abandons it: nothing is left at the
    /// destination or beside it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_copy_whose_client_has_gone_is_abandoned_and_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = directory(&tmp.path().join("store"), 20_000);
        let dest = tmp.path().join("copy");
        let (client, server) = tokio::io::duplex(1 << 16);
        drop(client);
        let (_reader, mut writer) = frame::split(server);
        let shown = dest.display().to_string();
        let served =
            serve_every(&mut writer, dir.clone(), shown, writer::Writer::Here, Duration::from_millis(20)).await;
        assert!(served.is_err(), "the progress could not be sent");
        // The copy's thread stops at its next batch and removes what it wrote.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let left = || std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect::<Vec<_>>();
        while left().len() > 1 {
            assert!(std::time::Instant::now() < deadline, "left behind: {:?}", left());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(left(), ["store"]);
        assert!(!dest.exists());
    }

    /// What `backup` says puts each number of the report in its place: the CSN the
    /// restore's advice names is the one consumers' positions are held to, to know which
    /// of them reload, and the changes brought in with writes held are told apart from
    /// all those made while the trees were copied.
    #[test]
    fn what_backup_says_puts_each_number_of_the_report_in_its_place() {
        let report = BackupReport {
            csn: tether_protocol::Csn(7_002),
            history: tether_protocol::HistoryId([0x11; 16]),
            entries: 1_001,
            changelog: 503,
            caught_up: 40,
            caught_up_held: 6,
            writes_held: Duration::from_micros(2_500),
            removed_leftovers: Vec::new(),
        };
        assert_eq!(
            said(&report, "/var/backups/tether"),
            "backed up the store to /var/backups/tether: 1001 entries and 503 changelog records, every change up to \
             csn 7002 of history 11111111-1111-1111-1111-111111111111 (changes made while it was copied: 40, brought \
             in after it, the last 6 with writes held for 2.5 ms)\n\
             to restore it, stop the provider, put the folder in place of its data_dir (as the provider's user, \
             keeping the mode: `cp -a`), and start it: consumers resume by delta, except one that replicated a change \
             made after csn 7002, which reloads in full\n"
        );
        // The copies a dead backup left beside the destination, when this one removed
        // them, are named after.
        let removed = BackupReport {
            removed_leftovers: vec!["/var/backups/tether.partial.9-1".into(), "/var/backups/tether.partial.9-2".into()],
            ..report
        };
        assert!(said(&removed, "/var/backups/tether").ends_with(
            "reloads in full\nremoved 2 copies left beside it by a backup whose process died (killed, or the machine \
             down): /var/backups/tether.partial.9-1, /var/backups/tether.partial.9-2\n"
        ));
    }

    /// The progress is said well inside the client's wait for each part of an answer:
    /// a copy that takes longer than that wait (a million entries do) is otherwise cut
    /// off by the command as a provider that stopped answering, and abandoned.
    #[test]
    fn the_progress_is_said_well_inside_the_clients_wait() {
        assert!(PROGRESS_EVERY * 3 <= tether_protocol::control::ANSWER_WAIT, "{PROGRESS_EVERY:?}");
    }

    /// A destination the process would resolve against its own folder is refused.
    #[tokio::test]
    async fn a_relative_destination_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = directory(&tmp.path().join("store"), 1);
        let (client, server) = tokio::io::duplex(1 << 16);
        let (_reader, mut writer) = frame::split(server);
        serve(&mut writer, dir, "backups/today".into(), writer::Writer::Here).await.unwrap();
        let (mut reader, _writer) = frame::split(client);
        let frame = reader.read_frame().await.unwrap().unwrap();
        let ControlResponse::Error(e) = codec::decode::<ControlResponse>(&frame).unwrap() else { panic!() };
        assert_eq!(e, "backup destination backups/today is not an absolute path; nothing was written");
    }
}
