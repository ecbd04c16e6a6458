//! Parts of kdp's parse pipeline, timed alone to show where a frame's parse time goes.
//!
//! [`TapeOnly`] does what `FrameParser::parse` does before it reads the message: copy the frame
//! into a reused padded buffer and build the simd-json tape. [`TapeInPlace`] skips the copy and
//! builds the tape straight from a buffer the caller already padded ([`padded`]).
//! `FrameParser::parse` minus `TapeOnly` is the cost of reading and normalizing the message;
//! `TapeOnly` minus `TapeInPlace` is the cost of the copy.

use simd_json::{Buffers, INPUT_PADDING, Tape};

/// Initial buffer size, as `FrameParser` uses: buffers grow to the largest frame seen.
const FRAME_BYTES_INITIAL: usize = 4096;

/// Copy + `fill_tape_padded`, no message reading: `FrameParser`'s fixed cost.
pub struct TapeOnly {
    input: Vec<u8>,
    buffers: Buffers,
    tape: Option<Tape<'static>>,
}

impl std::fmt::Debug for TapeOnly {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TapeOnly")
            .field("input_capacity", &self.input.capacity())
            .finish_non_exhaustive()
    }
}

impl Default for TapeOnly {
    fn default() -> Self {
        Self {
            input: Vec::with_capacity(FRAME_BYTES_INITIAL + INPUT_PADDING),
            buffers: Buffers::new(FRAME_BYTES_INITIAL),
            tape: Some(Tape::null()),
        }
    }
}

impl TapeOnly {
    /// Builds the tape of `frame`; returns its node count (0 when the frame is not JSON).
    pub fn run(&mut self, frame: &[u8]) -> usize {
        let Self { input, buffers, tape } = self;
        // As `FrameParser` does: the buffer only grows (zero-filled); the padding past the frame
        // keeps whatever an earlier frame left there, which simd-json does not care about.
        let padded_len = frame.len() + INPUT_PADDING;
        if input.len() < padded_len {
            input.resize(padded_len, 0);
        }
        let input = &mut input[..padded_len];
        input[..frame.len()].copy_from_slice(frame);
        let mut nodes = tape.take().unwrap_or_else(Tape::null).reset();
        let n = match simd_json::fill_tape_padded(input, frame.len(), buffers, &mut nodes) {
            Ok(()) => nodes.0.len(),
            Err(_) => 0,
        };
        *tape = Some(nodes.reset());
        n
    }
}

/// `fill_tape_padded` on a caller-owned padded buffer, no copy, no message reading.
pub struct TapeInPlace {
    buffers: Buffers,
    tape: Option<Tape<'static>>,
}

impl std::fmt::Debug for TapeInPlace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TapeInPlace").finish_non_exhaustive()
    }
}

impl Default for TapeInPlace {
    fn default() -> Self {
        Self { buffers: Buffers::new(FRAME_BYTES_INITIAL), tape: Some(Tape::null()) }
    }
}

impl TapeInPlace {
    /// Builds the tape of `padded[..len]` in place; returns its node count (0 when not JSON).
    ///
    /// simd-json unescapes strings in place, so a frame with escapes is changed by the first
    /// run; the generated frames have none, which leaves the buffer as it was and lets a bench
    /// parse it again.
    pub fn run(&mut self, padded: &mut [u8], len: usize) -> usize {
        let mut nodes = self.tape.take().unwrap_or_else(Tape::null).reset();
        let n = match simd_json::fill_tape_padded(padded, len, &mut self.buffers, &mut nodes) {
            Ok(()) => nodes.0.len(),
            Err(_) => 0,
        };
        self.tape = Some(nodes.reset());
        n
    }
}

/// `frame` followed by [`INPUT_PADDING`] zero bytes, ready for [`TapeInPlace::run`].
pub fn padded(frame: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(frame.len() + INPUT_PADDING);
    v.extend_from_slice(frame);
    v.resize(frame.len() + INPUT_PADDING, 0);
    v
}
