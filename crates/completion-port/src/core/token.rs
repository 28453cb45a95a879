//! [`Token`]: the identity of one issued operation, unique in the process.

use std::sync::atomic::{AtomicU64, Ordering};

/// Identifies one issued operation; the same value comes back in its
/// packet ([`Packet::token`](crate::Packet::token)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token(pub(crate) u64);

impl Token {
    /// The token's number (unique in this process).
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

static NEXT_TOKEN: AtomicU64 = AtomicU64::new(1);

/// Tokens a thread takes from [`NEXT_TOKEN`] at a time, so that issuing an
/// operation does not touch a process-wide counter every time.
const TOKEN_BLOCK: u64 = 256;

thread_local! {
    /// This thread's unused tokens: `next..end`.
    static TOKENS: std::cell::Cell<(u64, u64)> = const { std::cell::Cell::new((0, 0)) };
}

/// A token never handed out before in this process.
pub(crate) fn next_token() -> Token {
    let from_block = TOKENS
        .try_with(|t| {
            let (mut next, mut end) = t.get();
            if next == end {
                next = NEXT_TOKEN.fetch_add(TOKEN_BLOCK, Ordering::Relaxed);
                end = next + TOKEN_BLOCK;
            }
            t.set((next + 1, end));
            next
        })
        .ok();
    // During thread-local destruction: one at a time.
    Token(from_block.unwrap_or_else(|| NEXT_TOKEN.fetch_add(1, Ordering::Relaxed)))
}
