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

/// Largest FUSE read/write request we ask the kernel for.
const MAX_IO: u32 = 1 << 20;

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

    fn fail(&self, op: &'static str, e: &FsError) -> Errno {
        if e.is_routine() {
            tracing::debug!(op, "{e}");
        } else {
            tracing::warn!(op, "{e}");
        }
        Errno::from_i32(e.errno)
    }

    fn done(&self, op: &'static str, start: Instant, bytes: u64, error: bool) {
        self.fs.pipe.profiler.op(op, start, bytes, error);
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
        let _ = config.set_max_write(MAX_IO);
        let _ = config.set_max_readahead(MAX_IO);
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

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let t = Instant::now();
        match self.fs.lookup(parent.0, name) {
            Ok(attr) => {
                reply.entry(&self.ttl, &attr, Generation(0));
                self.done("lookup", t, 0, false);
            }
            Err(e) => {
                reply.error(self.fail("lookup", &e));
                self.done("lookup", t, 0, true);
            }
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let t = Instant::now();
        match self.fs.getattr(ino.0) {
            Ok(attr) => {
                reply.attr(&self.ttl, &attr);
                self.done("getattr", t, 0, false);
            }
            Err(e) => {
                reply.error(self.fail("getattr", &e));
                self.done("getattr", t, 0, true);
            }
        }
    }

    fn setattr(
        &self,
        _req: &Request,
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
        match self.fs.setattr(ino.0, mode, uid, gid, size, times) {
            Ok(attr) => {
                reply.attr(&self.ttl, &attr);
                self.done("setattr", t, 0, false);
            }
            Err(e) => {
                reply.error(self.fail("setattr", &e));
                self.done("setattr", t, 0, true);
            }
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let t = Instant::now();
        match self.fs.readlink(ino.0) {
            Ok(target) => {
                reply.data(&target);
                self.done("readlink", t, 0, false);
            }
            Err(e) => {
                reply.error(self.fail("readlink", &e));
                self.done("readlink", t, 0, true);
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
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        let t = Instant::now();
        if mode & libc::S_IFMT != libc::S_IFREG {
            reply.error(Errno::from_i32(libc::EPERM));
            self.done("mknod", t, 0, true);
            return;
        }
        match self
            .fs
            .mknod_file(parent.0, name, mode & !umask, req.uid(), req.gid())
        {
            Ok(attr) => {
                reply.entry(&self.ttl, &attr, Generation(0));
                self.done("mknod", t, 0, false);
            }
            Err(e) => {
                reply.error(self.fail("mknod", &e));
                self.done("mknod", t, 0, true);
            }
        }
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
        match self
            .fs
            .mkdir(parent.0, name, mode & !umask, req.uid(), req.gid())
        {
            Ok(attr) => {
                reply.entry(&self.ttl, &attr, Generation(0));
                self.done("mkdir", t, 0, false);
            }
            Err(e) => {
                reply.error(self.fail("mkdir", &e));
                self.done("mkdir", t, 0, true);
            }
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let t = Instant::now();
        match self.fs.unlink(parent.0, name) {
            Ok(()) => {
                reply.ok();
                self.done("unlink", t, 0, false);
            }
            Err(e) => {
                reply.error(self.fail("unlink", &e));
                self.done("unlink", t, 0, true);
            }
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let t = Instant::now();
        match self.fs.rmdir(parent.0, name) {
            Ok(()) => {
                reply.ok();
                self.done("rmdir", t, 0, false);
            }
            Err(e) => {
                reply.error(self.fail("rmdir", &e));
                self.done("rmdir", t, 0, true);
            }
        }
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
        match self
            .fs
            .symlink(parent.0, link_name, target, req.uid(), req.gid())
        {
            Ok(attr) => {
                reply.entry(&self.ttl, &attr, Generation(0));
                self.done("symlink", t, 0, false);
            }
            Err(e) => {
                reply.error(self.fail("symlink", &e));
                self.done("symlink", t, 0, true);
            }
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let t = Instant::now();
        match self
            .fs
            .rename(parent.0, name, newparent.0, newname, flags.bits())
        {
            Ok(()) => {
                reply.ok();
                self.done("rename", t, 0, false);
            }
            Err(e) => {
                reply.error(self.fail("rename", &e));
                self.done("rename", t, 0, true);
            }
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let t = Instant::now();
        match self.fs.open(ino.0, flags.0, req.pid()) {
            Ok(fh) => {
                reply.opened(FileHandle(fh), self.open_flags);
                self.done("open", t, 0, false);
            }
            Err(e) => {
                reply.error(self.fail("open", &e));
                self.done("open", t, 0, true);
            }
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
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
                reply.data(&data);
                self.done("read", t, data.len() as u64, false);
            }
            Err(e) => {
                reply.error(self.fail("read", &e));
                self.done("read", t, 0, true);
            }
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
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
                reply.written(n);
                self.done("write", t, n as u64, false);
            }
            Err(e) => {
                reply.error(self.fail("write", &e));
                self.done("write", t, 0, true);
            }
        }
    }

    fn flush(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let t = Instant::now();
        match self.fs.flush(fh.0, req.pid()) {
            Ok(()) => {
                reply.ok();
                self.done("flush", t, 0, false);
            }
            Err(e) => {
                reply.error(self.fail("flush", &e));
                self.done("flush", t, 0, true);
            }
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let t = Instant::now();
        match self.fs.release(fh.0) {
            Ok(()) => {
                reply.ok();
                self.done("release", t, 0, false);
            }
            Err(e) => {
                reply.error(self.fail("release", &e));
                self.done("release", t, 0, true);
            }
        }
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let t = Instant::now();
        match self.fs.fsync(fh.0) {
            Ok(()) => {
                reply.ok();
                self.done("fsync", t, 0, false);
            }
            Err(e) => {
                reply.error(self.fail("fsync", &e));
                self.done("fsync", t, 0, true);
            }
        }
    }

    fn readdir(
        &self,
        _req: &Request,
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
                reply.ok();
                self.done("readdir", t, 0, false);
            }
            Err(e) => {
                reply.error(self.fail("readdir", &e));
                self.done("readdir", t, 0, true);
            }
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
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
                reply.ok();
                self.done("readdirplus", t, 0, false);
            }
            Err(e) => {
                reply.error(self.fail("readdirplus", &e));
                self.done("readdirplus", t, 0, true);
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
                reply.created(
                    &self.ttl,
                    &attr,
                    Generation(0),
                    FileHandle(fh),
                    self.open_flags,
                );
                self.done("create", t, 0, false);
            }
            Err(e) => {
                reply.error(self.fail("create", &e));
                self.done("create", t, 0, true);
            }
        }
    }
}
