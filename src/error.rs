//! Reporting misuse: one line on stderr, then abort. Nothing here allocates:
//! messages are assembled in a fixed stack buffer.

use crate::os;

/// A fixed-capacity line buffer; text past its end is dropped.
pub struct Line {
    buf: [u8; 200],
    len: usize,
}

impl Line {
    pub fn new() -> Line {
        Line {
            buf: [0; 200],
            len: 0,
        }
    }

    fn byte(&mut self, b: u8) {
        if let Some(slot) = self.buf.get_mut(self.len) {
            *slot = b;
            self.len += 1;
        }
    }

    pub fn str(&mut self, s: &str) -> &mut Line {
        for &b in s.as_bytes() {
            self.byte(b);
        }
        self
    }

    pub fn hex(&mut self, v: usize) -> &mut Line {
        self.str("0x");
        let mut digits = [0u8; 16];
        let mut n = 0;
        let mut x = v;
        loop {
            digits[n] = b"0123456789abcdef"[x & 15];
            n += 1;
            x >>= 4;
            if x == 0 {
                break;
            }
        }
        while n > 0 {
            n -= 1;
            self.byte(digits[n]);
        }
        self
    }

    pub fn dec(&mut self, v: usize) -> &mut Line {
        let mut digits = [0u8; 20];
        let mut n = 0;
        let mut x = v;
        loop {
            digits[n] = b'0' + (x % 10) as u8;
            n += 1;
            x /= 10;
            if x == 0 {
                break;
            }
        }
        while n > 0 {
            n -= 1;
            self.byte(digits[n]);
        }
        self
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Prints `fortalloc: <what> at <addr> (<detail>)` and aborts.
#[cold]
#[inline(never)]
pub fn fatal(what: &str, addr: usize, detail: &str, block_size: usize) -> ! {
    let mut line = Line::new();
    line.str("fortalloc: ").str(what).str(" at ").hex(addr).str(" (");
    if block_size != 0 {
        line.str(detail).str(" a ").dec(block_size).str("-byte block)\n");
    } else {
        line.str(detail).str(")\n");
    }
    os::write_stderr(line.as_bytes());
    os::abort()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_hex_and_decimal_without_allocating() {
        let mut line = Line::new();
        line.str("x ")
            .hex(0xdead_beef)
            .str(" ")
            .dec(4096)
            .str(" ")
            .hex(0)
            .dec(0);
        assert_eq!(line.as_bytes(), b"x 0xdeadbeef 4096 0x00");
    }

    #[test]
    fn long_lines_are_truncated_not_overflowed() {
        let mut line = Line::new();
        for _ in 0..100 {
            line.str("abcdefgh");
        }
        assert_eq!(line.as_bytes().len(), 200);
    }
}
