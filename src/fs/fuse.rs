//! The FUSE adapter: decodes each request, calls the core, and replies with
//! the result or the errno. Every operation is timed by the profiler and
//! each failure is logged once here, at a level fitting its errno.

use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use fuser::{
    BackingId, Errno, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite,
    Request, TimeOrNow, WriteFlags,
};

use crate::error::FsError;

use super::core::{CkptFs, OpenReply, ReadReply, SetTimes};
use super::io_mode::{BackingToken, PassthroughUse};

/// The kernel's id of a registered backing file, out of the core's token.
fn backing_id(token: &BackingToken) -> Option<&BackingId> {
    token.downcast_ref::<BackingId>()
}

/// Open flags for an answer other than passthrough.
fn open_flags(reply: &OpenReply) -> FopenFlags {
    match reply {
        OpenReply::Cached { keep_cache: true } => FopenFlags::FOPEN_KEEP_CACHE,
        OpenReply::Direct => FopenFlags::FOPEN_DIRECT_IO,
        _ => FopenFlags::empty(),
    }
}

/// What an access-log line says about an operation's arguments.
#[derive(Default, Clone, Copy)]
struct Args<'a> {
    ino: u64,
    fh: Option<u64>,
    offset: Option<u64>,
    name: Option<&'a OsStr>,
}

fn args(ino: u64) -> Args<'static> {
    Args {
        ino,
        ..Default::default()
    }
}

/// fuser's `Filesystem` over the core: decodes each request, records it
/// in the profiler and sends the reply.
pub struct FuseAdapter {
    pub fs: Arc<CkptFs>,
    ttl: Duration,
}

/// A FUSE reply that carries a `T` on success.
trait Answer<T> {
    fn send(self, ttl: &Duration, v: T);
    fn fail(self, e: Errno);
}

impl Answer<fuser::FileAttr> for ReplyEntry {
    fn send(self, ttl: &Duration, attr: fuser::FileAttr) {
        self.entry(ttl, &attr, Generation(0));
    }
    fn fail(self, e: Errno) {
        self.error(e);
    }
}

impl Answer<fuser::FileAttr> for ReplyAttr {
    fn send(self, ttl: &Duration, attr: fuser::FileAttr) {
        self.attr(ttl, &attr);
    }
    fn fail(self, e: Errno) {
        self.error(e);
    }
}

impl Answer<()> for ReplyEmpty {
    fn send(self, _ttl: &Duration, (): ()) {
        self.ok();
    }
    fn fail(self, e: Errno) {
        self.error(e);
    }
}

impl FuseAdapter {
    /// The adapter of `fs`, whose entries and attributes the kernel keeps for `ttl`.
    pub fn new(fs: Arc<CkptFs>, ttl: Duration) -> Self {
        FuseAdapter { fs, ttl }
    }

    /// Records the op and sends its reply: the value on success, the
    /// error's errno otherwise.
    fn answer<T, R: Answer<T>>(
        &self,
        req: &Request,
        op: &'static str,
        t: Instant,
        r: Result<T, FsError>,
        a: Args<'_>,
        reply: R,
    ) {
        match r {
            Ok(v) => {
                self.done(req, op, t, 0, false, a);
                reply.send(&self.ttl, v);
            }
            Err(e) => {
                self.done(req, op, t, 0, true, a);
                reply.fail(self.fail(op, &e));
            }
        }
    }

    fn fail(&self, op: &'static str, e: &FsError) -> Errno {
        if e.is_routine() {
            tracing::debug!(op, "{e}");
        } else {
            tracing::warn!(op, "{e}");
        }
        Errno::from_i32(e.errno)
    }

    /// Records an operation: profiler counters, and a line in the access
    /// log at profile level `full` when someone is reading it.
    fn done(
        &self,
        req: &Request,
        op: &'static str,
        start: Instant,
        bytes: u64,
        error: bool,
        args: Args<'_>,
    ) {
        let profiler = &self.fs.pipe.profiler;
        if self.fs.is_control(args.ino) {
            // Reading the profiler's own files is not part of the workload
            // (and logging access-log reads would feed the log itself).
            return;
        }
        let label = match args.fh {
            Some(fh) if op == "read" || op == "write" => self.fs.handle_label(fh),
            _ => None,
        };
        profiler.op(op, start, bytes, error, label.as_deref());
        if profiler.logs_access() {
            let now = crate::clock::log_utc_now();
            let name = args.name.map(|n| format!(" {:?}", n)).unwrap_or_default();
            let off = args.offset.map(|o| format!(" off={o}")).unwrap_or_default();
            profiler.accesslog.push(format!(
                "{now} [pid:{}] {op} (ino={}{name}{off} size={bytes}): {} <{:.6}>\n",
                req.pid(),
                args.ino,
                if error { "ERR" } else { "OK" },
                start.elapsed().as_secs_f64()
            ));
        }
    }
}

fn time_of(t: Option<TimeOrNow>) -> Option<SystemTime> {
    t.map(|t| match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    })
}

impl Filesystem for FuseAdapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let io = self.fs.pipe.config.io.max_request_bytes as u32;
        let _ = config.set_max_write(io);
        let _ = config.set_max_readahead(io);
        let _ = config.set_max_background(64);
        let _ = config.add_capabilities(InitFlags::FUSE_DO_READDIRPLUS);
        let _ = config.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS);
        // Direct opens (read_mode = "direct", writers beside passthrough
        // readers) may still be mapped; large direct reads go out in
        // parallel requests.
        let _ = config.add_capabilities(InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP);
        let _ = config.add_capabilities(InitFlags::FUSE_ASYNC_DIO);
        let mut writeback = false;
        if self.fs.pipe.config.io.writeback_cache {
            writeback = config
                .add_capabilities(InitFlags::FUSE_WRITEBACK_CACHE)
                .is_ok();
            if !writeback {
                tracing::warn!("the kernel does not offer its writeback cache; writes go through");
            }
        }
        let want = self.fs.pipe.config.io.passthrough;
        if want == PassthroughUse::Off {
            self.fs
                .set_passthrough(want, "off in the mount config (io.passthrough)");
        } else if writeback {
            // The kernel refuses to register backing files under its
            // writeback cache: every open would be refused, then cached.
            self.fs.set_passthrough(
                PassthroughUse::Off,
                "off: the writeback cache (io.writeback_cache) excludes it",
            );
        } else if config
            .add_capabilities(InitFlags::FUSE_PASSTHROUGH)
            .is_err()
        {
            self.fs.set_passthrough(
                PassthroughUse::Off,
                "the kernel does not offer FUSE passthrough",
            );
        } else if config.set_max_stack_depth(1).is_err() {
            self.fs
                .set_passthrough(PassthroughUse::Off, "the kernel refused the stacking depth");
        } else {
            // Backing files on a plain filesystem (depth 1); each open
            // still needs CAP_SYS_ADMIN to register its file.
            self.fs.set_passthrough(want, "granted by the kernel");
        }
        Ok(())
    }

    fn destroy(&mut self) {
        let failed = self.fs.commit_all();
        if failed > 0 {
            tracing::error!("{failed} file(s) could not be committed at unmount");
        }
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let t = Instant::now();
        let result = self.fs.lookup(parent.0, name);
        let a = Args {
            ino: parent.0,
            name: Some(name),
            ..Default::default()
        };
        match result {
            Err(e) if e.errno == libc::ENOENT && !self.ttl.is_zero() => {
                // A negative entry (node id 0) the kernel keeps for the TTL:
                // tools that create many files (`tar`, `rsync`, TensorStore)
                // look each name up first, and every name is made through
                // this kernel, which replaces the negative entry.
                self.done(req, "lookup", t, 0, true, a);
                let none = super::attr::fuse_attr(0, FileType::RegularFile, 0, 0, 0, 0, 0, 0, 0, 0);
                reply.entry(&self.ttl, &none, Generation(0));
            }
            result => self.answer(req, "lookup", t, result, a, reply),
        }
    }

    fn getattr(&self, req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let t = Instant::now();
        let result = self.fs.getattr(ino.0);
        self.answer(req, "getattr", t, result, args(ino.0), reply);
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let t = Instant::now();
        let times = SetTimes {
            atime: CkptFs::times_from(time_of(atime)),
            mtime: CkptFs::times_from(time_of(mtime)),
        };
        let result = self.fs.setattr(ino.0, mode, uid, gid, size, times);
        self.answer(req, "setattr", t, result, args(ino.0), reply);
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        let t = Instant::now();
        match self.fs.readlink(ino.0) {
            Ok(target) => {
                self.done(req, "readlink", t, 0, false, args(ino.0));
                reply.data(&target);
            }
            Err(e) => {
                self.done(req, "readlink", t, 0, true, args(ino.0));
                reply.error(self.fail("readlink", &e));
            }
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let t = Instant::now();
        let result = if mode & libc::S_IFMT == libc::S_IFREG {
            self.fs
                .mknod_file(parent.0, name, mode & !umask, req.uid(), req.gid())
        } else {
            self.fs.mknod_special(
                parent.0,
                name,
                mode & !umask,
                rdev.into(),
                req.uid(),
                req.gid(),
            )
        };
        self.answer(
            req,
            "mknod",
            t,
            result,
            Args {
                ino: parent.0,
                name: Some(name),
                ..Default::default()
            },
            reply,
        );
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let t = Instant::now();
        let result = self
            .fs
            .mkdir(parent.0, name, mode & !umask, req.uid(), req.gid());
        self.answer(
            req,
            "mkdir",
            t,
            result,
            Args {
                ino: parent.0,
                name: Some(name),
                ..Default::default()
            },
            reply,
        );
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let t = Instant::now();
        let result = self.fs.unlink(parent.0, name);
        self.answer(
            req,
            "unlink",
            t,
            result,
            Args {
                ino: parent.0,
                name: Some(name),
                ..Default::default()
            },
            reply,
        );
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let t = Instant::now();
        let result = self.fs.rmdir(parent.0, name);
        self.answer(
            req,
            "rmdir",
            t,
            result,
            Args {
                ino: parent.0,
                name: Some(name),
                ..Default::default()
            },
            reply,
        );
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let t = Instant::now();
        let result = self
            .fs
            .symlink(parent.0, link_name, target, req.uid(), req.gid());
        self.answer(
            req,
            "symlink",
            t,
            result,
            Args {
                ino: parent.0,
                name: Some(link_name),
                ..Default::default()
            },
            reply,
        );
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let t = Instant::now();
        let result = self.fs.link(ino.0, newparent.0, newname);
        self.answer(
            req,
            "link",
            t,
            result,
            Args {
                ino: ino.0,
                name: Some(newname),
                ..Default::default()
            },
            reply,
        );
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let t = Instant::now();
        let result = self
            .fs
            .rename(parent.0, name, newparent.0, newname, flags.bits());
        self.answer(
            req,
            "rename",
            t,
            result,
            Args {
                ino: parent.0,
                name: Some(name),
                ..Default::default()
            },
            reply,
        );
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let t = Instant::now();
        let opened = {
            let register = |file: &std::fs::File| -> std::io::Result<BackingToken> {
                Ok(Arc::new(reply.open_backing(file)?))
            };
            self.fs.open(ino.0, flags.0, req.pid(), &register)
        };
        match opened {
            Ok((fh, answer)) => {
                self.done(req, "open", t, 0, false, args(ino.0));
                match answer {
                    OpenReply::Passthrough(token) => match backing_id(&token) {
                        Some(id) => {
                            reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), id)
                        }
                        None => reply.error(Errno::from_i32(libc::EIO)),
                    },
                    other => reply.opened(FileHandle(fh), open_flags(&other)),
                }
            }
            Err(e) => {
                self.done(req, "open", t, 0, true, args(ino.0));
                reply.error(self.fail("open", &e));
            }
        }
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let t = Instant::now();
        thread_local! {
            // One reply buffer per FUSE thread, reused: a fresh buffer per
            // request would land every read on newly faulted pages.
            static REPLY: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        REPLY.with(|buf| {
            let mut buf = buf.borrow_mut();
            let a = Args {
                ino: ino.0,
                fh: Some(fh.0),
                offset: Some(offset),
                name: None,
            };
            match self.fs.read_reply(fh.0, offset, size, &mut buf) {
                Ok(got) => {
                    let data: &[u8] = match &got {
                        ReadReply::Filled => &buf,
                        ReadReply::Shared(b) => b,
                    };
                    self.done(req, "read", t, data.len() as u64, false, a);
                    // The reply's write to /dev/fuse copies the bytes into
                    // the reader's pages: the last step of a load.
                    let copy = (!self.fs.is_control(ino.0)).then(|| {
                        let mut c = self.fs.pipe.profiler.stage("copy");
                        c.add_bytes(data.len() as u64);
                        c
                    });
                    reply.data(data);
                    drop(copy);
                }
                Err(e) => {
                    self.done(req, "read", t, 0, true, a);
                    reply.error(self.fail("read", &e));
                }
            }
            // Keep the buffer for the next request, not a control file's
            // snapshot or an outsized one.
            if buf.capacity() > 2 * self.fs.pipe.config.io.max_request_bytes as usize {
                *buf = Vec::new();
            }
        });
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let t = Instant::now();
        match self.fs.write(fh.0, offset, data) {
            Ok(n) => {
                self.done(
                    req,
                    "write",
                    t,
                    n as u64,
                    false,
                    Args {
                        ino: ino.0,
                        fh: Some(fh.0),
                        offset: Some(offset),
                        name: None,
                    },
                );
                reply.written(n);
            }
            Err(e) => {
                self.done(
                    req,
                    "write",
                    t,
                    0,
                    true,
                    Args {
                        ino: ino.0,
                        fh: Some(fh.0),
                        offset: Some(offset),
                        name: None,
                    },
                );
                reply.error(self.fail("write", &e));
            }
        }
    }

    fn flush(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let t = Instant::now();
        let result = self.fs.flush(fh.0, req.pid());
        self.answer(
            req,
            "flush",
            t,
            result,
            Args {
                ino: ino.0,
                fh: Some(fh.0),
                ..Default::default()
            },
            reply,
        );
    }

    fn release(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let t = Instant::now();
        let result = self.fs.release(fh.0);
        self.answer(
            req,
            "release",
            t,
            result,
            Args {
                ino: ino.0,
                fh: Some(fh.0),
                ..Default::default()
            },
            reply,
        );
    }

    fn fsync(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let t = Instant::now();
        let result = self.fs.fsync(fh.0);
        self.answer(
            req,
            "fsync",
            t,
            result,
            Args {
                ino: ino.0,
                fh: Some(fh.0),
                ..Default::default()
            },
            reply,
        );
    }

    fn readdir(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let t = Instant::now();
        match self.fs.readdir(ino.0, offset) {
            Ok(entries) => {
                for (child, next, kind, name) in entries {
                    if reply.add(INodeNo(child), next, kind, &name) {
                        break;
                    }
                }
                self.done(req, "readdir", t, 0, false, args(ino.0));
                reply.ok();
            }
            Err(e) => {
                self.done(req, "readdir", t, 0, true, args(ino.0));
                reply.error(self.fail("readdir", &e));
            }
        }
    }

    fn readdirplus(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let t = Instant::now();
        match self.fs.readdir(ino.0, offset) {
            Ok(entries) => {
                for (child, next, _kind, name) in entries {
                    let Ok(attr) = self.fs.attr_for_entry(child) else {
                        continue;
                    };
                    if reply.add(INodeNo(child), next, &name, &self.ttl, &attr, Generation(0)) {
                        break;
                    }
                }
                self.done(req, "readdirplus", t, 0, false, args(ino.0));
                reply.ok();
            }
            Err(e) => {
                self.done(req, "readdirplus", t, 0, true, args(ino.0));
                reply.error(self.fail("readdirplus", &e));
            }
        }
    }

    // No extended attributes are stored: reads find none, writes are not
    // supported. Each is still a request the workload made, so it is
    // recorded like any other operation.
    fn getxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        _size: u32,
        reply: fuser::ReplyXattr,
    ) {
        let t = Instant::now();
        let a = Args {
            ino: ino.0,
            name: Some(name),
            ..Default::default()
        };
        self.done(req, "getxattr", t, 0, true, a);
        // No extended attributes are stored. ENOSYS (the caller sees
        // EOPNOTSUPP) makes the kernel stop asking: with ENODATA it asked
        // for `security.capability` before every write() call, one more
        // round trip each (6,622 for a tar of 203 files).
        reply.error(Errno::from_i32(libc::ENOSYS));
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: fuser::ReplyXattr) {
        let t = Instant::now();
        self.done(req, "listxattr", t, 0, false, args(ino.0));
        if size == 0 {
            reply.size(0);
        } else {
            reply.data(&[]);
        }
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let t = Instant::now();
        let a = Args {
            ino: ino.0,
            name: Some(name),
            ..Default::default()
        };
        self.done(req, "setxattr", t, 0, true, a);
        reply.error(Errno::from_i32(libc::ENOTSUP));
    }

    // Answered here rather than by fuser's default (ENOSYS, which the kernel
    // turns into EOPNOTSUPP and then stops sending): the caller sees the
    // same errno, and every request is counted.
    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let t = Instant::now();
        let a = Args {
            ino: ino.0,
            name: Some(name),
            ..Default::default()
        };
        self.done(req, "removexattr", t, 0, true, a);
        reply.error(Errno::from_i32(libc::ENOTSUP));
    }

    fn ioctl(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        let t = Instant::now();
        let a = Args {
            ino: ino.0,
            fh: Some(fh.0),
            ..Default::default()
        };
        self.done(req, "ioctl", t, 0, true, a);
        reply.error(Errno::from_i32(libc::ENOTTY));
    }

    fn fsyncdir(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let t = Instant::now();
        let result = self.fs.fsyncdir(ino.0);
        self.answer(req, "fsyncdir", t, result, args(ino.0), reply);
    }

    fn statfs(&self, req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        let t = Instant::now();
        match self.fs.statfs() {
            Ok(st) => {
                self.done(req, "statfs", t, 0, false, args(ino.0));
                reply.statfs(
                    st.blocks(),
                    st.blocks_free(),
                    st.blocks_available(),
                    st.files(),
                    st.files_free(),
                    st.block_size() as u32,
                    255,
                    st.fragment_size() as u32,
                )
            }
            Err(e) => {
                self.done(req, "statfs", t, 0, true, args(ino.0));
                reply.error(self.fail("statfs", &e))
            }
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let t = Instant::now();
        let made = {
            let register = |file: &std::fs::File| -> std::io::Result<BackingToken> {
                Ok(Arc::new(reply.open_backing(file)?))
            };
            self.fs
                .mknod_file(parent.0, name, mode & !umask, req.uid(), req.gid())
                .and_then(|attr| Ok((attr, self.fs.open(attr.ino.0, flags, req.pid(), &register)?)))
        };
        match made {
            Ok((attr, (fh, answer))) => {
                self.done(
                    req,
                    "create",
                    t,
                    0,
                    false,
                    Args {
                        ino: parent.0,
                        name: Some(name),
                        ..Default::default()
                    },
                );
                match answer {
                    OpenReply::Passthrough(token) => match backing_id(&token) {
                        Some(id) => reply.created_passthrough(
                            &self.ttl,
                            &attr,
                            Generation(0),
                            FileHandle(fh),
                            FopenFlags::empty(),
                            id,
                        ),
                        None => reply.error(Errno::from_i32(libc::EIO)),
                    },
                    other => reply.created(
                        &self.ttl,
                        &attr,
                        Generation(0),
                        FileHandle(fh),
                        open_flags(&other),
                    ),
                }
            }
            Err(e) => {
                self.done(
                    req,
                    "create",
                    t,
                    0,
                    true,
                    Args {
                        ino: parent.0,
                        name: Some(name),
                        ..Default::default()
                    },
                );
                reply.error(self.fail("create", &e));
            }
        }
    }
}
