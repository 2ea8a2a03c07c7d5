//! The consumer's id for providers: sent in every `Hello`, shown in the provider's
//! status, and the key under which a provider holds back changelog trimming for this
//! consumer's position. Made once per store, and kept in the store's folder.
//!
//! Two consumers must never share one. A new consumer is often seeded with a copy of
//! another's `data_dir` (to skip the first full refresh); with the same id, the provider
//! would keep one position for both, and the slower one would fall back to a present
//! refresh whenever the faster one let trimming pass it. So the id also records where it
//! was made (host name and the folder's absolute path), and a store found anywhere else
//! is a copy, or a move, and takes a new id. A move costs nothing: the old id's position
//! stops holding back trimming once `hold_for_consumers` passes, and is forgotten when
//! trimming passes it.

use std::path::Path;

use anyhow::{Context, Result};
use tracing::info;

/// File in `data_dir` holding this consumer's id.
const ID_FILE: &str = "consumer.id";
/// File in `data_dir` naming where the id was made: `<host name>:<absolute path>`.
const ORIGIN_FILE: &str = "consumer.origin";

/// The id of the consumer whose store is in `data_dir`, made (or remade, for a store
/// that was copied or moved here) as needed. A store from before origins were recorded
/// keeps its id and has its origin recorded now.
pub fn client_id(data_dir: &Path) -> Result<String> {
    let folder = std::fs::canonicalize(data_dir).with_context(|| format!("resolving {}", data_dir.display()))?;
    let here = format!("{}:{}", tether_config::shell::host_name(), folder.display());
    let (id_path, origin_path) = (data_dir.join(ID_FILE), data_dir.join(ORIGIN_FILE));
    let id = std::fs::read_to_string(&id_path).ok().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    let origin = std::fs::read_to_string(&origin_path).ok().map(|s| s.trim().to_owned());
    let id = match (id, origin) {
        (Some(id), Some(origin)) if origin == here => return Ok(id),
        (Some(id), None) => id,
        (old, origin) => {
            let id = uuid::Uuid::new_v4().to_string();
            if let (Some(old), Some(origin)) = (old, origin) {
                info!(made_at = %origin, old_id = %old, new_id = %id, "the store was made elsewhere (a copy or a move): it takes a new consumer id");
            }
            write(&id_path, &id)?;
            id
        }
    };
    write(&origin_path, &here)?;
    Ok(id)
}

/// The id recorded in `data_dir`, if any, without making one: what a stopped
/// consumer's `status` shows, so that its rows in a provider's status can be found.
/// (A store copied here takes a new id at its next start; this is the one it has now.)
pub fn recorded_id(data_dir: &Path) -> Option<String> {
    std::fs::read_to_string(data_dir.join(ID_FILE)).ok().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_keeps_its_id_and_a_copy_of_it_takes_another() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        std::fs::create_dir(&a).unwrap();
        let id = client_id(&a).unwrap();
        assert_eq!(client_id(&a).unwrap(), id, "the same store, the same id");

        // A copy of the folder elsewhere (a consumer seeded from another's store).
        std::fs::create_dir(&b).unwrap();
        for file in [ID_FILE, ORIGIN_FILE] {
            std::fs::copy(a.join(file), b.join(file)).unwrap();
        }
        let copy = client_id(&b).unwrap();
        assert_ne!(copy, id);
        assert_eq!(client_id(&b).unwrap(), copy, "and keeps its own from then on");
        assert_eq!(client_id(&a).unwrap(), id, "the original is untouched");

        // A store from before origins were recorded keeps its id.
        std::fs::remove_file(a.join(ORIGIN_FILE)).unwrap();
        assert_eq!(client_id(&a).unwrap(), id);
        assert!(a.join(ORIGIN_FILE).exists());
    }

    /// Where an id was made is the folder itself, not the path the store was named by:
    /// a `data_dir` reached through a symbolic link, or spelled another way, is the same
    /// store and keeps its id. Taken by the path as given, every change of spelling
    /// (a link, a relative `data_dir` and another working directory) made a new id, and
    /// the provider held trimming back for the old one until `hold_for_consumers` passed.
    #[test]
    fn a_store_named_by_another_path_to_its_folder_keeps_its_id() {
        let tmp = tempfile::tempdir().unwrap();
        let a = tmp.path().join("a");
        std::fs::create_dir(&a).unwrap();
        let id = client_id(&a).unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&a, &link).unwrap();
        assert_eq!(client_id(&link).unwrap(), id, "through a symbolic link");
        assert_eq!(client_id(&a.join("..").join("a")).unwrap(), id, "spelled another way");
        assert_eq!(client_id(&a).unwrap(), id, "by its own name again");
    }
}
