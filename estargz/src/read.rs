//! Reading blobs.
use std::io;
/// A positioned-read source: a blob on disk, in memory, or anywhere else.
pub trait ReadAt {
    /// Total length of the blob in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Reads exactly `buf.len()` bytes at `offset`.
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
}
/// Placeholder.
#[derive(Debug)]
pub struct Reader;
/// Placeholder.
#[derive(Debug)]
pub struct ReadPlan;
