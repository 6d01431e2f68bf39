//! The config store: the mesh resources in force, and a notification when they change.
//!
//! [`ConfigStore`] is what the rest of the control plane reads; [`FileStore`] implements it
//! over files and directories (a Kubernetes API watcher will be a second implementation).
//!
//! Rules of the file store, per file:
//! - a file is loaded and validated with weft-api; when it has no error it is *in force*;
//! - a file with an error (syntax, schema, a field rule) is reported with weft-api's
//!   diagnostics (file:line:column) and its previous good version stays in force, resource
//!   for resource; a file that never loaded cleanly contributes nothing;
//! - a deleted file takes its resources with it.
//!
//! Resources are the files' resources in path order; when two files define the same
//! kind/namespace/name the later one wins, as applying the files in order would
//! (weft-api's `Loaded::effective`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use weft_api::{Diagnostic, Loaded, Resource, Severity};

use super::poll::{self, Stamp};

/// One version of the store's content.
#[derive(Debug, Clone, Default)]
pub struct ConfigSnapshot {
    /// Increases with every change the store publishes.
    pub generation: u64,
    /// The resources in force, validated.
    pub resources: Vec<Resource>,
    /// Files whose latest version was rejected, in path order.
    pub errors: Vec<FileError>,
}

/// A file whose latest version is not in force.
#[derive(Debug, Clone)]
pub struct FileError {
    pub path: PathBuf,
    /// weft-api's findings for the rejected version, errors first.
    pub diagnostics: Vec<Diagnostic>,
    /// True when an earlier good version of the file is still in force.
    pub previous_in_force: bool,
    /// When the rejected version was read.
    pub since: SystemTime,
}

/// Where the control plane reads mesh resources from.
pub trait ConfigStore: Send + Sync + 'static {
    /// The current snapshot now, and every later one: the receiver is marked changed each
    /// time the resources or the errors change.
    fn subscribe(&self) -> watch::Receiver<Arc<ConfigSnapshot>>;

    /// The current snapshot.
    fn current(&self) -> Arc<ConfigSnapshot> {
        self.subscribe().borrow().clone()
    }
}

/// Mesh resources from files and directories, re-read when they change ([`FileStore::poll`],
/// or [`FileStore::watch`] to poll on an interval).
pub struct FileStore {
    paths: Vec<PathBuf>,
    /// Directories among `paths` read without their subdirectories.
    shallow: Vec<PathBuf>,
    files: Mutex<BTreeMap<(usize, PathBuf), FileState>>,
    tx: watch::Sender<Arc<ConfigSnapshot>>,
}

/// What the store knows of one file.
#[derive(Debug)]
struct FileState {
    stamp: Stamp,
    /// The last good version's resources (empty when there never was one).
    resources: Vec<Resource>,
    /// Whether `resources` came from a good version at all.
    loaded: bool,
    error: Option<FileError>,
}

impl FileStore {
    /// Reads every file under `paths` now. Missing paths are not an error here: files that
    /// appear under them later are picked up.
    pub fn new(paths: Vec<PathBuf>) -> FileStore {
        FileStore::with_shallow(paths, Vec::new())
    }

    /// Like [`FileStore::new`], reading the directories in `shallow` without their
    /// subdirectories (`weft up DIR` takes DIR's own files; `DIR/networking/` is for
    /// `weft apply`).
    pub fn with_shallow(paths: Vec<PathBuf>, shallow: Vec<PathBuf>) -> FileStore {
        let store = FileStore {
            paths,
            shallow,
            files: Mutex::new(BTreeMap::new()),
            tx: watch::channel(Arc::new(ConfigSnapshot::default())).0,
        };
        store.poll();
        store
    }

    /// The paths this store reads.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// Looks at the files once; reloads what changed and publishes a new snapshot if
    /// anything did. Returns whether it did. Blocking file I/O.
    pub fn poll(&self) -> bool {
        let listed = poll::list(&self.paths, &self.shallow);
        let mut files = lock(&self.files);
        let mut changed = false;
        let gone: Vec<(usize, PathBuf)> = files
            .keys()
            .filter(|k| !listed.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            tracing::info!(file = %key.1.display(), "config file removed; its resources are withdrawn");
            files.remove(&key);
            changed = true;
        }
        for (key, stamp) in listed {
            let prev = files.get(&key);
            if prev.is_some_and(|f| f.stamp == stamp) {
                continue;
            }
            let next = load_file(&key.1, stamp, prev);
            files.insert(key, next);
            changed = true;
        }
        if changed {
            let snapshot = snapshot(&files, self.tx.borrow().generation + 1);
            drop(files);
            self.tx.send_replace(Arc::new(snapshot));
        }
        changed
    }

    /// Polls every `interval` until the returned future is dropped. Each look runs on the
    /// blocking pool, so a slow filesystem does not stall the runtime.
    pub async fn watch(self: Arc<Self>, interval: Duration) {
        poll::every(interval, "config", move || {
            self.poll();
        })
        .await
    }
}

impl ConfigStore for FileStore {
    fn subscribe(&self) -> watch::Receiver<Arc<ConfigSnapshot>> {
        self.tx.subscribe()
    }
}

/// Loads one file, keeping `prev`'s resources when the new version has errors.
fn load_file(path: &Path, stamp: Stamp, prev: Option<&FileState>) -> FileState {
    let loaded = weft_api::load_paths(&[path]);
    let errors = loaded.error_count();
    if errors == 0 {
        for d in loaded
            .diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Warning)
        {
            tracing::warn!("{d}");
        }
        tracing::info!(
            file = %path.display(),
            resources = loaded.resources.len(),
            "config file loaded"
        );
        return FileState {
            stamp,
            resources: loaded.resources,
            loaded: true,
            error: None,
        };
    }
    let (resources, had_good) = match prev {
        Some(p) => (p.resources.clone(), p.loaded),
        None => (Vec::new(), false),
    };
    let mut diagnostics: Vec<Diagnostic> = loaded
        .diagnostics
        .into_iter()
        .filter(|d| d.severity >= Severity::Warning)
        .collect();
    diagnostics.sort_by_key(|d| std::cmp::Reverse(d.severity));
    tracing::warn!(
        file = %path.display(),
        errors,
        "config file rejected; {}",
        if had_good {
            "its previous version stays in force"
        } else {
            "none of its resources are in force"
        }
    );
    for d in diagnostics.iter().filter(|d| d.severity == Severity::Error) {
        tracing::warn!("{d}");
    }
    FileState {
        stamp,
        resources,
        loaded: had_good,
        error: Some(FileError {
            path: path.to_owned(),
            diagnostics,
            previous_in_force: had_good,
            since: SystemTime::now(),
        }),
    }
}

fn snapshot(files: &BTreeMap<(usize, PathBuf), FileState>, generation: u64) -> ConfigSnapshot {
    warn_replaced(files.values().flat_map(|f| f.resources.iter()));
    let all = Loaded {
        files: files.len(),
        resources: files
            .values()
            .flat_map(|f| f.resources.iter().cloned())
            .collect(),
        rejected: Vec::new(),
        diagnostics: Vec::new(),
    };
    ConfigSnapshot {
        generation,
        resources: all.effective().into_iter().cloned().collect(),
        errors: files.values().filter_map(|f| f.error.clone()).collect(),
    }
}

/// Warns of each resource a later file defines again (as `weft analyze`'s WA0006 does): the
/// later definition is the one in force, which is easy to miss when a directory of task files
/// is loaded whole.
fn warn_replaced<'a>(resources: impl Iterator<Item = &'a Resource>) {
    let mut first: HashMap<(&str, &str, &str), &'a Resource> = HashMap::new();
    for r in resources {
        let key = (r.kind(), r.namespace(), r.name());
        let Some(earlier) = first.insert(key, r) else {
            continue;
        };
        let file = |r: &Resource| {
            r.origin
                .as_ref()
                .map_or_else(String::new, |o| o.source.path.display().to_string())
        };
        if file(earlier) != file(r) {
            tracing::warn!(
                "{} {}/{} in {} replaces its definition in {} (files apply in order, as \
                 kubectl apply does; the later one is in force)",
                r.kind(),
                r.namespace(),
                r.name(),
                file(r),
                file(earlier)
            );
        }
    }
}

/// The file table is rebuilt entry by entry; a panic while it was held leaves whole entries,
/// so a poisoned lock is used as is.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    const REVIEWS_V1: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
"#;

    const REVIEWS_V2: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v2}
"#;

    const RATINGS: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http:
  - route:
    - destination: {host: ratings}
"#;

    /// A misspelt field: a schema error at line 9.
    const REVIEWS_BROKEN: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - destinaton: {host: reviews, subset: v3}
"#;

    fn subsets(store: &FileStore) -> Vec<String> {
        let snap = store.current();
        snap.resources
            .iter()
            .filter_map(|r| match &r.spec {
                weft_api::Spec::VirtualService(vs) => Some(format!(
                    "{}:{}",
                    r.name(),
                    vs.http
                        .first()
                        .and_then(|h| h.route.first())
                        .map(|d| d.destination.subset.clone())
                        .unwrap_or_default()
                )),
                _ => None,
            })
            .collect()
    }

    /// Writes `text` to `path` and makes sure the store sees a new stamp even on a
    /// filesystem with coarse timestamps (the size changes, or the inode does).
    fn write(path: &Path, text: &str) {
        let tmp = path.with_extension("tmp~");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    #[test]
    fn invalid_file_keeps_the_previous_good_version() {
        let dir = crate::server::test_dir("store-invalid");
        let file = dir.join("reviews.yaml");
        write(&file, REVIEWS_V1);
        let store = FileStore::new(vec![dir.clone()]);
        let mut rx = store.subscribe();
        rx.borrow_and_update();
        assert_eq!(subsets(&store), ["reviews:v1"]);
        assert!(store.current().errors.is_empty());

        write(&file, REVIEWS_BROKEN);
        assert!(store.poll());
        assert!(rx.has_changed().unwrap());
        assert_eq!(subsets(&store), ["reviews:v1"], "the old version stays");
        let snap = store.current();
        let [err] = &snap.errors[..] else {
            panic!("one file error: {:?}", snap.errors)
        };
        assert_eq!(err.path, file);
        assert!(err.previous_in_force);
        let text = err.diagnostics[0].to_string();
        assert!(text.contains("reviews.yaml:9:"), "{text}");
        assert!(text.contains("destinaton"), "{text}");

        // Nothing changed on disk: nothing is published.
        assert!(!store.poll());

        write(&file, REVIEWS_V2);
        assert!(store.poll());
        assert_eq!(subsets(&store), ["reviews:v2"]);
        assert!(store.current().errors.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn new_and_deleted_files() {
        let dir = crate::server::test_dir("store-new-delete");
        write(&dir.join("reviews.yaml"), REVIEWS_V1);
        let store = FileStore::new(vec![dir.clone()]);
        let g0 = store.current().generation;

        write(&dir.join("ratings.yaml"), RATINGS);
        assert!(store.poll());
        let mut got = subsets(&store);
        got.sort();
        assert_eq!(got, ["ratings:", "reviews:v1"]);
        assert!(store.current().generation > g0);

        std::fs::remove_file(dir.join("reviews.yaml")).unwrap();
        assert!(store.poll());
        assert_eq!(subsets(&store), ["ratings:"]);

        // A broken new file contributes nothing and is reported.
        write(&dir.join("reviews.yaml"), REVIEWS_BROKEN);
        assert!(store.poll());
        assert_eq!(subsets(&store), ["ratings:"]);
        let snap = store.current();
        assert_eq!(snap.errors.len(), 1);
        assert!(!snap.errors[0].previous_in_force);

        // Deleting the broken file clears its error.
        std::fs::remove_file(dir.join("reviews.yaml")).unwrap();
        assert!(store.poll());
        assert!(store.current().errors.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn later_files_replace_earlier_definitions() {
        let dir = crate::server::test_dir("store-order");
        write(&dir.join("a.yaml"), REVIEWS_V1);
        write(&dir.join("b.yaml"), REVIEWS_V2);
        let store = FileStore::new(vec![dir.clone()]);
        assert_eq!(subsets(&store), ["reviews:v2"]);
        // Paths keep the order they were given in, whatever their names.
        let store = FileStore::new(vec![dir.join("b.yaml"), dir.join("a.yaml")]);
        assert_eq!(subsets(&store), ["reviews:v1"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn watch_publishes_changes() {
        let dir = crate::server::test_dir("store-watch");
        write(&dir.join("reviews.yaml"), REVIEWS_V1);
        let store = Arc::new(FileStore::new(vec![dir.clone()]));
        let mut rx = store.subscribe();
        rx.borrow_and_update();
        let task = tokio::spawn(store.clone().watch(Duration::from_millis(20)));
        write(&dir.join("reviews.yaml"), REVIEWS_V2);
        tokio::time::timeout(Duration::from_secs(10), rx.changed())
            .await
            .expect("a change within 10 s")
            .expect("store alive");
        assert_eq!(subsets(&store), ["reviews:v2"]);
        task.abort();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
