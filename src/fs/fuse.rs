//! The FUSE adapter: decodes each request, calls the core, and replies with
//! the result or the errno. Every operation is timed by the profiler and
//! each failure is logged once here, at a level fitting its errno.

use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use fuser::{
    Errno, FileHandle, Filesystem, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig,
    LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request,
    TimeOrNow, WriteFlags,
};

use crate::error::FsError;

use super::core::{CkptFs, SetTimes};

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

pub struct FuseAdapter {
    pub fs: Arc<CkptFs>,
    ttl: Duration,
    open_flags: FopenFlags,
}

impl FuseAdapter {
    pub fn new(fs: Arc<CkptFs>, ttl: Duration) -> Self {
        // Every change goes through this mount, so pages the kernel cached
        // stay valid across opens (fast mmap loads) — unless the layout is
        // lossy: then a reopen must see the rounded values, not the pages
        // the writer left behind.
        let open_flags = if fs.pipe.config.layout.dtype == crate::config::StoredDtype::Keep {
            FopenFlags::FOPEN_KEEP_CACHE
        } else {
            FopenFlags::empty()
        };
        FuseAdapter {
            fs,
            ttl,
            open_flags,
        }
    }

    fn reply_entry(
        &self,
        req: &Request,
        op: &'static str,
        t: Instant,
        r: Result<fuser::FileAttr, FsError>,
        a: Args<'_>,
        reply: ReplyEntry,
    ) {
        match r {
            Ok(attr) => {
                self.done(req, op, t, 0, false, a);
                reply.entry(&self.ttl, &attr, Generation(0));
            }
            Err(e) => {
                self.done(req, op, t, 0, true, a);
                reply.error(self.fail(op, &e));
            }
        }
    }

    fn reply_attr(
        &self,
        req: &Request,
        op: &'static str,
        t: Instant,
        r: Result<fuser::FileAttr, FsError>,
        a: Args<'_>,
        reply: ReplyAttr,
    ) {
        match r {
            Ok(attr) => {
                self.done(req, op, t, 0, false, a);
                reply.attr(&self.ttl, &attr);
            }
            Err(e) => {
                self.done(req, op, t, 0, true, a);
                reply.error(self.fail(op, &e));
            }
        }
    }

    fn reply_empty(
        &self,
        req: &Request,
        op: &'static str,
        t: Instant,
        r: Result<(), FsError>,
        a: Args<'_>,
        reply: ReplyEmpty,
    ) {
        match r {
            Ok(()) => {
                self.done(req, op, t, 0, false, a);
                reply.ok();
            }
            Err(e) => {
                self.done(req, op, t, 0, true, a);
                reply.error(self.fail(op, &e));
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
    /// log when someone is reading it.
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
        if profiler.accesslog.enabled() {
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
        self.reply_entry(
            req,
            "lookup",
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

    fn getattr(&self, req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let t = Instant::now();
        let result = self.fs.getattr(ino.0);
        self.reply_attr(req, "getattr", t, result, args(ino.0), reply);
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
        self.reply_attr(req, "setattr", t, result, args(ino.0), reply);
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
        self.reply_entry(
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
        self.reply_entry(
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
        self.reply_empty(
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
        self.reply_empty(
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
        self.reply_entry(
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
        self.reply_empty(
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
        match self.fs.open(ino.0, flags.0, req.pid()) {
            Ok(fh) => {
                // Control files have no size: reads must reach us.
                let flags = if self.fs.is_control(ino.0) {
                    FopenFlags::FOPEN_DIRECT_IO
                } else {
                    self.open_flags
                };
                self.done(req, "open", t, 0, false, args(ino.0));
                reply.opened(FileHandle(fh), flags);
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
        match self.fs.read(fh.0, offset, size) {
            Ok(data) => {
                self.done(
                    req,
                    "read",
                    t,
                    data.len() as u64,
                    false,
                    Args {
                        ino: ino.0,
                        fh: Some(fh.0),
                        offset: Some(offset),
                        name: None,
                    },
                );
                reply.data(&data);
            }
            Err(e) => {
                self.done(
                    req,
                    "read",
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
                reply.error(self.fail("read", &e));
            }
        }
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
        self.reply_empty(
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
        self.reply_empty(
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
        self.reply_empty(
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

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: fuser::ReplyXattr,
    ) {
        reply.error(Errno::from_i32(libc::ENODATA));
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, size: u32, reply: fuser::ReplyXattr) {
        if size == 0 {
            reply.size(0);
        } else {
            reply.data(&[]);
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::from_i32(libc::ENOTSUP));
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        reply.error(Errno::from_i32(libc::ENOTTY));
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.fs.statfs() {
            Ok(st) => reply.statfs(
                st.f_blocks,
                st.f_bfree,
                st.f_bavail,
                st.f_files,
                st.f_ffree,
                st.f_bsize as u32,
                255,
                st.f_frsize as u32,
            ),
            Err(e) => reply.error(self.fail("statfs", &e)),
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
        let made = self
            .fs
            .mknod_file(parent.0, name, mode & !umask, req.uid(), req.gid())
            .and_then(|attr| Ok((attr, self.fs.open(attr.ino.0, flags, req.pid())?)));
        match made {
            Ok((attr, fh)) => {
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
                reply.created(
                    &self.ttl,
                    &attr,
                    Generation(0),
                    FileHandle(fh),
                    self.open_flags,
                );
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
