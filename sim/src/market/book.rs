//! One market's order book: two bid ladders (YES and NO), each a short vector of levels sorted
//! ascending by price with the best bid last, as Kalshi lists them. Order flow concentrates at
//! the top, so inserts and removals touch the end of a short vector.

use super::model::{BookLevels, Level, Side};

/// A market's resting bids.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Book {
    pub(crate) yes: Vec<Level>,
    pub(crate) no: Vec<Level>,
}

impl Book {
    pub(crate) fn ladder(&self, side: Side) -> &Vec<Level> {
        match side {
            Side::Yes => &self.yes,
            Side::No => &self.no,
        }
    }

    pub(crate) fn ladder_mut(&mut self, side: Side) -> &mut Vec<Level> {
        match side {
            Side::Yes => &mut self.yes,
            Side::No => &mut self.no,
        }
    }

    /// The best (highest) bid of a side.
    pub(crate) fn best(&self, side: Side) -> Option<Level> {
        self.ladder(side).last().copied()
    }

    /// Applies a signed change at `price`; a level that reaches 0 disappears. The change must not
    /// take a level below zero (asserted: the engine never cancels more than rests).
    pub(crate) fn apply(&mut self, side: Side, price_micros: u32, delta_centi: i64) {
        debug_assert!(delta_centi != 0);
        let ladder = self.ladder_mut(side);
        // Search from the top: that is where almost all activity is.
        let pos = ladder.iter().rposition(|l| l.price_micros <= price_micros);
        match pos {
            Some(i) if ladder[i].price_micros == price_micros => {
                let size = ladder[i].size_centi + delta_centi;
                assert!(
                    size >= 0,
                    "book level would go negative: {side:?} {price_micros} {delta_centi}"
                );
                if size == 0 {
                    ladder.remove(i);
                } else {
                    ladder[i].size_centi = size;
                }
            }
            _ => {
                assert!(
                    delta_centi > 0,
                    "cancel at an empty level: {side:?} {price_micros} {delta_centi}"
                );
                let at = pos.map_or(0, |i| i + 1);
                ladder.insert(at, Level { price_micros, size_centi: delta_centi });
            }
        }
    }

    /// Size resting at `price` on `side` (0 when no level).
    pub(crate) fn size_at(&self, side: Side, price_micros: u32) -> i64 {
        self.ladder(side)
            .iter()
            .rev()
            .find(|l| l.price_micros == price_micros)
            .map_or(0, |l| l.size_centi)
    }

    /// Both ladders, ascending, keeping at most the `depth` best levels of each.
    pub(crate) fn levels(&self, depth: Option<usize>) -> BookLevels {
        let cut = |v: &Vec<Level>| match depth {
            Some(d) if d < v.len() => v[v.len() - d..].to_vec(),
            _ => v.clone(),
        };
        BookLevels { yes: cut(&self.yes), no: cut(&self.no) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_keeps_ladders_sorted_and_drops_empty_levels() {
        let mut b = Book::default();
        b.apply(Side::Yes, 400_000, 500);
        b.apply(Side::Yes, 420_000, 300);
        b.apply(Side::Yes, 410_000, 100);
        b.apply(Side::Yes, 390_000, 100);
        b.apply(Side::Yes, 420_000, -300);
        let prices: Vec<u32> = b.yes.iter().map(|l| l.price_micros).collect();
        assert_eq!(prices, [390_000, 400_000, 410_000]);
        assert_eq!(b.size_at(Side::Yes, 400_000), 500);
        assert_eq!(b.best(Side::Yes), Some(Level { price_micros: 410_000, size_centi: 100 }));
        assert_eq!(b.levels(Some(1)).yes, vec![Level { price_micros: 410_000, size_centi: 100 }]);
        assert_eq!(b.levels(None).yes.len(), 3);
        assert!(b.no.is_empty());
    }

    #[test]
    #[should_panic(expected = "negative")]
    fn overcancel_panics() {
        let mut b = Book::default();
        b.apply(Side::No, 500_000, 100);
        b.apply(Side::No, 500_000, -101);
    }
}
