//! Bridges between the blocking world (gix-pack, zstd, files) and the async SQL side.
//!
//! Pack generation and indexing are synchronous, CPU-bound and run in
//! `spawn_blocking`; chunk rows are written and read by async sqlx. They meet over a
//! bounded channel of chunks, so at most `capacity + 2` chunks (each ≤ 8 MiB) are in
//! memory whatever the size of the repository, and a slow database applies
//! back-pressure to the pack writer.

use std::io::{self, Read, Write};

use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

/// How many finished chunks may wait between the two sides.
pub(crate) const CHANNEL_CAPACITY: usize = 2;

/// A `Write` that cuts its input into chunks of exactly `chunk_size` bytes (the last
/// one shorter) and sends each one with its SHA-256 over the channel, blocking when it
/// is full.
pub(crate) struct ChunkSink {
    tx: mpsc::Sender<(Vec<u8>, [u8; 32])>,
    buf: Vec<u8>,
    chunk_size: usize,
}

impl ChunkSink {
    pub(crate) fn new(tx: mpsc::Sender<(Vec<u8>, [u8; 32])>, chunk_size: usize) -> Self {
        ChunkSink { tx, buf: Vec::with_capacity(chunk_size), chunk_size }
    }

    fn send_buf(&mut self) -> io::Result<()> {
        let full = std::mem::replace(&mut self.buf, Vec::with_capacity(self.chunk_size));
        // Hash here, on the blocking thread, so the async side only talks to the database.
        let digest: [u8; 32] = Sha256::digest(&full).into();
        self.tx
            .blocking_send((full, digest))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the chunk writer stopped"))
    }

    /// Send the last, possibly short, chunk.
    pub(crate) fn finish(mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.send_buf()?;
        }
        Ok(())
    }
}

impl Write for ChunkSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = self.chunk_size - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == self.chunk_size {
            self.send_buf()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Chunks are cut by size only; a flush must not produce short chunks.
        Ok(())
    }
}

/// A `Read` over chunks arriving on a channel; the end of the channel is the end of input.
pub(crate) struct ChunkSource {
    rx: mpsc::Receiver<Vec<u8>>,
    current: Vec<u8>,
    pos: usize,
}

impl ChunkSource {
    pub(crate) fn new(rx: mpsc::Receiver<Vec<u8>>) -> Self {
        ChunkSource { rx, current: Vec::new(), pos: 0 }
    }
}

impl Read for ChunkSource {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.current.len() {
            match self.rx.blocking_recv() {
                Some(next) => {
                    self.current = next;
                    self.pos = 0;
                }
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.current.len() - self.pos);
        out[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Counts and hashes everything written through it.
pub(crate) struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> HashingWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        HashingWriter { inner, hasher: Sha256::new(), bytes: 0 }
    }

    /// The inner writer, the byte count and the hex SHA-256 of what passed through.
    pub(crate) fn finish(self) -> (W, u64, String) {
        (self.inner, self.bytes, hex::encode(self.hasher.finalize()))
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(data)?;
        self.hasher.update(&data[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Counts and hashes everything read through it.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> HashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        HashingReader { inner, hasher: Sha256::new(), bytes: 0 }
    }

    /// Read the rest of the input (so the hash covers all of it), then return the byte
    /// count and the hex SHA-256.
    pub(crate) fn drain_and_finish(mut self) -> io::Result<(u64, String)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((self.bytes, hex::encode(self.hasher.finalize())))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(out)?;
        self.hasher.update(&out[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha256_hex(data: &[u8]) -> String {
        hex::encode(Sha256::digest(data))
    }

    fn cut(input_len: usize, chunk_size: usize, write_size: usize) -> Vec<usize> {
        let (tx, mut rx) = mpsc::channel(1024);
        let data: Vec<u8> = (0..input_len).map(|i| (i % 251) as u8).collect();
        let mut sink = ChunkSink::new(tx, chunk_size);
        for piece in data.chunks(write_size.max(1)) {
            sink.write_all(piece).expect("the receiver is alive");
        }
        sink.finish().expect("the receiver is alive");
        let mut sizes = Vec::new();
        let mut joined = Vec::new();
        while let Ok((chunk, digest)) = rx.try_recv() {
            assert_eq!(hex::encode(digest), sha256_hex(&chunk), "each chunk travels with its digest");
            sizes.push(chunk.len());
            joined.extend_from_slice(&chunk);
        }
        assert_eq!(joined, data, "chunks concatenate to the input");
        sizes
    }

    #[test]
    fn chunks_are_cut_at_exactly_the_chunk_size_whatever_the_write_sizes() {
        let table: &[(usize, usize, usize, &[usize])] = &[
            // input, chunk, write size, expected chunk sizes
            (0, 4, 3, &[]),
            (3, 4, 3, &[3]),
            (4, 4, 1, &[4]),
            (9, 4, 7, &[4, 4, 1]),
            (12, 4, 100, &[4, 4, 4]),
            (10, 3, 2, &[3, 3, 3, 1]),
        ];
        for &(input, chunk, write, expected) in table {
            assert_eq!(cut(input, chunk, write), expected, "input {input}, chunk {chunk}, writes of {write}");
        }
    }

    #[test]
    fn a_chunk_source_reads_back_what_was_sent_and_ends_when_the_sender_is_gone() {
        let (tx, rx) = mpsc::channel(8);
        tx.try_send(b"hello ".to_vec()).expect("room in the channel");
        tx.try_send(Vec::new()).expect("room in the channel");
        tx.try_send(b"world".to_vec()).expect("room in the channel");
        drop(tx);
        let mut out = String::new();
        ChunkSource::new(rx).read_to_string(&mut out).expect("in-memory read");
        assert_eq!(out, "hello world");
    }

    #[test]
    fn hashing_reader_and_writer_agree_with_a_one_shot_digest() {
        let data = b"camledger".repeat(1000);
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(&data).expect("vec write");
        let (inner, n, hex_w) = w.finish();
        assert_eq!(inner, data);
        assert_eq!(n, data.len() as u64);
        assert_eq!(hex_w, sha256_hex(&data));
        let (n, hex_r) = HashingReader::new(&data[..]).drain_and_finish().expect("slice read");
        assert_eq!((n, hex_r), (data.len() as u64, sha256_hex(&data)));
    }
}
