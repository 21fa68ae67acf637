//! [`FileSource`]: a blob in a local file, read with positioned reads on the blocking pool.

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::{check_ranges, BlobSource};
use crate::error::{Error, Result};

/// A blob in a local file. Reads run on tokio's blocking pool (`pread`), so they never stall
/// the async runtime.
#[derive(Debug, Clone)]
pub struct FileSource {
    path: PathBuf,
    file: Arc<File>,
    len: u64,
}

impl FileSource {
    /// Opens `path` and records its length (the file must not change afterwards).
    pub async fn open(path: impl AsRef<Path>) -> Result<FileSource> {
        let path = path.as_ref().to_path_buf();
        let p = path.clone();
        let (file, len) = tokio::task::spawn_blocking(move || -> std::io::Result<(File, u64)> {
            let f = File::open(&p)?;
            let len = f.metadata()?.len();
            Ok((f, len))
        })
        .await
        .map_err(|e| Error::io(format!("opening {}", path.display()), e.into()))?
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        Ok(FileSource {
            path,
            file: Arc::new(file),
            len,
        })
    }
}

#[async_trait]
impl BlobSource for FileSource {
    async fn len(&self) -> Result<u64> {
        Ok(self.len)
    }

    async fn read_ranges(&self, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        check_ranges(&self.describe(), ranges, self.len)?;
        let file = Arc::clone(&self.file);
        let ranges = ranges.to_vec();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            ranges
                .iter()
                .map(|r| {
                    let mut buf = vec![0u8; (r.end - r.start) as usize];
                    file.read_exact_at(&mut buf, r.start).map_err(|e| {
                        Error::io(
                            format!("reading {} bytes {}..{}", path.display(), r.start, r.end),
                            e,
                        )
                    })?;
                    Ok(Bytes::from(buf))
                })
                .collect()
        })
        .await
        .map_err(|e| Error::io(format!("reading {}", self.path.display()), e.into()))?
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}
