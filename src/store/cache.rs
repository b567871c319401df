//! Models loaded in this backend. A model's files are read once per backend; later calls reuse it
//! until the catalog row changes (dropped and registered again) or `ai_unload_model` evicts it.

use super::catalog::CatalogEntry;
use crate::engine::error::Result;
use crate::engine::models::AnyModel;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

pub struct Loaded {
    pub model: Rc<AnyModel>,
    /// sha256 and registration time of the catalog row it was loaded for.
    identity: (String, String),
    pub load_time: Duration,
    pub loaded_at: SystemTime,
    pub last_used: SystemTime,
    pub calls: u64,
    /// The statement in which the catalog row was last checked (see `checked`).
    checked_in: Option<Statement>,
}

impl Loaded {
    /// Whether it was loaded for this catalog row, and not for one dropped, rolled back or replaced since.
    fn is_for(&self, entry: &CatalogEntry) -> bool {
        self.identity.0 == entry.sha256 && self.identity.1 == entry.created_at
    }
}

/// A statement of this backend: its start time and local transaction id.
pub type Statement = (i64, u32);

thread_local! {
    // A backend runs queries on one thread, so the cache needs no lock.
    static LOADED: RefCell<HashMap<String, Loaded>> = RefCell::new(HashMap::new());
}

/// The model, if the catalog row was already checked in `statement`: per-row calls then skip
/// the catalog query. A statement's view of ai.models does not change under it, except through
/// pg_ai's own functions, which unload or replace what they change.
pub fn checked(name: &str, statement: Statement) -> Option<Rc<AnyModel>> {
    LOADED.with_borrow_mut(|loaded| {
        let l = loaded.get_mut(name).filter(|l| l.checked_in == Some(statement))?;
        l.last_used = SystemTime::now();
        l.calls += 1;
        Some(l.model.clone())
    })
}

/// Notes that `name`'s catalog row was checked in `statement`.
pub fn mark_checked(name: &str, statement: Statement) {
    LOADED.with_borrow_mut(|loaded| {
        if let Some(l) = loaded.get_mut(name) {
            l.checked_in = Some(statement);
        }
    });
}

pub fn get_or_load(entry: &CatalogEntry, load: impl FnOnce() -> Result<AnyModel>) -> Result<Rc<AnyModel>> {
    let hit = LOADED.with_borrow_mut(|loaded| {
        let l = loaded.get_mut(&entry.name).filter(|l| l.is_for(entry))?;
        l.last_used = SystemTime::now();
        l.calls += 1;
        Some(l.model.clone())
    });
    if let Some(model) = hit {
        return Ok(model);
    }
    let started = Instant::now();
    let model = load()?;
    Ok(insert(entry, model, started.elapsed(), 1))
}

/// Keeps `model` as the loaded copy of `entry`; `calls` counts the task calls it has served.
pub fn insert(entry: &CatalogEntry, model: AnyModel, load_time: Duration, calls: u64) -> Rc<AnyModel> {
    let model = Rc::new(model);
    let now = SystemTime::now();
    let identity = (entry.sha256.clone(), entry.created_at.clone());
    let loaded =
        Loaded { model: model.clone(), identity, load_time, loaded_at: now, last_used: now, calls, checked_in: None };
    if crate::guc::merge_memory() {
        crate::memory::mark_mergeable();
    }
    if entry.registered_here {
        // A registration that rolls back takes its loaded model, and the model's memory, with it.
        let name = entry.name.clone();
        super::rollback::on_rollback(move || {
            unload(&name);
        });
    }
    LOADED.with_borrow_mut(|l| {
        l.insert(entry.name.clone(), loaded);
        if let Some(cap) = crate::guc::max_cache_bytes() {
            evict_beyond(l, cap, &entry.name);
        }
    });
    model
}

/// Unloads the least recently used models until the rest fit in `cap` bytes; `keep` (the model just loaded)
/// stays even if it alone is larger. A statement still using an evicted model keeps it until it ends.
fn evict_beyond(loaded: &mut HashMap<String, Loaded>, cap: usize, keep: &str) {
    let mut total: usize = loaded.values().map(|l| l.model.memory_bytes()).sum();
    let mut by_age: Vec<(SystemTime, String)> =
        loaded.iter().filter(|(name, _)| *name != keep).map(|(name, l)| (l.last_used, name.clone())).collect();
    by_age.sort();
    for (_, name) in by_age {
        if total <= cap {
            break;
        }
        if let Some(l) = loaded.remove(&name) {
            total -= l.model.memory_bytes();
        }
    }
}

/// Forgets a model in this backend; true if it was loaded. The freed memory goes back to the kernel (unless a
/// statement still holds the model).
pub fn unload(name: &str) -> bool {
    let removed = LOADED.with_borrow_mut(|l| l.remove(name));
    let unloaded = removed.is_some();
    drop(removed);
    if unloaded {
        crate::engine::allocator::give_back_freed_memory();
    }
    unloaded
}

/// Whether `name` is loaded for the catalog row `entry`.
pub fn is_loaded_for(name: &str, entry: &CatalogEntry) -> bool {
    LOADED.with_borrow(|l| l.get(name).is_some_and(|l| l.is_for(entry)))
}

/// Calls `f` for each loaded model, by name.
pub fn for_each(mut f: impl FnMut(&str, &Loaded)) {
    LOADED.with_borrow(|l| {
        let mut names: Vec<&String> = l.keys().collect();
        names.sort();
        for name in names {
            f(name, &l[name]);
        }
    });
}
