//! Deterministic synthetic tars for tests and benchmarks.
//!
//! Every byte is a function of the arguments: mtimes are fixed ([`MTIME`]), owners are fixed,
//! and file contents come from [`SplitMix64`] seeded by the caller, so a generator called twice
//! with the same arguments returns the same bytes on every machine. Contents are
//! [`MixedContent`]: runs of English-like text, random bytes and repeated patterns, so
//! compressors see realistic, neither trivial nor incompressible, data.
//!
//! Headers are USTAR, with PAX extended headers (`x`) where a member needs them (long names and
//! link targets, `SCHILY.xattr.*`), plus one GNU `L` long name in [`every_entry_type`].
//! Directory names carry a trailing `/`, as GNU tar writes them.

use std::io::{self, Read, Write};

use tar::{EntryType, Header};

/// The modification time of every generated member: 2023-11-14T22:13:20Z (as the oracle's).
pub const MTIME: u64 = 1_700_000_000;

/// Size of `dir/multi-chunk.bin` in [`every_entry_type`]: more than one default 4 MiB chunk.
pub const MULTI_CHUNK_FILE_SIZE: u64 = (4 << 20) + 4097;

/// Files per directory in [`many_small_files`].
pub const SMALL_FILES_PER_DIR: usize = 100;

/// A tiny, fast, seedable PRNG (SplitMix64): good enough for test data, not for anything else.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator whose sequence is fully determined by `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0), by multiply-high: unbiased enough for test data.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Fills `buf` with random bytes.
    pub fn fill_bytes(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for chunk in &mut chunks {
            chunk.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let last = self.next_u64().to_le_bytes();
        rest.copy_from_slice(&last[..rest.len()]);
    }
}

const WORDS: &[&str] = &[
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "dog",
    "estargz",
    "chunk",
    "offset",
    "digest",
    "table",
    "contents",
    "gzip",
    "zstd",
    "stream",
    "member",
    "footer",
    "layer",
    "image",
    "registry",
    "container",
    "snapshot",
    "lazy",
    "pull",
    "prefetch",
    "landmark",
    "verify",
    "tar",
    "header",
    "pax",
    "name",
    "size",
    "mode",
    "uid",
    "gid",
    "mtime",
    "xattr",
    "whiteout",
    "opaque",
    "hardlink",
    "symlink",
    "device",
    "fifo",
    "directory",
    "regular",
    "file",
    "data",
    "block",
    "random",
    "access",
    "lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet",
];

/// A reader of exactly `len` bytes of mixed content: runs (256 B to 16 KiB) of text (about
/// half), random bytes (about a third) and a repeated short pattern (the rest).
#[derive(Debug, Clone)]
pub struct MixedContent {
    rng: SplitMix64,
    remaining: u64,
    run: Vec<u8>,
    pos: usize,
}

impl MixedContent {
    /// `len` bytes determined by `seed`.
    pub fn new(len: u64, seed: u64) -> Self {
        MixedContent {
            rng: SplitMix64::new(seed),
            remaining: len,
            run: Vec::new(),
            pos: 0,
        }
    }

    fn next_run(&mut self) {
        let len = 256 + self.rng.below(16 * 1024 - 256) as usize;
        self.run.clear();
        self.pos = 0;
        match self.rng.below(20) {
            0..=9 => {
                let mut column = 0;
                while self.run.len() < len {
                    let word = WORDS[self.rng.below(WORDS.len() as u64) as usize];
                    self.run.extend_from_slice(word.as_bytes());
                    column += word.len() + 1;
                    if column > 72 {
                        self.run.push(b'\n');
                        column = 0;
                    } else {
                        self.run.push(b' ');
                    }
                }
                self.run.truncate(len);
            }
            10..=16 => {
                self.run.resize(len, 0);
                self.rng.fill_bytes(&mut self.run);
            }
            _ => {
                let mut pattern = [0u8; 16];
                self.rng.fill_bytes(&mut pattern);
                let pattern = &pattern[..1 + self.rng.below(16) as usize];
                self.run.extend(pattern.iter().cycle().take(len));
            }
        }
    }
}

impl Read for MixedContent {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        if self.pos == self.run.len() {
            self.next_run();
        }
        let n = buf
            .len()
            .min(self.run.len() - self.pos)
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        buf[..n].copy_from_slice(&self.run[self.pos..self.pos + n]);
        self.pos += n;
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// `len` bytes of [`MixedContent`] for `seed`.
pub fn mixed_content(len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    // Reading from an in-memory generator into a Vec cannot fail.
    let _ = MixedContent::new(len as u64, seed).read_to_end(&mut out);
    out
}

/// One member to write: metadata plus optional PAX/GNU extensions.
#[derive(Debug, Clone)]
struct Member {
    path: String,
    kind: EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    uname: &'static str,
    gname: &'static str,
    link: String,
    dev: (u32, u32),
    xattrs: Vec<(String, Vec<u8>)>,
    gnu_long_name: bool,
}

impl Member {
    fn new(path: impl Into<String>, kind: EntryType) -> Self {
        let mode = match kind {
            EntryType::Directory => 0o755,
            EntryType::Symlink => 0o777,
            _ => 0o644,
        };
        Member {
            path: path.into(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            uname: "root",
            gname: "root",
            link: String::new(),
            dev: (0, 0),
            xattrs: Vec::new(),
            gnu_long_name: false,
        }
    }

    fn dir(path: impl Into<String>) -> Self {
        Member::new(path, EntryType::Directory)
    }

    fn file(path: impl Into<String>) -> Self {
        Member::new(path, EntryType::Regular)
    }

    fn link(mut self, target: impl Into<String>) -> Self {
        self.link = target.into();
        self
    }

    fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }
}

/// Appends one PAX record (`"<len> <key>=<value>\n"`, where `<len>` counts itself).
fn pax_record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + 1;
    while body + len.to_string().len() != len {
        len = body + len.to_string().len();
    }
    out.extend_from_slice(format!("{len} {key}=").as_bytes());
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// Copies `value` into a NUL-padded header field, truncating it to fit.
fn set_field(field: &mut [u8], value: &[u8]) {
    let n = value.len().min(field.len());
    field.fill(0);
    field[..n].copy_from_slice(&value[..n]);
}

/// A `tar::Builder` that writes [`Member`]s with exact names (trailing `/` kept) and PAX
/// records where needed.
struct TarWriter<W: Write> {
    builder: tar::Builder<W>,
}

impl<W: Write> TarWriter<W> {
    fn new(w: W) -> Self {
        TarWriter {
            builder: tar::Builder::new(w),
        }
    }

    fn append(&mut self, m: &Member, size: u64, data: impl Read) -> io::Result<()> {
        let name = m.path.as_bytes();
        let long_name = name.len() > 100;
        let mut pax = Vec::new();
        if long_name && !m.gnu_long_name {
            pax_record(&mut pax, "path", name);
        }
        if m.link.len() > 100 {
            pax_record(&mut pax, "linkpath", m.link.as_bytes());
        }
        for (key, value) in &m.xattrs {
            pax_record(&mut pax, &format!("SCHILY.xattr.{key}"), value);
        }
        if !pax.is_empty() {
            let mut h = Header::new_ustar();
            let base = m
                .path
                .trim_end_matches('/')
                .rsplit('/')
                .next()
                .unwrap_or("");
            set_field(
                &mut h.as_old_mut().name,
                format!("PaxHeaders.0/{base}").as_bytes(),
            );
            h.set_entry_type(EntryType::XHeader);
            h.set_mode(0o644);
            h.set_mtime(MTIME);
            h.set_size(pax.len() as u64);
            h.set_cksum();
            self.builder.append(&h, pax.as_slice())?;
        }

        let mut h = if m.gnu_long_name {
            Header::new_gnu()
        } else {
            Header::new_ustar()
        };
        h.set_entry_type(m.kind);
        h.set_mode(m.mode);
        h.set_uid(m.uid);
        h.set_gid(m.gid);
        h.set_username(m.uname)?;
        h.set_groupname(m.gname)?;
        h.set_mtime(MTIME);
        h.set_size(size);
        if matches!(m.kind, EntryType::Char | EntryType::Block) {
            h.set_device_major(m.dev.0)?;
            h.set_device_minor(m.dev.1)?;
        }
        set_field(&mut h.as_old_mut().linkname, m.link.as_bytes());
        if long_name && m.gnu_long_name {
            // Let the tar crate write the GNU `././@LongLink` (`L`) member.
            return self.builder.append_data(&mut h, &m.path, data);
        }
        set_field(&mut h.as_old_mut().name, name);
        h.set_cksum();
        self.builder.append(&h, data)
    }

    fn append_bytes(&mut self, m: &Member, data: &[u8]) -> io::Result<()> {
        self.append(m, data.len() as u64, data)
    }

    fn append_empty(&mut self, m: &Member) -> io::Result<()> {
        self.append(m, 0, io::empty())
    }

    fn finish(self) -> io::Result<W> {
        self.builder.into_inner()
    }
}

/// Runs a generator that writes into memory; writing to a `Vec` cannot fail, and a failure of
/// the `tar` crate on the fixed names here is a bug in this module.
fn in_memory(generate: impl FnOnce(&mut TarWriter<Vec<u8>>) -> io::Result<()>) -> Vec<u8> {
    let mut w = TarWriter::new(Vec::new());
    match generate(&mut w).and_then(|()| w.finish()) {
        Ok(bytes) => bytes,
        Err(e) => panic!("synthetic tar generation failed (a testkit bug): {e}"),
    }
}

/// A tar of `n` small files of 0 to 4 KiB (mostly under 1 KiB, some empty) of mixed content.
///
/// Layout: `small/`, then `small/dNNN/` directories each followed by its
/// [`SMALL_FILES_PER_DIR`] files `small/dNNN/fNNNNN.txt`, so the tar has
/// `n + n.div_ceil(SMALL_FILES_PER_DIR) + 1` entries.
pub fn many_small_files(n: usize, seed: u64) -> Vec<u8> {
    in_memory(|w| {
        let mut rng = SplitMix64::new(seed);
        w.append_empty(&Member::dir("small/"))?;
        for i in 0..n {
            if i % SMALL_FILES_PER_DIR == 0 {
                w.append_empty(&Member::dir(format!(
                    "small/d{:03}/",
                    i / SMALL_FILES_PER_DIR
                )))?;
            }
            let size = match rng.below(10) {
                0 => 0,
                1..=7 => rng.below(1024),
                _ => 1024 + rng.below(3 * 1024),
            };
            let path = format!("small/d{:03}/f{i:05}.txt", i / SMALL_FILES_PER_DIR);
            let data = mixed_content(size as usize, rng.next_u64());
            w.append_bytes(&Member::file(path), &data)?;
        }
        Ok(())
    })
}

/// A tar of files whose bytes look already compressed (uniform byte counts), each followed
/// by other entries' headers, for the builder's stored-payload path:
///
/// - `z/`; `z/noise-3000.bin`, `z/noise-4096.bin`, `z/noise-70000.bin` and
///   `z/noise-1m.bin` (1 MiB + 3 bytes): random bytes;
/// - `z/repeats.bin`: 16 KiB of random bytes repeated 12 times (compressible by deflate,
///   though its byte counts are uniform);
/// - after each file a directory `z/dN/` and a symlink `z/dN/link` -> `../noise-4096.bin`.
pub fn compressed_files(seed: u64) -> Vec<u8> {
    in_memory(|w| {
        let mut rng = SplitMix64::new(seed);
        let mut noise = |n: usize| {
            let mut b = vec![0u8; n];
            rng.fill_bytes(&mut b);
            b
        };
        let files = [
            ("noise-3000.bin", noise(3000)),
            ("noise-4096.bin", noise(4096)),
            ("noise-70000.bin", noise(70_000)),
            ("noise-1m.bin", noise((1 << 20) + 3)),
            ("repeats.bin", noise(16 << 10).repeat(12)),
        ];
        w.append_empty(&Member::dir("z/"))?;
        for (i, (name, data)) in files.iter().enumerate() {
            w.append_bytes(&Member::file(format!("z/{name}")), data)?;
            w.append_empty(&Member::dir(format!("z/d{i}/")))?;
            w.append_empty(
                &Member::new(format!("z/d{i}/link"), EntryType::Symlink).link("../noise-4096.bin"),
            )?;
        }
        Ok(())
    })
}

/// A tar of one regular file, `big.bin`, of `size` bytes of mixed content.
pub fn one_big_file(size: u64, seed: u64) -> Vec<u8> {
    in_memory(|w| write_one_big_file(w, size, seed))
}

/// [`one_big_file`] streamed into `out` (for sizes that should not sit in memory); returns
/// `out` after the end-of-archive blocks.
pub fn one_big_file_to<W: Write>(out: W, size: u64, seed: u64) -> io::Result<W> {
    let mut w = TarWriter::new(out);
    write_one_big_file(&mut w, size, seed)?;
    w.finish()
}

fn write_one_big_file<W: Write>(w: &mut TarWriter<W>, size: u64, seed: u64) -> io::Result<()> {
    w.append(
        &Member::file("big.bin"),
        size,
        MixedContent::new(size, seed),
    )
}

/// A tar with one member of every kind the format has to handle, in this order:
///
/// - `dir/` (0755); `dir/empty` (0 bytes); `dir/small.txt`; `dir/multi-chunk.bin`
///   ([`MULTI_CHUNK_FILE_SIZE`] bytes: two default chunks); `dir/symlink` -> `small.txt`;
///   `dir/hardlink` (hardlink to `dir/small.txt`)
/// - `dev/`; `dev/null` (char 1:3); `dev/sda` (block 8:0); `dev/fifo`
/// - `wh/`; `wh/.wh.x` (whiteout); `wh/opaque/`; `wh/opaque/.wh..wh..opq` (opaque marker)
/// - `xattr/` (xattr `user.dir=1`); `xattr/file` (xattrs `user.comment`, `user.empty` = "",
///   `security.capability` with NUL bytes, `trusted.bin` non-UTF-8), all as PAX
///   `SCHILY.xattr.*` records
/// - `long/`; a 150-byte file name via PAX `path`; a 150-byte name via GNU `L`; a symlink to a
///   201-byte target via PAX `linkpath`
/// - `owner/`; `owner/user1000` (uid 1000 `user`, gid 100 `users`); `owner/no-names`
///   (uid/gid 4242, empty uname/gname); `owner/setuid` (04755); `owner/setgid/` (02775);
///   `owner/sticky/` (01777)
pub fn every_entry_type() -> Vec<u8> {
    in_memory(|w| {
        let small = b"small file contents\n";
        w.append_empty(&Member::dir("dir/"))?;
        w.append_empty(&Member::file("dir/empty"))?;
        w.append_bytes(&Member::file("dir/small.txt"), small)?;
        w.append(
            &Member::file("dir/multi-chunk.bin"),
            MULTI_CHUNK_FILE_SIZE,
            MixedContent::new(MULTI_CHUNK_FILE_SIZE, 0x00e5_7a26),
        )?;
        w.append_empty(&Member::new("dir/symlink", EntryType::Symlink).link("small.txt"))?;
        w.append_empty(&Member::new("dir/hardlink", EntryType::Link).link("dir/small.txt"))?;

        w.append_empty(&Member::dir("dev/"))?;
        let mut null = Member::new("dev/null", EntryType::Char).mode(0o666);
        null.dev = (1, 3);
        w.append_empty(&null)?;
        let mut sda = Member::new("dev/sda", EntryType::Block).mode(0o660);
        sda.dev = (8, 0);
        w.append_empty(&sda)?;
        w.append_empty(&Member::new("dev/fifo", EntryType::Fifo))?;

        w.append_empty(&Member::dir("wh/"))?;
        w.append_empty(&Member::file("wh/.wh.x"))?;
        w.append_empty(&Member::dir("wh/opaque/"))?;
        w.append_empty(&Member::file("wh/opaque/.wh..wh..opq"))?;

        let mut dir = Member::dir("xattr/");
        dir.xattrs.push(("user.dir".into(), b"1".to_vec()));
        w.append_empty(&dir)?;
        let mut file = Member::file("xattr/file");
        file.xattrs = vec![
            ("user.comment".into(), b"hello world".to_vec()),
            ("user.empty".into(), Vec::new()),
            (
                "security.capability".into(),
                [1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0].to_vec(),
            ),
            ("trusted.bin".into(), b"\xff\xfe\x00\x80binary".to_vec()),
        ];
        w.append_bytes(&file, b"file with xattrs\n")?;

        w.append_empty(&Member::dir("long/"))?;
        let pax_name = format!("long/pax-{}.txt", "p".repeat(137));
        w.append_bytes(&Member::file(pax_name), b"long name via PAX path\n")?;
        let mut gnu = Member::file(format!("long/gnu-{}.txt", "g".repeat(137)));
        gnu.gnu_long_name = true;
        w.append_bytes(&gnu, b"long name via GNU LongLink\n")?;
        let target = format!("/{}", "t".repeat(200));
        w.append_empty(&Member::new("long/symlink-long-target", EntryType::Symlink).link(target))?;

        w.append_empty(&Member::dir("owner/"))?;
        let mut user = Member::file("owner/user1000");
        (user.uid, user.gid, user.uname, user.gname) = (1000, 100, "user", "users");
        w.append_bytes(&user, b"owned by uid 1000\n")?;
        let mut anon = Member::file("owner/no-names");
        (anon.uid, anon.gid, anon.uname, anon.gname) = (4242, 4242, "", "");
        w.append_bytes(&anon, b"uid/gid without names\n")?;
        w.append_bytes(&Member::file("owner/setuid").mode(0o4755), b"#!/bin/sh\n")?;
        w.append_empty(&Member::dir("owner/setgid/").mode(0o2775))?;
        w.append_empty(&Member::dir("owner/sticky/").mode(0o1777))?;
        Ok(())
    })
}

/// Number of members (excluding PAX/GNU extension headers) that [`every_entry_type`] writes.
pub const EVERY_ENTRY_TYPE_ENTRIES: usize = 26;

/// A tar of exactly `entries` members in a three-level tree, for index and lookup benchmarks
/// (100 000 entries is about 64 MB).
///
/// Layout: `tNNN/` directories, each holding 32 `tNNN/mNN/` directories of 64 members each:
/// mostly empty or tiny (< 200 B) regular files, with a symlink every 50th and a hardlink (to
/// the previous regular file) every 70th member. Tree order, each directory before its children.
pub fn wide_tree(entries: usize) -> Vec<u8> {
    in_memory(|w| write_wide_tree(w, entries))
}

/// [`wide_tree`] streamed into `out`; returns `out` after the end-of-archive blocks.
pub fn wide_tree_to<W: Write>(out: W, entries: usize) -> io::Result<W> {
    let mut w = TarWriter::new(out);
    write_wide_tree(&mut w, entries)?;
    w.finish()
}

fn write_wide_tree<W: Write>(w: &mut TarWriter<W>, entries: usize) -> io::Result<()> {
    let mut rng = SplitMix64::new(0x000d_e7ee);
    let mut left = entries;
    let mut last_file: Option<String> = None;
    'top: for top in 0.. {
        if left == 0 {
            break;
        }
        w.append_empty(&Member::dir(format!("t{top:03}/")))?;
        left -= 1;
        for mid in 0..32 {
            if left == 0 {
                break 'top;
            }
            let dir = format!("t{top:03}/m{mid:02}");
            w.append_empty(&Member::dir(format!("{dir}/")))?;
            left -= 1;
            for leaf in 0..64 {
                if left == 0 {
                    break 'top;
                }
                left -= 1;
                let n = entries - left;
                let path = format!("{dir}/f{leaf:02}");
                match (n % 50, n % 70, &last_file) {
                    (0, _, _) => {
                        let m = Member::new(format!("{path}.lnk"), EntryType::Symlink);
                        w.append_empty(&m.link(format!("../m00/f{leaf:02}.txt")))?;
                    }
                    (_, 0, Some(target)) => {
                        let m = Member::new(format!("{path}.hard"), EntryType::Link);
                        w.append_empty(&m.link(target.clone()))?;
                    }
                    _ => {
                        let size = if rng.below(4) == 0 {
                            1 + rng.below(199)
                        } else {
                            0
                        };
                        let data = mixed_content(size as usize, rng.next_u64());
                        let path = format!("{path}.txt");
                        w.append_bytes(&Member::file(path.clone()), &data)?;
                        last_file = Some(path);
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// (path, type, size, header link name) of every member, with PAX/GNU names applied.
    fn members(tar: &[u8]) -> Vec<(String, EntryType, u64, String)> {
        let mut archive = tar::Archive::new(tar);
        archive
            .entries()
            .expect("entries")
            .map(|e| {
                let e = e.expect("entry");
                let path = String::from_utf8(e.path_bytes().into_owned()).expect("utf8");
                let link = e
                    .link_name_bytes()
                    .map(|l| String::from_utf8(l.into_owned()).expect("utf8"))
                    .unwrap_or_default();
                (path, e.header().entry_type(), e.size(), link)
            })
            .collect()
    }

    #[test]
    fn prng_is_deterministic_and_spread() {
        let a: Vec<u64> = (0..4)
            .scan(SplitMix64::new(1), |r, _| Some(r.next_u64()))
            .collect();
        let b: Vec<u64> = (0..4)
            .scan(SplitMix64::new(1), |r, _| Some(r.next_u64()))
            .collect();
        assert_eq!(a, b);
        // Reference value of SplitMix64 seeded with 0.
        assert_eq!(SplitMix64::new(0).next_u64(), 0xe220_a839_7b1d_cdaf);
        let mut r = SplitMix64::new(7);
        assert!((0..1000).all(|_| r.below(10) < 10));
        assert_eq!(r.below(0), 0);
    }

    #[test]
    fn mixed_content_is_exact_deterministic_and_mixed() {
        let a = mixed_content(1 << 20, 5);
        assert_eq!(a.len(), 1 << 20);
        assert_eq!(a, mixed_content(1 << 20, 5));
        assert_ne!(a, mixed_content(1 << 20, 6));
        assert_eq!(mixed_content(0, 5), Vec::<u8>::new());
        let text = a
            .iter()
            .filter(|b| b.is_ascii_lowercase() || **b == b' ')
            .count();
        assert!(
            text > a.len() / 4 && text < a.len() * 9 / 10,
            "text bytes: {text}"
        );
        // A streamed read in odd-sized pieces gives the same bytes.
        let mut streamed = Vec::new();
        let mut reader = MixedContent::new(1 << 20, 5);
        let mut buf = [0u8; 777];
        loop {
            let n = reader.read(&mut buf).expect("read");
            if n == 0 {
                break;
            }
            streamed.extend_from_slice(&buf[..n]);
        }
        assert_eq!(streamed, a);
    }

    #[test]
    fn pax_record_length_counts_itself() {
        for value_len in [0, 1, 5, 6, 7, 88, 89, 90, 95, 96, 97, 990, 995, 996, 997] {
            let mut out = Vec::new();
            pax_record(&mut out, "path", &vec![b'a'; value_len]);
            let (len, _) = std::str::from_utf8(&out)
                .expect("utf8")
                .split_once(' ')
                .expect("sp");
            assert_eq!(len.parse::<usize>().expect("len"), out.len());
        }
    }

    #[test]
    fn many_small_files_reads_back() {
        let tar = many_small_files(250, 1);
        assert_eq!(tar, many_small_files(250, 1));
        assert_ne!(tar, many_small_files(250, 2));
        let m = members(&tar);
        assert_eq!(m.len(), 250 + 3 + 1);
        assert_eq!(m.iter().filter(|e| e.1 == EntryType::Regular).count(), 250);
        assert_eq!(m[0].0, "small/");
        assert_eq!(m[1].0, "small/d000/");
        assert_eq!(m[2].0, "small/d000/f00000.txt");
        assert!(m.iter().all(|e| e.2 <= 4096));
        assert!(m.iter().any(|e| e.1 == EntryType::Regular && e.2 == 0));
    }

    #[test]
    fn one_big_file_reads_back_and_streams_the_same() {
        let size = (3 << 20) + 5;
        let tar = one_big_file(size, 9);
        let m = members(&tar);
        assert_eq!(m.len(), 1);
        assert_eq!(
            (m[0].0.as_str(), m[0].1, m[0].2),
            ("big.bin", EntryType::Regular, size)
        );
        let streamed = one_big_file_to(Vec::new(), size, 9).expect("stream");
        assert_eq!(streamed, tar);
        let mut archive = tar::Archive::new(tar.as_slice());
        let mut entry = archive
            .entries()
            .expect("entries")
            .next()
            .expect("one")
            .expect("ok");
        let mut data = Vec::new();
        entry.read_to_end(&mut data).expect("data");
        assert_eq!(data, mixed_content(size as usize, 9));
    }

    #[test]
    fn every_entry_type_reads_back() {
        let tar = every_entry_type();
        assert_eq!(tar, every_entry_type());
        let m = members(&tar);
        assert_eq!(m.len(), EVERY_ENTRY_TYPE_ENTRIES);
        let by_name: BTreeMap<&str, &(String, EntryType, u64, String)> =
            m.iter().map(|e| (e.0.as_str(), e)).collect();
        for kind in [
            EntryType::Directory,
            EntryType::Regular,
            EntryType::Symlink,
            EntryType::Link,
            EntryType::Char,
            EntryType::Block,
            EntryType::Fifo,
        ] {
            assert!(m.iter().any(|e| e.1 == kind), "{kind:?} missing");
        }
        assert_eq!(by_name["dir/multi-chunk.bin"].2, MULTI_CHUNK_FILE_SIZE);
        assert_eq!(by_name["dir/hardlink"].3, "dir/small.txt");
        assert_eq!(by_name["long/symlink-long-target"].3.len(), 201);
        assert!(by_name.contains_key("wh/.wh.x") && by_name.contains_key("wh/opaque/.wh..wh..opq"));
        assert_eq!(m.iter().filter(|e| e.0.len() > 100).count(), 2);

        let mut archive = tar::Archive::new(tar.as_slice());
        let mut seen_xattrs = BTreeMap::new();
        let mut modes = BTreeMap::new();
        for entry in archive.entries().expect("entries") {
            let mut entry = entry.expect("entry");
            let path = entry.path().expect("path").display().to_string();
            let h = entry.header();
            modes.insert(path.clone(), h.mode().expect("mode"));
            match path.as_str() {
                "dev/null" => assert_eq!(
                    (
                        h.device_major().expect("maj"),
                        h.device_minor().expect("min")
                    ),
                    (Some(1), Some(3))
                ),
                "owner/user1000" => {
                    assert_eq!((h.uid().expect("uid"), h.gid().expect("gid")), (1000, 100));
                    assert_eq!(h.username().expect("uname"), Some("user"));
                    assert_eq!(h.groupname().expect("gname"), Some("users"));
                }
                _ => {}
            }
            if let Some(pax) = entry.pax_extensions().expect("pax") {
                for ext in pax {
                    let ext = ext.expect("record");
                    let key = ext.key().expect("key").to_string();
                    if let Some(x) = key.strip_prefix("SCHILY.xattr.") {
                        seen_xattrs
                            .insert((path.clone(), x.to_string()), ext.value_bytes().to_vec());
                    }
                }
            }
        }
        assert_eq!(seen_xattrs.len(), 5);
        let cap = &seen_xattrs[&("xattr/file".to_string(), "security.capability".to_string())];
        assert!(cap.contains(&0));
        assert_eq!(
            seen_xattrs[&("xattr/file".into(), "user.empty".into())],
            b""
        );
        assert_eq!(modes["owner/setuid"], 0o4755);
        assert_eq!(modes["owner/sticky/"], 0o1777);
        assert_eq!(modes["owner/setgid/"], 0o2775);
    }

    #[test]
    fn wide_tree_has_exactly_the_requested_entries() {
        for n in [0, 1, 2, 3, 66, 67, 5000] {
            let m = members(&wide_tree(n));
            assert_eq!(m.len(), n, "wide_tree({n})");
        }
        let m = members(&wide_tree(5000));
        assert!(m.iter().any(|e| e.1 == EntryType::Symlink));
        assert!(m.iter().any(|e| e.1 == EntryType::Link));
        let names: std::collections::BTreeSet<&str> = m.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(names.len(), m.len(), "names are unique");
        for e in m.iter().filter(|e| e.1 == EntryType::Link) {
            assert!(
                names.contains(e.3.as_str()),
                "hardlink target {} exists",
                e.3
            );
        }
        let streamed = wide_tree_to(Vec::new(), 5000).expect("stream");
        assert_eq!(streamed, wide_tree(5000));
    }
}
