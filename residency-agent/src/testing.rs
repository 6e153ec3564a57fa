//! Helpers for unit tests.

/// A xorshift generator with a fixed seed: the same "random" inputs on every run, so a
/// failure reproduces.
pub fn xorshift() -> impl FnMut() -> u64 {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}
