//! An app store in memory: the rules of [`super::StoredApps`] tested in process, without a
//! database, and a store that can be made to fail like one that went away.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use tokio::sync::watch;

use super::{AppRef, AppRows, Changes, StoreError, StoredApp};

/// Apps in a map. Every change wakes the watches; [`MemoryRows::set_down`] makes every
/// call fail as an unreachable database does.
#[derive(Debug)]
pub struct MemoryRows {
    apps: parking_lot::Mutex<BTreeMap<String, StoredApp>>,
    revision: watch::Sender<u64>,
    down: AtomicBool,
    finds: AtomicUsize,
}

impl Default for MemoryRows {
    fn default() -> Self {
        MemoryRows {
            apps: parking_lot::Mutex::new(BTreeMap::new()),
            revision: watch::Sender::new(0),
            down: AtomicBool::new(false),
            finds: AtomicUsize::new(0),
        }
    }
}

impl MemoryRows {
    /// Makes every call fail (`true`) or succeed again (`false`).
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
        // A watch ends when its database goes.
        self.revision.send_modify(|r| *r += 1);
    }

    /// How many single-app lookups reached the store.
    pub fn finds(&self) -> usize {
        self.finds.load(Ordering::SeqCst)
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Unreachable {
                url: "memory".to_owned(),
                reason: "set down".to_owned(),
            });
        }
        Ok(())
    }

    fn changed(&self) {
        self.revision.send_modify(|r| *r += 1);
    }

    fn put(&self, app: &StoredApp, new: bool) -> Result<(), StoreError> {
        self.check()?;
        let mut apps = self.apps.lock();
        if new == apps.contains_key(&app.id) {
            return Err(if new {
                StoreError::Duplicate { field: "id" }
            } else {
                StoreError::NotFound(app.id.clone())
            });
        }
        if apps.values().any(|a| a.key == app.key && a.id != app.id) {
            return Err(StoreError::Duplicate { field: "key" });
        }
        apps.insert(app.id.clone(), app.clone());
        drop(apps);
        self.changed();
        Ok(())
    }
}

impl AppRows for Arc<MemoryRows> {
    fn migrate(&self) -> BoxFuture<'_, Result<u32, StoreError>> {
        async move { self.check().map(|()| 1) }.boxed()
    }

    fn load(&self) -> BoxFuture<'_, Result<Vec<StoredApp>, StoreError>> {
        async move {
            self.check()?;
            Ok(self.apps.lock().values().cloned().collect())
        }
        .boxed()
    }

    fn find<'a>(&'a self, by: AppRef<'a>) -> BoxFuture<'a, Result<Option<StoredApp>, StoreError>> {
        async move {
            self.finds.fetch_add(1, Ordering::SeqCst);
            self.check()?;
            let apps = self.apps.lock();
            Ok(match by {
                AppRef::Id(id) => apps.get(id).cloned(),
                AppRef::Key(key) => apps.values().find(|a| a.key == key).cloned(),
            })
        }
        .boxed()
    }

    fn insert<'a>(&'a self, app: &'a StoredApp) -> BoxFuture<'a, Result<(), StoreError>> {
        async move { self.put(app, true) }.boxed()
    }

    fn update<'a>(&'a self, app: &'a StoredApp) -> BoxFuture<'a, Result<(), StoreError>> {
        async move { self.put(app, false) }.boxed()
    }

    fn remove<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        async move {
            self.check()?;
            if self.apps.lock().remove(id).is_none() {
                return Err(StoreError::NotFound(id.to_owned()));
            }
            self.changed();
            Ok(())
        }
        .boxed()
    }

    fn watch(&self) -> BoxFuture<'_, Result<Box<dyn Changes>, StoreError>> {
        async move {
            self.check()?;
            Ok(Box::new(Watch {
                rows: self.clone(),
                revision: self.revision.subscribe(),
            }) as Box<dyn Changes>)
        }
        .boxed()
    }
}

struct Watch {
    rows: Arc<MemoryRows>,
    revision: watch::Receiver<u64>,
}

impl Changes for Watch {
    fn next(&mut self) -> BoxFuture<'_, Result<(), StoreError>> {
        async move {
            let _ = self.revision.changed().await;
            self.rows.check()
        }
        .boxed()
    }
}
