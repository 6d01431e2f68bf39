//! Noticing file changes by polling: the files under a set of paths with a stamp each
//! (modification time, size, inode), compared between two looks.
//!
//! Polling rather than inotify: it works the same on every filesystem (network mounts,
//! Kubernetes ConfigMap volumes that swap a symlink), needs no new dependency, and a look
//! every ~200 ms at a few hundred files costs nothing measurable.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The extensions read from directories (a file named explicitly is read whatever it ends
/// with), as weft-api's loader does.
const EXTENSIONS: &[&str] = &["yaml", "yml", "json"];

/// What identifies one version of a file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
    /// Status change time: moves when a file is replaced by a rename within the same
    /// mtime tick.
    ctime: (i64, i64),
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Stamp {
        Stamp {
            modified: meta.modified().ok(),
            len: meta.len(),
            inode: meta.ino(),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// The stamp of one file; `None` when it is missing or not a file.
pub(crate) fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    meta.is_file().then(|| Stamp::of(&meta))
}

/// Every file under `paths`, keyed by (index of the path it was found under, file path) so
/// that files keep the order the paths were given in. Directories are read recursively,
/// except those in `shallow` (only their own files); hidden entries are skipped; missing
/// paths contribute nothing.
pub(crate) fn list(paths: &[PathBuf], shallow: &[PathBuf]) -> BTreeMap<(usize, PathBuf), Stamp> {
    let mut out = BTreeMap::new();
    for (i, p) in paths.iter().enumerate() {
        let depth = if shallow.contains(p) { 1 } else { usize::MAX };
        collect(i, p, true, depth, &mut out);
    }
    out
}

fn collect(
    index: usize,
    path: &Path,
    explicit: bool,
    depth: usize,
    out: &mut BTreeMap<(usize, PathBuf), Stamp>,
) {
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    if meta.is_dir() {
        if depth == 0 {
            return;
        }
        let Ok(entries) = std::fs::read_dir(path) else {
            return;
        };
        for entry in entries.filter_map(Result::ok) {
            let child = entry.path();
            let hidden = child
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'));
            if !hidden {
                collect(index, &child, false, depth - 1, out);
            }
        }
    } else if meta.is_file()
        && (explicit
            || path
                .extension()
                .is_some_and(|e| EXTENSIONS.contains(&e.to_string_lossy().as_ref())))
    {
        out.insert((index, path.to_owned()), Stamp::of(&meta));
    }
}

/// `path`'s stamp now, when it differs from the one in `seen` (which it replaces): `None`
/// when the file did not change since the last look, `Some(None)` when it went missing.
pub(crate) fn changed(
    path: &Path,
    seen: &std::sync::Mutex<Option<Stamp>>,
) -> Option<Option<Stamp>> {
    let now = stamp(path);
    let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
    if *seen == now {
        return None;
    }
    *seen = now;
    Some(now)
}

/// Runs `poll` on the blocking pool every `interval`, until the returned future is dropped.
/// A poll that panics is logged with `what` and polling goes on.
pub(crate) async fn every(
    interval: std::time::Duration,
    what: &'static str,
    poll: impl Fn() + Send + Sync + 'static,
) {
    let poll = std::sync::Arc::new(poll);
    loop {
        tokio::time::sleep(interval).await;
        let poll = poll.clone();
        if tokio::task::spawn_blocking(move || poll()).await.is_err() {
            tracing::error!("{what} poll panicked; polling on");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_config_files_in_path_order() {
        let dir = crate::server::test_dir("poll-list");
        std::fs::create_dir_all(dir.join("sub/.hidden")).unwrap();
        for f in [
            "b.yaml",
            "a.yml",
            "notes.txt",
            "sub/c.json",
            "sub/.hidden/d.yaml",
        ] {
            std::fs::write(dir.join(f), "x").unwrap();
        }
        let explicit = dir.join("notes.txt");
        let listed = list(&[explicit.clone(), dir.clone(), dir.join("missing")], &[]);
        let names: Vec<(usize, String)> = listed
            .keys()
            .map(|(i, p)| {
                let rel = p.strip_prefix(&dir).unwrap_or(p);
                (*i, rel.display().to_string())
            })
            .collect();
        assert_eq!(
            names,
            [
                (0, "notes.txt".to_owned()),
                (1, "a.yml".to_owned()),
                (1, "b.yaml".to_owned()),
                (1, "sub/c.json".to_owned()),
            ]
        );
        let before = stamp(&dir.join("b.yaml")).unwrap();
        std::fs::write(dir.join("b.yaml"), "longer").unwrap();
        assert_ne!(stamp(&dir.join("b.yaml")).unwrap(), before);
        assert!(stamp(&dir.join("sub")).is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn shallow_directories_keep_to_their_own_files() {
        let dir = crate::server::test_dir("poll-shallow");
        std::fs::create_dir_all(dir.join("networking")).unwrap();
        for f in ["bookinfo.yaml", "networking/all-v1.yaml"] {
            std::fs::write(dir.join(f), "x").unwrap();
        }
        let names = |shallow: &[PathBuf]| -> Vec<String> {
            list(std::slice::from_ref(&dir), shallow)
                .keys()
                .map(|(_, p)| p.strip_prefix(&dir).unwrap_or(p).display().to_string())
                .collect()
        };
        assert_eq!(names(&[]), ["bookinfo.yaml", "networking/all-v1.yaml"]);
        assert_eq!(names(std::slice::from_ref(&dir)), ["bookinfo.yaml"]);
    }
}
