//! TOC attributes → `struct stat` as FUSE reports it (ESTARGZ-FORMAT.md §11), and the stable
//! inode numbering.
//!
//! Inode numbers are `node id + 1`: the root (node 0) is inode 1 as FUSE requires, and since
//! node ids are assigned deterministically from the TOC, the same layer gets the same inode
//! numbers on every mount. They are never reused while mounted (the layer is immutable), so one
//! generation number per layer is enough; it is derived from the TOC digest.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use estargz::index::{Attr, NodeId, NodeKind};
use estargz::Digest;
use fuser::{FileAttr, FileType, INodeNo};

/// `st_blksize`.
pub const BLOCK_SIZE: u32 = 4096;

/// The inode number of `node`.
pub fn ino(node: NodeId) -> INodeNo {
    INodeNo(u64::from(node.0) + 1)
}

/// The node of inode number `ino`, if it can be one (the caller still checks the range).
pub fn node(ino: INodeNo) -> Option<NodeId> {
    ino.0
        .checked_sub(1)
        .and_then(|n| u32::try_from(n).ok())
        .map(NodeId)
}

/// The generation number of every inode of the layer named by `toc`: never 0.
pub fn generation(toc: &Digest) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&toc.0[..8]);
    u64::from_be_bytes(b).max(1)
}

/// The FUSE file type of a node kind.
pub fn file_type(kind: NodeKind) -> FileType {
    match kind {
        NodeKind::Dir => FileType::Directory,
        NodeKind::File => FileType::RegularFile,
        NodeKind::Symlink => FileType::Symlink,
        NodeKind::CharDevice => FileType::CharDevice,
        NodeKind::BlockDevice => FileType::BlockDevice,
        NodeKind::Fifo => FileType::NamedPipe,
    }
}

/// Linux `makedev(major, minor)` truncated to the 32 bits FUSE carries.
pub fn rdev(major: u32, minor: u32) -> u32 {
    ((major & 0xfff) << 8) | (minor & 0xff) | ((minor & 0xfff00) << 12)
}

fn time(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

/// The attributes of `node` as the TOC says. `atime` and `ctime` are the mtime (the TOC has
/// neither; the reference reports 0, which only confuses tools that compare ctimes).
pub fn file_attr(node: NodeId, a: &Attr) -> FileAttr {
    let mtime = time(a.mtime);
    let is_dev = matches!(a.kind, NodeKind::CharDevice | NodeKind::BlockDevice);
    FileAttr {
        ino: ino(node),
        size: a.size,
        blocks: a.size.div_ceil(u64::from(BLOCK_SIZE)) * 8,
        atime: mtime,
        mtime,
        ctime: mtime,
        crtime: mtime,
        kind: file_type(a.kind),
        perm: (a.mode & 0o7777) as u16,
        nlink: a.nlink.max(1),
        uid: a.uid,
        gid: a.gid,
        rdev: if is_dev {
            rdev(a.dev_major, a.dev_minor)
        } else {
            0
        },
        blksize: BLOCK_SIZE,
        flags: 0,
    }
}

/// The attributes of whiteout node `node` (the `.wh.X` entry): exactly an overlayfs whiteout,
/// a character device 0:0 with mode `S_IFCHR` and no permission bits, owned by root, size 0,
/// one link, the whiteout entry's mtime.
pub fn whiteout_attr(node: NodeId, entry: &Attr) -> FileAttr {
    let mtime = time(entry.mtime);
    FileAttr {
        ino: ino(node),
        size: 0,
        blocks: 0,
        atime: mtime,
        mtime,
        ctime: mtime,
        crtime: mtime,
        kind: FileType::CharDevice,
        perm: 0,
        nlink: 1,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: BLOCK_SIZE,
        flags: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inode_numbers_round_trip_and_root_is_one() {
        assert_eq!(ino(NodeId::ROOT), INodeNo::ROOT);
        assert_eq!(node(INodeNo(1)), Some(NodeId::ROOT));
        assert_eq!(node(ino(NodeId(41))), Some(NodeId(41)));
        assert_eq!(node(INodeNo(0)), None);
        assert_eq!(node(INodeNo(u64::MAX)), None);
    }

    #[test]
    fn makedev_matches_glibc() {
        assert_eq!(rdev(1, 3), 0x103);
        assert_eq!(rdev(8, 0), 0x800);
        // minor above 255 goes to the high bits, as glibc's makedev does.
        assert_eq!(rdev(259, 0x12345), (0x103 << 8) | 0x45 | (0x12300 << 12));
    }

    #[test]
    fn blocks_are_whole_4k_blocks_in_512_byte_units() {
        let a = Attr {
            kind: NodeKind::File,
            mode: 0o4755,
            uid: 1,
            gid: 2,
            size: 4097,
            mtime: 1_700_000_000,
            nlink: 0,
            dev_major: 0,
            dev_minor: 0,
        };
        let f = file_attr(NodeId(3), &a);
        assert_eq!(f.blocks, 16);
        assert_eq!(f.perm, 0o4755);
        assert_eq!(f.nlink, 1);
        assert_eq!(f.ino, INodeNo(4));
        assert_eq!(f.mtime, UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    }
}
