//! Tick grids: which prices a market accepts and how to step between them.
//!
//! Every grid here is symmetric under `p ↦ $1 − p`, so a valid YES price always has a valid NO
//! complement: a YES bid at `p` and a NO bid at `$1 − p` are both on the market's grid.

use super::model::{DOLLAR_MICROS, PriceGrid};

/// One cent in micro-dollars.
const CENT_MICROS: u32 = 10_000;
/// A tenth of a cent in micro-dollars.
const DECI_CENT_MICROS: u32 = 1_000;
/// Below this price a tapered grid ticks in tenths of a cent.
const TAPER_LOW_MICROS: u32 = 100_000;
/// Above this price a tapered grid ticks in tenths of a cent.
const TAPER_HIGH_MICROS: u32 = 900_000;

impl PriceGrid {
    /// The lowest valid price (strictly above $0).
    pub fn min_price_micros(self) -> u32 {
        match self {
            PriceGrid::LinearCent => CENT_MICROS,
            PriceGrid::DeciCent | PriceGrid::TaperedDeciCent => DECI_CENT_MICROS,
        }
    }

    /// The highest valid price (strictly below $1).
    pub fn max_price_micros(self) -> u32 {
        DOLLAR_MICROS - self.min_price_micros()
    }

    /// Whether `p` lies on the grid, strictly inside $0–$1.
    pub fn is_valid(self, p: u32) -> bool {
        if p < self.min_price_micros() || p > self.max_price_micros() {
            return false;
        }
        match self {
            PriceGrid::LinearCent => p.is_multiple_of(CENT_MICROS),
            PriceGrid::DeciCent => p.is_multiple_of(DECI_CENT_MICROS),
            PriceGrid::TaperedDeciCent => {
                if (TAPER_LOW_MICROS..=TAPER_HIGH_MICROS).contains(&p) {
                    p.is_multiple_of(CENT_MICROS)
                } else {
                    p.is_multiple_of(DECI_CENT_MICROS)
                }
            }
        }
    }

    /// The next valid price above `p` (a valid price), saturating at the maximum.
    pub fn step_up(self, p: u32) -> u32 {
        let step = match self {
            PriceGrid::LinearCent => CENT_MICROS,
            PriceGrid::DeciCent => DECI_CENT_MICROS,
            PriceGrid::TaperedDeciCent => {
                if (TAPER_LOW_MICROS..TAPER_HIGH_MICROS).contains(&p) {
                    CENT_MICROS
                } else {
                    DECI_CENT_MICROS
                }
            }
        };
        (p + step).min(self.max_price_micros())
    }

    /// The next valid price below `p` (a valid price), saturating at the minimum.
    pub fn step_down(self, p: u32) -> u32 {
        let step = match self {
            PriceGrid::LinearCent => CENT_MICROS,
            PriceGrid::DeciCent => DECI_CENT_MICROS,
            PriceGrid::TaperedDeciCent => {
                if p > TAPER_LOW_MICROS && p <= TAPER_HIGH_MICROS {
                    CENT_MICROS
                } else {
                    DECI_CENT_MICROS
                }
            }
        };
        p.saturating_sub(step).max(self.min_price_micros())
    }

    /// The valid price nearest below or at `p` (clamped into the grid's range).
    pub fn floor(self, p: u32) -> u32 {
        let p = p.clamp(self.min_price_micros(), self.max_price_micros());
        let step = match self {
            PriceGrid::LinearCent => CENT_MICROS,
            PriceGrid::DeciCent => DECI_CENT_MICROS,
            PriceGrid::TaperedDeciCent => {
                if (TAPER_LOW_MICROS..=TAPER_HIGH_MICROS).contains(&p) {
                    CENT_MICROS
                } else {
                    DECI_CENT_MICROS
                }
            }
        };
        (p - p % step).max(self.min_price_micros())
    }

    /// Kalshi's `price_level_structure` name.
    pub fn name(self) -> &'static str {
        match self {
            PriceGrid::LinearCent => "linear_cent",
            PriceGrid::DeciCent => "deci_cent",
            PriceGrid::TaperedDeciCent => "tapered_deci_cent",
        }
    }

    /// Kalshi's `price_ranges`: `(start, end, step)` in micro-dollars.
    pub fn ranges(self) -> &'static [(u32, u32, u32)] {
        match self {
            PriceGrid::LinearCent => &[(0, DOLLAR_MICROS, CENT_MICROS)],
            PriceGrid::DeciCent => &[(0, DOLLAR_MICROS, DECI_CENT_MICROS)],
            PriceGrid::TaperedDeciCent => &[
                (0, TAPER_LOW_MICROS, DECI_CENT_MICROS),
                (TAPER_LOW_MICROS, TAPER_HIGH_MICROS, CENT_MICROS),
                (TAPER_HIGH_MICROS, DOLLAR_MICROS, DECI_CENT_MICROS),
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRIDS: [PriceGrid; 3] =
        [PriceGrid::LinearCent, PriceGrid::DeciCent, PriceGrid::TaperedDeciCent];

    fn walk(g: PriceGrid) -> Vec<u32> {
        let mut v = vec![g.min_price_micros()];
        loop {
            let last = *v.last().unwrap_or(&0);
            let next = g.step_up(last);
            if next == last {
                return v;
            }
            v.push(next);
        }
    }

    #[test]
    fn grid_sizes() {
        assert_eq!(walk(PriceGrid::LinearCent).len(), 99);
        assert_eq!(walk(PriceGrid::DeciCent).len(), 999);
        // 0.001..0.099 (99) + 0.10..0.90 (81) + 0.901..0.999 (99).
        assert_eq!(walk(PriceGrid::TaperedDeciCent).len(), 279);
    }

    #[test]
    fn steps_are_inverse_and_symmetric() {
        for g in GRIDS {
            let prices = walk(g);
            for w in prices.windows(2) {
                assert_eq!(g.step_down(w[1]), w[0], "{g:?}");
                assert!(g.is_valid(w[0]) && g.is_valid(w[1]));
            }
            for &p in &prices {
                assert!(g.is_valid(DOLLAR_MICROS - p), "{g:?} {p}");
                assert_eq!(g.floor(p), p);
            }
            assert!(!g.is_valid(0) && !g.is_valid(DOLLAR_MICROS));
        }
        assert_eq!(PriceGrid::TaperedDeciCent.floor(455_500), 450_000);
        assert_eq!(PriceGrid::TaperedDeciCent.floor(95_500), 95_000);
    }
}
