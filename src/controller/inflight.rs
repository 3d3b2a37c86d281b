//! Operations in flight, by key: a second request for a key that is being
//! worked on gets Aborted (the CO retries later) instead of racing the first.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};

/// The set of keys being worked on.
#[derive(Debug, Clone, Default)]
pub struct InFlight {
    keys: Arc<Mutex<HashSet<String>>>,
}

/// Holds a key until dropped.
#[derive(Debug)]
pub struct Guard {
    keys: Arc<Mutex<HashSet<String>>>,
    key: String,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.keys.lock().expect("inflight lock").remove(&self.key);
    }
}

impl InFlight {
    /// Claims `key` for `what`, or Aborted if it is already claimed.
    pub fn claim(&self, key: &str, what: &str) -> Result<Guard> {
        let mut keys = self.keys.lock().expect("inflight lock");
        if !keys.insert(key.to_string()) {
            return Err(Error::Aborted(format!(
                "an operation on {what} {key:?} is already in progress"
            )));
        }
        Ok(Guard {
            keys: self.keys.clone(),
            key: key.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_claim_is_aborted_until_released() {
        let f = InFlight::default();
        let g = f.claim("pvc-1", "volume").unwrap();
        let e = f.claim("pvc-1", "volume").unwrap_err();
        assert_eq!(e.code(), tonic::Code::Aborted);
        assert!(e.to_string().contains("pvc-1"));
        assert!(f.claim("pvc-2", "volume").is_ok());
        drop(g);
        assert!(f.claim("pvc-1", "volume").is_ok());
    }
}
