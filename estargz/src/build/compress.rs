//! Member compression, in parallel, with output in submission order.
//!
//! Once its uncompressed bytes are known a member (gzip member or zstd frame) is independent
//! of every other, so members are compressed on a pool of worker threads and handed back in
//! the order they were submitted. Each member is compressed in one shot by a pure function of
//! its bytes and the level, so the output is byte-identical whatever the number of threads.
//! Members not compressed yet (queued or being compressed): always up to one per worker;
//! beyond that more only while they hold under 1 MiB of uncompressed bytes per thread and the
//! new one is small (under 256 KiB) or fewer than one big member per worker is pending. Layers
//! of many small files (members of a few KiB) then keep every worker busy, while layers of
//! large files (members of 512 KiB to 1 MiB, `MEMBER_SIZE`) hold about one member per worker
//! plus the one being filled. Members compressed ahead of their turn wait holding only their
//! compressed bytes and small input buffers (under 4 MiB in all), so a slow member at the head
//! does not leave the other workers idle; at most `64 × threads` members are in flight in
//! all. On the `build` bench (2 threads, noisy): a second big member per worker made layers
//! of large files about 5 % faster for 0.5 MiB more peak memory; 512 KiB per thread for small
//! members instead of 1–2 MiB made the Go-sources layer about 10 % slower; waiting for any
//! member rather than the head made (a) and (c) 2–4 % faster (medians of 5, interleaved).
//!
//! Chunk digests, file digests and the DiffID are computed by the producer as it reads: a
//! chunk may span several members. The DiffID and the chunk digest take each payload byte in
//! lockstep (`Hasher::update_pair`), about 1.7 times as fast as one after the other with the
//! x86 SHA extensions: 6 % less time on the `build` bench's Go sources.
//!
//! A payload that [`looks_compressed`] is kept in stored deflate blocks, and only the
//! padding and headers after it are deflated ([`gzip_stored_payload`]), unless it holds
//! repeats deflate can use ([`deflate_gains`]): then the member is deflated at level 1. On
//! the `build` bench's /usr/share/doc tar (41 % of it compressed files) this takes `estargz
//! convert` from 0.88 to 0.75 s (medians of 5, interleaved), and the output is 36 KB smaller
//! (68,906,266 bytes) than when all those members were deflated at level 1, which cost 0.3 s
//! of CPU time (about 140 MB/s on bytes that do not shrink). Storing every such payload was
//! 126 KB larger: the repeats the estimate finds are in PostScript and zip files.
//!
//! Deflate is libdeflate (through `libdeflater`), chosen by measurement: on whole chunks it is
//! about twice as fast as zlib-rs at level 9 and gives smaller output on real layers (see the
//! `build` module docs for the numbers).

use std::collections::BTreeMap;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex, PoisonError};

use crate::error::{Error, Result};

/// How members are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Codec {
    /// One gzip member per member, libdeflate at this level (0..=12).
    Gzip(i32),
    /// One zstd frame per member at this level.
    Zstd(i32),
}

/// A compressor for one thread.
pub(crate) enum Compressor {
    /// At the requested level, and at level 1 for compressed-looking payloads that still
    /// hold repeats (made on first use; `None` when the level is 1 or less).
    Gzip(
        Box<libdeflater::Compressor>,
        Option<Box<libdeflater::Compressor>>,
        i32,
    ),
    Zstd(Box<zstd::bulk::Compressor<'static>>),
}

impl std::fmt::Debug for Compressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Compressor::Gzip(..) => "Compressor::Gzip",
            Compressor::Zstd(_) => "Compressor::Zstd",
        })
    }
}

impl Compressor {
    pub fn new(codec: Codec) -> Result<Compressor> {
        Ok(match codec {
            Codec::Gzip(level) => {
                let lvl = libdeflater::CompressionLvl::new(level).map_err(|_| {
                    Error::InvalidArgument(format!("gzip level {level} is not in 0..=12"))
                })?;
                Compressor::Gzip(Box::new(libdeflater::Compressor::new(lvl)), None, level)
            }
            Codec::Zstd(level) => {
                let c = zstd::bulk::Compressor::new(level)
                    .map_err(|e| Error::io("creating a zstd compressor", e))?;
                Compressor::Zstd(Box::new(c))
            }
        })
    }

    /// Compresses `data` into one complete gzip member / zstd frame.
    pub fn compress(&mut self, data: &[u8]) -> Result<Vec<u8>> {
        self.compress_member(data, 0)
    }

    /// Compresses `data`, whose first `payload` bytes are file contents and the rest padding
    /// and tar headers, into one complete gzip member / zstd frame.
    ///
    /// When a gzip member's payload [`looks_compressed`], the payload is kept in stored
    /// blocks and only the rest is deflated ([`gzip_stored_payload`]), unless a probe finds
    /// that deflating it at level 1 ([`INCOMPRESSIBLE_LEVEL`]) gains something
    /// ([`deflate_gains`]); then the whole member is deflated at level 1.
    pub fn compress_member(&mut self, data: &[u8], payload: usize) -> Result<Vec<u8>> {
        match self {
            Compressor::Gzip(main, fast, level) => {
                let level = *level;
                let (head, rest) = data.split_at(payload.min(data.len()));
                if level <= 0 || !looks_compressed(head) {
                    return gzip(main, data);
                }
                if !deflate_gains(head) {
                    return gzip_stored_payload(main, level, head, rest, data);
                }
                if level == INCOMPRESSIBLE_LEVEL {
                    return gzip(main, data);
                }
                let fast = fast.get_or_insert_with(|| {
                    Box::new(libdeflater::Compressor::new(
                        libdeflater::CompressionLvl::new(INCOMPRESSIBLE_LEVEL).unwrap_or_default(),
                    ))
                });
                gzip(fast, data)
            }
            Compressor::Zstd(c) => c
                .compress(data)
                .map_err(|e| Error::io("zstd-compressing a member", e)),
        }
    }
}

/// A zeroed buffer of `len` bytes, from [`big_buffer`] when large.
fn zeroed(len: usize) -> Vec<u8> {
    if len >= BIG_BUFFER_MIN {
        big_buffer(len)
    } else {
        vec![0u8; len]
    }
}

fn deflate_error(e: &libdeflater::CompressionError) -> Error {
    Error::io(
        "gzip-compressing a member",
        std::io::Error::other(format!("{e:?}")),
    )
}

/// One gzip member of `data`, deflated by `c`.
fn gzip(c: &mut libdeflater::Compressor, data: &[u8]) -> Result<Vec<u8>> {
    // Zeroed by the allocator: pages past what is written are never touched.
    let mut out = zeroed(c.gzip_compress_bound(data.len()));
    let n = c
        .gzip_compress(data, &mut out)
        .map_err(|e| deflate_error(&e))?;
    out.truncate(n);
    Ok(out)
}

/// True when deflating `payload` (which [`looks_compressed`]) at level 1 is likely to gain
/// more than [`REPEATS_MIN`] bytes: when that many of its bytes are in repeats that deflate
/// can encode ([`repeated_bytes`]).
///
/// Some compressed files still hold repeats: a PostScript file gzip-ed with a small window
/// (5 % smaller at level 1), zip archives of fuzzing corpora with repeated entries (3 %).
/// They are seldom spread evenly: no sample of 16 KiB parts found those of the zips.
fn deflate_gains(payload: &[u8]) -> bool {
    repeated_bytes(payload) > REPEATS_MIN
}

/// See [`deflate_gains`].
const REPEATS_MIN: usize = 1024;

/// An estimate of how many bytes of `data` are in repeats from at most 32 KiB back (what
/// deflate can encode as matches), at about 1.9 GB/s, over ten times the speed of deflating
/// such bytes at level 1.
///
/// Every third position's 8 bytes go in a hash table (with the 8 bytes as a 32-bit tag),
/// every fourth position is looked up before that. The steps are coprime, so a repeat at any
/// distance is seen once it is longer than about 20 bytes, at one in three of its looked-up
/// positions: each hit stands for 3 × 4 bytes. Slots are reused (16,384 of them), so in a
/// large member about half of a repeat 32 KiB back is counted; noise counts next to nothing.
pub(crate) fn repeated_bytes(data: &[u8]) -> usize {
    const WINDOW: usize = 32 << 10;
    const INSERT: usize = 3;
    const CHECK: usize = 4;
    const STEP: usize = INSERT * CHECK;
    // Positions are u32 (plus one: 0 is an empty slot); members are far smaller than 4 GiB.
    let data = &data[..data.len().min(1 << 31)];
    let n = data.len();
    // About one slot per 4 bytes, so that small members clear small tables.
    let bits = (usize::BITS - n.leading_zeros())
        .saturating_sub(2)
        .clamp(6, 14);
    let mask = (1usize << bits) - 1;
    let mut table = vec![(0u32, 0u32); 1 << bits];
    let word = |i: usize| -> u64 {
        data.get(i..i + 8)
            .and_then(|w| <[u8; 8]>::try_from(w).ok())
            .map_or(0, u64::from_le_bytes)
    };
    let hash = |w: u64| -> (usize, u32) {
        let h = w.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (
            (h >> (64 - bits)) as usize & mask,
            h as u32 ^ (w >> 32) as u32,
        )
    };
    let mut hits = 0;
    let mut base = 0;
    while base + STEP + 8 <= n {
        for k in 0..INSERT {
            let i = base + k * CHECK;
            let (slot, tag) = hash(word(i));
            let (pos, t) = table[slot];
            let pos = pos as usize;
            hits += usize::from(t == tag && pos > 0 && i + 1 - pos <= WINDOW);
        }
        for k in 0..CHECK {
            let i = base + k * INSERT;
            let (slot, tag) = hash(word(i));
            table[slot] = (i as u32 + 1, tag);
        }
        base += STEP;
    }
    hits * STEP
}

/// Largest stored deflate block.
const STORED_BLOCK_MAX: usize = 0xffff;

/// The gzip header libdeflate writes at `level`: no name, no mtime, OS unknown (255), and the
/// extra flags of RFC 1952 (4 = fastest below level 2, 2 = slowest from level 8).
fn gzip_header(level: i32) -> [u8; 10] {
    let xfl = if level < 2 {
        4
    } else if level >= 8 {
        2
    } else {
        0
    };
    [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 0xff]
}

/// One gzip member of `data` = `payload` + `rest`: `payload` in stored deflate blocks, then
/// `rest` (padding and tar headers) deflated by `c` in blocks of its own.
///
/// Deflating an already compressed payload gains nothing on its bytes: what level 1 gained
/// over storing whole members came from the padding and headers that share them, which this
/// keeps. A stored block costs 5 bytes per 64 KiB; copying is ~20 times faster than level 1.
fn gzip_stored_payload(
    c: &mut libdeflater::Compressor,
    level: i32,
    payload: &[u8],
    rest: &[u8],
    data: &[u8],
) -> Result<Vec<u8>> {
    let blocks = payload.len().div_ceil(STORED_BLOCK_MAX);
    let rest_bound = if rest.is_empty() {
        0
    } else {
        c.deflate_compress_bound(rest.len())
    };
    let mut out = zeroed(10 + payload.len() + 5 * blocks + rest_bound + 8);
    out[..10].copy_from_slice(&gzip_header(level));
    let mut pos = 10;
    for (i, block) in payload.chunks(STORED_BLOCK_MAX).enumerate() {
        // BFINAL on the last block when nothing follows; BTYPE 00 (stored), then LEN, NLEN.
        let last = rest.is_empty() && i + 1 == blocks;
        let len = block.len() as u16;
        out[pos] = u8::from(last);
        out[pos + 1..pos + 3].copy_from_slice(&len.to_le_bytes());
        out[pos + 3..pos + 5].copy_from_slice(&(!len).to_le_bytes());
        out[pos + 5..pos + 5 + block.len()].copy_from_slice(block);
        pos += 5 + block.len();
    }
    if !rest.is_empty() {
        // The stored blocks end on a byte boundary, where libdeflate's blocks begin; its
        // last block is final.
        pos += c
            .deflate_compress(rest, &mut out[pos..pos + rest_bound])
            .map_err(|e| deflate_error(&e))?;
    }
    out[pos..pos + 4].copy_from_slice(&libdeflater::crc32(data).to_le_bytes());
    out[pos + 4..pos + 8].copy_from_slice(&(data.len() as u32).to_le_bytes());
    out.truncate(pos + 8);
    Ok(out)
}

/// The gzip level of members whose payload [`looks_compressed`] but still holds repeats
/// ([`deflate_gains`]): on gzip, xz, zstd, PNG or JPEG payloads higher levels gain about
/// 0.1 % of output for 40 % more time (measured on the compressed files of /usr/share/doc,
/// 57 MB: level 7 in 1.15 s gives 55.47 MB, level 1 in 0.83 s gives 55.54 MB; `estargz
/// convert --threads 1`).
pub(crate) const INCOMPRESSIBLE_LEVEL: i32 = 1;

/// True when `data` looks already compressed: at least 4 KiB whose byte values are nearly
/// uniform, i.e. collision entropy (`-log2 Σ p²`) above about 7.9 bits per byte, tested as
/// `256 Σ c² < n² (1 + 1/16)` over the byte counts `c` in integers, so the choice (and the
/// output) is the same on every machine. Text and executables are far below (4–6.5 bits);
/// compressed and encrypted payloads, and the tar headers sharing their member, are above.
///
/// Members over 64 KiB are judged on 16 evenly spaced parts of 4 KiB: counting every byte
/// took 3 % of `estargz convert`'s CPU time on the `build` bench's inputs (a) and (c), and
/// the sample changed their output by under 2 KB (smaller).
pub(crate) fn looks_compressed(data: &[u8]) -> bool {
    let n = data.len() as u128;
    if n < 4096 {
        return false;
    }
    // Four tables, so that runs of one byte value do not serialise on one counter.
    let mut counts = [[0u64; 256]; 4];
    let mut count = |part: &[u8]| {
        let mut quads = part.chunks_exact(4);
        for q in &mut quads {
            counts[0][q[0] as usize] += 1;
            counts[1][q[1] as usize] += 1;
            counts[2][q[2] as usize] += 1;
            counts[3][q[3] as usize] += 1;
        }
        for &b in quads.remainder() {
            counts[0][b as usize] += 1;
        }
    };
    let n = if data.len() > SAMPLE_PARTS * SAMPLE_PART {
        let stride = data.len() / SAMPLE_PARTS;
        let mut sampled = 0;
        for part in data.chunks_exact(stride).take(SAMPLE_PARTS) {
            let part = part.get(..SAMPLE_PART).unwrap_or(part);
            count(part);
            sampled += part.len();
        }
        sampled as u128
    } else {
        count(data);
        n
    };
    let sum_sq: u128 = (0..256)
        .map(|v| {
            let c = u128::from(counts[0][v] + counts[1][v] + counts[2][v] + counts[3][v]);
            c * c
        })
        .sum();
    256 * sum_sq < n * n + n * n / 16
}

/// [`looks_compressed`] counts a member of more than `SAMPLE_PARTS × SAMPLE_PART` bytes in
/// this many evenly spaced parts of `SAMPLE_PART` bytes.
const SAMPLE_PARTS: usize = 16;
const SAMPLE_PART: usize = 4096;

/// Uncompressed bytes per thread that may be in flight beyond one member per worker.
const SMALL_BYTES_PER_THREAD: usize = 1 << 20;

/// Bytes that members compressed ahead of their turn may hold (their compressed bytes and the
/// input buffers they hand back) before the producer waits.
const READY_BYTES_MAX: usize = 4 << 20;

/// Members of at least this many bytes are in flight at most one per worker.
const BIG_MEMBER: usize = 256 << 10;

/// Buffers of at least this many bytes are allocated with [`big_buffer`].
pub(crate) const BIG_BUFFER_MIN: usize = 128 << 10;

/// The capacity [`big_buffer`] reserves: just over glibc's largest dynamic mmap threshold
/// (`DEFAULT_MMAP_THRESHOLD_MAX`, 32 MiB on 64-bit).
const BIG_BUFFER_CAPACITY: usize = (32 << 20) + (64 << 10);

/// A buffer for a member or a compressed member of `len` bytes or more (zeroed, length
/// `len`).
///
/// Multi-MiB buffers allocated on one thread and freed on another made glibc's resident set
/// several times what was in use: freeing an mmap-ed block raises glibc's mmap threshold to
/// its size, after which such blocks come from per-thread heaps that are not given back. A
/// block larger than 32 MiB never raises the threshold, so large buffers reserve that much
/// address space: it costs no memory (the kernel backs only the pages written, the
/// allocator's zeroing of a fresh mapping touches none), and freeing it returns every page at
/// once. Other allocators simply reserve the address space.
pub(crate) fn big_buffer(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len.max(BIG_BUFFER_CAPACITY)];
    v.truncate(len);
    v
}

/// One member to compress.
#[derive(Debug)]
pub(crate) struct Job {
    /// Position of the member in the blob (0, 1, 2, ...).
    pub index: usize,
    /// Length of the file contents at the start of `data`: the bytes after them are padding
    /// and tar headers ([`Compressor::compress_member`]).
    pub payload: usize,
    /// Its uncompressed bytes.
    pub data: Vec<u8>,
}

/// A compressed member.
#[derive(Debug)]
pub(crate) struct Done {
    pub index: usize,
    pub compressed: Vec<u8>,
    /// The member's uncompressed length.
    pub len: usize,
    /// The job's buffer, handed back for reuse when it is small. A big one is freed as soon
    /// as it is compressed, not kept while the member waits for its turn.
    pub spare: Option<Vec<u8>>,
}

impl Done {
    /// Bytes this member holds while it waits for its turn.
    fn held(&self) -> usize {
        self.compressed.len() + self.spare.as_ref().map_or(0, Vec::capacity)
    }
}

/// Largest member buffer handed back for reuse.
const REUSED_BUFFER_MAX: usize = 1 << 20;

fn run_job(c: &mut Compressor, job: Job) -> Result<Done> {
    let mut compressed = c.compress_member(&job.data, job.payload)?;
    // A member waiting for its turn holds no slack (shrinking is in place). A big buffer
    // keeps its reservation (see `big_buffer`): its unwritten pages cost nothing.
    if compressed.capacity() < BIG_BUFFER_MIN {
        compressed.shrink_to_fit();
    }
    Ok(Done {
        index: job.index,
        compressed,
        len: job.data.len(),
        spare: (job.data.capacity() <= REUSED_BUFFER_MAX).then_some(job.data),
    })
}

/// Compresses jobs on `threads` workers (inline when 1) and returns them in order.
pub(crate) struct Pool<'scope> {
    inline: Option<Compressor>,
    jobs: Option<SyncSender<Job>>,
    results: Option<Receiver<Result<Done>>>,
    ready: BTreeMap<usize, Done>,
    /// Bytes held by the members in `ready` ([`Done::held`]).
    ready_bytes: usize,
    next: usize,
    submitted: usize,
    /// Members compressed (handed back by a worker), taken or not.
    compressed: usize,
    /// Members that may always be in flight (one per worker).
    min_window: usize,
    /// Most members in flight.
    window: usize,
    /// Most uncompressed bytes in flight.
    byte_window: usize,
    /// Uncompressed bytes of the members not compressed yet (each comes back as `Done::len`).
    in_flight_bytes: usize,
    /// Members of [`BIG_MEMBER`] bytes or more not compressed yet.
    big_in_flight: usize,
    _scope: std::marker::PhantomData<&'scope ()>,
}

impl std::fmt::Debug for Pool<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("next", &self.next)
            .field("submitted", &self.submitted)
            .finish()
    }
}

impl<'scope> Pool<'scope> {
    /// A pool of `threads` workers spawned in `scope` (none when `threads <= 1`).
    pub fn new<'env>(
        scope: &'scope std::thread::Scope<'scope, 'env>,
        codec: Codec,
        threads: usize,
    ) -> Result<Pool<'scope>> {
        let mut pool = Pool {
            inline: None,
            jobs: None,
            results: None,
            ready: BTreeMap::new(),
            ready_bytes: 0,
            next: 0,
            submitted: 0,
            compressed: 0,
            min_window: threads.max(1),
            window: 64 * threads.max(1),
            byte_window: threads.max(1) * SMALL_BYTES_PER_THREAD,
            in_flight_bytes: 0,
            big_in_flight: 0,
            _scope: std::marker::PhantomData,
        };
        if threads <= 1 {
            pool.inline = Some(Compressor::new(codec)?);
            return Ok(pool);
        }
        // Fail early (and on this thread) on a bad level.
        Compressor::new(codec)?;
        let (job_tx, job_rx) = mpsc::sync_channel::<Job>(64 * threads);
        let (res_tx, res_rx) = mpsc::channel::<Result<Done>>();
        let job_rx = Arc::new(Mutex::new(job_rx));
        for _ in 0..threads {
            let job_rx = Arc::clone(&job_rx);
            let res_tx: Sender<Result<Done>> = res_tx.clone();
            scope.spawn(move || {
                let mut c = match Compressor::new(codec) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = res_tx.send(Err(e));
                        return;
                    }
                };
                loop {
                    let job = {
                        let rx = job_rx.lock().unwrap_or_else(PoisonError::into_inner);
                        rx.recv()
                    };
                    let Ok(job) = job else { return };
                    if res_tx.send(run_job(&mut c, job)).is_err() {
                        return;
                    }
                }
            });
        }
        pool.jobs = Some(job_tx);
        pool.results = Some(res_rx);
        Ok(pool)
    }

    /// Members submitted but not yet taken.
    pub fn in_flight(&self) -> usize {
        self.submitted - self.next
    }

    /// True when a member of `len` bytes may not be submitted before [`Pool::wait`] (or a
    /// take) has made room.
    ///
    /// The limits count members not compressed yet: a member compressed ahead of its turn
    /// holds only its compressed bytes and, when small, its input buffer for reuse, so a slow
    /// member at the head does not stop the other workers. Those bytes are bounded by
    /// [`READY_BYTES_MAX`].
    pub fn is_full(&self, len: usize) -> bool {
        let pending = self.submitted - self.compressed;
        self.in_flight() >= self.window
            || self.ready_bytes > READY_BYTES_MAX
            || (pending >= self.min_window
                && (self.in_flight_bytes + len > self.byte_window
                    || (len >= BIG_MEMBER && self.big_in_flight >= self.min_window)))
    }

    /// Queues a member (its `index` must be the number submitted so far).
    pub fn submit(&mut self, job: Job) -> Result<()> {
        debug_assert_eq!(job.index, self.submitted);
        self.submitted += 1;
        self.in_flight_bytes += job.data.len();
        self.big_in_flight += usize::from(job.data.len() >= BIG_MEMBER);
        if let Some(c) = &mut self.inline {
            let done = run_job(c, job)?;
            self.received(done);
            return Ok(());
        }
        let tx = self.jobs.as_ref().ok_or_else(worker_gone)?;
        tx.send(job).map_err(|_| worker_gone())
    }

    /// Files a member handed back by a worker.
    fn received(&mut self, d: Done) {
        self.compressed += 1;
        self.in_flight_bytes -= d.len;
        self.big_in_flight -= usize::from(d.len >= BIG_MEMBER);
        self.ready_bytes += d.held();
        self.ready.insert(d.index, d);
    }

    /// The next member in order if it is already compressed.
    pub fn try_take(&mut self) -> Result<Option<Done>> {
        while let Some(Ok(r)) = self.results.as_ref().map(Receiver::try_recv) {
            self.received(r?);
        }
        Ok(self.pop_ready())
    }

    /// Waits until some member (not necessarily the next in order) is compressed; returns at
    /// once when none is being compressed.
    pub fn wait(&mut self) -> Result<()> {
        if self.submitted == self.compressed {
            return Ok(());
        }
        let rx = self.results.as_ref().ok_or_else(worker_gone)?;
        let d = rx.recv().map_err(|_| worker_gone())??;
        self.received(d);
        Ok(())
    }

    /// The next member in order, waiting for it; `None` when nothing is in flight.
    pub fn take(&mut self) -> Result<Option<Done>> {
        if self.in_flight() == 0 {
            return Ok(None);
        }
        loop {
            if let Some(d) = self.pop_ready() {
                return Ok(Some(d));
            }
            self.wait()?;
        }
    }

    fn pop_ready(&mut self) -> Option<Done> {
        let d = self.ready.remove(&self.next)?;
        self.next += 1;
        self.ready_bytes -= d.held();
        Some(d)
    }
}

impl Drop for Pool<'_> {
    fn drop(&mut self) {
        // Closing the job channel stops the workers; the scope joins them.
        self.jobs = None;
    }
}

fn worker_gone() -> Error {
    Error::io(
        "compressing members",
        std::io::Error::other("a compression worker stopped unexpectedly"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic bytes from a linear congruential generator.
    fn noise(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (x >> 56) as u8
            })
            .collect()
    }

    fn text(n: usize) -> Vec<u8> {
        let words = [
            "layer", "chunk", "member", "the", "of", "gzip", "offset", "TOC",
        ];
        let mut out = Vec::new();
        let picks = noise(n, 99);
        for (i, p) in picks.iter().enumerate() {
            if out.len() >= n {
                break;
            }
            out.extend_from_slice(words[*p as usize % words.len()].as_bytes());
            out.push(if i % 11 == 0 { b'\n' } else { b' ' });
        }
        out.truncate(n);
        out
    }

    #[test]
    fn compressed_bytes_are_recognised_and_others_are_not() {
        assert!(looks_compressed(&noise(64 << 10, 1)));
        // Deflate output of text is near-uniform too.
        let mut c = Compressor::new(Codec::Gzip(9)).unwrap();
        let gz = c.compress(&text(1 << 20)).unwrap();
        assert!(gz.len() > 8192, "{}", gz.len());
        assert!(looks_compressed(&gz));
        assert!(!looks_compressed(&text(64 << 10)));
        assert!(!looks_compressed(&vec![0u8; 64 << 10]));
        // A compressed payload followed by as many tar header bytes (mostly zeros) is not.
        let mut half = noise(8192, 2);
        half.extend_from_slice(&[0u8; 8192]);
        assert!(!looks_compressed(&half));
        // Too short to tell.
        assert!(!looks_compressed(&noise(4095, 3)));
        assert!(looks_compressed(&noise(4096, 3)));
        // Large members are sampled, at both ends and between.
        assert!(looks_compressed(&noise(1 << 20, 5)));
        assert!(!looks_compressed(&text(1 << 20)));
        // Half text, at either end: the sample sees both halves.
        let mut mixed = text(512 << 10);
        mixed.extend_from_slice(&noise(512 << 10, 6));
        assert!(!looks_compressed(&mixed));
        mixed.rotate_left(512 << 10);
        assert!(!looks_compressed(&mixed));
        for len in [(64 << 10) + 1, (64 << 10) + 4095, (1 << 20) + 15] {
            assert!(looks_compressed(&noise(len, 7)), "{len}");
            assert!(!looks_compressed(&text(len)), "{len}");
        }
    }

    /// Members compressed ahead of a slow head member come back in order, and what they hold
    /// while they wait stays bounded (by the waiting limit, plus what was pending when it was
    /// crossed), whatever the timing.
    #[test]
    fn members_waiting_for_their_turn_are_bounded_and_in_order() {
        let held = |pool: &Pool<'_>| -> usize {
            pool.ready
                .values()
                .map(|d| d.compressed.len() + d.spare.as_ref().map_or(0, Vec::capacity))
                .sum()
        };
        // A slow head (1 MiB of text at level 9), then many small members that compress
        // fast and hand their buffers back.
        let mut jobs = vec![text(1 << 20)];
        jobs.extend((0..300).map(|i| vec![i as u8; 100 << 10]));
        let n = jobs.len();
        std::thread::scope(|scope| {
            let mut pool = Pool::new(scope, Codec::Gzip(9), 2).unwrap();
            let (mut order, mut most) = (Vec::new(), 0);
            for (index, data) in jobs.into_iter().enumerate() {
                let len = data.len();
                while pool.is_full(len) {
                    match pool.try_take().unwrap() {
                        Some(d) => order.push(d.index),
                        None => pool.wait().unwrap(),
                    }
                    most = most.max(held(&pool));
                }
                pool.submit(Job {
                    index,
                    payload: 0,
                    data,
                })
                .unwrap();
                while let Some(d) = pool.try_take().unwrap() {
                    order.push(d.index);
                }
                most = most.max(held(&pool));
            }
            while let Some(d) = pool.take().unwrap() {
                order.push(d.index);
            }
            assert_eq!(order, (0..n).collect::<Vec<_>>());
            let bound = READY_BYTES_MAX + 2 * SMALL_BYTES_PER_THREAD + (1 << 20);
            assert!(most <= bound, "{most} > {bound}");
        });
    }

    /// Both libdeflate and flate2 (zlib-rs) read `gz` back as `want`.
    fn assert_gunzips_to(gz: &[u8], want: &[u8]) {
        let mut back = vec![0u8; want.len()];
        let n = libdeflater::Decompressor::new()
            .gzip_decompress(gz, &mut back)
            .unwrap();
        assert_eq!(n, want.len());
        assert!(back == want, "libdeflate read other bytes");
        let mut back = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(gz), &mut back).unwrap();
        assert!(back == want, "flate2 read other bytes");
    }

    #[test]
    fn gzip_header_is_libdeflates() {
        for level in 0..=12 {
            let mut c =
                libdeflater::Compressor::new(libdeflater::CompressionLvl::new(level).unwrap());
            let mut out = vec![0u8; 64];
            c.gzip_compress(b"x", &mut out).unwrap();
            assert_eq!(out[..10], gzip_header(level), "level {level}");
        }
    }

    #[test]
    fn compressed_payloads_are_stored_and_the_rest_deflated() {
        // Padding and headers after the payload.
        let mut tail = vec![0u8; 300];
        tail.extend_from_slice(&text(1024));
        let mut c = Compressor::new(Codec::Gzip(7)).unwrap();
        for len in [4096, 65_535, 65_536, 65_537, 300_000] {
            let mut data = noise(len, 11);
            data.extend_from_slice(&tail);
            let gz = c.compress_member(&data, len).unwrap();
            assert_gunzips_to(&gz, &data);
            // Header, stored blocks of 5 + 65,535 bytes, the deflated tail, trailer.
            let stored = 10 + len + 5 * len.div_ceil(STORED_BLOCK_MAX) + 8;
            assert!(gz.len() > stored, "{len}: {}", gz.len());
            assert!(gz.len() < stored + tail.len() / 2, "{len}: {}", gz.len());
        }
        // No tail: the last stored block is the final one.
        let data = noise(70_000, 12);
        let gz = c.compress_member(&data, data.len()).unwrap();
        assert_eq!(gz.len(), 10 + 70_000 + 2 * 5 + 8);
        assert_gunzips_to(&gz, &data);
        // A payload too short to judge, or that does not look compressed, is deflated whole.
        for (data, payload) in [(noise(4095, 13), 4095), (text(100_000), 100_000)] {
            let gz = c.compress_member(&data, payload).unwrap();
            assert!(gz == c.compress(&data).unwrap());
        }
    }

    #[test]
    fn repeats_are_found_at_any_distance_within_the_window() {
        let base = noise(256 << 10, 14);
        let r = repeated_bytes(&base);
        assert!(r <= 48, "noise: {r}");
        for (dist, seen) in [
            (5000, true),
            (20_001, true),
            (32_000, true),
            (40_000, false),
        ] {
            let mut d = base.clone();
            d.copy_within(50_000..54_000, 50_000 + dist);
            let r = repeated_bytes(&d);
            if seen {
                // Table slots are reused: the further back, the more of a repeat is missed.
                assert!((1500..=5000).contains(&r), "{dist}: {r}");
            } else {
                assert!(r <= 48, "{dist}: {r}");
            }
        }
        assert_eq!(repeated_bytes(&[]), 0);
        assert_eq!(repeated_bytes(&[7; 19]), 0);
    }

    #[test]
    fn compressed_payloads_with_repeats_are_deflated() {
        // Noise repeated: byte counts as uniform as noise, but deflate halves it and more.
        let data = noise(16 << 10, 15).repeat(8);
        assert!(looks_compressed(&data));
        assert!(deflate_gains(&data));
        let gz = Compressor::new(Codec::Gzip(7))
            .unwrap()
            .compress_member(&data, data.len())
            .unwrap();
        assert!(gz.len() < data.len() / 2, "{}", gz.len());
        assert_gunzips_to(&gz, &data);
    }

    #[test]
    fn compressed_payloads_with_repeats_use_level_1() {
        let data = noise(16 << 10, 4).repeat(8);
        let mut l9 = Compressor::new(Codec::Gzip(9)).unwrap();
        let mut l1 = Compressor::new(Codec::Gzip(1)).unwrap();
        let a = l9.compress_member(&data, data.len()).unwrap();
        assert!(a == l1.compress_member(&data, data.len()).unwrap());
        assert_gunzips_to(&a, &data);
        // Text keeps the requested level.
        let t = text(256 << 10);
        assert!(
            l9.compress_member(&t, t.len()).unwrap() != l1.compress_member(&t, t.len()).unwrap()
        );
    }
}
