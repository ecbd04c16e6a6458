//! The correctness gate every bench passes before it times anything: all five parsers turn
//! every generated frame into exactly the frame it was built from.

use kdp_ingest::wire::{Frame, FrameParser};

use crate::baseline::naive::{SerdeJsonNaiveParser, SonicNaiveParser};
use crate::baseline::{SerdeJsonTunedParser, SonicTunedParser};
use crate::frames::FrameSet;

/// Parses every frame of `set` with kdp's `FrameParser` and the four baselines (serde_json and
/// sonic-rs, naive and tuned), and compares each result with the generator's truth. Returns the
/// number of frames checked, or a description of the first disagreement.
pub fn parsers_agree(set: &FrameSet) -> Result<usize, String> {
    let mut kdp = FrameParser::new();
    let mut serde_naive = SerdeJsonNaiveParser::default();
    let mut sonic_naive = SonicNaiveParser::default();
    let mut serde_tuned = SerdeJsonTunedParser::default();
    let mut sonic_tuned = SonicTunedParser::default();
    let mut checked = 0;
    for (kind, g) in set.all() {
        let expected = set.expected(g);
        let text = String::from_utf8_lossy(&g.frame);
        let same = |parser: &str, got: Result<Frame<'_>, String>| match got {
            Ok(got) if got == expected => Ok(()),
            Ok(got) => {
                Err(format!("{parser} read {kind} frame {text} as {got:?}, expected {expected:?}"))
            }
            Err(e) => Err(format!("{parser} refused {kind} frame {text}: {e}")),
        };
        same("kdp", kdp.parse(&g.frame).map_err(|e| e.to_string()))?;
        same("serde_json_naive", serde_naive.parse(&g.frame).map_err(|e| e.to_string()))?;
        same("sonic_rs_naive", sonic_naive.parse(&g.frame).map_err(|e| e.to_string()))?;
        same("serde_json_tuned", serde_tuned.parse(&g.frame).map_err(|e| e.to_string()))?;
        same("sonic_rs_tuned", sonic_tuned.parse(&g.frame).map_err(|e| e.to_string()))?;
        checked += 1;
    }
    Ok(checked)
}
