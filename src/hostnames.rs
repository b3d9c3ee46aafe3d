//! Reverse DNS for `MAPHOSTNAME DNS` (see `docs/commands.md#maphostname`):
//! a process-wide IP → hostname cache that never blocks a caller.
//!
//! Owns the cache and one background std thread, the resolver. A caller
//! (a shard at accept or connect time, `CONN`, stats) asks
//! [`hostname_for`]: a fresh cached name comes back at once; anything else
//! answers `None` (the caller shows the IP, as the original does for an
//! uncached address) and queues a lookup. The resolver thread drains the
//! queue, asks the system resolver (`getnameinfo` with `NI_NAMEREQD`, so a
//! missing PTR record is a failure rather than the IP text), and publishes a
//! new cache. The original looks names up synchronously on its only
//! data-path thread and keeps them for ever; here a lookup never runs on a
//! caller's thread, and results expire.
//!
//! Reads are lock-free: the cache is an immutable map behind an
//! [`ArcSwap`], replaced whole by the resolver thread (the only writer), and
//! the queue is a bounded channel written with `try_send`, so a full queue
//! drops the request (it is queued again the next time the IP is seen).
//! Names are kept [`TTL`], failures [`NEGATIVE_TTL`] (so an address without a
//! PTR record is not looked up on every connection); the cache holds at most
//! [`CAPACITY`] entries, dropping expired then oldest entries beyond that.
//! There is no way to turn the mapper off again, as in the original.

use arc_swap::ArcSwap;
use std::collections::{HashMap, HashSet};
use std::ffi::CStr;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a resolved name is used before it is looked up again.
pub const TTL: Duration = Duration::from_secs(5 * 60);
/// How long a failed lookup is remembered (the IP is shown meanwhile).
pub const NEGATIVE_TTL: Duration = Duration::from_secs(30);
/// Most entries the cache holds (the original warns beyond this many).
pub const CAPACITY: usize = 50_000;
/// Lookups waiting for the resolver thread; more are dropped.
const QUEUE: usize = 4096;
/// The resolver publishes at least this often while working through a
/// backlog, so early answers do not wait for slow later ones.
const PUBLISH_EVERY: Duration = Duration::from_millis(100);

/// One cached answer: the name, or `None` for a failed lookup.
#[derive(Debug, Clone)]
struct Entry {
    name: Option<Arc<str>>,
    expires: Instant,
}

type Cache = HashMap<IpAddr, Entry>;

struct Mapper {
    cache: Arc<ArcSwap<Cache>>,
    queue: SyncSender<IpAddr>,
}

static ENABLED: AtomicBool = AtomicBool::new(false);
static MAPPER: OnceLock<Mapper> = OnceLock::new();
/// Serialises [`enable`] so only one resolver thread is ever started.
static STARTING: Mutex<()> = Mutex::new(());

/// Turns the mapper on for the rest of the process (idempotent), starting
/// the resolver thread the first time.
pub fn enable() -> std::io::Result<()> {
    let _guard = STARTING.lock().unwrap_or_else(|p| p.into_inner());
    if MAPPER.get().is_none() {
        let cache = Arc::new(ArcSwap::from_pointee(Cache::new()));
        let (queue, requests) = mpsc::sync_channel(QUEUE);
        let published = Arc::clone(&cache);
        std::thread::Builder::new()
            .name("reverse-dns".into())
            .spawn(move || resolve_forever(requests, &published))?;
        // Cannot fail: set only here, under STARTING, after checking.
        let _ = MAPPER.set(Mapper { cache, queue });
    }
    ENABLED.store(true, Ordering::Release);
    log::info!("Hostname mapping of IPs enabled");
    Ok(())
}

/// Whether `MAPHOSTNAME DNS` has been run.
pub fn is_enabled() -> bool {
    ENABLED.load(Ordering::Acquire)
}

/// The hostname of `ip` if it is cached and fresh. Otherwise `None` (show
/// the IP) and a lookup is queued for next time. Always `None` while the
/// mapper is off, so callers may call it unconditionally. Never blocks.
pub fn hostname_for(ip: IpAddr) -> Option<String> {
    if !is_enabled() {
        return None;
    }
    let mapper = MAPPER.get()?;
    // A dual-stack listener reports IPv4 peers as ::ffff:a.b.c.d.
    let ip = ip.to_canonical();
    // 0.0.0.0 (an endpoint not known yet) maps to itself.
    if ip.is_unspecified() {
        return None;
    }
    if let Some(entry) = mapper.cache.load().get(&ip) {
        if entry.expires > Instant::now() {
            return entry.name.as_deref().map(str::to_owned);
        }
    }
    // A full queue drops the request: the resolver is behind, and the IP
    // will be queued again the next time it is asked for.
    let _ = mapper.queue.try_send(ip);
    None
}

/// The resolver thread: batches of queued IPs, looked up one by one,
/// published as whole new caches. Ends when the process does.
fn resolve_forever(requests: Receiver<IpAddr>, cache: &ArcSwap<Cache>) {
    let mut warned_full = false;
    while let Ok(first) = requests.recv() {
        let mut batch = vec![first];
        batch.extend(requests.try_iter().take(QUEUE));
        let mut done: HashSet<IpAddr> = HashSet::new();
        let mut fresh: Vec<(IpAddr, Entry)> = Vec::new();
        let mut last_publish = Instant::now();
        for ip in batch {
            // The same IP is often queued many times before its answer lands.
            let known = cache
                .load()
                .get(&ip)
                .is_some_and(|e| e.expires > Instant::now());
            if known || !done.insert(ip) {
                continue;
            }
            fresh.push((ip, lookup(ip)));
            if last_publish.elapsed() >= PUBLISH_EVERY {
                publish(cache, &mut fresh, &mut warned_full);
                last_publish = Instant::now();
            }
        }
        publish(cache, &mut fresh, &mut warned_full);
    }
}

/// Looks `ip` up now (blocking this thread) and makes its cache entry.
fn lookup(ip: IpAddr) -> Entry {
    let now = Instant::now();
    match reverse_lookup(ip) {
        Ok(name) => Entry {
            name: Some(name.into()),
            expires: now + TTL,
        },
        Err(reason) => {
            log::debug!("Failed to resolve hostname for {ip}: {reason}");
            Entry {
                name: None,
                expires: now + NEGATIVE_TTL,
            }
        }
    }
}

/// Publishes a copy of the cache with `fresh` added (and emptied).
fn publish(cache: &ArcSwap<Cache>, fresh: &mut Vec<(IpAddr, Entry)>, warned_full: &mut bool) {
    if fresh.is_empty() {
        return;
    }
    let mut next: Cache = (**cache.load()).clone();
    next.extend(fresh.drain(..));
    if trim(&mut next, Instant::now(), CAPACITY) && !*warned_full {
        log::warn!("Hostname cache reached {CAPACITY} entries; dropping the oldest");
        *warned_full = true;
    }
    cache.store(Arc::new(next));
}

/// Keeps `cache` within `capacity`: drops expired entries, then the ones
/// expiring soonest, down to three quarters of it so trimming is rare.
/// Returns whether it had to drop live entries.
fn trim(cache: &mut Cache, now: Instant, capacity: usize) -> bool {
    if cache.len() <= capacity {
        return false;
    }
    cache.retain(|_, e| e.expires > now);
    if cache.len() <= capacity {
        return false;
    }
    let mut by_expiry: Vec<(Instant, IpAddr)> =
        cache.iter().map(|(ip, e)| (e.expires, *ip)).collect();
    by_expiry.sort_unstable();
    let drop = cache.len() - capacity * 3 / 4;
    for (_, ip) in by_expiry.into_iter().take(drop) {
        cache.remove(&ip);
    }
    true
}

/// The name the system resolver gives for `ip` (`/etc/hosts`, DNS PTR),
/// or why there is none.
fn reverse_lookup(ip: IpAddr) -> Result<String, String> {
    // SAFETY: all-zero sockaddr_storage is a valid value; only the fields
    // of the family written below are read by getnameinfo.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match ip {
        IpAddr::V4(v4) => {
            // SAFETY: sockaddr_storage is large and aligned enough for any
            // socket address type.
            let sin = unsafe { &mut *(&mut storage as *mut _ as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_addr.s_addr = u32::from(v4).to_be();
            std::mem::size_of::<libc::sockaddr_in>()
        }
        IpAddr::V6(v6) => {
            // SAFETY: as above.
            let sin6 = unsafe { &mut *(&mut storage as *mut _ as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_addr.s6_addr = v6.octets();
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    // NI_MAXHOST: the longest name getnameinfo writes.
    let mut host = [0 as libc::c_char; 1025];
    // SAFETY: the address and buffer are valid for the lengths given; no
    // service buffer is asked for.
    let rc = unsafe {
        libc::getnameinfo(
            &storage as *const _ as *const libc::sockaddr,
            len as libc::socklen_t,
            host.as_mut_ptr(),
            host.len() as libc::socklen_t,
            std::ptr::null_mut(),
            0,
            libc::NI_NAMEREQD,
        )
    };
    if rc != 0 {
        // SAFETY: gai_strerror returns a static NUL-terminated string.
        let text = unsafe { CStr::from_ptr(libc::gai_strerror(rc)) };
        return Err(text.to_string_lossy().into_owned());
    }
    // SAFETY: on success getnameinfo NUL-terminates within the buffer.
    let name = unsafe { CStr::from_ptr(host.as_ptr()) };
    Ok(name.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(expires: Instant) -> Entry {
        Entry {
            name: Some("h".into()),
            expires,
        }
    }

    #[test]
    fn trim_drops_expired_then_soonest_expiring() {
        let now = Instant::now();
        let mut cache = Cache::new();
        for i in 0..8u8 {
            let expires = if i < 2 {
                now - Duration::from_secs(1)
            } else {
                now + Duration::from_secs(u64::from(i))
            };
            cache.insert(IpAddr::from([10, 0, 0, i]), entry(expires));
        }
        assert!(!trim(&mut cache, now, 8));
        assert_eq!(cache.len(), 8);
        // Over capacity 6 by two: the two expired entries are enough.
        cache.insert(IpAddr::from([10, 0, 1, 0]), entry(now + TTL));
        assert!(!trim(&mut cache, now, 7));
        assert_eq!(cache.len(), 7);
        // Over capacity 4 with all live: down to 3, keeping the latest.
        assert!(trim(&mut cache, now, 4));
        let mut kept: Vec<IpAddr> = cache.keys().copied().collect();
        kept.sort();
        assert_eq!(
            kept,
            [[10, 0, 0, 6], [10, 0, 0, 7], [10, 0, 1, 0]].map(IpAddr::from)
        );
    }

    #[test]
    fn loopback_resolves_in_the_background() {
        // Loopback is named by /etc/hosts everywhere this runs.
        assert!(reverse_lookup(IpAddr::from([127, 0, 0, 1])).is_ok());
        enable().unwrap();
        enable().unwrap();
        assert!(is_enabled());
        let ip: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert_eq!(hostname_for(IpAddr::from([0, 0, 0, 0])), None);
        let deadline = Instant::now() + Duration::from_secs(10);
        let name = loop {
            if let Some(name) = hostname_for(ip) {
                break name;
            }
            assert!(Instant::now() < deadline, "no name for {ip} within 10 s");
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(!name.is_empty());
        assert_eq!(hostname_for(IpAddr::from([127, 0, 0, 1])), Some(name));
    }
}
