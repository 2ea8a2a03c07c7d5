//! The provider's control endpoint: a Unix socket (mode 0600) that answers `status`,
//! `search` and `reload` for the command-line tools, which cannot open the store while
//! the provider holds it.

use std::sync::Arc;

use tether_protocol::control::{read_request, respond, respond_paged, respond_text, ControlRequest, ControlResponse};
use tether_protocol::frame;
use tether_protocol::{ldif, SearchSpec};
use tether_store::Directory;
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::registry::Registry;
use crate::status::ProviderStatus;

/// Entries per search output chunk.
const SEARCH_CHUNK: usize = 500;

/// What the control endpoint can reach.
#[derive(Debug, Clone)]
pub struct ControlContext {
    /// The store.
    pub dir: Arc<Directory>,
    /// Live sessions.
    pub registry: Registry,
    /// Asked to reload the configuration.
    pub reload: tokio::sync::mpsc::Sender<tokio::sync::oneshot::Sender<Result<String, String>>>,
}

/// Serves control connections until `shutdown`.
pub async fn serve(listener: UnixListener, ctx: ControlContext, shutdown: CancellationToken) {
    let handler = move |stream: UnixStream| {
        let ctx = ctx.clone();
        async move {
            if let Err(e) = handle(stream, ctx).await {
                debug!(error = %e, "control connection ended");
            }
        }
    };
    tether_config::shell::serve_control(listener, shutdown.cancelled_owned(), handler).await;
}

/// Why `spec` cannot be searched in `dir`, as LDAP would refuse it: a base outside the
/// suffix, or one that names no entry (with the nearest entry above it). A search that
/// printed nothing for a mistyped base looked exactly like one that matched nothing.
pub fn check_search(dir: &Directory, spec: &SearchSpec) -> Result<(), String> {
    let suffix = dir.suffix();
    if !spec.base.is_descendant_of(suffix) {
        return Err(format!("--base {} is outside this directory, whose suffix is {suffix}", spec.base));
    }
    match dir.failure().observe(dir.entries().missing_base(&spec.base)) {
        Ok(None) => Ok(()),
        Ok(Some(missing)) => Err(missing.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// The LDIF of the page of `spec` after the DN key `after`, and the key the next page
/// starts after (`None` at the end). Reads the store and renders up to [`SEARCH_CHUNK`]
/// entries ([`respond_paged`] runs it off the async threads).
fn search_page_text(
    dir: &Directory,
    spec: &SearchSpec,
    after: Option<&[u8]>,
) -> Result<(String, Option<Vec<u8>>), String> {
    let (page, next) =
        dir.failure().observe(dir.entries().search_page(spec, after, SEARCH_CHUNK)).map_err(|e| e.to_string())?;
    let mut text = Vec::new();
    for e in &page {
        // Writing to a Vec cannot fail.
        let _ = ldif::writer::write_entry(&mut text, &e.dn, &e.attrs);
    }
    Ok((String::from_utf8_lossy(&text).into_owned(), next))
}

async fn handle(stream: UnixStream, ctx: ControlContext) -> Result<(), tether_protocol::control::ControlError> {
    let (mut reader, mut writer) = frame::split(stream);
    let request = read_request(&mut reader).await?;
    let reply = match request {
        ControlRequest::Status { json } => match ProviderStatus::collect(&ctx.dir, &ctx.registry, true) {
            Ok(status) if json => {
                Ok(serde_json::to_string_pretty(&status).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}")) + "\n")
            }
            Ok(status) => Ok(status.to_text()),
            Err(e) => {
                ctx.dir.failure().note(&e);
                Err(e.to_string())
            }
        },
        ControlRequest::Search { spec, .. } => {
            if let Err(e) = check_search(&ctx.dir, &spec) {
                return respond(&mut writer, &ControlResponse::Error(e)).await;
            }
            let (dir, mut after, mut done) = (ctx.dir.clone(), None, false);
            let next_page = move || {
                if done {
                    return Ok(None);
                }
                let (text, next) = search_page_text(&dir, &spec, after.as_deref())?;
                done = next.is_none();
                after = next;
                Ok(Some(text))
            };
            return respond_paged(&mut writer, next_page).await;
        }
        ControlRequest::Reload => {
            let (tx, rx) = tokio::sync::oneshot::channel();
            if ctx.reload.send(tx).await.is_err() {
                Err("provider is shutting down".to_owned())
            } else {
                rx.await.unwrap_or_else(|_| Err("reload was abandoned".to_owned()))
            }
        }
        other => Err(format!("the provider does not support {other:?}")),
    };
    match reply {
        Ok(text) => {
            respond_text(&mut writer, &text).await?;
            respond(&mut writer, &ControlResponse::Done).await?;
        }
        Err(e) => respond(&mut writer, &ControlResponse::Error(e)).await?,
    }
    Ok(())
}
