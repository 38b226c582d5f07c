//! Reporting misuse: one line on stderr, then abort. Nothing here allocates:
//! messages are assembled in a fixed stack buffer.

use core::sync::atomic::{AtomicUsize, Ordering};

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

    /// Appends a byte of untrusted text: printable ASCII as is, else `?`.
    pub fn byte_lossy(&mut self, b: u8) -> &mut Line {
        self.byte(if b.is_ascii_graphic() || b == b' ' {
            b
        } else {
            b'?'
        });
        self
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

    /// Appends a byte count as people read it: `512 B`, `64 KiB`,
    /// `1.5 MiB`, `8 GiB` (one decimal where the unit does not divide it).
    pub fn bytes(&mut self, v: u64) -> &mut Line {
        const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
        let mut unit = 0;
        while unit + 1 < UNITS.len() && v >= 1u64 << (10 * (unit + 1)) {
            unit += 1;
        }
        let scale = 1u64 << (10 * unit);
        let whole = v / scale;
        // Tenths, rounded down so `1023.99 KiB` never reads `1024.0 KiB`.
        let tenths = (v % scale) * 10 / scale;
        self.dec(whole as usize);
        if tenths != 0 {
            self.str(".").dec(tenths as usize);
        }
        self.str(" ").str(UNITS[unit])
    }

    /// Appends a null-terminated string of untrusted text (see
    /// [`Line::byte_lossy`]).
    pub fn c_str(&mut self, s: &core::ffi::CStr) -> &mut Line {
        for &b in s.to_bytes() {
            self.byte_lossy(b);
        }
        self
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// The entry point that was handed a pointer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    Free,
    Realloc,
    UsableSize,
}

impl Entry {
    /// How a pointer that is no live block is named in the message.
    fn invalid(self) -> &'static str {
        match self {
            Entry::Free => "invalid free",
            Entry::Realloc => "invalid pointer to realloc",
            Entry::UsableSize => "invalid pointer to usable_size",
        }
    }

    /// What handing this entry point a block that was freed is.
    pub fn of_freed_block(self) -> ErrorKind {
        match self {
            Entry::Free => ErrorKind::DoubleFree,
            Entry::Realloc | Entry::UsableSize => ErrorKind::InvalidPointer,
        }
    }
}

/// Why a pointer is no live block's start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotABlock {
    /// Outside every segment: never fortalloc's.
    Foreign,
    /// In a segment, on no page in use.
    NoLiveBlock,
    /// Inside a block, past its start.
    Interior,
    /// Where a block of the page could be but never was handed out.
    NeverAllocated,
}

impl NotABlock {
    fn detail(self) -> &'static str {
        match self {
            NotABlock::Foreign => "not allocated by fortalloc",
            NotABlock::NoLiveBlock => "no live block there",
            NotABlock::Interior => "interior pointer into",
            NotABlock::NeverAllocated => "never-allocated slot of",
        }
    }
}

/// Prints `fortalloc: <entry's words> at <addr> (<why>[ a <n>-byte
/// block])` and aborts: every build stops at a pointer that is no block
/// of fortalloc's, since freeing or reading through it would corrupt
/// memory it does not own.
#[cold]
#[inline(never)]
pub fn not_a_block(entry: Entry, why: NotABlock, addr: usize, block_size: usize) -> ! {
    let mut line = Line::new();
    line.str("fortalloc: ")
        .str(entry.invalid())
        .str(" at ")
        .hex(addr)
        .str(" (")
        .str(why.detail());
    if block_size != 0 {
        line.str(" a ").dec(block_size).str("-byte block");
    }
    line.str(")\n");
    os::write_stderr(line.as_bytes());
    os::abort()
}

/// Prints `fortalloc: the kernel would not <what> <n> bytes at <addr>`
/// and aborts: a change of protection the allocator's safety depends on
/// failed (the process is out of kernel mappings or memory).
#[cold]
#[inline(never)]
pub fn kernel_refused(what: &str, addr: usize, bytes: usize) -> ! {
    let mut line = Line::new();
    line.str("fortalloc: the kernel would not ")
        .str(what)
        .str(" ")
        .dec(bytes)
        .str(" bytes at ")
        .hex(addr)
        .str("\n");
    os::write_stderr(line.as_bytes());
    os::abort()
}

/// Prints `fortalloc: <message>` and aborts: for conditions that are not
/// about a pointer (the process cannot go on safely at all).
#[cold]
#[inline(never)]
pub fn fatal_message(message: &str) -> ! {
    let mut line = Line::new();
    line.str("fortalloc: ").str(message).str("\n");
    os::write_stderr(line.as_bytes());
    os::abort()
}

/// What a hardened-build check found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A block freed a second time.
    DoubleFree,
    /// A free-list link that does not lead to a block of its page: the
    /// freed block was written to (use after free) or forged.
    CorruptedFreeList,
    /// The bytes past the requested size were changed: a heap overflow.
    BufferOverflow,
    /// The byte just before a small or medium block (the last of the slot
    /// before it) was changed: a heap underflow. The address is the block
    /// written below.
    BufferUnderflow,
    /// A freed block was written to before it was handed out again.
    WriteAfterFree,
    /// `realloc` or `usable_size` of a block that is not live.
    InvalidPointer,
    /// A sized free (C++ sized delete, `free_sized`) whose size does not
    /// belong to the block.
    SizeMismatch,
}

impl ErrorKind {
    /// The words the one-line message starts with.
    pub fn message(self) -> &'static str {
        match self {
            ErrorKind::DoubleFree => "double free",
            ErrorKind::CorruptedFreeList => "corrupted free list",
            ErrorKind::BufferOverflow => "heap buffer overflow",
            ErrorKind::BufferUnderflow => "heap buffer underflow",
            ErrorKind::WriteAfterFree => "write after free",
            ErrorKind::InvalidPointer => "invalid pointer (not a live block)",
            ErrorKind::SizeMismatch => "sized free with the wrong size",
        }
    }
}

/// A detection, as given to an error handler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorInfo {
    /// What was found.
    pub kind: ErrorKind,
    /// The block (or link) concerned.
    pub address: usize,
    /// Size of the block's size class, 0 if unknown.
    pub block_size: usize,
    /// The size the program asked for when it got the block, where the
    /// build records it (the `canary` defence) and it is still readable;
    /// 0 if unknown.
    pub requested_size: usize,
}

/// Called instead of aborting. It must not allocate through fortalloc's
/// heap of the calling thread in a way that re-enters the failing path, and
/// when it returns fortalloc carries on safely: the bad free is ignored, a
/// corrupted list is dropped (its blocks leak), a damaged block is not
/// handed out.
pub type ErrorHandler = fn(&ErrorInfo);

static HANDLER: AtomicUsize = AtomicUsize::new(0);

/// Installs (or with `None` removes) a handler for the hardened build's
/// detections; without one they print a line and abort.
pub fn set_error_handler(handler: Option<ErrorHandler>) {
    HANDLER.store(handler.map_or(0, |h| h as usize), Ordering::Release);
}

/// Reports a detection: to the handler if one is installed (and returns),
/// else prints `fortalloc: <what> at <address> (<n>-byte block)` and aborts.
#[cold]
#[inline(never)]
pub fn report(kind: ErrorKind, address: usize, block_size: usize) {
    report_sized(kind, address, block_size, 0)
}

/// [`report`], naming the size the program asked for (`requested`, 0 if
/// unknown) rather than the size class: `(48-byte block)` for a request
/// of 48 bytes in a 56-byte class. An overflow also names the class's
/// size where it differs, since the bytes between decide what the canary
/// saw: `(48-byte block in a 56-byte slot)`.
#[cold]
#[inline(never)]
pub fn report_sized(kind: ErrorKind, address: usize, block_size: usize, requested: usize) {
    let h = HANDLER.load(Ordering::Acquire);
    if h != 0 {
        // SAFETY: only `set_error_handler` stores here, and it stores a
        // valid `ErrorHandler` function pointer.
        let handler: ErrorHandler = unsafe { core::mem::transmute::<usize, ErrorHandler>(h) };
        handler(&ErrorInfo {
            kind,
            address,
            block_size,
            requested_size: requested,
        });
        return;
    }
    let mut line = Line::new();
    line.str("fortalloc: ")
        .str(kind.message())
        .str(" at ")
        .hex(address);
    describe_block(&mut line, kind, block_size, requested);
    line.str("\n");
    os::write_stderr(line.as_bytes());
    os::abort()
}

/// The parenthesis after a report's address.
fn describe_block(line: &mut Line, kind: ErrorKind, block_size: usize, requested: usize) {
    let overflow = matches!(kind, ErrorKind::BufferOverflow | ErrorKind::BufferUnderflow);
    if requested != 0 && overflow && requested != block_size && block_size != 0 {
        line.str(" (")
            .dec(requested)
            .str("-byte block in a ")
            .dec(block_size)
            .str("-byte slot)");
    } else if requested != 0 {
        line.str(" (").dec(requested).str("-byte block)");
    } else if block_size != 0 {
        line.str(" (").dec(block_size).str("-byte block)");
    } else {
        // The block's page was freed and reused since: its size is gone.
        line.str(" (block of a freed page)");
    }
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
    fn byte_counts_read_in_binary_units() {
        let reads = |v: u64, want: &str| {
            let mut line = Line::new();
            line.bytes(v);
            assert_eq!(core::str::from_utf8(line.as_bytes()), Ok(want), "{v}");
        };
        reads(0, "0 B");
        reads(1023, "1023 B");
        reads(1024, "1 KiB");
        reads(512 << 10, "512 KiB");
        reads(3 << 19, "1.5 MiB");
        reads((1 << 20) - 1, "1023.9 KiB");
        reads(24_009_896, "22.8 MiB");
        reads(8 << 30, "8 GiB");
        reads(u64::MAX, "15.9 EiB");
    }

    #[test]
    fn reports_name_the_requested_size_and_the_slot_where_it_matters() {
        let reads = |kind, bsize, requested, want: &str| {
            let mut line = Line::new();
            describe_block(&mut line, kind, bsize, requested);
            assert_eq!(core::str::from_utf8(line.as_bytes()), Ok(want));
        };
        reads(ErrorKind::DoubleFree, 56, 48, " (48-byte block)");
        reads(ErrorKind::DoubleFree, 56, 0, " (56-byte block)");
        reads(
            ErrorKind::BufferOverflow,
            56,
            48,
            " (48-byte block in a 56-byte slot)",
        );
        reads(ErrorKind::BufferOverflow, 48, 48, " (48-byte block)");
        reads(ErrorKind::WriteAfterFree, 0, 0, " (block of a freed page)");
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
