//! The correctness gate every bench passes before it times anything: all three parsers turn
//! every generated frame into exactly the frame it was built from.

use kdp_ingest::wire::FrameParser;

use crate::baseline::{SerdeJsonParser, SonicParser};
use crate::frames::FrameSet;

/// Parses every frame of `set` with kdp's `FrameParser`, the serde_json baseline and the sonic-rs
/// baseline, and compares each result with the generator's truth. Returns the number of frames
/// checked, or a description of the first disagreement.
pub fn parsers_agree(set: &FrameSet) -> Result<usize, String> {
    let mut kdp = FrameParser::new();
    let mut serde = SerdeJsonParser::default();
    let mut sonic = SonicParser::default();
    let mut checked = 0;
    for (kind, g) in set.all() {
        let expected = set.expected(g);
        let text = String::from_utf8_lossy(&g.frame);
        let got =
            kdp.parse(&g.frame).map_err(|e| format!("kdp refused {kind} frame {text}: {e}"))?;
        if got != expected {
            return Err(format!("kdp read {kind} frame {text} as {got:?}, expected {expected:?}"));
        }
        let got = serde.parse(&g.frame).map_err(|e| format!("serde_json refused {text}: {e}"))?;
        if got != expected {
            return Err(format!("serde_json read {text} as {got:?}, expected {expected:?}"));
        }
        let got = sonic.parse(&g.frame).map_err(|e| format!("sonic-rs refused {text}: {e}"))?;
        if got != expected {
            return Err(format!("sonic-rs read {text} as {got:?}, expected {expected:?}"));
        }
        checked += 1;
    }
    Ok(checked)
}
