//! Tar headers out: re-encodes an entry's header for the uncompressed stream of the blob.
//!
//! Output headers are USTAR blocks (built on [`tar::Header`]); whatever USTAR cannot carry
//! goes into a PAX `x` extension header before it: names and link targets that do not fit
//! (after trying the USTAR prefix split), long user/group names, ids, sizes or mtimes outside
//! the octal fields (and sub-second mtimes), plus the input's own PAX records (`SCHILY.xattr.*`
//! and any other vendor records). Numbers that do not fit are also written base-256 in the
//! field itself, for readers without PAX. The result is a tar that GNU tar, Go and the `tar`
//! crate list with the original names, ids, times and xattrs. Names are copied as raw bytes:
//! nothing here interprets or normalises a path (`..` and absolute names are the reader's
//! business; see the crate's `index`).

use super::tar_in::round_up;

/// The header fields of one output entry.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OutHeader<'a> {
    pub name: &'a [u8],
    pub link_name: &'a [u8],
    pub typeflag: u8,
    pub mode: i64,
    pub uid: i64,
    pub gid: i64,
    pub uname: &'a [u8],
    pub gname: &'a [u8],
    pub mtime: i64,
    pub mtime_nsec: u32,
    pub size: u64,
    pub dev_major: i64,
    pub dev_minor: i64,
    /// Extra PAX records to carry (xattrs, vendor records), in order.
    pub pax: &'a [(Vec<u8>, Vec<u8>)],
}

impl OutHeader<'_> {
    /// A plain USTAR header with zero metadata (landmarks, the TOC entry).
    pub fn plain(name: &[u8], size: u64) -> OutHeader<'_> {
        OutHeader {
            name,
            link_name: b"",
            typeflag: b'0',
            mode: 0,
            uid: 0,
            gid: 0,
            uname: b"",
            gname: b"",
            mtime: 0,
            mtime_nsec: 0,
            size,
            dev_major: 0,
            dev_minor: 0,
            pax: &[],
        }
    }
}

const OCTAL7: i64 = 0o7777777;
const OCTAL11: i64 = 0o77777777777;

/// Appends the header block(s) of `h` to `out` (a multiple of 512 bytes).
pub(crate) fn write_header(h: &OutHeader<'_>, out: &mut Vec<u8>) {
    let mut records: Vec<(&[u8], Vec<u8>)> = Vec::new();
    let (prefix, name) = match split_ustar_name(h.name) {
        Some(split) => split,
        None => {
            records.push((b"path", h.name.to_vec()));
            (&b""[..], truncate(h.name, 100))
        }
    };
    if h.link_name.len() > 100 {
        records.push((b"linkpath", h.link_name.to_vec()));
    }
    if !(0..=OCTAL7).contains(&h.uid) {
        records.push((b"uid", h.uid.to_string().into_bytes()));
    }
    if !(0..=OCTAL7).contains(&h.gid) {
        records.push((b"gid", h.gid.to_string().into_bytes()));
    }
    if h.uname.len() > 32 {
        records.push((b"uname", h.uname.to_vec()));
    }
    if h.gname.len() > 32 {
        records.push((b"gname", h.gname.to_vec()));
    }
    if h.size > OCTAL11 as u64 {
        records.push((b"size", h.size.to_string().into_bytes()));
    }
    if h.mtime_nsec != 0 || !(0..=OCTAL11).contains(&h.mtime) {
        records.push((
            b"mtime",
            format_pax_time(h.mtime, h.mtime_nsec).into_bytes(),
        ));
    }
    let binary = records.iter().any(|(k, v)| {
        matches!(*k, b"path" | b"linkpath" | b"uname" | b"gname") && std::str::from_utf8(v).is_err()
    });
    if !records.is_empty() || !h.pax.is_empty() {
        let mut data = Vec::new();
        if binary {
            push_record(&mut data, b"hdrcharset", b"BINARY");
        }
        for (k, v) in &records {
            push_record(&mut data, k, v);
        }
        for (k, v) in h.pax {
            push_record(&mut data, k, v);
        }
        let mut x = block(b"././@PaxHeader", b"", b'x', data.len() as u64);
        set_octal(&mut x[100..108], 0o644);
        finish(&mut x);
        out.extend_from_slice(&x);
        out.extend_from_slice(&data);
        out.resize(
            out.len() + (round_up(data.len() as u64) as usize - data.len()),
            0,
        );
    }
    let mut b = block(name, prefix, h.typeflag, h.size);
    set_numeric(&mut b[100..108], h.mode);
    set_numeric(&mut b[108..116], h.uid);
    set_numeric(&mut b[116..124], h.gid);
    set_numeric(&mut b[136..148], h.mtime);
    copy_field(&mut b[157..257], truncate(h.link_name, 100));
    copy_field(&mut b[265..297], truncate(h.uname, 32));
    copy_field(&mut b[297..329], truncate(h.gname, 32));
    if matches!(h.typeflag, b'3' | b'4') || h.dev_major != 0 || h.dev_minor != 0 {
        set_numeric(&mut b[329..337], h.dev_major);
        set_numeric(&mut b[337..345], h.dev_minor);
    }
    finish(&mut b);
    out.extend_from_slice(&b);
}

/// A USTAR block with name, prefix, typeflag and size set (size base-256 when too large).
fn block(name: &[u8], prefix: &[u8], typeflag: u8, size: u64) -> [u8; 512] {
    let mut h = tar::Header::new_ustar();
    let b = h.as_mut_bytes();
    copy_field(&mut b[0..100], name);
    copy_field(&mut b[345..500], prefix);
    b[156] = typeflag;
    set_numeric(&mut b[124..136], i64::try_from(size).unwrap_or(i64::MAX));
    set_octal(&mut b[100..108], 0);
    set_octal(&mut b[108..116], 0);
    set_octal(&mut b[116..124], 0);
    set_octal(&mut b[136..148], 0);
    *b
}

fn finish(b: &mut [u8; 512]) {
    let mut h = tar::Header::new_old();
    h.as_mut_bytes().copy_from_slice(b);
    h.set_cksum();
    b.copy_from_slice(h.as_bytes());
}

fn copy_field(field: &mut [u8], value: &[u8]) {
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
    field[n..].fill(0);
}

fn truncate(v: &[u8], n: usize) -> &[u8] {
    &v[..v.len().min(n)]
}

/// Splits a name into USTAR `prefix` (≤ 155) and `name` (≤ 100) fields; `None` if impossible.
fn split_ustar_name(name: &[u8]) -> Option<(&[u8], &[u8])> {
    if name.len() <= 100 {
        return Some((b"", name));
    }
    if name.len() > 256 {
        return None;
    }
    // The prefix is everything before some '/', the name what follows it.
    let mut best = None;
    for (i, &c) in name.iter().enumerate() {
        if c == b'/' && i <= 155 && name.len() - i - 1 <= 100 && i > 0 && i + 1 < name.len() {
            best = Some((&name[..i], &name[i + 1..]));
            break;
        }
    }
    best
}

/// Octal with a trailing NUL in `field` (value must fit).
fn set_octal(field: &mut [u8], v: u64) {
    let digits = field.len() - 1;
    let s = format!("{v:0digits$o}");
    field[..digits].copy_from_slice(&s.as_bytes()[s.len() - digits..]);
    field[digits] = 0;
}

/// Octal when it fits, else base-256 (two's complement, marker bit set).
fn set_numeric(field: &mut [u8], v: i64) {
    let digits = field.len() as u32 - 1;
    if v >= 0 && (v as u64) < 8u64.pow(digits) {
        set_octal(field, v as u64);
        return;
    }
    let bytes = v.to_be_bytes();
    let n = field.len();
    let fill = if v < 0 { 0xff } else { 0 };
    for (i, f) in field.iter_mut().enumerate() {
        *f = if i + 8 >= n { bytes[i + 8 - n] } else { fill };
    }
    field[0] |= 0x80;
}

/// One PAX record `"%d %s=%s\n"`, the length counting itself.
fn push_record(out: &mut Vec<u8>, k: &[u8], v: &[u8]) {
    let base = k.len() + v.len() + 3; // ' ', '=', '\n'
    let mut len = base + 1;
    while base + len.to_string().len() != len {
        len = base + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(k);
    out.push(b'=');
    out.extend_from_slice(v);
    out.push(b'\n');
}

/// Go's `formatPAXTime` for floor seconds + nanoseconds.
fn format_pax_time(secs: i64, nsec: u32) -> String {
    if nsec == 0 {
        return secs.to_string();
    }
    let (sign, whole, frac) = if secs < 0 {
        ("-", -(secs + 1), 1_000_000_000 - nsec)
    } else {
        ("", secs, nsec)
    };
    let frac = format!("{frac:09}");
    format!("{sign}{whole}.{}", frac.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_lengths() {
        let mut v = Vec::new();
        push_record(&mut v, b"path", b"ab");
        assert_eq!(v, b"11 path=ab\n");
        let mut v = Vec::new();
        push_record(&mut v, b"k", &[b'x'; 95]);
        assert_eq!(v.len(), 102);
        assert!(v.starts_with(b"102 "));
    }

    #[test]
    fn pax_times() {
        assert_eq!(format_pax_time(1, 500_000_000), "1.5");
        assert_eq!(format_pax_time(-2, 500_000_000), "-1.5");
        assert_eq!(format_pax_time(-1, 750_000_000), "-0.25");
        assert_eq!(format_pax_time(-7, 0), "-7");
    }

    #[test]
    fn numeric_fields() {
        let mut f = [0u8; 8];
        set_numeric(&mut f, 0o755);
        assert_eq!(&f, b"0000755\0");
        set_numeric(&mut f, -1);
        assert_eq!(f, [0xff; 8]);
        let mut f = [0u8; 12];
        set_numeric(&mut f, 1 << 40);
        assert_eq!(super::super::tar_in::parse_numeric(&f), Some(1 << 40));
    }

    #[test]
    fn header_round_trip_through_tar_crate() {
        let long = "d/".repeat(150) + "file";
        let h = OutHeader {
            name: long.as_bytes(),
            uid: 70_000_000,
            mtime: -5,
            mtime_nsec: 250_000_000,
            ..OutHeader::plain(b"", 3)
        };
        let mut out = Vec::new();
        write_header(&h, &mut out);
        out.extend_from_slice(b"abc");
        out.resize(out.len() + 509 + 1024, 0);
        let mut ar = tar::Archive::new(&out[..]);
        let mut entries = ar.entries().unwrap();
        let mut e = entries.next().unwrap().unwrap();
        assert_eq!(&*e.path_bytes(), long.as_bytes());
        let pax: Vec<_> = e
            .pax_extensions()
            .unwrap()
            .unwrap()
            .map(|r| r.unwrap().key().unwrap().to_string())
            .collect();
        assert_eq!(pax, ["path", "uid", "mtime"]);
        let mut s = String::new();
        std::io::Read::read_to_string(&mut e, &mut s).unwrap();
        assert_eq!(s, "abc");
    }
}
