//! Helpers shared by the mount tests: scratch directories, mounting with a guard, `tar -x`,
//! and snapshots of a directory tree (every `stat` field the format carries, symlink targets,
//! content digests, xattrs) to compare a mount with an unpacked layer.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use estargz_fuse::{LayerSource, LocalLayer, LocalOptions, Mount, MountOptions};

/// True when the mount tests can run (root and /dev/fuse); otherwise the test is reported as
/// skipped (or fails under CI).
#[track_caller]
pub fn fuse_ready() -> bool {
    estargz_testkit::prereq::require_root("mounting FUSE filesystems")
        && estargz_testkit::prereq::require_fuse()
}

/// A fresh directory under the system temp dir, removed on drop.
pub fn scratch(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("esgz-fuse-{tag}-"))
        .tempdir()
        .expect("scratch dir")
}

/// Fast-failing mount options for tests: no `fusermount3` (direct mount, root), a short read
/// deadline.
pub fn test_options() -> MountOptions {
    let mut o = MountOptions {
        auto_unmount: false,
        ..MountOptions::default()
    };
    o.fs.read_timeout = Some(std::time::Duration::from_secs(5));
    o
}

/// A mounted layer and the directory it is mounted on. Unmounts before the directory goes.
pub struct Mounted {
    pub mount: Option<Mount>,
    pub dir: tempfile::TempDir,
}

impl Mounted {
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn mount(&self) -> &Mount {
        self.mount.as_ref().expect("mounted")
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(m) = self.mount.take() {
            if let Err(e) = m.unmount() {
                eprintln!("unmount: {e}");
                let _ = estargz_fuse::mount::detach(self.dir.path());
            }
        }
    }
}

/// Mounts `source` on a fresh directory.
pub fn mount_source<S: LayerSource>(source: Arc<S>, opts: &MountOptions) -> Mounted {
    let dir = scratch("mnt");
    let mount = Mount::new(source, dir.path(), opts).expect("mount");
    Mounted {
        mount: Some(mount),
        dir,
    }
}

/// Opens the blob at `blob` as a local layer.
pub fn local(blob: &Path, opts: LocalOptions) -> Arc<LocalLayer> {
    Arc::new(LocalLayer::open(blob, opts).expect("open layer"))
}

/// `tar -x` of `tar` (plain, gzip or zstd) into `dir`, as root: owners, modes, device nodes
/// and every xattr namespace restored. Returns tar's stderr (it may complain about members it
/// refuses, e.g. names with `..`).
pub fn extract(tar: &Path, dir: &Path) -> String {
    let out = Command::new("tar")
        .args([
            "--xattrs",
            "--xattrs-include=*",
            "--same-owner",
            "--numeric-owner",
        ])
        .args(["--delay-directory-restore", "-p", "-x", "-f"])
        .arg(tar)
        .arg("-C")
        .arg(dir)
        .output()
        .expect("run tar");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Everything compared about one path.
#[derive(Clone, PartialEq, Eq)]
pub struct Entry {
    /// Full `st_mode` (type and permission bits, setuid/setgid/sticky).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Size for regular files and symlinks (0 otherwise: directory sizes are filesystem
    /// specific).
    pub size: u64,
    /// Seconds, rounded to the nearest second as the builder rounds `modtime` (the TOC has
    /// second precision).
    pub mtime: Option<i64>,
    pub nlink: u64,
    pub rdev: u64,
    pub link: Option<Vec<u8>>,
    pub sha256: Option<String>,
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "mode={:o} uid={} gid={} size={} mtime={:?} nlink={} rdev={:#x}",
            self.mode, self.uid, self.gid, self.size, self.mtime, self.nlink, self.rdev
        )?;
        if let Some(l) = &self.link {
            write!(f, " -> {:?}", String::from_utf8_lossy(l))?;
        }
        if let Some(d) = &self.sha256 {
            write!(f, " {}", &d[..19])?;
        }
        for (k, v) in &self.xattrs {
            write!(
                f,
                " {}={:?}",
                String::from_utf8_lossy(k),
                String::from_utf8_lossy(v)
            )?;
        }
        Ok(())
    }
}

const S_IFMT: u32 = 0o170000;
const S_IFREG: u32 = 0o100000;
const S_IFDIR: u32 = 0o040000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

fn xattrs(path: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut names = vec![0u8; 65536];
    let Ok(n) = rustix::fs::llistxattr(path, &mut names[..]) else {
        return out;
    };
    for name in names[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cname = std::ffi::OsStr::from_bytes(name);
        let mut value = vec![0u8; 65536];
        if let Ok(len) = rustix::fs::lgetxattr(path, cname, &mut value[..]) {
            out.insert(name.to_vec(), value[..len].to_vec());
        }
    }
    out
}

fn entry_of(path: &Path) -> Entry {
    let md =
        std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
    let kind = md.mode() & S_IFMT;
    let sha256 = (kind == S_IFREG).then(|| {
        estargz_testkit::sha256_digest(
            &std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display())),
        )
    });
    let link = (kind == S_IFLNK).then(|| {
        std::fs::read_link(path)
            .expect("readlink")
            .as_os_str()
            .as_bytes()
            .to_vec()
    });
    Entry {
        mode: md.mode(),
        uid: md.uid(),
        gid: md.gid(),
        size: if kind == S_IFREG || kind == S_IFLNK {
            md.size()
        } else {
            0
        },
        mtime: Some(md.mtime() + i64::from(md.mtime_nsec() >= 500_000_000)),
        nlink: md.nlink(),
        rdev: md.rdev(),
        link,
        sha256,
        xattrs: xattrs(path),
    }
}

/// Every path under `root` (relative, root itself as ""), with its [`Entry`].
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, Entry> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let abs = root.join(&rel);
        let e = entry_of(&abs);
        if e.mode & S_IFMT == S_IFDIR {
            for child in
                std::fs::read_dir(&abs).unwrap_or_else(|e| panic!("readdir {}: {e}", abs.display()))
            {
                let child = child.expect("dirent");
                stack.push(rel.join(child.file_name()));
            }
        }
        out.insert(rel, e);
    }
    out
}

/// What an overlayfs lower layer made from this unpacked OCI layer must look like: `.wh.X`
/// becomes a whiteout `X` (char 0:0, mode `S_IFCHR`, root-owned, the `.wh.X` mtime) unless `X`
/// exists, `.wh..wh..opq` disappears and its directory gets `trusted.overlay.opaque=y`.
pub fn as_overlay_lower(
    mut tree: BTreeMap<PathBuf, Entry>,
    opaque_xattr: &[u8],
) -> BTreeMap<PathBuf, Entry> {
    let names: Vec<PathBuf> = tree.keys().cloned().collect();
    for p in names {
        let Some(name) = p.file_name().map(|n| n.as_bytes().to_vec()) else {
            continue;
        };
        let Some(target) = name.strip_prefix(b".wh.") else {
            continue;
        };
        let wh = tree.remove(&p).expect("present");
        let parent = p.parent().unwrap_or(Path::new("")).to_path_buf();
        if name == b".wh..wh..opq" {
            if let Some(dir) = tree.get_mut(&parent) {
                dir.xattrs.insert(opaque_xattr.to_vec(), b"y".to_vec());
            }
            continue;
        }
        let shown = parent.join(std::ffi::OsStr::from_bytes(target));
        if target.is_empty() || target.starts_with(b".wh.") || tree.contains_key(&shown) {
            continue;
        }
        tree.insert(
            shown,
            Entry {
                mode: S_IFCHR,
                uid: 0,
                gid: 0,
                size: 0,
                mtime: wh.mtime,
                nlink: 1,
                rdev: 0,
                link: None,
                sha256: None,
                xattrs: BTreeMap::new(),
            },
        );
    }
    tree
}

/// The paths where two snapshots differ, each with a human-readable description.
pub fn diff(
    expected: &BTreeMap<PathBuf, Entry>,
    actual: &BTreeMap<PathBuf, Entry>,
) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for (p, e) in expected {
        match actual.get(p) {
            None => out.push((p.clone(), format!("missing in mount: {p:?} ({e:?})"))),
            Some(a) if a != e => out.push((
                p.clone(),
                format!("{p:?}:\n   expected {e:?}\n   mounted  {a:?}"),
            )),
            _ => {}
        }
    }
    for p in actual.keys().filter(|p| !expected.contains_key(*p)) {
        out.push((p.clone(), format!("only in mount: {p:?} ({:?})", actual[p])));
    }
    out
}

/// The FUSE mounts of this machine (for leak checks).
pub fn fuse_mounts_under(dir: &Path) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&*dir.to_string_lossy()))
        .map(str::to_owned)
        .collect()
}

/// Builds `tar` into an eStargz blob at `out` with the Go reference builder (`esgz-oracle
/// build`), or returns `None` (test skipped; fails under CI) when the oracle is missing.
#[track_caller]
pub fn build_esgz(tar: &Path, out: &Path, extra: &[&str]) -> Option<PathBuf> {
    let oracle = estargz_testkit::require_oracle()?;
    let o = Command::new(oracle)
        .arg("build")
        .arg(tar)
        .arg(out)
        .args(extra)
        .output()
        .expect("run esgz-oracle");
    assert!(
        o.status.success(),
        "esgz-oracle build: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    Some(out.to_path_buf())
}

/// One member of a test layer.
pub enum Item<'a> {
    Dir(&'a str, u32),
    File(&'a str, u32, &'a [u8]),
    Symlink(&'a str, &'a str),
    /// A directory with one xattr.
    DirXattr(&'a str, &'a str, &'a [u8]),
}

/// A tar of `items` (owner 0:0 unless the mode says otherwise, mtime 1 700 000 000 + i).
pub fn layer_tar(items: &[Item<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (i, item) in items.iter().enumerate() {
        let mut h = tar::Header::new_ustar();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000 + i as u64);
        let (path, data): (&str, &[u8]) = match item {
            Item::Dir(p, mode) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*mode);
                (p, &[])
            }
            Item::DirXattr(p, k, v) => {
                let key = format!("SCHILY.xattr.{k}");
                b.append_pax_extensions([(key.as_str(), *v)]).expect("pax");
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                (p, &[])
            }
            Item::File(p, mode, data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                (p, data)
            }
            Item::Symlink(p, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_link_name(target).expect("link name");
                (p, &[])
            }
        };
        h.set_path(path).expect("path");
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, data).expect("append");
    }
    b.into_inner().expect("tar")
}

/// Writes `tar` to `dir/name.tar`, builds `dir/name.esgz`, returns both paths.
pub fn make_layer(dir: &Path, name: &str, tar: &[u8]) -> Option<(PathBuf, PathBuf)> {
    let t = dir.join(format!("{name}.tar"));
    std::fs::write(&t, tar).expect("write tar");
    let blob = build_esgz(&t, &dir.join(format!("{name}.esgz")), &[])?;
    Some((t, blob))
}
