//! [`FileStat`]: what a `stat` packet hands back.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A file's metadata, from [`Handle::stat`](crate::Handle::stat) (`statx(2)`'s basic fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct FileStat {
    /// Size in bytes.
    pub size: u64,
    /// Type and permission bits (`st_mode`: `libc::S_IFMT` masks the type).
    pub mode: u32,
    /// Hard links.
    pub nlink: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Inode number.
    pub ino: u64,
    /// Preferred I/O block size.
    pub block_size: u32,
    /// 512-byte blocks allocated.
    pub blocks: u64,
    /// Last access.
    pub accessed: SystemTime,
    /// Last modification of the contents.
    pub modified: SystemTime,
    /// Last change of the metadata.
    pub changed: SystemTime,
}

impl FileStat {
    pub(crate) fn from_statx(st: &libc::statx) -> FileStat {
        let time = |t: libc::statx_timestamp| {
            let d = Duration::new(t.tv_sec.unsigned_abs(), t.tv_nsec);
            if t.tv_sec >= 0 {
                UNIX_EPOCH + d
            } else {
                UNIX_EPOCH - d
            }
        };
        FileStat {
            size: st.stx_size,
            mode: u32::from(st.stx_mode),
            nlink: st.stx_nlink,
            uid: st.stx_uid,
            gid: st.stx_gid,
            ino: st.stx_ino,
            block_size: st.stx_blksize,
            blocks: st.stx_blocks,
            accessed: time(st.stx_atime),
            modified: time(st.stx_mtime),
            changed: time(st.stx_ctime),
        }
    }

    /// A regular file.
    pub fn is_file(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFREG
    }

    /// A directory.
    pub fn is_dir(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFDIR
    }
}
