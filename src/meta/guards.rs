//! The record of how a span of segment memory was left protected, which
//! the arena keeps and the guard defence reads: shared by both, so it
//! lives below them.

/// The protection a span comes with.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Prior {
    /// Never used: readable and writable throughout.
    Open,
    /// Every slice sealed: inaccessible past the first `info_size` bytes
    /// of each (and maybe within those too, for a slice that was not the
    /// first of the span it was released with).
    Sealed,
    /// One slice left by a segment of the layout asked for: open, with the
    /// guard after its header and after the page slots in `Span::guards`.
    Guarded,
    /// Anything else: some slices used without a seal, or a mix.
    Mixed,
}

/// How a small or medium segment of the hardened build leaves its slice:
/// open, its page guards in place, so the next segment of the same layout
/// takes it without a single `mprotect`. `layout` 0 means none of this
/// (the plain build, huge segments).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Guards {
    pub layout: u8,
    pub mask: u64,
}
