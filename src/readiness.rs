//! Start-up state shared by the services: the dependencies each mode needs
//! (EC2 client, instance metadata) are set once, in the background, and
//! Probe reports ready only when all of them are.

use std::sync::{Arc, OnceLock};

use crate::error::{Error, Result};

/// A dependency that becomes available once, after start-up work.
#[derive(Debug)]
pub struct Slot<T> {
    what: &'static str,
    cell: Arc<OnceLock<T>>,
}

impl<T> Clone for Slot<T> {
    fn clone(&self) -> Self {
        Slot {
            what: self.what,
            cell: self.cell.clone(),
        }
    }
}

impl<T> Slot<T> {
    /// An empty slot; `what` names the dependency in "not ready" errors.
    pub fn new(what: &'static str) -> Self {
        Slot {
            what,
            cell: Arc::new(OnceLock::new()),
        }
    }

    /// Fills the slot; later fills are ignored.
    pub fn set(&self, value: T) {
        let _ = self.cell.set(value);
    }

    /// Whether the dependency is available.
    pub fn is_set(&self) -> bool {
        self.cell.get().is_some()
    }

    /// The dependency, or Unavailable while start-up is still running, so
    /// the CO retries instead of failing the operation.
    pub fn get(&self) -> Result<&T> {
        self.cell.get().ok_or_else(|| {
            Error::Unavailable(format!(
                "driver is still initialising: {} not ready",
                self.what
            ))
        })
    }
}

/// Whether every dependency of this process's mode is initialised.
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Vec<Arc<dyn Fn() -> bool + Send + Sync>>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness")
            .field("ready", &self.is_ready())
            .finish()
    }
}

impl Readiness {
    /// Adds a dependency that must be available before Probe says ready.
    pub fn require<T: Send + Sync + 'static>(&mut self, slot: &Slot<T>) {
        let slot = slot.clone();
        self.checks.push(Arc::new(move || slot.is_set()));
    }

    /// True when every required dependency is available.
    pub fn is_ready(&self) -> bool {
        self.checks.iter().all(|check| check())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_slot_is_filled() {
        let a: Slot<u32> = Slot::new("a");
        let b: Slot<String> = Slot::new("metadata");
        let mut ready = Readiness::default();
        ready.require(&a);
        ready.require(&b);
        assert!(!ready.is_ready());
        a.set(1);
        assert!(!ready.is_ready());
        let err = b.get().unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable);
        assert!(err.to_string().contains("metadata"));
        b.set("x".into());
        assert!(ready.is_ready());
        assert_eq!(*a.get().unwrap(), 1);
    }
}
