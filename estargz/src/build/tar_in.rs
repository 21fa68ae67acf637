//! Pass 1 of the builder: tar headers in, entry metadata out.
//!
//! A small tar reader with Go `archive/tar` semantics (what the reference builder parses with):
//! V7, USTAR (with the `prefix` field), PAX `x` records (`path`, `linkpath`, `size`, `uid`,
//! `gid`, `uname`, `gname`, `mtime`, `SCHILY.xattr.*`, `GNU.sparse.*`), GNU `L`/`K` long names,
//! old-GNU sparse `S` headers, base-256 numbers, the legacy `'\0'` typeflag (a directory when
//! the name ends in `/`), signed or unsigned header checksums.
//!
//! It only reads header blocks and skips payloads by seeking, so pass 1 costs one read per
//! header whatever the layer size. It never allocates by a declared size: extension headers
//! (PAX, GNU long names) are capped at 1 MiB as in Go, sparse maps at [`MAX_SPARSE_ENTRIES`],
//! and every payload must lie inside the source (checked against its length), so a truncated
//! tar or a huge declared size is an error naming the entry, not an allocation or a panic.

use std::io::{self, BufReader, Read, Seek, SeekFrom};

use crate::error::{Error, Result};

use super::UnsupportedEntries;

/// Go's `maxSpecialFileSize`: the largest PAX or GNU long-name extension accepted.
const MAX_SPECIAL_FILE_SIZE: u64 = 1 << 20;
/// The most fragments a sparse file may have (bounds memory on hostile maps).
pub(crate) const MAX_SPARSE_ENTRIES: usize = 1 << 20;

/// How an entry's content is stored in the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Data {
    /// `size` contiguous bytes at `offset`.
    Contiguous,
    /// A sparse file: the stored bytes at `offset` are the listed fragments
    /// (`(logical offset, length)`, ascending, non-overlapping) one after the other; everything
    /// else reads as zeros.
    Sparse(Vec<(u64, u64)>),
}

/// One tar entry as pass 1 saw it (after merging its extension headers).
#[derive(Debug, Clone)]
pub(crate) struct TarEntry {
    /// Offset of the entry's first header block (an extension header if it has one).
    pub header_offset: u64,
    /// The name, raw bytes (GNU long name / PAX `path` / USTAR prefix applied).
    pub name: Vec<u8>,
    /// The link target, raw bytes.
    pub link_name: Vec<u8>,
    /// The typeflag after Go's normalisation (`'\0'` becomes `'0'` or `'5'`; sparse `'0'`).
    pub typeflag: u8,
    pub mode: i64,
    pub uid: i64,
    pub gid: i64,
    pub uname: Vec<u8>,
    pub gname: Vec<u8>,
    /// Modification time: seconds (floor) and nanoseconds in `0..1e9`.
    pub mtime: i64,
    pub mtime_nsec: u32,
    pub dev_major: i64,
    pub dev_minor: i64,
    /// The logical content size (the expanded size of a sparse file); 0 for header-only types.
    pub size: u64,
    /// Where the stored payload starts in the source.
    pub data_offset: u64,
    /// How the payload is stored.
    pub data: Data,
    /// PAX records carried over to the output (everything but the ones re-derived from the
    /// fields above and the `GNU.sparse.*` ones), in input order, later duplicates removed.
    pub pax: Vec<(Vec<u8>, Vec<u8>)>,
}

impl TarEntry {
    /// The name, lossily as UTF-8 (what the TOC stores, as Go's JSON encoder does).
    pub fn name_lossy(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }

    /// True for the types whose header carries no payload in Go (`isHeaderOnlyType`).
    pub fn is_header_only(typeflag: u8) -> bool {
        matches!(typeflag, b'1' | b'2' | b'3' | b'4' | b'5' | b'6')
    }

    /// The `SCHILY.xattr.*` records: attribute name (lossy UTF-8) and raw value.
    pub fn xattrs(&self) -> impl Iterator<Item = (String, &[u8])> {
        self.pax.iter().filter_map(|(k, v)| {
            k.strip_prefix(b"SCHILY.xattr.")
                .map(|name| (String::from_utf8_lossy(name).into_owned(), v.as_slice()))
        })
    }
}

/// Reads tar headers from a seekable source, skipping payloads.
pub(crate) struct TarReader<R: Read + Seek> {
    src: BufReader<R>,
    /// Logical position of `src`.
    pos: u64,
    /// Length of the source.
    len: u64,
    policy: UnsupportedEntries,
    done: bool,
    /// Where the next header starts.
    next_header: u64,
}

/// What the parser found at one header position.
enum Block {
    Eof,
    Header(Box<[u8; 512]>),
}

impl<R: Read + Seek> TarReader<R> {
    /// A reader over `src`, whose length is `len` bytes, positioned at its start.
    pub fn new(mut src: R, len: u64, policy: UnsupportedEntries) -> Result<Self> {
        src.seek(SeekFrom::Start(0))
            .map_err(|e| Error::io("seeking the input tar", e))?;
        Ok(TarReader {
            src: BufReader::with_capacity(64 << 10, src),
            pos: 0,
            len,
            policy,
            done: false,
            next_header: 0,
        })
    }

    fn seek_to(&mut self, pos: u64) -> Result<()> {
        if pos != self.pos {
            let delta = i64::try_from(pos as i128 - self.pos as i128)
                .map_err(|_| Error::InvalidArgument(format!("tar offset {pos} out of range")))?;
            self.src
                .seek_relative(delta)
                .map_err(|e| Error::io(format!("seeking the input tar to offset {pos}"), e))?;
            self.pos = pos;
        }
        Ok(())
    }

    fn read_exact_at(&mut self, pos: u64, buf: &mut [u8]) -> Result<usize> {
        self.seek_to(pos)?;
        let mut got = 0;
        while got < buf.len() {
            match self.src.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io(format!("reading the input tar at {pos}"), e)),
            }
        }
        self.pos += got as u64;
        Ok(got)
    }

    fn read_block(&mut self, pos: u64) -> Result<Block> {
        let mut b = Box::new([0u8; 512]);
        match self.read_exact_at(pos, &mut b[..])? {
            0 => Ok(Block::Eof),
            512 => Ok(Block::Header(b)),
            n => Err(tar_err(
                pos,
                "",
                format!("truncated tar: a header block at the end has only {n} of 512 bytes"),
            )),
        }
    }

    /// Reads an extension payload (PAX records, GNU long name) of `size` bytes at `pos`.
    fn read_special(&mut self, pos: u64, size: u64, what: &str) -> Result<Vec<u8>> {
        if size > MAX_SPECIAL_FILE_SIZE {
            return Err(tar_err(
                pos,
                "",
                format!("{what} of {size} bytes exceeds the 1 MiB limit"),
            ));
        }
        self.check_inside(pos, size, what)?;
        let mut buf = vec![0u8; size as usize];
        let n = self.read_exact_at(pos, &mut buf)?;
        if n as u64 != size {
            return Err(tar_err(pos, "", format!("truncated tar inside a {what}")));
        }
        Ok(buf)
    }

    fn check_inside(&self, pos: u64, size: u64, what: &str) -> Result<()> {
        match pos.checked_add(size) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(tar_err(
                pos,
                what,
                format!(
                    "truncated tar: {size} bytes declared at offset {pos}, but the input has only {} bytes",
                    self.len
                ),
            )),
        }
    }

    /// The next entry, or `None` at the end of the archive (two zero blocks, or the end of
    /// the input at a header boundary, as Go accepts).
    pub fn next_entry(&mut self) -> Result<Option<TarEntry>> {
        if self.done {
            return Ok(None);
        }
        let mut pos = self.pos_after_last();
        let entry_start = pos;
        let mut pax: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut saw_extension = false;
        loop {
            let block = match self.read_block(pos)? {
                Block::Eof => {
                    if saw_extension {
                        return Err(tar_err(
                            entry_start,
                            "",
                            "truncated tar: extension headers without the entry they describe",
                        ));
                    }
                    self.done = true;
                    return Ok(None);
                }
                Block::Header(b) => b,
            };
            if block.iter().all(|&b| b == 0) {
                // Go: a zero block then EOF or a second zero block ends the archive; a zero
                // block followed by anything else is a corrupt header.
                match self.read_block(pos + 512) {
                    Ok(Block::Eof) => {}
                    Ok(Block::Header(next)) if next.iter().all(|&b| b == 0) => {}
                    Ok(Block::Header(_)) => {
                        return Err(tar_err(
                            pos + 512,
                            "",
                            "invalid tar header after a lone zero block",
                        ))
                    }
                    Err(e) => return Err(e),
                }
                if saw_extension {
                    return Err(tar_err(
                        entry_start,
                        "",
                        "extension headers without the entry they describe",
                    ));
                }
                self.done = true;
                return Ok(None);
            }
            let hdr = Header::parse(&block, pos)?;
            let data_start = pos + 512;
            match hdr.typeflag {
                b'x' => {
                    let data = self.read_special(data_start, hdr.size, "PAX extended header")?;
                    parse_pax_records(&data, &mut pax).map_err(|r| tar_err(pos, "", r))?;
                    saw_extension = true;
                    pos = data_start + round_up(hdr.size);
                    continue;
                }
                b'g' => {
                    let name = String::from_utf8_lossy(&hdr.name).into_owned();
                    match self.policy {
                        UnsupportedEntries::Error => {
                            return Err(Error::UnsupportedEntry {
                                offset: pos,
                                entry: name,
                                typeflag: 'g',
                                reason: "PAX global headers cannot be represented in eStargz (set UnsupportedEntries::Skip or ::Convert to ignore them)".into(),
                            })
                        }
                        UnsupportedEntries::Skip | UnsupportedEntries::Convert => {
                            self.check_inside(data_start, hdr.size, "PAX global header")?;
                            pos = data_start + round_up(hdr.size);
                            continue;
                        }
                    }
                }
                b'L' | b'K' => {
                    let what = if hdr.typeflag == b'L' {
                        "GNU long name"
                    } else {
                        "GNU long link name"
                    };
                    let mut data = self.read_special(data_start, hdr.size, what)?;
                    if let Some(nul) = data.iter().position(|&b| b == 0) {
                        data.truncate(nul);
                    }
                    if hdr.typeflag == b'L' {
                        long_name = Some(data);
                    } else {
                        long_link = Some(data);
                    }
                    saw_extension = true;
                    pos = data_start + round_up(hdr.size);
                    continue;
                }
                _ => {}
            }
            let entry =
                self.finish_entry(hdr, &block, pos, entry_start, pax, long_name, long_link)?;
            return Ok(Some(entry));
        }
    }

    fn pos_after_last(&self) -> u64 {
        self.next_header
    }

    #[allow(clippy::too_many_arguments)]
    fn finish_entry(
        &mut self,
        hdr: Header,
        block: &[u8; 512],
        pos: u64,
        entry_start: u64,
        pax: Vec<(Vec<u8>, Vec<u8>)>,
        long_name: Option<Vec<u8>>,
        long_link: Option<Vec<u8>>,
    ) -> Result<TarEntry> {
        let mut e = TarEntry {
            header_offset: entry_start,
            name: hdr.name,
            link_name: hdr.link_name,
            typeflag: hdr.typeflag,
            mode: hdr.mode,
            uid: hdr.uid,
            gid: hdr.gid,
            uname: hdr.uname,
            gname: hdr.gname,
            mtime: hdr.mtime,
            mtime_nsec: 0,
            dev_major: hdr.dev_major,
            dev_minor: hdr.dev_minor,
            size: hdr.size,
            data_offset: pos + 512,
            data: Data::Contiguous,
            pax: Vec::new(),
        };
        let mut stored_size = hdr.size;
        let mut sparse = SparsePax::default();
        for (k, v) in pax {
            let bad = |what: &str| {
                tar_err(
                    entry_start,
                    &String::from_utf8_lossy(&e.name),
                    format!(
                        "invalid PAX {what} record {:?}",
                        String::from_utf8_lossy(&v)
                    ),
                )
            };
            match k.as_slice() {
                b"path" => e.name = v,
                b"linkpath" => e.link_name = v,
                b"uname" => e.uname = v,
                b"gname" => e.gname = v,
                b"uid" => e.uid = parse_dec_i64(&v).ok_or_else(|| bad("uid"))?,
                b"gid" => e.gid = parse_dec_i64(&v).ok_or_else(|| bad("gid"))?,
                b"size" => {
                    let s = parse_dec_i64(&v)
                        .filter(|s| *s >= 0)
                        .ok_or_else(|| bad("size"))?;
                    stored_size = s as u64;
                    e.size = s as u64;
                }
                b"mtime" => {
                    let (s, ns) = parse_pax_time(&v).ok_or_else(|| bad("mtime"))?;
                    e.mtime = s;
                    e.mtime_nsec = ns;
                }
                b"atime" | b"ctime" => {}
                _ if k.starts_with(b"GNU.sparse.") => sparse.record(&k, v),
                _ => {
                    e.pax.retain(|(old, _)| *old != k);
                    e.pax.push((k, v));
                }
            }
        }
        if let Some(n) = long_name {
            e.name = n;
        }
        if let Some(l) = long_link {
            e.link_name = l;
        }
        if e.typeflag == 0 {
            e.typeflag = if e.name.ends_with(b"/") { b'5' } else { b'0' };
        }
        let name = e.name_lossy();
        let mut data_start = pos + 512;

        if e.typeflag == b'S' {
            // Old GNU sparse: the map is in the header (and extension blocks after it).
            let (map, real_size, ext_blocks) =
                self.read_old_gnu_sparse(block, data_start, &name, entry_start)?;
            data_start += ext_blocks * 512;
            e.size = real_size;
            e.data = Data::Sparse(map);
        } else if sparse.is_sparse() && e.typeflag == b'0' {
            if sparse.major.as_deref() == Some(b"1".as_slice()) {
                // PAX sparse 1.0: the map is at the start of the data area.
                let (map, map_len) =
                    self.read_sparse_1_0(data_start, stored_size, &name, entry_start)?;
                data_start += map_len;
                stored_size -= map_len;
                e.data = Data::Sparse(map);
            } else {
                e.data = Data::Sparse(
                    sparse
                        .map_0x()
                        .map_err(|r| tar_err(entry_start, &name, r))?,
                );
            }
            if let Some(n) = sparse.name.take() {
                e.name = n;
            }
            e.size = sparse
                .real_size()
                .map_err(|r| tar_err(entry_start, &name, r))?;
            e.typeflag = b'S';
        }

        let payload = if TarEntry::is_header_only(e.typeflag) {
            0
        } else {
            stored_size
        };
        if TarEntry::is_header_only(e.typeflag) {
            e.size = 0;
        }
        self.check_inside(data_start, payload, &name)?;
        e.data_offset = data_start;
        if let Data::Sparse(map) = &e.data {
            let name = e.name_lossy();
            let stored: u64 = map.iter().map(|(_, l)| *l).sum();
            if stored != payload {
                return Err(tar_err(
                    entry_start,
                    &name,
                    format!("sparse map covers {stored} bytes but the entry stores {payload}"),
                ));
            }
            let mut end = 0u64;
            for &(off, len) in map {
                let frag_end = off.checked_add(len).filter(|&x| x <= e.size);
                match frag_end {
                    Some(x) if off >= end => end = x,
                    _ => return Err(tar_err(
                        entry_start,
                        &name,
                        "sparse map fragments overlap, are out of order or exceed the file size",
                    )),
                }
            }
        }
        self.next_header = data_start + round_up(payload);
        Ok(e)
    }

    fn read_old_gnu_sparse(
        &mut self,
        block: &[u8; 512],
        mut pos: u64,
        name: &str,
        entry_start: u64,
    ) -> Result<OldGnuSparse> {
        let err = |r: &str| tar_err(entry_start, name, r.to_string());
        let mut map = Vec::new();
        let push = |field: &[u8], map: &mut Vec<(u64, u64)>| -> Result<()> {
            for i in 0..field.len() / 24 {
                let ent = &field[i * 24..i * 24 + 24];
                if ent.iter().all(|&b| b == 0) {
                    continue;
                }
                let off = parse_numeric(&ent[..12]).filter(|v| *v >= 0);
                let len = parse_numeric(&ent[12..]).filter(|v| *v >= 0);
                match (off, len) {
                    (Some(o), Some(l)) => {
                        if map.len() >= MAX_SPARSE_ENTRIES {
                            return Err(err("too many sparse fragments"));
                        }
                        if l > 0 {
                            map.push((o as u64, l as u64));
                        }
                    }
                    _ => return Err(err("invalid old GNU sparse map")),
                }
            }
            Ok(())
        };
        push(&block[386..386 + 4 * 24], &mut map)?;
        let real_size = parse_numeric(&block[483..495])
            .filter(|v| *v >= 0)
            .ok_or_else(|| err("invalid old GNU sparse real size"))? as u64;
        let mut extended = block[482] != 0;
        let mut blocks = 0u64;
        while extended {
            let b = match self.read_block(pos)? {
                Block::Eof => return Err(err("truncated tar inside an old GNU sparse map")),
                Block::Header(b) => b,
            };
            push(&b[..21 * 24], &mut map)?;
            extended = b[504] != 0;
            pos += 512;
            blocks += 1;
        }
        Ok((map, real_size, blocks))
    }

    fn read_sparse_1_0(
        &mut self,
        pos: u64,
        stored: u64,
        name: &str,
        entry_start: u64,
    ) -> Result<(Vec<(u64, u64)>, u64)> {
        let err = |r: &str| tar_err(entry_start, name, r.to_string());
        // Decimal numbers, one per line: count, then offset/length pairs; padded to 512.
        let mut numbers: Vec<u64> = Vec::new();
        let mut want: Option<u64> = None;
        let mut cur: Option<u64> = None;
        let mut consumed = 0u64;
        let mut block_pos = pos;
        'outer: loop {
            if consumed >= stored {
                return Err(err("truncated PAX 1.0 sparse map"));
            }
            let b = match self.read_block(block_pos)? {
                Block::Eof => return Err(err("truncated PAX 1.0 sparse map")),
                Block::Header(b) => b,
            };
            block_pos += 512;
            consumed += 512;
            for &c in b.iter() {
                match c {
                    b'0'..=b'9' => {
                        let v = cur.unwrap_or(0);
                        cur = Some(
                            v.checked_mul(10)
                                .and_then(|v| v.checked_add(u64::from(c - b'0')))
                                .ok_or_else(|| err("sparse map number overflows"))?,
                        );
                    }
                    b'\n' => {
                        let v = cur
                            .take()
                            .ok_or_else(|| err("empty number in sparse map"))?;
                        match want {
                            None => {
                                if v > MAX_SPARSE_ENTRIES as u64 {
                                    return Err(err("too many sparse fragments"));
                                }
                                want = Some(v * 2);
                            }
                            Some(_) => numbers.push(v),
                        }
                        if want.is_some_and(|w| numbers.len() as u64 == w) {
                            break 'outer;
                        }
                    }
                    _ => return Err(err("invalid character in PAX 1.0 sparse map")),
                }
            }
        }
        let map = numbers
            .chunks_exact(2)
            .filter(|p| p[1] > 0)
            .map(|p| (p[0], p[1]))
            .collect();
        Ok((map, consumed))
    }
}

#[derive(Default)]
struct SparsePax {
    major: Option<Vec<u8>>,
    minor: Option<Vec<u8>>,
    name: Option<Vec<u8>>,
    real_size: Option<Vec<u8>>,
    size: Option<Vec<u8>>,
    map: Option<Vec<u8>>,
    pairs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// An old GNU sparse header: its map (offset, length pairs), the real file size, and the count
/// of extension blocks after the header.
type OldGnuSparse = (Vec<(u64, u64)>, u64, u64);

impl SparsePax {
    fn record(&mut self, k: &[u8], v: Vec<u8>) {
        match k {
            b"GNU.sparse.major" => self.major = Some(v),
            b"GNU.sparse.minor" => self.minor = Some(v),
            b"GNU.sparse.name" => self.name = Some(v),
            b"GNU.sparse.realsize" => self.real_size = Some(v),
            b"GNU.sparse.size" => self.size = Some(v),
            b"GNU.sparse.map" => self.map = Some(v),
            b"GNU.sparse.offset" | b"GNU.sparse.numbytes"
                if self.pairs.len() < 2 * MAX_SPARSE_ENTRIES =>
            {
                self.pairs.push((k.to_vec(), v))
            }
            _ => {}
        }
    }

    fn is_sparse(&self) -> bool {
        self.major.is_some() || self.map.is_some() || !self.pairs.is_empty() || self.size.is_some()
    }

    fn real_size(&self) -> std::result::Result<u64, String> {
        let v = self
            .real_size
            .as_ref()
            .or(self.size.as_ref())
            .ok_or("PAX sparse file without GNU.sparse.realsize/size")?;
        parse_dec_i64(v)
            .filter(|v| *v >= 0)
            .map(|v| v as u64)
            .ok_or_else(|| "invalid GNU.sparse.realsize".to_string())
    }

    /// The map of PAX sparse formats 0.0 (offset/numbytes records) and 0.1 (`GNU.sparse.map`).
    fn map_0x(&self) -> std::result::Result<Vec<(u64, u64)>, String> {
        let mut nums: Vec<u64> = Vec::new();
        let parse = |v: &[u8]| -> std::result::Result<u64, String> {
            parse_dec_i64(v)
                .filter(|v| *v >= 0)
                .map(|v| v as u64)
                .ok_or_else(|| "invalid number in the PAX sparse map".to_string())
        };
        if let Some(m) = &self.map {
            if !m.is_empty() {
                for part in m.split(|&b| b == b',') {
                    nums.push(parse(part)?);
                    if nums.len() > 2 * MAX_SPARSE_ENTRIES {
                        return Err("too many sparse fragments".into());
                    }
                }
            }
        } else {
            for (_, v) in &self.pairs {
                nums.push(parse(v)?);
            }
        }
        if nums.len() % 2 != 0 {
            return Err("odd number of values in the PAX sparse map".into());
        }
        Ok(nums
            .chunks_exact(2)
            .filter(|p| p[1] > 0)
            .map(|p| (p[0], p[1]))
            .collect())
    }
}

/// The fields of one 512-byte header block.
struct Header {
    name: Vec<u8>,
    link_name: Vec<u8>,
    typeflag: u8,
    mode: i64,
    uid: i64,
    gid: i64,
    size: u64,
    mtime: i64,
    uname: Vec<u8>,
    gname: Vec<u8>,
    dev_major: i64,
    dev_minor: i64,
}

impl Header {
    fn parse(b: &[u8; 512], pos: u64) -> Result<Header> {
        let raw_name = c_string(&b[0..100]).to_vec();
        let lossy = String::from_utf8_lossy(&raw_name).into_owned();
        let err =
            |what: &str| tar_err(pos, &lossy, format!("invalid tar header: bad {what} field"));
        // Checksum: the field as octal, compared with the unsigned and the signed sum.
        let stored = parse_octal(&b[148..156]).ok_or_else(|| err("checksum"))?;
        let (mut unsigned, mut signed) = (0i64, 0i64);
        for (i, &c) in b.iter().enumerate() {
            let c = if (148..156).contains(&i) { b' ' } else { c };
            unsigned += i64::from(c);
            signed += i64::from(c as i8);
        }
        if stored != unsigned && stored != signed {
            return Err(tar_err(
                pos,
                &lossy,
                format!(
                    "tar header checksum mismatch (stored {stored}, computed {unsigned}): not a tar archive or corrupt"
                ),
            ));
        }
        let magic = &b[257..263];
        let version = &b[263..265];
        let ustar = magic == b"ustar\0" && version == b"00";
        let gnu = magic == b"ustar " && version == b" \0";
        let size = parse_numeric(&b[124..136])
            .filter(|s| *s >= 0)
            .ok_or_else(|| err("size"))? as u64;
        let mut h = Header {
            name: raw_name,
            link_name: c_string(&b[157..257]).to_vec(),
            typeflag: b[156],
            mode: parse_numeric(&b[100..108]).ok_or_else(|| err("mode"))?,
            uid: parse_numeric(&b[108..116]).ok_or_else(|| err("uid"))?,
            gid: parse_numeric(&b[116..124]).ok_or_else(|| err("gid"))?,
            size,
            mtime: parse_numeric(&b[136..148]).ok_or_else(|| err("mtime"))?,
            uname: Vec::new(),
            gname: Vec::new(),
            dev_major: 0,
            dev_minor: 0,
        };
        if ustar || gnu {
            h.uname = c_string(&b[265..297]).to_vec();
            h.gname = c_string(&b[297..329]).to_vec();
            // Go parses these for every USTAR/GNU header; lenient here for non-devices.
            let dev = matches!(h.typeflag, b'3' | b'4');
            h.dev_major = match parse_numeric(&b[329..337]) {
                Some(v) => v,
                None if !dev => 0,
                None => return Err(err("devmajor")),
            };
            h.dev_minor = match parse_numeric(&b[337..345]) {
                Some(v) => v,
                None if !dev => 0,
                None => return Err(err("devminor")),
            };
        }
        if ustar {
            let prefix = c_string(&b[345..500]);
            if !prefix.is_empty() {
                let mut n = prefix.to_vec();
                n.push(b'/');
                n.extend_from_slice(&h.name);
                h.name = n;
            }
        }
        Ok(h)
    }
}

/// Bytes up to the first NUL.
fn c_string(field: &[u8]) -> &[u8] {
    match field.iter().position(|&b| b == 0) {
        Some(n) => &field[..n],
        None => field,
    }
}

/// Go's `parseNumeric`: base-256 (high bit set) or octal padded with spaces/NULs.
pub(crate) fn parse_numeric(field: &[u8]) -> Option<i64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        // Base-256, two's complement, the first byte's top bit being the marker.
        let inv: u8 = if field[0] & 0x40 != 0 { 0xff } else { 0 };
        let mut x: u64 = 0;
        for (i, &c) in field.iter().enumerate() {
            let mut c = c ^ inv;
            if i == 0 {
                c &= 0x7f;
            }
            if x >> 56 > 0 {
                return None; // overflow
            }
            x = (x << 8) | u64::from(c);
        }
        if x >> 63 > 0 {
            return None;
        }
        let v = x as i64;
        return Some(if inv == 0xff { !v } else { v });
    }
    parse_octal(field)
}

fn parse_octal(field: &[u8]) -> Option<i64> {
    let trimmed = trim(field, |c| c == b' ' || c == 0);
    if trimmed.is_empty() {
        return Some(0);
    }
    let mut v: i64 = 0;
    for &c in trimmed {
        if !(b'0'..=b'7').contains(&c) {
            return None;
        }
        v = v.checked_mul(8)?.checked_add(i64::from(c - b'0'))?;
    }
    Some(v)
}

fn trim(s: &[u8], f: impl Fn(u8) -> bool) -> &[u8] {
    let start = s.iter().position(|&c| !f(c)).unwrap_or(s.len());
    let end = s.iter().rposition(|&c| !f(c)).map_or(start, |e| e + 1);
    &s[start..end.max(start)]
}

fn parse_dec_i64(v: &[u8]) -> Option<i64> {
    std::str::from_utf8(v).ok()?.parse::<i64>().ok()
}

/// Go's `parsePAXTime`: `[-]sec[.frac]`, returned as floor seconds and nanoseconds.
pub(crate) fn parse_pax_time(v: &[u8]) -> Option<(i64, u32)> {
    let s = std::str::from_utf8(v).ok()?;
    let (ss, sn) = match s.split_once('.') {
        Some((a, b)) => (a, b),
        None => (s, ""),
    };
    let secs: i64 = ss.parse().ok()?;
    if sn.is_empty() {
        return Some((secs, 0));
    }
    if !sn.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let mut digits: String = sn.chars().take(9).collect();
    while digits.len() < 9 {
        digits.push('0');
    }
    let nsecs: i64 = digits.parse().ok()?;
    if ss.starts_with('-') && nsecs > 0 {
        // secs - nsecs/1e9, normalised to a non-negative nanosecond part.
        Some((secs.checked_sub(1)?, (1_000_000_000 - nsecs) as u32))
    } else {
        Some((secs, nsecs as u32))
    }
}

/// Parses PAX records (`"%d %s=%s\n"`) into `out`; a later record for the same key replaces
/// an earlier one (kept at its last position).
fn parse_pax_records(
    mut data: &[u8],
    out: &mut Vec<(Vec<u8>, Vec<u8>)>,
) -> std::result::Result<(), String> {
    // Go ignores trailing NUL padding.
    while !data.is_empty() && data.iter().any(|&b| b != 0) {
        let sp = data
            .iter()
            .position(|&b| b == b' ')
            .ok_or("invalid PAX record: no length")?;
        let len: usize = std::str::from_utf8(&data[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or("invalid PAX record length")?;
        if len <= sp + 1 || len > data.len() || data[len - 1] != b'\n' {
            return Err("invalid PAX record".into());
        }
        let rec = &data[sp + 1..len - 1];
        let eq = rec
            .iter()
            .position(|&b| b == b'=')
            .ok_or("invalid PAX record: no '='")?;
        let (k, v) = (rec[..eq].to_vec(), rec[eq + 1..].to_vec());
        if k.is_empty() {
            return Err("invalid PAX record: empty key".into());
        }
        out.retain(|(old, _)| *old != k);
        out.push((k, v));
        data = &data[len..];
    }
    Ok(())
}

pub(crate) fn round_up(n: u64) -> u64 {
    n.div_ceil(512).saturating_mul(512)
}

pub(crate) fn tar_err(offset: u64, entry: &str, reason: impl Into<String>) -> Error {
    Error::Tar {
        offset,
        entry: entry.to_string(),
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(parse_numeric(b"0000644\0"), Some(0o644));
        assert_eq!(parse_numeric(b"  644 \0"), Some(0o644));
        assert_eq!(parse_numeric(b"\0\0\0\0\0\0\0\0"), Some(0));
        assert_eq!(parse_numeric(b"12x"), None);
        assert_eq!(
            parse_numeric(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0x01]),
            Some(0x1001)
        );
        assert_eq!(parse_numeric(&[0xff; 8]), Some(-1));
        assert_eq!(
            parse_numeric(&[0x80, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
            None
        );
    }

    #[test]
    fn pax_times() {
        assert_eq!(parse_pax_time(b"1.5"), Some((1, 500_000_000)));
        assert_eq!(parse_pax_time(b"-1.5"), Some((-2, 500_000_000)));
        assert_eq!(parse_pax_time(b"-1"), Some((-1, 0)));
        assert_eq!(parse_pax_time(b"1.1234567891"), Some((1, 123_456_789)));
        assert_eq!(parse_pax_time(b"1.x"), None);
    }

    #[test]
    fn pax_records() {
        let mut out = Vec::new();
        parse_pax_records(b"11 path=ab\n11 path=cd\n", &mut out).unwrap();
        assert_eq!(out, vec![(b"path".to_vec(), b"cd".to_vec())]);
        assert!(parse_pax_records(b"99 path=ab\n", &mut Vec::new()).is_err());
        assert!(parse_pax_records(b"x", &mut Vec::new()).is_err());
    }
}
