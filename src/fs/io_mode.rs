//! How the kernel serves each open of a file: through its page cache
//! (`Cached`, every read and write reaches the daemon), straight to the
//! daemon (`Direct`: `io.read_mode = "direct"` for chunked files), or by
//! kernel FUSE passthrough to the plain layout's backing file
//! (`Passthrough`: the daemon never sees the bytes).
//!
//! The kernel holds one inode either in cached mode or in passthrough mode
//! across all its opens; while an inode has a passthrough open, every new
//! open must be a passthrough open of the same backing file (anything else
//! fails with EIO). So the mode of a new open follows from the inode's
//! current opens:
//!
//! - passthrough opens exist: the new open joins them. A writer joining
//!   readers of committed bytes first has the committed version copied
//!   aside (to a new generation the manifest then names): the shared data
//!   file becomes the working copy, written in place, and a crash still
//!   leaves the whole committed version. Readers holding the file see the
//!   writer's bytes as they land, as on a local disk.
//! - cached opens exist: `Cached`;
//! - no open: `Passthrough` for a reader of a plain file, and for a writer
//!   of a plain generation with no committed bytes yet (a new file, or one
//!   truncated to zero: a save) when `io.passthrough = "read-write"`;
//!   `Cached` otherwise.

use std::any::Any;
use std::sync::Arc;

/// The kernel's handle on a registered backing file (the FUSE adapter's
/// `BackingId`; released when the last passthrough open of the inode ends).
pub type BackingToken = Arc<dyn Any + Send + Sync>;

/// Which path the kernel takes for one open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoPath {
    Cached,
    Direct,
    Passthrough,
}

/// What passthrough this mount may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PassthroughUse {
    Off,
    Read,
    ReadWrite,
}

/// The passthrough opens of one inode.
#[derive(Debug)]
pub struct Passthrough {
    /// Generation whose data file the kernel reads and writes.
    pub gen: u64,
    /// The kernel's registration of the backing file, shared by these opens.
    pub id: BackingToken,
    /// Passthrough opens of the inode.
    pub opens: u32,
    /// Of those, the ones open for writing.
    pub writers: u32,
}

/// The open modes of one inode.
#[derive(Debug, Default)]
pub struct IoModes {
    /// Opens served through the page cache.
    pub cached: u32,
    /// Opens served with direct I/O.
    pub direct: u32,
    /// Passthrough opens, if any (the kernel allows no other mode beside them).
    pub passthrough: Option<Passthrough>,
}

/// What the file is now, as far as the choice of mode goes.
#[derive(Debug, Clone, Copy)]
pub struct PlainState {
    /// Generation of the plain data file.
    pub gen: u64,
    /// Whether the generation holds committed bytes.
    pub protected: bool,
}

/// The decision for a new open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    Cached,
    /// Join the inode's passthrough opens; `copy_aside`: first move the
    /// committed version out of the shared data file's way.
    Join {
        copy_aside: bool,
    },
    /// Register the plain data file and pass the open through.
    Register,
}

impl IoModes {
    /// Chooses the mode of a new open. `plain` is `None` when the file is
    /// not a plain data file (chunked layouts): those always go through the
    /// daemon.
    pub fn choose(
        &self,
        plain: Option<PlainState>,
        writable: bool,
        allow: PassthroughUse,
    ) -> Choice {
        if let Some(pt) = &self.passthrough {
            let committed = plain.is_some_and(|p| p.protected);
            return Choice::Join {
                copy_aside: writable && committed && pt.writers == 0,
            };
        }
        if self.cached > 0 {
            return Choice::Cached;
        }
        match (plain, allow) {
            (Some(_), PassthroughUse::Read | PassthroughUse::ReadWrite) if !writable => {
                Choice::Register
            }
            (Some(p), PassthroughUse::ReadWrite) if writable && !p.protected => Choice::Register,
            _ => Choice::Cached,
        }
    }

    /// Records that an open of `path` ended; returns whether the inode has
    /// no passthrough open left (its backing file is released).
    pub fn close(&mut self, path: IoPath, writer: bool) -> bool {
        match path {
            IoPath::Cached => self.cached = self.cached.saturating_sub(1),
            IoPath::Direct => self.direct = self.direct.saturating_sub(1),
            IoPath::Passthrough => {
                if let Some(pt) = &mut self.passthrough {
                    pt.opens = pt.opens.saturating_sub(1);
                    if writer {
                        pt.writers = pt.writers.saturating_sub(1);
                    }
                    if pt.opens == 0 {
                        self.passthrough = None;
                        return true;
                    }
                }
            }
        }
        false
    }

    /// Passthrough writers hold the file: the kernel changes its data file
    /// without telling the daemon.
    pub fn passthrough_writers(&self) -> bool {
        self.passthrough.as_ref().is_some_and(|p| p.writers > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pt(gen: u64, writers: u32) -> IoModes {
        IoModes {
            passthrough: Some(Passthrough {
                gen,
                id: Arc::new(()),
                opens: 1 + writers,
                writers,
            }),
            ..Default::default()
        }
    }

    const COMMITTED: PlainState = PlainState {
        gen: 3,
        protected: true,
    };
    const FRESH: PlainState = PlainState {
        gen: 4,
        protected: false,
    };

    #[test]
    fn a_first_open_passes_through_readers_and_fresh_writers_only() {
        let none = IoModes::default();
        let rw = PassthroughUse::ReadWrite;
        assert_eq!(none.choose(Some(COMMITTED), false, rw), Choice::Register);
        assert_eq!(none.choose(Some(COMMITTED), true, rw), Choice::Cached);
        assert_eq!(none.choose(Some(FRESH), true, rw), Choice::Register);
        assert_eq!(
            none.choose(Some(FRESH), true, PassthroughUse::Read),
            Choice::Cached
        );
        assert_eq!(
            none.choose(Some(COMMITTED), false, PassthroughUse::Off),
            Choice::Cached
        );
        assert_eq!(none.choose(None, false, rw), Choice::Cached);
        let cached = IoModes {
            cached: 1,
            ..Default::default()
        };
        assert_eq!(cached.choose(Some(COMMITTED), false, rw), Choice::Cached);
    }

    #[test]
    fn every_open_beside_passthrough_opens_joins_them() {
        let rw = PassthroughUse::ReadWrite;
        let readers = pt(3, 0);
        assert_eq!(
            readers.choose(Some(COMMITTED), false, rw),
            Choice::Join { copy_aside: false }
        );
        // A writer into the committed bytes the readers hold: copy aside,
        // even where the mount passes only readers through.
        for allow in [rw, PassthroughUse::Read] {
            assert_eq!(
                readers.choose(Some(COMMITTED), true, allow),
                Choice::Join { copy_aside: true }
            );
        }
        assert_eq!(
            readers.choose(Some(FRESH), true, rw),
            Choice::Join { copy_aside: false }
        );
        // Beside a passthrough writer, the data file is already a copy.
        let writing = pt(3, 1);
        assert_eq!(
            writing.choose(Some(COMMITTED), true, rw),
            Choice::Join { copy_aside: false }
        );
        let mut m = pt(4, 1);
        assert!(!m.close(IoPath::Passthrough, true));
        assert!(!m.passthrough_writers());
        assert!(m.close(IoPath::Passthrough, false));
        assert!(m.passthrough.is_none());
    }
}
