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

/// How often a copy under way says how far it has come (well inside the client's wait).
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

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
    )
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
pub async fn serve<W: AsyncWrite + Unpin>(
    writer: &mut FrameWriter<W>,
    dir: Arc<Directory>,
    dest: String,
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
            dir.backup(Path::new(&dest), &mut watch)
        }
    });
    tokio::pin!(job);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + PROGRESS_EVERY, PROGRESS_EVERY);
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
                let line = format!("copying: {} keys so far (the directory holds {} entries)\n", p.keys, p.entries);
                respond(writer, &ControlResponse::Output(line)).await?;
            }
        }
    }
}
