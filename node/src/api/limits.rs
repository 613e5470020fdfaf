//! Per-provider attestation concurrency.
//!
//! The node-wide limit (`limits.max_concurrent_requests`, 503) protects
//! the node; this one protects tenants from each other: one provider may
//! run at most `limits.max_concurrent_attest_per_provider` attestations
//! at once, and the excess gets `429 TooManyRequests` with `Retry-After`,
//! as MAA throttles per provider.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct ProviderSlots {
    per_provider: usize,
    slots: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl ProviderSlots {
    pub fn new(per_provider: usize) -> Self {
        Self { per_provider: per_provider.max(1), slots: Mutex::new(HashMap::new()) }
    }

    /// A slot for one attestation of `provider`, or `None` when the
    /// provider is at its limit. Only resolved (existing) providers get
    /// here, so the map is bounded by the number of providers.
    pub fn try_acquire(&self, provider: &str) -> Option<OwnedSemaphorePermit> {
        let sem = {
            let mut g = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            g.entry(provider.to_ascii_lowercase())
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_provider)))
                .clone()
        };
        sem.try_acquire_owned().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_each_provider_separately() {
        let s = ProviderSlots::new(2);
        let a1 = s.try_acquire("alpha");
        let a2 = s.try_acquire("ALPHA");
        assert!(a1.is_some() && a2.is_some());
        assert!(s.try_acquire("alpha").is_none(), "third concurrent attestation of alpha");
        assert!(s.try_acquire("beta").is_some(), "beta has its own slots");
        drop(a1);
        assert!(s.try_acquire("alpha").is_some(), "a finished attestation frees its slot");
        drop(a2);
    }
}
