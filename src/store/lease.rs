//! Leases: which mounts hold a database on an object store, so that the
//! deletion of what no kept version uses (a writer's sweep, `ckptfs
//! compact s3://…`) never takes bytes from under a reader. A store has no
//! locks a crashed process lets go of, so each mount keeps an object under
//! `leases/` and rewrites it every quarter of its lifetime; one not
//! rewritten for its whole lifetime is dead. Everything a lease says is in
//! its key, so one listing reads them all, and ages are measured on the
//! store's clock (`S3Store::now_ms`), never the hosts'.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use super::s3::{ObjectInfo, S3Store};

/// Where leases are kept, below the store prefix.
pub const LEASE_DIR: &str = "leases";
/// Slack on top of a lease's lifetime: the store's times have whole
/// seconds, and a rewrite may take a request's time.
const SLACK_MS: i64 = 2_000;

/// What a lease holder does with the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A read-only mount of one version.
    Reader,
    /// A writer mount, which uploads data files before the manifest that
    /// names them.
    Writer,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Writer => "writer",
        }
    }
}

/// A lease as its key spells it:
/// `leases/<role>-<generation>-<ttl s>-<pid>-<nonce>-<host>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseKey {
    pub role: Role,
    /// The version a reader reads; 0 while it is still opening one (it
    /// holds every version then).
    pub generation: u64,
    pub ttl_s: u64,
    pub holder: String,
}

/// This host's name as leases spell it.
fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "host".into())
        .replace(['/', '-'], "_")
}

impl LeaseKey {
    /// A holder on this host whose process is gone (killed without a
    /// word): its lease is stale before it expires.
    pub fn is_dead_here(&self) -> bool {
        let Some((pid, host)) = self.holder.split_once('@') else {
            return false;
        };
        if host != host_name() || pid == std::process::id().to_string() {
            return false;
        }
        // A zombie is gone too.
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| s.contains(") Z "))
    }

    fn key(&self, nonce: &str) -> String {
        let (pid, host) = self.holder.split_once('@').unwrap_or(("0", &self.holder));
        format!(
            "{LEASE_DIR}/{}-{}-{}-{pid}-{nonce}-{host}",
            self.role.name(),
            self.generation,
            self.ttl_s
        )
    }

    /// Parses a key below the prefix; `None` for anything else.
    pub fn parse(key: &str) -> Option<Self> {
        let name = key.strip_prefix(&format!("{LEASE_DIR}/"))?;
        let mut parts = name.splitn(6, '-');
        let role = match parts.next()? {
            "reader" => Role::Reader,
            "writer" => Role::Writer,
            _ => return None,
        };
        let generation = parts.next()?.parse().ok()?;
        let ttl_s = parts.next()?.parse().ok()?;
        let pid = parts.next()?;
        let _nonce = parts.next()?;
        let host = parts.next()?;
        Some(LeaseKey {
            role,
            generation,
            ttl_s,
            holder: format!("{pid}@{host}"),
        })
    }
}

/// The leases under a prefix, sorted out on the store's clock.
#[derive(Debug, Default)]
pub struct Leases {
    pub live: Vec<LeaseKey>,
    /// Keys of leases nobody rewrote in time (their holders died).
    pub expired: Vec<String>,
}

impl Leases {
    /// The leases held by writers.
    pub fn writers(&self) -> impl Iterator<Item = &LeaseKey> {
        self.live.iter().filter(|l| l.role == Role::Writer)
    }

    /// Why nothing that versions older than `oldest_kept` used may be
    /// deleted now: the live readers of such versions (or of a version
    /// still being opened), described; `None` when there are none.
    pub fn readers_before(&self, oldest_kept: u64) -> Option<String> {
        let held: Vec<String> = self
            .live
            .iter()
            .filter(|l| l.role == Role::Reader && l.generation < oldest_kept)
            .map(|l| match l.generation {
                0 => format!("{} (opening)", l.holder),
                g => format!("{} (generation {g})", l.holder),
            })
            .collect();
        (!held.is_empty()).then(|| held.join(", "))
    }
}

/// Lists the leases, live and expired, as of the store's `now_ms`.
pub fn list(store: &S3Store, now_ms: i64) -> std::io::Result<Leases> {
    Ok(sort(store.list_meta(LEASE_DIR)?, now_ms))
}

fn sort(objects: Vec<ObjectInfo>, now_ms: i64) -> Leases {
    let mut out = Leases::default();
    for o in objects {
        let Some(l) = LeaseKey::parse(&o.key) else {
            continue;
        };
        let ends = o.modified_ms + (l.ttl_s as i64) * 1000 + SLACK_MS;
        if ends > now_ms {
            out.live.push(l);
        } else {
            out.expired.push(o.key);
        }
    }
    out
}

struct Inner {
    store: Arc<S3Store>,
    key: Mutex<String>,
    stop: Mutex<bool>,
    cv: Condvar,
}

/// A lease this process holds: rewritten in the background, deleted on
/// drop.
pub struct Lease {
    inner: Arc<Inner>,
    spec: Mutex<LeaseKey>,
    nonce: String,
    thread: Option<JoinHandle<()>>,
}

impl Lease {
    /// Writes the lease, then keeps it alive; an error when the first
    /// write fails (read-only credentials, a store that is down).
    pub fn take(
        store: Arc<S3Store>,
        role: Role,
        generation: u64,
        ttl: Duration,
    ) -> std::io::Result<Self> {
        let host = host_name();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let spec = LeaseKey {
            role,
            generation,
            ttl_s: ttl.as_secs().max(1),
            holder: format!("{}@{host}", std::process::id()),
        };
        let nonce = format!("{nanos:08x}");
        let key = spec.key(&nonce);
        store.put_small(&key, Vec::new())?;
        let inner = Arc::new(Inner {
            store,
            key: Mutex::new(key),
            stop: Mutex::new(false),
            cv: Condvar::new(),
        });
        let every = Duration::from_secs(spec.ttl_s).div_f64(4.0);
        let i = inner.clone();
        let thread = std::thread::Builder::new()
            .name("ckptfs-lease".into())
            .spawn(move || i.renew(every))?;
        Ok(Lease {
            inner,
            spec: Mutex::new(spec),
            nonce,
            thread: Some(thread),
        })
    }

    /// Who holds it (`pid@host`).
    pub fn holder(&self) -> String {
        self.spec.lock().holder.clone()
    }

    /// Moves a reader's lease to the version it opened: the new key is
    /// written before the old one goes.
    pub fn set_generation(&self, generation: u64) -> std::io::Result<()> {
        let mut spec = self.spec.lock();
        spec.generation = generation;
        let new = spec.key(&self.nonce);
        self.inner.store.put_small(&new, Vec::new())?;
        let old = std::mem::replace(&mut *self.inner.key.lock(), new);
        self.inner.store.delete(&old)
    }
}

impl Inner {
    fn renew(&self, every: Duration) {
        let mut stop = self.stop.lock();
        loop {
            self.cv.wait_for(&mut stop, every);
            if *stop {
                return;
            }
            let key = self.key.lock().clone();
            if let Err(e) = self.store.put_small(&key, Vec::new()) {
                tracing::warn!("renew the lease {key}: {e}");
            }
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        *self.inner.stop.lock() = true;
        self.inner.cv.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let key = self.inner.key.lock().clone();
        if let Err(e) = self.inner.store.delete(&key) {
            tracing::warn!("remove the lease {key}: {e} (it expires by itself)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(key: &str, modified_ms: i64) -> ObjectInfo {
        ObjectInfo {
            key: key.into(),
            size: 0,
            modified_ms,
        }
    }

    #[test]
    fn keys_round_trip_and_age_on_the_store_clock() {
        let spec = LeaseKey {
            role: Role::Reader,
            generation: 42,
            ttl_s: 10,
            holder: "123@node-a.example".into(),
        };
        let key = spec.key("0000abcd");
        assert_eq!(LeaseKey::parse(&key), Some(spec));
        assert_eq!(LeaseKey::parse("leases/other-1-2-3-4-h"), None);
        assert_eq!(LeaseKey::parse("d/reader-1-2-3-4-h"), None);
        let w = "leases/writer-0-10-9-n-h";
        let r = "leases/reader-3-10-9-n-h";
        let opening = "leases/reader-0-10-8-n-h";
        // Written at t=0 with a 10 s lifetime: live at 11 s, dead at 13 s.
        let l = sort(vec![info(w, 0), info(r, 0), info(opening, 0)], 11_000);
        assert_eq!((l.live.len(), l.writers().count()), (3, 1));
        assert_eq!(l.readers_before(3).as_deref(), Some("8@h (opening)"));
        assert!(l.readers_before(4).unwrap().contains("9@h (generation 3)"));
        let l = sort(vec![info(w, 0), info(r, 5_000)], 13_000);
        assert_eq!(l.expired, vec![w.to_string()]);
        assert_eq!(l.writers().count(), 0);
        assert_eq!(l.readers_before(10).as_deref(), Some("9@h (generation 3)"));
    }
}
