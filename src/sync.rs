//! The driver's one policy for poisoned mutexes.
//!
//! A std `Mutex` is poisoned when a thread panics while holding it. Every
//! lock in the driver guards state whose updates are single inserts and
//! removes (in-flight keys, device names, coalescer queues, modification
//! queues), so what a panicking holder leaves behind is consistent; failing
//! every later RPC because of one panic would turn a bug into an outage. So
//! poisoning is ignored, everywhere, through [`lock`].

use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`, recovering the guard from a poisoned lock (see the module
/// docs for why that is safe here).
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
