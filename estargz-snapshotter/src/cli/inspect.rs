//! Read-side commands: `info`, `ls`, `cat`, `verify`, `toc`.

use std::io::{self, Write};

use clap::Args;
use estargz::index::{Landmark, NodeKind};
use estargz::{Footer, Reader};
use serde_json::json;

use super::BlobArgs;

/// `estargz info`
#[derive(Debug, Args)]
pub struct InfoArgs {
    #[command(flatten)]
    blob: BlobArgs,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// `estargz ls`
#[derive(Debug, Args)]
pub struct LsArgs {
    #[command(flatten)]
    blob: BlobArgs,
    /// One JSON object per line instead of text.
    #[arg(long)]
    json: bool,
}

/// `estargz cat`
#[derive(Debug, Args)]
pub struct CatArgs {
    #[command(flatten)]
    blob: BlobArgs,
    /// Path of the file in the layer (`etc/passwd`, `/etc/passwd` and `./etc/passwd` are the same).
    #[arg(value_name = "PATH")]
    path: String,
    /// Start at this byte offset of the file.
    #[arg(long, default_value_t = 0, value_name = "N")]
    offset: u64,
    /// Write at most this many bytes (default: to the end of the file).
    #[arg(long, value_name = "N")]
    length: Option<u64>,
}

/// `estargz verify`
#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    blob: BlobArgs,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
}

/// `estargz toc`
#[derive(Debug, Args)]
pub struct TocArgs {
    #[command(flatten)]
    blob: BlobArgs,
}

use super::write_result;

fn format_key(f: &Footer) -> &'static str {
    match f {
        Footer::Estargz { .. } => "estargz",
        Footer::Legacy { .. } => "stargz-legacy",
        Footer::ExternalToc => "estargz-external-toc",
        Footer::ZstdChunked { .. } => "zstd-chunked",
        Footer::ZstdChunkedCstorage { .. } => "zstd-chunked-cstorage",
    }
}

pub fn info(a: &InfoArgs) -> Result<(), String> {
    let r = a.blob.open()?;
    let idx = r.index();
    let loc = r.location();
    let (mut files, mut dirs, mut symlinks, mut other) = (0u64, 0u64, 0u64, 0u64);
    for n in 0..idx.node_count() {
        match idx.attr(estargz::index::NodeId(n as u32)).kind {
            NodeKind::File => files += 1,
            NodeKind::Dir => dirs += 1,
            NodeKind::Symlink => symlinks += 1,
            _ => other += 1,
        }
    }
    let (landmark, prefetch_offset) = match idx.landmark() {
        Landmark::Prefetch { offset } => ("prefetch", Some(offset)),
        Landmark::NoPrefetch => ("no-prefetch", None),
        Landmark::None => ("none", None),
    };
    let toc_range = loc.toc_range.clone();
    let v = json!({
        "format": format_key(&loc.footer),
        "formatName": loc.footer.format_name(),
        "blobSize": loc.blob_size,
        "tocOffset": toc_range.as_ref().map(|r| r.start),
        "tocSize": toc_range.as_ref().map(|r| r.end - r.start),
        "tocDigest": r.toc_digest().to_string(),
        "tocEntries": idx.toc_entry_count(),
        "files": files,
        "dirs": dirs,
        "symlinks": symlinks,
        "otherNodes": other,
        "chunks": idx.all_chunks().len(),
        "landmark": landmark,
        "prefetchOffset": prefetch_offset,
    });
    let mut out = io::stdout().lock();
    if a.json {
        return write_result(writeln!(out, "{v}"));
    }
    let text = format!(
        "format:       {}\nblob size:    {}\nTOC:          {}\nTOC digest:   {}\nTOC entries:  {}\nfiles:        {files} regular, {dirs} directories, {symlinks} symlinks, {other} other\nchunks:       {}\nprefetch:     {}\n",
        loc.footer.format_name(),
        loc.blob_size,
        match &toc_range {
            Some(rg) => format!("offset {}, {} bytes", rg.start, rg.end - rg.start),
            None => "external".to_owned(),
        },
        r.toc_digest(),
        idx.toc_entry_count(),
        idx.all_chunks().len(),
        match idx.landmark() {
            Landmark::Prefetch { offset } =>
                format!(".prefetch.landmark: prioritised files in blob bytes 0..{offset}"),
            Landmark::NoPrefetch => ".no.prefetch.landmark: nothing to prefetch".to_owned(),
            Landmark::None => "no landmark".to_owned(),
        }
    );
    write_result(out.write_all(text.as_bytes()))
}

fn mode_string(kind: NodeKind, mode: u32) -> String {
    let t = match kind {
        NodeKind::Dir => 'd',
        NodeKind::File => '-',
        NodeKind::Symlink => 'l',
        NodeKind::CharDevice => 'c',
        NodeKind::BlockDevice => 'b',
        NodeKind::Fifo => 'p',
    };
    let mut s = String::with_capacity(10);
    s.push(t);
    let bits = [
        (0o400, 'r'),
        (0o200, 'w'),
        (0o100, 'x'),
        (0o040, 'r'),
        (0o020, 'w'),
        (0o010, 'x'),
        (0o004, 'r'),
        (0o002, 'w'),
        (0o001, 'x'),
    ];
    for (i, (bit, c)) in bits.iter().enumerate() {
        let set = mode & bit != 0;
        let special = match i {
            2 => (mode & 0o4000 != 0).then_some(if set { 's' } else { 'S' }),
            5 => (mode & 0o2000 != 0).then_some(if set { 's' } else { 'S' }),
            8 => (mode & 0o1000 != 0).then_some(if set { 't' } else { 'T' }),
            _ => None,
        };
        s.push(special.unwrap_or(if set { *c } else { '-' }));
    }
    s
}

pub fn ls(a: &LsArgs) -> Result<(), String> {
    let r = a.blob.open()?;
    let idx = r.index();
    let mut out = io::BufWriter::new(io::stdout().lock());
    let mut result = Ok(());
    idx.walk(|path, node| {
        if result.is_err() {
            return;
        }
        let at = idx.attr(node);
        let (uname, gname) = idx.owner_names(node);
        let chunks = idx.chunks(node).len();
        let line = if a.json {
            let mut v = json!({
                "path": path,
                "type": at.kind.as_str(),
                "size": at.size,
                "mode": at.mode,
                "uid": at.uid,
                "gid": at.gid,
                "uname": uname,
                "gname": gname,
                "mtime": at.mtime,
                "nlink": at.nlink,
                "chunks": chunks,
            });
            if let Some(t) = idx.link_target(node) {
                v["linkName"] = json!(t);
            }
            if matches!(at.kind, NodeKind::CharDevice | NodeKind::BlockDevice) {
                v["devMajor"] = json!(at.dev_major);
                v["devMinor"] = json!(at.dev_minor);
            }
            if idx.is_implicit(node) {
                v["implicit"] = json!(true);
            }
            let xattrs: serde_json::Map<String, serde_json::Value> = idx
                .xattrs(node)
                .map(|(k, val)| (k.to_owned(), json!(base64_std(val))))
                .collect();
            if !xattrs.is_empty() {
                v["xattrs"] = serde_json::Value::Object(xattrs);
            }
            v.to_string()
        } else {
            let shown = if path.is_empty() { "." } else { path };
            let mut s = format!(
                "{} {:>3} {:>5} {:>5} {:>10} {:>3}  {}",
                mode_string(at.kind, at.mode),
                at.nlink,
                at.uid,
                at.gid,
                at.size,
                chunks,
                shown
            );
            if let Some(t) = idx.link_target(node) {
                s.push_str(" -> ");
                s.push_str(t);
            }
            if matches!(at.kind, NodeKind::CharDevice | NodeKind::BlockDevice) {
                s.push_str(&format!(" [{}:{}]", at.dev_major, at.dev_minor));
            }
            s
        };
        result = writeln!(out, "{line}");
    });
    write_result(result.and_then(|()| out.flush()))
}

/// Standard base64 with padding, as the TOC stores xattr values.
fn base64_std(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

pub fn cat(a: &CatArgs) -> Result<(), String> {
    if super::remote::is_remote(&a.blob.blob.to_string_lossy()) {
        return super::remote::cat(&a.blob, &a.path, a.offset, a.length);
    }
    let r = a.blob.open()?;
    let mut f = r.open_file(&a.path).map_err(|e| e.to_string())?;
    let end = match a.length {
        Some(l) => a.offset.saturating_add(l).min(f.size()),
        None => f.size(),
    };
    let mut remaining = end.saturating_sub(a.offset);
    let mut out = io::stdout().lock();
    let res = f.for_each_chunk(a.offset, |data| {
        if remaining == 0 {
            return Ok(());
        }
        let n = (data.len() as u64).min(remaining) as usize;
        remaining -= n as u64;
        out.write_all(&data[..n])
    });
    match res {
        Err(estargz::Error::Io { source, .. }) if source.kind() == io::ErrorKind::BrokenPipe => {
            Ok(())
        }
        Err(e) => Err(e.to_string()),
        Ok(()) => write_result(out.flush()),
    }
}

pub fn verify(a: &VerifyArgs) -> Result<(), String> {
    let r = a.blob.open()?;
    let report = r
        .verify()
        .map_err(|e| format!("{}: verification failed: {e}", a.blob.blob.display()))?;
    let mut out = io::stdout().lock();
    let text = if a.json {
        json!({
            "ok": true,
            "format": format_key(&r.footer()),
            "tocDigest": r.toc_digest().to_string(),
            "tocDigestChecked": a.blob.toc_digest.is_some(),
            "files": report.files,
            "chunks": report.chunks,
            "bytes": report.bytes,
        })
        .to_string()
    } else {
        format!(
            "ok format={} tocDigest={}{} files={} chunks={} bytes={}",
            format_key(&r.footer()),
            r.toc_digest(),
            if a.blob.toc_digest.is_some() {
                " (matches --toc-digest)"
            } else {
                " (not checked: no --toc-digest given)"
            },
            report.files,
            report.chunks,
            report.bytes
        )
    };
    write_result(writeln!(out, "{text}"))
}

pub fn toc(a: &TocArgs) -> Result<(), String> {
    let r: Reader<super::remote::Blob> = a.blob.open()?;
    let json = r.toc_json().map_err(|e| e.to_string())?;
    write_result(io::stdout().lock().write_all(&json))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(mode_string(NodeKind::File, 0o4755), "-rwsr-xr-x");
        assert_eq!(mode_string(NodeKind::Dir, 0o1777), "drwxrwxrwt");
        assert_eq!(mode_string(NodeKind::File, 0o2644), "-rw-r-Sr--");
        assert_eq!(mode_string(NodeKind::File, 0), "----------");
    }

    #[test]
    fn base64() {
        assert_eq!(base64_std(b""), "");
        assert_eq!(base64_std(b"f"), "Zg==");
        assert_eq!(base64_std(b"fo"), "Zm8=");
        assert_eq!(base64_std(b"foo"), "Zm9v");
    }
}
