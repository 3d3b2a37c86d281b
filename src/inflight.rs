//! Operations in flight, by key (volume names and ids in the controller,
//! volume ids in the node): a second operation on a key that is busy
//! fails at once with Aborted (the CSI answer that makes the CO retry later)
//! instead of queueing behind, or racing, the first.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};

/// The set of keys with an operation in progress.
#[derive(Debug, Clone, Default)]
pub struct InFlight {
    keys: Arc<Mutex<HashSet<String>>>,
}

/// Holds a key until dropped. It is moved into the blocking work, so a
/// cancelled RPC does not free the key while its mkfs is still running.
#[derive(Debug)]
pub struct Guard {
    keys: Arc<Mutex<HashSet<String>>>,
    key: String,
}

impl InFlight {
    /// Takes `key`, or Aborted naming `what` when it is taken.
    pub fn try_lock(&self, key: String, what: &str) -> Result<Guard> {
        let mut keys = crate::sync::lock(&self.keys);
        if !keys.insert(key.clone()) {
            return Err(Error::Aborted(format!(
                "an operation on {what} is already in progress"
            )));
        }
        Ok(Guard {
            keys: self.keys.clone(),
            key,
        })
    }

    /// Takes `key`, naming it as `{kind} "{key}"` when it is taken.
    pub fn claim(&self, key: &str, kind: &str) -> Result<Guard> {
        self.try_lock(key.to_string(), &format!("{kind} {key:?}"))
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let mut keys = crate::sync::lock(&self.keys);
        keys.remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_key_is_aborted_until_released() {
        let locks = InFlight::default();
        let first = locks.try_lock("vol-1".into(), "volume vol-1").unwrap();
        let err = locks.try_lock("vol-1".into(), "volume vol-1").unwrap_err();
        assert_eq!(err.code(), tonic::Code::Aborted);
        assert!(err.to_string().contains("vol-1"));
        let _other = locks.try_lock("vol-2".into(), "volume vol-2").unwrap();
        drop(first);
        locks.try_lock("vol-1".into(), "volume vol-1").unwrap();
    }
}
