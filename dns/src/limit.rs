//! A bound on the queries in flight per client address.
//!
//! hickory-server spawns a task per UDP datagram; without a bound one client could keep
//! any number of upstream lookups open. Over the bound, a query is answered REFUSED at
//! once, without work.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Counts in-flight queries per client.
#[derive(Debug)]
pub struct ClientLimiter {
    per_client: usize,
    /// Invariant: no entry is zero (entries are removed when their last slot drops).
    in_flight: Mutex<HashMap<IpAddr, usize>>,
}

/// One in-flight query; dropping it frees the slot.
#[derive(Debug)]
pub struct Slot<'a> {
    limiter: &'a ClientLimiter,
    client: IpAddr,
}

impl ClientLimiter {
    /// At most `per_client` queries in flight per address.
    pub fn new(per_client: usize) -> ClientLimiter {
        ClientLimiter {
            per_client: per_client.max(1),
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A slot for `client`, or `None` if it already has `per_client` queries in flight.
    pub fn try_acquire(&self, client: IpAddr) -> Option<Slot<'_>> {
        let mut map = self.lock();
        let count = map.entry(client).or_insert(0);
        if *count >= self.per_client {
            return None;
        }
        *count += 1;
        Some(Slot {
            limiter: self,
            client,
        })
    }

    /// Queries in flight for `client`.
    pub fn in_flight(&self, client: IpAddr) -> usize {
        self.lock().get(&client).copied().unwrap_or(0)
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut map = self.limiter.lock();
        if let Some(count) = map.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                map.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_gets_no_more_slots_than_the_bound_and_others_are_unaffected() {
        let limiter = ClientLimiter::new(2);
        let a: IpAddr = "198.18.0.2".parse().unwrap();
        let b: IpAddr = "198.18.0.3".parse().unwrap();
        let first = limiter.try_acquire(a).unwrap();
        let _second = limiter.try_acquire(a).unwrap();
        assert!(limiter.try_acquire(a).is_none());
        assert!(limiter.try_acquire(b).is_some());
        drop(first);
        assert_eq!(limiter.in_flight(a), 1);
        assert!(limiter.try_acquire(a).is_some());
    }

    #[test]
    fn released_clients_leave_no_entry_behind() {
        let limiter = ClientLimiter::new(1);
        for i in 0..100u8 {
            let _slot = limiter.try_acquire(IpAddr::from([10, 0, 0, i])).unwrap();
        }
        assert!(limiter.lock().is_empty());
    }
}
