//! DC-only JPEG decoding: the image at 1/8 scale straight from the DC coefficients.
//!
//! At 1/8 scale every 8×8 block becomes one pixel whose value is the block's mean, which is
//! exactly its DC coefficient (`dc × quant[0] / 8 + 128`). So this decoder Huffman-decodes the
//! scan (the AC codes must still be read to find where the next block starts) but does no
//! dequantisation, inverse DCT, upsampling of full-size planes or colour conversion at full
//! size. Measured (examples/throughput.rs, release) it is what makes the scaled path faster
//! than a full zune-jpeg decode: jpeg-decoder's own 1/8 scale still runs its general
//! machinery and a slower Huffman decoder, and was no faster than zune-jpeg's full decode.
//! Skipping the AC codes is the whole cost, so it is done several codes per table lookup
//! (`Huffman::skip`), with a bit reader that refills 8 bytes at a time outside `FF` bytes.
//!
//! Scope: baseline and extended sequential Huffman JPEGs (SOF0/SOF1, 8-bit), one interleaved
//! scan holding every component, 1 (grey) or 3 (YCbCr, or RGB by the Adobe marker) components,
//! any sampling factors, restart intervals. Anything else (progressive, arithmetic coding,
//! CMYK, several scans) returns `None`, and the caller falls back to `jpeg-decoder`; so does
//! any inconsistency, so that the general decoder produces the authoritative error.

use image::{Rgb, RgbImage};

/// Canonical Huffman table with a 9-bit fast lookup.
struct Huffman {
    /// `(symbol, code length)` for every 9-bit prefix whose code is ≤ 9 bits; length 0 = slow path.
    fast: Box<[(u8, u8); 512]>,
    /// AC skipping, several symbols per lookup: for every `SKIP_BITS`-bit window, the bits taken
    /// by the whole `(run, size)` codes *and their value bits* that fit in it, and how far they
    /// advance the coefficient index (`EOB` set when the last one ends the block). `(0, 0)`:
    /// not even one symbol fits, take the slow path. Built for every table, used for AC ones.
    skip: Box<[(u8, u8); 1 << SKIP_BITS]>,
    /// For lengths 1..=16: the largest code of that length (+1), or -1 when none.
    max_code: [i32; 18],
    /// For lengths 1..=16: index of the first symbol minus the first code.
    offset: [i32; 17],
    symbols: Vec<u8>,
}

impl Huffman {
    fn new(counts: &[u8; 16], symbols: &[u8]) -> Option<Self> {
        let mut fast = Box::new([(0u8, 0u8); 512]);
        let mut max_code = [-1i32; 18];
        let mut offset = [0i32; 17];
        let mut code: i32 = 0;
        let mut k: usize = 0;
        for len in 1..=16usize {
            let n = usize::from(counts[len - 1]);
            offset[len] = k as i32 - code;
            for _ in 0..n {
                let symbol = *symbols.get(k)?;
                if len <= 9 {
                    let shift = 9 - len;
                    let first = (code as usize) << shift;
                    for entry in fast.get_mut(first..first + (1 << shift))? {
                        *entry = (symbol, len as u8);
                    }
                }
                code += 1;
                k += 1;
            }
            if n > 0 {
                max_code[len] = code;
            }
            if code > (1 << len) {
                return None; // over-subscribed table
            }
            code <<= 1;
        }
        max_code[17] = i32::MAX; // sentinel: a 17-bit code means corrupt data
        let mut table =
            Self { fast, skip: Box::new([(0, 0); 1 << SKIP_BITS]), max_code, offset, symbols: symbols[..k].to_vec() };
        table.build_skip();
        Some(table)
    }

    /// The symbol whose code starts `window` (left-aligned in 16 bits) and its code length,
    /// if that code is at most `limit` bits long.
    fn lookup(&self, window: u32, limit: u32) -> Option<(u8, u32)> {
        (1..=limit.min(16)).find_map(|len| {
            let code = (window >> (16 - len)) as i32;
            (code < self.max_code[len as usize])
                .then(|| self.symbols.get((code + self.offset[len as usize]) as usize).map(|&s| (s, len)))
                .flatten()
        })
    }

    fn build_skip(&mut self) {
        for window in 0..1u32 << SKIP_BITS {
            let (mut used, mut advance) = (0u32, 0u32);
            loop {
                let rest = (window << (16 - SKIP_BITS + used)) & 0xFFFF;
                let Some((rs, len)) = self.lookup(rest, SKIP_BITS - used) else { break };
                let (run, size) = (u32::from(rs >> 4), u32::from(rs & 15));
                if used + len + size > SKIP_BITS {
                    break;
                }
                used += len + size;
                if size == 0 && run != 15 {
                    // End of block: counted as one more step, so that "the index before it
                    // stays below 64" reads `k + advance <= 64` like the other entries.
                    advance = (advance + 1) | EOB;
                    break;
                }
                advance += run + 1;
                if advance >= 64 {
                    break;
                }
            }
            if used > 0 {
                self.skip[window as usize] = (used as u8, advance as u8);
            }
        }
    }
}

/// Window of the multi-symbol AC skip table (4,096 entries of 2 bytes: fits in L1 with room).
const SKIP_BITS: u32 = 12;
/// Flag in a skip entry's advance: its last symbol is an end of block.
const EOB: u32 = 0x80;

/// Bit reader over entropy-coded data: removes stuffed zeros, stops at markers (then yields
/// zero bits, as decoders conventionally do).
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
    buffer: u64,
    count: u32,
    marker: Option<u8>,
}

impl<'a> Bits<'a> {
    fn new(data: &'a [u8], pos: usize) -> Self {
        Self { data, pos, buffer: 0, count: 0, marker: None }
    }

    #[inline]
    fn refill(&mut self) {
        // Fast path: as many whole bytes as fit, in one load, when none of them is 0xFF.
        if self.marker.is_none() {
            if let Some(chunk) = self.data.get(self.pos..self.pos + 8) {
                let word = u64::from_be_bytes(chunk.try_into().unwrap_or([0xFF; 8]));
                let take = (64 - self.count) / 8;
                let mask = !(u64::MAX.checked_shr(8 * take).unwrap_or(0));
                // A byte of `word` is 0xFF exactly where `!word` has a zero byte; this flags
                // every zero byte (and at worst some above one: then the slow path runs).
                let inverted = !word;
                let ff = inverted.wrapping_sub(0x0101_0101_0101_0101) & !inverted & 0x8080_8080_8080_8080;
                if ff & mask == 0 {
                    self.buffer |= (word & mask) >> self.count;
                    self.count += 8 * take;
                    self.pos += take as usize;
                    return;
                }
            }
        }
        while self.count <= 56 {
            let mut byte = 0u8;
            if self.marker.is_none() {
                if let Some(&b) = self.data.get(self.pos) {
                    if b == 0xFF {
                        match self.data.get(self.pos + 1) {
                            Some(0x00) => {
                                byte = 0xFF;
                                self.pos += 2;
                            }
                            Some(&m) => self.marker = Some(m),
                            None => self.marker = Some(0xD9),
                        }
                    } else {
                        byte = b;
                        self.pos += 1;
                    }
                } else {
                    self.marker = Some(0xD9);
                }
            }
            self.buffer |= u64::from(byte) << (56 - self.count);
            self.count += 8;
        }
    }

    #[inline]
    fn peek(&mut self, n: u32) -> u32 {
        if self.count < n {
            self.refill();
        }
        (self.buffer >> (64 - n)) as u32
    }

    #[inline]
    fn consume(&mut self, n: u32) {
        self.buffer <<= n;
        self.count -= n;
    }

    #[inline]
    fn decode(&mut self, table: &Huffman) -> Option<u8> {
        if self.count < 16 {
            self.refill();
        }
        let (symbol, len) = table.fast[(self.buffer >> 55) as usize];
        if len > 0 {
            self.consume(u32::from(len));
            return Some(symbol);
        }
        let mut len = 10;
        let mut code = (self.buffer >> 54) as i32;
        while code >= table.max_code[len] {
            len += 1;
            if len > 16 {
                return None;
            }
            code = (self.buffer >> (64 - len)) as i32;
        }
        self.consume(len as u32);
        table.symbols.get((code + table.offset[len]) as usize).copied()
    }

    /// Skips the AC coefficients of one block whose index is now `k` (1 after the DC).
    #[inline]
    fn skip_ac(&mut self, table: &Huffman) -> Option<()> {
        let mut k = 1u32;
        loop {
            if self.count < 16 {
                self.refill();
            }
            let (used, advance) = table.skip[(self.buffer >> (64 - SKIP_BITS)) as usize];
            let step = u32::from(advance & !(EOB as u8));
            if used > 0 && k + step <= 64 {
                self.consume(u32::from(used));
                if u32::from(advance) & EOB != 0 {
                    return Some(());
                }
                k += step;
            } else {
                // A long code, or one that would run past the block's end: one symbol at a time.
                let rs = self.decode(table)?;
                let (run, size) = (rs >> 4, rs & 15);
                self.skip(size);
                if size == 0 && run != 15 {
                    return Some(()); // end of block
                }
                k += u32::from(run) + 1; // ZRL (15, 0) skips 16
            }
            if k >= 64 {
                return Some(());
            }
        }
    }

    #[inline]
    fn receive_extend(&mut self, size: u8) -> i32 {
        if size == 0 {
            return 0;
        }
        let size = u32::from(size.min(16));
        let value = self.peek(size) as i32;
        self.consume(size);
        if value < (1 << (size - 1)) {
            value - (1 << size) + 1
        } else {
            value
        }
    }

    #[inline]
    fn skip(&mut self, n: u8) {
        if n > 0 {
            let n = u32::from(n.min(16));
            self.peek(n);
            self.consume(n);
        }
    }

    /// At a restart interval: drop the partial byte, expect RSTn, continue after it.
    fn restart(&mut self) -> Option<()> {
        self.buffer = 0;
        self.count = 0;
        match self.marker.take() {
            Some(m) if (0xD0..=0xD7).contains(&m) => {
                self.pos += 2;
                Some(())
            }
            Some(_) => None,
            None => {
                // The marker was not reached yet (padding bits): find it.
                while self.data.get(self.pos) == Some(&0xFF) && self.data.get(self.pos + 1) == Some(&0xFF) {
                    self.pos += 1;
                }
                match (self.data.get(self.pos), self.data.get(self.pos + 1)) {
                    (Some(0xFF), Some(m)) if (0xD0..=0xD7).contains(m) => {
                        self.pos += 2;
                        Some(())
                    }
                    _ => None,
                }
            }
        }
    }
}

struct Component {
    id: u8,
    h: usize,
    v: usize,
    quant: usize,
    dc_table: usize,
    ac_table: usize,
}

fn be16(b: &[u8], at: usize) -> Option<usize> {
    Some(usize::from(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?])))
}

/// Decodes a baseline JPEG at 1/8 scale; `None` when out of scope or inconsistent.
pub(crate) fn decode_dc(b: &[u8]) -> Option<RgbImage> {
    let mut quant0 = [0u16; 4];
    let mut dc_tables: [Option<Huffman>; 4] = [None, None, None, None];
    let mut ac_tables: [Option<Huffman>; 4] = [None, None, None, None];
    let mut components: Vec<Component> = Vec::new();
    let (mut width, mut height) = (0usize, 0usize);
    let mut restart_interval = 0usize;
    let mut adobe_rgb = false;
    let mut pos = 2;
    let scan_start = loop {
        while b.get(pos) == Some(&0xFF) && b.get(pos + 1) == Some(&0xFF) {
            pos += 1;
        }
        if *b.get(pos)? != 0xFF {
            return None;
        }
        let marker = *b.get(pos + 1)?;
        let len = be16(b, pos + 2)?;
        let payload = b.get(pos + 4..pos + 2 + len)?;
        pos += 2 + len;
        match marker {
            0xDB => {
                let mut p = payload;
                while !p.is_empty() {
                    let (precision, id) = (p[0] >> 4, usize::from(p[0] & 15));
                    let size = if precision == 0 { 64 } else { 128 };
                    let table = p.get(1..1 + size)?;
                    *quant0.get_mut(id)? =
                        if precision == 0 { u16::from(table[0]) } else { u16::from_be_bytes([table[0], table[1]]) };
                    p = &p[1 + size..];
                }
            }
            0xC4 => {
                let mut p = payload;
                while !p.is_empty() {
                    let (class, id) = (p[0] >> 4, usize::from(p[0] & 15));
                    let counts: [u8; 16] = p.get(1..17)?.try_into().ok()?;
                    let total: usize = counts.iter().map(|&c| usize::from(c)).sum();
                    let table = Huffman::new(&counts, p.get(17..17 + total)?)?;
                    match class {
                        0 => *dc_tables.get_mut(id)? = Some(table),
                        1 => *ac_tables.get_mut(id)? = Some(table),
                        _ => return None,
                    }
                    p = &p[17 + total..];
                }
            }
            0xC0 | 0xC1 => {
                if payload.first() != Some(&8) || !components.is_empty() {
                    return None;
                }
                height = be16(payload, 1)?;
                width = be16(payload, 3)?;
                let n = usize::from(*payload.get(5)?);
                if !(n == 1 || n == 3) || width == 0 || height == 0 {
                    return None;
                }
                for i in 0..n {
                    let c = payload.get(6 + 3 * i..9 + 3 * i)?;
                    let (h, v) = (usize::from(c[1] >> 4), usize::from(c[1] & 15));
                    if !(1..=4).contains(&h) || !(1..=4).contains(&v) || c[2] > 3 {
                        return None;
                    }
                    components.push(Component { id: c[0], h, v, quant: usize::from(c[2]), dc_table: 0, ac_table: 0 });
                }
            }
            0xDD => restart_interval = be16(payload, 0)?,
            0xEE if payload.starts_with(b"Adobe") && payload.len() >= 12 => adobe_rgb = payload[11] == 0,
            0xDA => {
                let n = usize::from(*payload.first()?);
                if components.is_empty() || n != components.len() {
                    return None; // several scans (non-interleaved or progressive order)
                }
                for i in 0..n {
                    let s = payload.get(1 + 2 * i..3 + 2 * i)?;
                    let c = components.get_mut(i)?;
                    if c.id != s[0] {
                        return None;
                    }
                    c.dc_table = usize::from(s[1] >> 4);
                    c.ac_table = usize::from(s[1] & 15);
                    if c.dc_table > 3 || c.ac_table > 3 {
                        return None;
                    }
                }
                break pos;
            }
            // Progressive, lossless, hierarchical, arithmetic: not ours.
            0xC2 | 0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF => return None,
            0xD9 => return None,
            _ => {}
        }
    };

    let hmax = components.iter().map(|c| c.h).max()?;
    let vmax = components.iter().map(|c| c.v).max()?;
    let single = components.len() == 1;
    // A single-component scan is not interleaved: one block per MCU, no padding to factors.
    let (mcus_x, mcus_y) = if single {
        (width.div_ceil(8), height.div_ceil(8))
    } else {
        (width.div_ceil(8 * hmax), height.div_ceil(8 * vmax))
    };
    let grids: Vec<(usize, usize)> =
        components.iter().map(|c| if single { (mcus_x, mcus_y) } else { (mcus_x * c.h, mcus_y * c.v) }).collect();
    let mut planes: Vec<Vec<u8>> = grids.iter().map(|(w, h)| vec![0u8; w * h]).collect();
    let tables: Vec<(&Huffman, &Huffman, i64)> = components
        .iter()
        .map(|c| Some((dc_tables[c.dc_table].as_ref()?, ac_tables[c.ac_table].as_ref()?, i64::from(quant0[c.quant]))))
        .collect::<Option<_>>()?;
    let mut bits = Bits::new(b, scan_start);
    let mut predictors = vec![0i32; components.len()];
    let mut mcu_count = 0usize;
    for my in 0..mcus_y {
        for mx in 0..mcus_x {
            if restart_interval > 0 && mcu_count > 0 && mcu_count.is_multiple_of(restart_interval) {
                bits.restart()?;
                predictors.iter_mut().for_each(|p| *p = 0);
            }
            mcu_count += 1;
            for (ci, c) in components.iter().enumerate() {
                let (dc_table, ac_table, q) = tables[ci];
                let (bh, bv) = if single { (1, 1) } else { (c.h, c.v) };
                for by in 0..bv {
                    for bx in 0..bh {
                        let size = bits.decode(dc_table)?;
                        if size > 11 {
                            return None;
                        }
                        // Clamped so that corrupt data cannot overflow (valid values stay
                        // within ±2^11 × 8).
                        predictors[ci] = (predictors[ci] + bits.receive_extend(size)).clamp(-65_536, 65_536);
                        bits.skip_ac(ac_table)?;
                        // The 1×1 inverse DCT, rounded as jpeg-decoder's 1/8 scale does.
                        let value = ((i64::from(predictors[ci]) * q + 1024) / 8).clamp(0, 255) as u8;
                        let (gw, _) = grids[ci];
                        let (x, y) = (mx * bh + bx, my * bv + by);
                        planes[ci][y * gw + x] = value;
                    }
                }
            }
        }
    }

    let (out_w, out_h) = (width.div_ceil(8), height.div_ceil(8));
    // Subsampled chroma is interpolated bilinearly at centred positions (libjpeg's "fancy
    // upsampling" is this triangle filter), so colours match a full decoder's.
    let sample = |ci: usize, x: usize, y: usize| -> f32 {
        let c = &components[ci];
        let (gw, gh) = grids[ci];
        let at = |sx: usize, sy: usize| f32::from(planes[ci][sy.min(gh - 1) * gw + sx.min(gw - 1)]);
        if single || (c.h == hmax && c.v == vmax) {
            return at(x, y);
        }
        let fx = ((x as f32 + 0.5) * c.h as f32 / hmax as f32 - 0.5).max(0.0);
        let fy = ((y as f32 + 0.5) * c.v as f32 / vmax as f32 - 0.5).max(0.0);
        let (x0, y0) = (fx as usize, fy as usize);
        let (tx, ty) = (fx - x0 as f32, fy - y0 as f32);
        let top = at(x0, y0) * (1.0 - tx) + at(x0 + 1, y0) * tx;
        let bottom = at(x0, y0 + 1) * (1.0 - tx) + at(x0 + 1, y0 + 1) * tx;
        top * (1.0 - ty) + bottom * ty
    };
    let image = RgbImage::from_fn(out_w as u32, out_h as u32, |x, y| {
        let (x, y) = (x as usize, y as usize);
        if single {
            let l = sample(0, x, y) as u8;
            return Rgb([l, l, l]);
        }
        let (a, b2, c) = (sample(0, x, y), sample(1, x, y), sample(2, x, y));
        if adobe_rgb {
            return Rgb([a as u8, b2 as u8, c as u8]);
        }
        let (cb, cr) = (b2 - 128.0, c - 128.0);
        let to = |v: f32| v.round().clamp(0.0, 255.0) as u8;
        Rgb([to(a + 1.402 * cr), to(a - 0.344_136 * cb - 0.714_136 * cr), to(a + 1.772 * cb)])
    });
    Some(image)
}

#[cfg(test)]
mod tests;
