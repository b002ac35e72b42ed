//! Pins: which addresses the agent was told for which names, and until when.
//!
//! The TCP relay must not dial an address on the agent's word alone: it asks
//! [`Pins::names_for`] which allowed names the agent could have learned that address
//! for, and decides by name. A pin lives for the record's TTL, but at least
//! [`PIN_MIN`]: clients keep addresses longer than the TTL says (connection pools,
//! language runtimes), and refusing a connection to an address the agent did learn
//! would only break it. The table is bounded ([`Pins::new`]); when full, expired pins go
//! first, then the ones closest to expiry.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// The shortest time a pin is kept, whatever the record's TTL.
pub const PIN_MIN: Duration = Duration::from_secs(300);
/// The longest time a pin is kept, whatever the record's TTL.
pub const PIN_MAX: Duration = Duration::from_secs(24 * 3600);

/// Address -> names, each with an expiry. Shared between the DNS server and the relay.
#[derive(Debug)]
pub struct Pins {
    /// Invariant: `len` is the number of (address, name) pairs in `by_addr`, and never
    /// exceeds `capacity`; no inner map is empty.
    table: Mutex<Table>,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Table {
    by_addr: HashMap<IpAddr, HashMap<String, Instant>>,
    len: usize,
}

impl Pins {
    /// An empty table holding at most `capacity` (address, name) pairs.
    pub fn new(capacity: usize) -> Pins {
        Pins {
            table: Mutex::new(Table::default()),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Remember that `ip` was handed out for each of `names` with this TTL (seconds).
    /// IPv4-mapped IPv6 addresses are stored as IPv4, so either spelling finds them.
    pub fn pin(&self, names: &[String], ip: IpAddr, ttl: u32) {
        let now = Instant::now();
        let until = now + Duration::from_secs(u64::from(ttl)).clamp(PIN_MIN, PIN_MAX);
        let ip = ip.to_canonical();
        let mut table = self.lock();
        for name in names {
            let known = table
                .by_addr
                .get(&ip)
                .is_some_and(|names| names.contains_key(name));
            if !known && table.len >= self.capacity {
                table.make_room(now);
            }
            let entry = table.by_addr.entry(ip).or_default();
            let slot = entry.entry(name.clone()).or_insert(until);
            *slot = (*slot).max(until);
            if !known {
                table.len += 1;
            }
        }
    }

    /// The names `ip` is currently pinned for (empty: the agent never learned it).
    pub fn names_for(&self, ip: IpAddr) -> Vec<String> {
        let now = Instant::now();
        let table = self.lock();
        let mut names: Vec<String> = table
            .by_addr
            .get(&ip.to_canonical())
            .map(|names| {
                names
                    .iter()
                    .filter(|(_, until)| **until > now)
                    .map(|(name, _)| name.clone())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// The addresses currently pinned for `name` (a scan: for diagnostics and tests).
    pub fn addrs_for(&self, name: &str) -> Vec<IpAddr> {
        let now = Instant::now();
        let table = self.lock();
        let mut addrs: Vec<IpAddr> = table
            .by_addr
            .iter()
            .filter(|(_, names)| names.get(name).is_some_and(|until| *until > now))
            .map(|(ip, _)| *ip)
            .collect();
        addrs.sort();
        addrs
    }

    /// How many (address, name) pairs are held, expired ones included until evicted.
    pub fn len(&self) -> usize {
        self.lock().len
    }

    /// Whether no pin is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Table {
    /// Drop expired pairs; if none expired, drop the pair closest to expiry.
    fn make_room(&mut self, now: Instant) {
        let before = self.len;
        self.by_addr.retain(|_, names| {
            names.retain(|_, until| *until > now);
            !names.is_empty()
        });
        self.len = self.by_addr.values().map(HashMap::len).sum();
        if self.len < before {
            return;
        }
        let oldest = self
            .by_addr
            .iter()
            .flat_map(|(ip, names)| names.iter().map(move |(name, until)| (*until, *ip, name)))
            .min()
            .map(|(_, ip, name)| (ip, name.clone()));
        if let Some((ip, name)) = oldest
            && let Some(names) = self.by_addr.get_mut(&ip)
        {
            names.remove(&name);
            if names.is_empty() {
                self.by_addr.remove(&ip);
            }
            self.len -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn an_address_is_pinned_for_every_name_it_was_handed_out_for() {
        let pins = Pins::new(16);
        let ip: IpAddr = "198.51.100.10".parse().unwrap();
        pins.pin(&names(&["cname.test", "allowed.test"]), ip, 60);
        assert_eq!(pins.names_for(ip), names(&["allowed.test", "cname.test"]));
        assert_eq!(pins.addrs_for("allowed.test"), vec![ip]);
        assert!(pins.names_for("198.51.100.11".parse().unwrap()).is_empty());
    }

    #[test]
    fn mapped_ipv6_finds_the_ipv4_pin() {
        let pins = Pins::new(16);
        pins.pin(&names(&["a.test"]), "198.51.100.10".parse().unwrap(), 60);
        let mapped: IpAddr = "::ffff:198.51.100.10".parse().unwrap();
        assert_eq!(pins.names_for(mapped), names(&["a.test"]));
    }

    #[test]
    fn pinning_again_does_not_grow_the_table() {
        let pins = Pins::new(16);
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        for _ in 0..10 {
            pins.pin(&names(&["a.test"]), ip, 1);
        }
        assert_eq!(pins.len(), 1);
    }

    #[test]
    fn a_full_table_evicts_instead_of_growing() {
        let pins = Pins::new(4);
        for i in 0..10u8 {
            pins.pin(
                &names(&["a.test"]),
                IpAddr::from([10, 0, 0, i]),
                400 + u32::from(i),
            );
        }
        assert_eq!(pins.len(), 4);
        // The newest pins survive; the earliest-expiring went first.
        assert_eq!(
            pins.names_for(IpAddr::from([10, 0, 0, 9])),
            names(&["a.test"])
        );
        assert!(pins.names_for(IpAddr::from([10, 0, 0, 0])).is_empty());
    }
}
