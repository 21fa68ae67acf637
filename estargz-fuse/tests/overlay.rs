//! Mounted layers stacked with `mount -t overlay` give the same tree as unpacking the same
//! layers in order with OCI whiteout semantics.
//!
//! Not compared (overlayfs, not the layers, decides them): directory link counts (overlayfs
//! reports 1 for merged directories), inode numbers and devices, and the root directory.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use estargz_fuse::LocalOptions;

use common::*;

const S_IFMT: u32 = 0o170000;
const S_IFDIR: u32 = 0o040000;

/// Applies one unpacked layer (`layer`, a snapshot of `tar -x` of it) onto `merged` the way
/// OCI image-spec says: whiteouts and opaque markers delete from lower layers only; an entry
/// replaces whatever was at its path unless both are directories (then the upper attributes
/// win and the contents merge).
fn apply(merged: &mut BTreeMap<PathBuf, Entry>, layer: &BTreeMap<PathBuf, Entry>) {
    let remove_tree = |m: &mut BTreeMap<PathBuf, Entry>, p: &Path, keep_root: bool| {
        let doomed: Vec<PathBuf> = m
            .keys()
            .filter(|k| k.starts_with(p) && (!keep_root || k.as_path() != p))
            .cloned()
            .collect();
        for k in doomed {
            m.remove(&k);
        }
    };
    for p in layer.keys() {
        let Some(name) = p.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let parent = p.parent().unwrap_or(Path::new(""));
        if name == ".wh..wh..opq" {
            remove_tree(merged, parent, true);
        } else if let Some(target) = name.strip_prefix(".wh.") {
            remove_tree(merged, &parent.join(target), false);
        }
    }
    for (p, e) in layer {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with(".wh.") || p.as_os_str().is_empty() {
            continue;
        }
        if let Some(old) = merged.get(p) {
            if !(old.mode & S_IFMT == S_IFDIR && e.mode & S_IFMT == S_IFDIR) {
                let doomed: Vec<PathBuf> = merged
                    .keys()
                    .filter(|k| k.starts_with(p))
                    .cloned()
                    .collect();
                for k in doomed {
                    merged.remove(&k);
                }
            }
        }
        merged.insert(p.clone(), e.clone());
    }
}

fn without_dir_nlink(mut t: BTreeMap<PathBuf, Entry>) -> BTreeMap<PathBuf, Entry> {
    t.remove(Path::new(""));
    for e in t.values_mut() {
        if e.mode & S_IFMT == S_IFDIR {
            e.nlink = 0;
        }
    }
    t
}

/// Unmounts an overlay on drop.
struct Overlay(PathBuf);

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        if estargz_fuse::mount::is_mountpoint(&self.0) {
            let _ = estargz_fuse::mount::detach(&self.0);
        }
    }
}

fn mount_overlay(lowers: &[&Path], upper: Option<(&Path, &Path)>, at: &Path) -> Overlay {
    let lowerdir: Vec<String> = lowers.iter().map(|p| p.display().to_string()).collect();
    let mut opts = format!("lowerdir={}", lowerdir.join(":"));
    if let Some((u, w)) = upper {
        opts.push_str(&format!(
            ",upperdir={},workdir={}",
            u.display(),
            w.display()
        ));
    }
    let out = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &opts])
        .arg(at)
        .output()
        .expect("run mount");
    assert!(
        out.status.success(),
        "mount -t overlay {opts}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Overlay(at.to_path_buf())
}

fn layers() -> [Vec<u8>; 3] {
    use Item::*;
    let base = layer_tar(&[
        Dir("a/", 0o755),
        File("a/keep.txt", 0o644, b"keep"),
        File("a/gone.txt", 0o644, b"gone"),
        Dir("b/", 0o750),
        File("b/x", 0o600, b"x"),
        Dir("b/sub/", 0o755),
        File("b/sub/y", 0o644, b"y"),
        File("c", 0o644, b"c v1"),
        Dir("d/", 0o755),
        File("d/inner", 0o644, b"inner"),
        File("e", 0o755, b"e is a file"),
        Dir("zdir/", 0o755),
        File("zdir/z", 0o644, b"z"),
        Symlink("link", "a/keep.txt"),
    ]);
    let middle = layer_tar(&[
        Dir("a/", 0o755),
        File("a/.wh.gone.txt", 0o644, b""),
        File("a/new.txt", 0o640, b"new in layer 2"),
        DirXattr("b/", "user.layer", b"layer two"),
        File("b/.wh..wh..opq", 0o644, b""),
        File("b/fresh", 0o644, b"fresh"),
        File("c", 0o600, b"c v2, longer"),
        File("d", 0o644, b"d is now a file"),
        Dir("e/", 0o711),
        File("e/inside", 0o644, b"e is now a dir"),
        File(".wh.zdir", 0o644, b""),
        File(".wh.never-existed", 0o644, b""),
        Dir("f/", 0o755),
        File("f/f1", 0o644, b"f1"),
    ]);
    let top = layer_tar(&[
        Dir("a/", 0o755),
        File("a/gone.txt", 0o644, b"back again"),
        File(".wh.f", 0o644, b""),
        File(".wh.link", 0o644, b""),
        Symlink("link2", "c"),
    ]);
    [base, middle, top]
}

#[test]
fn stacked_layers_match_oci_unpacking() {
    if !fuse_ready() {
        return;
    }
    let work = scratch("overlay");
    let mut merged = BTreeMap::new();
    let mut mounts = Vec::new();
    for (i, tar) in layers().iter().enumerate() {
        let Some((tar_path, blob)) = make_layer(work.path(), &format!("l{i}"), tar) else {
            return;
        };
        let unpacked = scratch("unpack");
        extract(&tar_path, unpacked.path());
        apply(&mut merged, &snapshot(unpacked.path()));
        mounts.push(mount_source(
            local(&blob, LocalOptions::default()),
            &test_options(),
        ));
    }
    // overlayfs lists the topmost lower layer first.
    let lowers: Vec<&Path> = mounts.iter().rev().map(|m| m.path()).collect();
    let merged_dir = scratch("merged");
    {
        let _ov = mount_overlay(&lowers, None, merged_dir.path());
        let d = diff(
            &without_dir_nlink(merged.clone()),
            &without_dir_nlink(snapshot(merged_dir.path())),
        );
        let text: Vec<String> = d.into_iter().map(|(_, t)| t).collect();
        assert!(
            text.is_empty(),
            "{} differences:\n{}",
            text.len(),
            text.join("\n")
        );
    }
    // The same stack with a writable upper layer: copy-up works.
    let upper = scratch("upper");
    let workdir = scratch("work");
    let _ov = mount_overlay(
        &lowers,
        Some((upper.path(), workdir.path())),
        merged_dir.path(),
    );
    let c = merged_dir.path().join("c");
    assert_eq!(std::fs::read(&c).expect("read c"), b"c v2, longer");
    std::fs::write(&c, b"written on top").expect("copy-up write");
    assert_eq!(
        std::fs::read(upper.path().join("c")).expect("upper c"),
        b"written on top"
    );
    std::fs::remove_file(merged_dir.path().join("a/keep.txt")).expect("delete a lower file");
    assert!(!merged_dir.path().join("a/keep.txt").exists());
}

#[test]
fn whiteouts_and_opaque_dirs_as_overlayfs_expects() {
    if !fuse_ready() {
        return;
    }
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let work = scratch("wh");
    let Some((_, blob)) = make_layer(work.path(), "mid", &layers()[1]) else {
        return;
    };
    for (mode, names) in [
        (
            estargz_fuse::OpaqueXattr::Trusted,
            vec!["trusted.overlay.opaque"],
        ),
        (estargz_fuse::OpaqueXattr::User, vec!["user.overlay.opaque"]),
        (
            estargz_fuse::OpaqueXattr::Both,
            vec!["trusted.overlay.opaque", "user.overlay.opaque"],
        ),
    ] {
        let mut opts = test_options();
        opts.fs.opaque_xattr = mode;
        let m = mount_source(local(&blob, LocalOptions::default()), &opts);
        let root = m.path();
        let wh = std::fs::symlink_metadata(root.join("a/gone.txt")).expect("whiteout");
        assert!(wh.file_type().is_char_device());
        assert_eq!(
            (
                wh.mode(),
                wh.rdev(),
                wh.uid(),
                wh.gid(),
                wh.size(),
                wh.nlink()
            ),
            (0o020000, 0, 0, 0, 0, 1)
        );
        assert!(
            std::fs::symlink_metadata(root.join("a/.wh.gone.txt")).is_err(),
            ".wh. names are hidden"
        );
        assert!(std::fs::symlink_metadata(root.join("b/.wh..wh..opq")).is_err());
        let listing: Vec<String> = std::fs::read_dir(root.join("b"))
            .expect("readdir")
            .map(|e| {
                e.expect("dirent")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        assert_eq!(listing, ["fresh"]);
        let top: Vec<String> = std::fs::read_dir(root)
            .expect("readdir")
            .map(|e| {
                e.expect("dirent")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        let mut sorted = top.clone();
        sorted.sort();
        assert_eq!(top, sorted, "readdir is sorted by name");
        assert!(top.contains(&"zdir".to_string()) && top.contains(&"never-existed".to_string()));
        let mut buf = vec![0u8; 1024];
        let n = rustix::fs::listxattr(root.join("b"), &mut buf[..]).expect("listxattr");
        let listed: Vec<&str> = buf[..n]
            .split(|&b| b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| std::str::from_utf8(s).expect("utf8"))
            .collect();
        let mut want = names.clone();
        want.push("user.layer");
        assert_eq!(listed, want, "opaque names first, then the TOC's");
        for name in &names {
            let mut v = [0u8; 8];
            let n = rustix::fs::getxattr(root.join("b"), *name, &mut v[..]).expect("getxattr");
            assert_eq!(&v[..n], b"y");
        }
        // Too small a buffer: ERANGE; absent: ENODATA.
        let mut one = [0u8; 1];
        assert_eq!(
            rustix::fs::getxattr(root.join("b"), "user.layer", &mut one[..]),
            Err(rustix::io::Errno::RANGE)
        );
        let mut v = [0u8; 64];
        let n = rustix::fs::getxattr(root.join("b"), "user.layer", &mut v[..]).expect("user.layer");
        assert_eq!(&v[..n], b"layer two");
        assert_eq!(
            rustix::fs::getxattr(root.join("b"), "user.missing", &mut one[..]),
            Err(rustix::io::Errno::NODATA)
        );
        assert_eq!(
            rustix::fs::listxattr(root.join("b"), &mut one[..]),
            Err(rustix::io::Errno::RANGE)
        );
        assert!(
            rustix::fs::getxattr(root.join("a"), "trusted.overlay.opaque", &mut one[..]).is_err()
        );
    }
}
