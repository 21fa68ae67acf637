//! The conformance vectors in `testdata/vectors`: one directory per case, made by the Go
//! oracle (estargz v0.12.0, a few by v0.18.2). `testdata/vectors/README.md` says what each
//! one shows; this module only loads them.
//!
//! Every JSON object here keeps the fields it does not know in an `extra` map instead of
//! failing, and the unit tests check that map is empty for every stored vector, so a field
//! added to the vectors shows up as a test failure here rather than as silently ignored data.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, Result};

/// Fields of a JSON object that the structs here do not model (empty for every stored vector).
pub type Extra = BTreeMap<String, Value>;

/// One vector: its directory and its parsed, validated `manifest.json`.
#[derive(Debug, Clone)]
pub struct Vector {
    /// The directory name, e.g. `edge-gzip-default` (equal to `manifest.name`).
    pub name: String,
    /// Absolute path of the vector's directory.
    pub dir: PathBuf,
    /// The parsed `manifest.json`.
    pub manifest: Manifest,
    footer: Option<Vec<u8>>,
}

/// `manifest.json`: how the vector was built and what the oracle said about it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// The vector's name (its directory name).
    pub name: String,
    /// One line on what the vector shows.
    pub description: String,
    /// The input tar the blob was built from.
    pub input: Input,
    /// The oracle program that built it (`esgz-oracle`).
    pub oracle: String,
    /// The oracle command line, with `INPUT` standing for the input path.
    pub command: String,
    /// The build options passed to the oracle, e.g. `["--chunk-size", "65536"]`.
    pub options: Vec<String>,
    /// The oracle's build result.
    pub expected: Expected,
    /// Whether a second build was byte-identical (absent when the build failed).
    pub reproducible: Option<bool>,
    /// Where the raw TOC JSON is and its digest (absent when the build failed).
    #[serde(rename = "tocJSON")]
    pub toc_json: Option<TocJsonInfo>,
    /// Why the oracle could not produce `tree.jsonl` (then that file is empty).
    pub tree_error: Option<String>,
    /// The result of `esgz-oracle verify` on the blob (absent when the build failed).
    pub verify: Option<VerifyResult>,
    /// The blob's footer in hex: last 51 bytes (gzip) or 48 bytes (zstd:chunked).
    pub footer_hex: Option<String>,
    /// Names of files whose read-back through the oracle's reader differed from the tar.
    #[serde(default)]
    pub oracle_cat_mismatches: Vec<String>,
    /// Every regular file of the original tar, in tar order.
    pub files: Vec<FileRecord>,
    /// Every hardlink of the original tar, in tar order, with what it resolves to.
    pub hardlinks: Vec<HardlinkRecord>,
    /// Whether `blob.esgz` is stored (big blobs are not).
    pub blob_stored: bool,
    /// Fields not modelled above.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `manifest.input`: the tar a vector was built from.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Input {
    /// `inputs/...` relative to the vectors directory, or a note for inputs that are not stored
    /// (`regenerate: python3 gen_inputs.py random random.tar`, `machine-dependent: ...`).
    #[serde(rename = "ref")]
    pub reference: String,
    /// `sha256:<hex>` of the input bytes.
    pub sha256: String,
    /// Input size in bytes.
    pub size: u64,
    /// Fields not modelled above.
    #[serde(flatten)]
    pub extra: Extra,
}

/// Whether the oracle's build succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BuildOutcome {
    /// A blob was written.
    Ok,
    /// The build failed; `Expected::error` and `Expected::exit_code` say how.
    Error,
}

/// `manifest.expected`: the oracle's build JSON.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Expected {
    /// Whether the build succeeded.
    pub build: BuildOutcome,
    /// `sha256:` digest of the TOC JSON bytes.
    pub toc_digest: Option<String>,
    /// `sha256:` digest of the uncompressed stream.
    #[serde(rename = "diffID")]
    pub diff_id: Option<String>,
    /// Length of the uncompressed stream.
    pub uncompressed_size: Option<u64>,
    /// Length of the blob.
    pub blob_size: Option<u64>,
    /// `sha256:` digest of the blob.
    pub blob_digest: Option<String>,
    /// `gzip`, `zstd:chunked`, `gzip (estargz.Writer)`, ...
    pub compression: Option<String>,
    /// Chunk size used.
    pub chunk_size: Option<u64>,
    /// Minimum chunk size used (v0.18.2 vectors only).
    pub min_chunk_size: Option<u64>,
    /// Compression level used.
    pub level: Option<i32>,
    /// Prioritized file names requested.
    #[serde(default)]
    pub prioritized: Vec<String>,
    /// Prioritized names the build could not find (with `--allow-missing-prioritized`).
    #[serde(default)]
    pub missed_prioritized: Vec<String>,
    /// Number of sub-blobs the build was split into.
    pub parallelism: Option<u32>,
    /// The Go library and version that built the blob.
    pub library: Option<String>,
    /// Manifest annotations (zstd:chunked: `io.containers.zstd-chunked.manifest-*`).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// The oracle's error message when the build failed.
    pub error: Option<String>,
    /// The oracle's exit code when the build failed.
    pub exit_code: Option<i32>,
    /// Fields not modelled above.
    #[serde(flatten)]
    pub extra: Extra,
}

impl Expected {
    /// True when the oracle built a blob.
    pub fn is_ok(&self) -> bool {
        self.build == BuildOutcome::Ok
    }
}

/// `manifest.tocJSON`: where the raw TOC is stored.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TocJsonInfo {
    /// File name inside the vector directory (`toc.json`).
    pub file: String,
    /// `sha256:` digest of that file.
    pub sha256: String,
    /// Whether that digest equals `expected.tocDigest`.
    pub matches_toc_digest: bool,
    /// Fields not modelled above.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `manifest.verify`: what `esgz-oracle verify blob.esgz <tocDigest>` said.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyResult {
    /// Its exit code (0 = verified).
    pub exit_code: i32,
    /// Its one-line output.
    pub output: String,
    /// Fields not modelled above.
    #[serde(flatten)]
    pub extra: Extra,
}

/// One regular file of the original tar (`manifest.files[]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileRecord {
    /// The tar name as (lossy) UTF-8.
    pub name: String,
    /// The exact tar name bytes, base64 (see [`FileRecord::name_bytes`]).
    pub name_base64: String,
    /// File size.
    pub size: u64,
    /// `sha256:` digest of the content.
    pub sha256: String,
    /// True for the last occurrence of this cleaned path in the tar (the one a reader sees).
    #[serde(rename = "final")]
    pub is_final: bool,
    /// `ok`, or the error, of reading the file back through the oracle's reader (absent when
    /// the build failed).
    pub oracle_cat: Option<String>,
    /// Fields not modelled above.
    #[serde(flatten)]
    pub extra: Extra,
    #[serde(skip)]
    name_bytes: Vec<u8>,
}

impl FileRecord {
    /// The exact tar name bytes (decoded `nameBase64`; may be invalid UTF-8).
    pub fn name_bytes(&self) -> &[u8] {
        &self.name_bytes
    }
}

/// One hardlink of the original tar (`manifest.hardlinks[]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HardlinkRecord {
    /// The link's tar name.
    pub name: String,
    /// Its target as written in the tar.
    pub link_name: String,
    /// True for the last occurrence of this cleaned path in the tar.
    #[serde(rename = "final")]
    pub is_final: bool,
    /// `sha256:` digest of the resolved content (None when the target is missing).
    pub sha256: Option<String>,
    /// Size of the resolved content (None when the target is missing).
    pub size: Option<u64>,
    /// `ok`, or the error, of reading it back through the oracle's reader.
    pub oracle_cat: Option<String>,
    /// Fields not modelled above.
    #[serde(flatten)]
    pub extra: Extra,
}

/// One line of `tree.jsonl`: the Go reader's normalized view of one path.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TreeRow {
    /// Normalized path (`""` for the root, no leading `./` or `/`, no trailing `/`).
    pub path: String,
    /// TOC entry type: `dir`, `reg`, `symlink`, `char`, `block`, `fifo` (hardlinks resolve to
    /// their target's type).
    #[serde(rename = "type")]
    pub kind: String,
    /// File size (0 for non-regular files).
    pub size: u64,
    /// Go `fs.FileMode.String()`, e.g. `drwxr-xr-x`, `urwxr-xr-x` for setuid.
    pub mode: String,
    /// Link count as the reader reports it.
    pub num_link: u64,
    /// Owner uid.
    pub uid: u64,
    /// Owner gid.
    pub gid: u64,
    /// Owner name after the reader's uname inheritance.
    pub uname: String,
    /// Group name after the reader's inheritance (v0.12 fills it from the uname map).
    pub gname: String,
    /// RFC 3339 modification time, or `""` when zero.
    pub modtime: String,
    /// Raw TOC name of the entry that backs this path (a hardlink's target for hardlinks).
    pub entry_name: String,
    /// Number of data chunks.
    pub chunks: u64,
    /// True for directories the reader synthesized (no TOC entry).
    #[serde(default)]
    pub implicit: bool,
    /// `sha256:` digest of the whole content (regular files).
    pub digest: Option<String>,
    /// Symlink target.
    pub link_name: Option<String>,
    /// Fields not modelled above.
    #[serde(flatten)]
    pub extra: Extra,
}

/// One line of `ls.jsonl`: a raw TOC entry in TOC order with every field present.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LsRow {
    /// Raw TOC name (e.g. `./dotslash/`, `/abs/file.txt`).
    pub name: String,
    /// TOC entry type: `dir`, `reg`, `chunk`, `hardlink`, `symlink`, `char`, `block`, `fifo`.
    #[serde(rename = "type")]
    pub kind: String,
    /// File size (`reg` entries).
    pub size: u64,
    /// Compressed offset of the chunk's member/frame in the blob (0 if none).
    pub offset: u64,
    /// Offset of the chunk within the file.
    pub chunk_offset: u64,
    /// Chunk length (0 = absent in the TOC).
    pub chunk_size: u64,
    /// `sha256:` digest of the chunk (`""` if none).
    pub chunk_digest: String,
    /// `sha256:` digest of the whole file (`""` if none).
    pub digest: String,
    /// Raw tar mode field.
    pub mode: u32,
    /// Owner uid.
    pub uid: u64,
    /// Owner gid.
    pub gid: u64,
    /// `userName` as stored (`""` when omitted).
    pub uname: String,
    /// `groupName` as stored (`""` when omitted).
    pub gname: String,
    /// `modtime` as stored (`""` when omitted).
    pub modtime: String,
    /// Link target (symlinks and hardlinks).
    pub link_name: String,
    /// Device major number.
    pub dev_major: u64,
    /// Device minor number.
    pub dev_minor: u64,
    /// Extended attributes, values base64 as in the TOC.
    pub xattrs: BTreeMap<String, String>,
    /// Offset of the chunk inside its decompressed member/frame (v0.18.2 min-chunk-size only).
    pub inner_offset: Option<u64>,
    /// Fields not modelled above.
    #[serde(flatten)]
    pub extra: Extra,
}

/// Where a vector's input tar comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputSource {
    /// Stored under the vectors directory (absolute path).
    Stored(PathBuf),
    /// `random.tar`, regenerated bit-exactly by [`crate::inputs::random_tar`].
    Random,
    /// Not reproducible here (the `doc.tar` of the machine that made the vectors).
    MachineDependent(String),
}

impl Vector {
    /// Every vector under [`crate::vectors_dir`], sorted by name.
    pub fn all() -> Result<Vec<Vector>> {
        let dir = crate::vectors_dir();
        let mut vectors = Vec::new();
        for entry in fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            let path = entry.path();
            if path.join("manifest.json").is_file() {
                vectors.push(Vector::from_dir(&path)?);
            }
        }
        vectors.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(vectors)
    }

    /// The vector named `name` (its directory name under [`crate::vectors_dir`]).
    pub fn load(name: &str) -> Result<Vector> {
        Vector::from_dir(&crate::vectors_dir().join(name))
    }

    /// The vector in `dir`: parses and validates `manifest.json` (base64 names, footer hex).
    pub fn from_dir(dir: &Path) -> Result<Vector> {
        let manifest_path = dir.join("manifest.json");
        let bytes = fs::read(&manifest_path).map_err(|e| Error::io(&manifest_path, e))?;
        let mut manifest: Manifest =
            serde_json::from_slice(&bytes).map_err(|source| Error::Json {
                path: manifest_path.clone(),
                line: 0,
                source,
            })?;
        let bad = |field: String, message: String| Error::BadField {
            path: manifest_path.clone(),
            field,
            message,
        };
        for (i, file) in manifest.files.iter_mut().enumerate() {
            file.name_bytes = base64::engine::general_purpose::STANDARD
                .decode(&file.name_base64)
                .map_err(|e| bad(format!("files[{i}].nameBase64"), e.to_string()))?;
        }
        let footer = match &manifest.footer_hex {
            Some(h) => Some(hex::decode(h).map_err(|e| bad("footerHex".into(), e.to_string()))?),
            None => None,
        };
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(Vector {
            name,
            dir: dir.to_path_buf(),
            manifest,
            footer,
        })
    }

    /// `<dir>/<file>`, whether or not it exists.
    pub fn file(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    fn existing(&self, file: &str) -> Option<PathBuf> {
        Some(self.file(file)).filter(|p| p.is_file())
    }

    /// `blob.esgz`, when the blob is stored.
    pub fn blob_path(&self) -> Option<PathBuf> {
        self.existing("blob.esgz")
            .filter(|_| self.manifest.blob_stored)
    }

    /// `toc.json` (the raw TOC JSON), when the build succeeded.
    pub fn toc_json_path(&self) -> Option<PathBuf> {
        self.existing("toc.json")
    }

    /// `tree.jsonl` (the reader's normalized view), when the build succeeded. It is empty when
    /// `manifest.tree_error` is set.
    pub fn tree_jsonl_path(&self) -> Option<PathBuf> {
        self.existing("tree.jsonl")
    }

    /// `ls.jsonl` (raw TOC entries with every field), when the build succeeded.
    pub fn ls_jsonl_path(&self) -> Option<PathBuf> {
        self.existing("ls.jsonl")
    }

    /// `verify.txt` (the output of `esgz-oracle verify`), when the build succeeded.
    pub fn verify_txt_path(&self) -> Option<PathBuf> {
        self.existing("verify.txt")
    }

    /// The stored blob's bytes.
    pub fn blob(&self) -> Result<Vec<u8>> {
        self.read_required(
            self.blob_path(),
            "blob.esgz",
            "blob not stored (blobStored=false)",
        )
    }

    /// The raw TOC JSON bytes (sha256 of them is `expected.toc_digest`).
    pub fn toc_json(&self) -> Result<Vec<u8>> {
        self.read_required(self.toc_json_path(), "toc.json", "build failed")
    }

    /// The rows of `tree.jsonl`, in file order.
    pub fn tree(&self) -> Result<Vec<TreeRow>> {
        read_jsonl(&self.required(self.tree_jsonl_path(), "tree.jsonl", "build failed")?)
    }

    /// The rows of `ls.jsonl`, in TOC order.
    pub fn ls(&self) -> Result<Vec<LsRow>> {
        read_jsonl(&self.required(self.ls_jsonl_path(), "ls.jsonl", "build failed")?)
    }

    /// The decoded footer (`footerHex`), when the build succeeded.
    pub fn footer(&self) -> Option<&[u8]> {
        self.footer.as_deref()
    }

    /// True when `flag` (e.g. `--zstdchunked`) is one of the build options.
    pub fn has_option(&self, flag: &str) -> bool {
        self.manifest.options.iter().any(|o| o == flag)
    }

    /// The value following `flag` in the build options (e.g. `--chunk-size` -> `"65536"`;
    /// `--prioritized` takes one comma-separated list).
    pub fn option_value(&self, flag: &str) -> Option<&str> {
        let options = &self.manifest.options;
        let at = options.iter().position(|o| o == flag)?;
        options.get(at + 1).map(String::as_str)
    }

    /// True for zstd:chunked vectors (`--zstdchunked`).
    pub fn is_zstd_chunked(&self) -> bool {
        self.has_option("--zstdchunked")
    }

    /// Where the input tar comes from.
    pub fn input_source(&self) -> InputSource {
        let reference = &self.manifest.input.reference;
        if reference.starts_with("inputs/") {
            InputSource::Stored(crate::vectors_dir().join(reference))
        } else if reference.contains("gen_inputs.py random") {
            InputSource::Random
        } else {
            InputSource::MachineDependent(reference.clone())
        }
    }

    /// The input tar's path: stored inputs as they are, `random.tar` regenerated (and cached)
    /// on first use, `None` for machine-dependent inputs.
    pub fn input_path(&self) -> Result<Option<PathBuf>> {
        match self.input_source() {
            InputSource::Stored(path) => Ok(Some(path)),
            InputSource::Random => crate::inputs::random_tar().map(Some),
            InputSource::MachineDependent(_) => Ok(None),
        }
    }

    fn required(&self, path: Option<PathBuf>, file: &str, why: &str) -> Result<PathBuf> {
        path.ok_or_else(|| Error::Missing {
            path: self.file(file),
            why: why.to_string(),
        })
    }

    fn read_required(&self, path: Option<PathBuf>, file: &str, why: &str) -> Result<Vec<u8>> {
        let path = self.required(path, file, why)?;
        fs::read(&path).map_err(|e| Error::io(&path, e))
    }
}

/// Parses a JSON Lines file into `T`s (blank lines are skipped).
pub fn read_jsonl<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    let text = fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line).map_err(|source| Error::Json {
                path: path.to_path_buf(),
                line: i + 1,
                source,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sha256_digest;

    fn all() -> Vec<Vector> {
        let all = Vector::all().expect("every manifest.json parses");
        assert!(all.len() >= 40, "only {} vectors found", all.len());
        all
    }

    #[test]
    fn every_manifest_parses_with_no_unknown_fields() {
        for v in all() {
            let m = &v.manifest;
            assert_eq!(m.name, v.name, "manifest name vs directory");
            let where_ = &v.name;
            assert!(
                m.extra.is_empty(),
                "{where_}: unknown fields {:?}",
                m.extra.keys()
            );
            assert!(
                m.input.extra.is_empty(),
                "{where_}: input {:?}",
                m.input.extra
            );
            assert!(
                m.expected.extra.is_empty(),
                "{where_}: expected {:?}",
                m.expected.extra
            );
            for f in &m.files {
                assert!(f.extra.is_empty(), "{where_}: file {:?}", f.extra);
                assert_eq!(f.name_bytes().is_empty(), f.name.is_empty());
            }
            for h in &m.hardlinks {
                assert!(h.extra.is_empty(), "{where_}: hardlink {:?}", h.extra);
            }
            if let Some(t) = &m.toc_json {
                assert!(t.extra.is_empty(), "{where_}: tocJSON {:?}", t.extra);
            }
            if let Some(vr) = &m.verify {
                assert!(vr.extra.is_empty(), "{where_}: verify {:?}", vr.extra);
            }
        }
    }

    #[test]
    fn outcomes_and_stored_files_agree() {
        for v in all() {
            let m = &v.manifest;
            if m.expected.is_ok() {
                let digest = m.expected.toc_digest.as_deref().expect("tocDigest");
                let toc = v.toc_json().expect("toc.json");
                assert_eq!(sha256_digest(&toc), digest, "{}", v.name);
                assert!(m.expected.diff_id.is_some() && m.expected.blob_size.is_some());
                let footer = v.footer().expect("footerHex");
                let want = if v.is_zstd_chunked() { 48 } else { 51 };
                assert_eq!(footer.len(), want, "{}", v.name);
                assert!(m.verify.is_some(), "{}", v.name);
                assert!(v.ls_jsonl_path().is_some() && v.tree_jsonl_path().is_some());
            } else {
                assert!(m.expected.error.is_some() && m.expected.exit_code.is_some());
                assert!(v.toc_json_path().is_none() && v.footer().is_none());
            }
            assert_eq!(v.blob_path().is_some(), m.blob_stored, "{}", v.name);
            if let Some(blob) = v.blob_path() {
                let blob = fs::read(blob).expect("blob");
                assert_eq!(Some(blob.len() as u64), m.expected.blob_size, "{}", v.name);
                assert_eq!(
                    Some(&blob[blob.len() - v.footer().map_or(0, <[u8]>::len)..]),
                    v.footer()
                );
            }
        }
    }

    #[test]
    fn every_tree_and_ls_row_parses_with_no_unknown_fields() {
        let mut trees = 0;
        for v in all().into_iter().filter(|v| v.manifest.expected.is_ok()) {
            let tree = v.tree().expect("tree.jsonl");
            let ls = v.ls().expect("ls.jsonl");
            assert_eq!(
                tree.is_empty(),
                v.manifest.tree_error.is_some(),
                "{}",
                v.name
            );
            for row in &tree {
                assert!(row.extra.is_empty(), "{}: {:?}", v.name, row.extra);
            }
            for row in &ls {
                assert!(row.extra.is_empty(), "{}: {:?}", v.name, row.extra);
            }
            if let Some(root) = tree.first() {
                assert_eq!(
                    (root.path.as_str(), root.kind.as_str()),
                    ("", "dir"),
                    "{}",
                    v.name
                );
            }
            trees += 1;
        }
        assert!(trees >= 30);
    }

    #[test]
    fn edge_vector_details() {
        let v = Vector::load("edge-gzip-default").expect("load");
        assert_eq!(v.option_value("--parallelism"), Some("1"));
        assert_eq!(v.manifest.expected.uncompressed_size, Some(8_932_352));
        let InputSource::Stored(input) = v.input_source() else {
            panic!("edge.tar is stored")
        };
        assert_eq!(
            fs::metadata(input).expect("edge.tar").len(),
            v.manifest.input.size
        );
        let tree = v.tree().expect("tree");
        let implicit = tree.iter().find(|r| r.path == "deep").expect("deep");
        assert!(implicit.implicit);
        assert!(tree.iter().any(|r| r.link_name.is_some()));
        let ls = v.ls().expect("ls");
        assert!(ls
            .iter()
            .any(|r| r.xattrs.contains_key("security.capability")));

        let prio = Vector::load("edge-gzip-prio").expect("load");
        let prioritized = prio.option_value("--prioritized").expect("--prioritized");
        assert_eq!(prioritized.split(',').count(), 6);
        assert_eq!(prio.manifest.expected.missed_prioritized.len(), 2);

        let zstd = Vector::load("edge-zstd-default").expect("load");
        assert!(zstd.is_zstd_chunked());
        assert_eq!(zstd.manifest.expected.annotations.len(), 2);

        let minchunk = Vector::load("v0.18.2-edge-gzip-minchunk64k").expect("load");
        assert!(minchunk
            .ls()
            .expect("ls")
            .iter()
            .any(|r| r.inner_offset.is_some()));

        let invalid = Vector::load("q-invalid-utf8-name").expect("load");
        assert!(invalid
            .manifest
            .files
            .iter()
            .any(|f| std::str::from_utf8(f.name_bytes()).is_err()));

        let missing = Vector::load("q-hardlink-missing-target").expect("load");
        assert_eq!(missing.manifest.hardlinks[0].sha256, None);

        let random = Vector::load("random-gzip-default").expect("load");
        assert_eq!(random.input_source(), InputSource::Random);
        assert_eq!(
            random.manifest.input.sha256,
            crate::inputs::RANDOM_TAR_SHA256
        );
        assert_eq!(random.manifest.input.size, crate::inputs::RANDOM_TAR_SIZE);
        assert!(random.blob_path().is_none() && random.blob().is_err());

        let doc = Vector::load("doc-gzip-default").expect("load");
        assert!(matches!(
            doc.input_source(),
            InputSource::MachineDependent(_)
        ));
        assert_eq!(doc.input_path().expect("no generation needed"), None);
    }
}
