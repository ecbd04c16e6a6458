//! Activity weights: which market the next order action hits. A Fenwick (binary indexed) tree
//! over integer weights gives O(log n) sampling proportional to weight and O(log n) updates as
//! markets open, pause and close (a closed market's weight is 0), with room to append markets.

use super::rng::Rng;

/// Integer weights with weighted sampling.
#[derive(Debug, Clone)]
pub(crate) struct Weights {
    /// 1-based Fenwick tree; `tree.len() - 1` is the capacity, a power of two.
    tree: Vec<u64>,
    /// Current weight of each slot.
    weight: Vec<u64>,
    total: u64,
}

impl Weights {
    pub(crate) fn with_capacity(n: usize) -> Self {
        let cap = n.max(1).next_power_of_two();
        Self { tree: vec![0; cap + 1], weight: Vec::with_capacity(cap), total: 0 }
    }

    pub(crate) fn total(&self) -> u64 {
        self.total
    }

    /// Appends a slot with weight 0 (growing the tree when full).
    pub(crate) fn push(&mut self) {
        if self.weight.len() + 1 >= self.tree.len() {
            let cap = (self.tree.len() - 1) * 2;
            let old = std::mem::take(&mut self.weight);
            *self = Self { tree: vec![0; cap + 1], weight: Vec::with_capacity(cap), total: 0 };
            for (i, w) in old.into_iter().enumerate() {
                self.weight.push(0);
                self.set(i, w);
            }
        }
        self.weight.push(0);
    }

    pub(crate) fn set(&mut self, i: usize, w: u64) {
        let old = self.weight[i];
        if old == w {
            return;
        }
        self.weight[i] = w;
        self.total = self.total - old + w;
        let mut k = i + 1;
        while k < self.tree.len() {
            self.tree[k] = self.tree[k] - old + w;
            k += k & k.wrapping_neg();
        }
    }

    /// A slot drawn with probability weight / total; `None` when every weight is 0.
    pub(crate) fn sample(&self, rng: &mut Rng) -> Option<usize> {
        if self.total == 0 {
            return None;
        }
        let mut r = rng.below(self.total);
        let mut pos = 0;
        let mut step = (self.tree.len() - 1).next_power_of_two();
        while step > 0 {
            let next = pos + step;
            if next < self.tree.len() && self.tree[next] <= r {
                r -= self.tree[next];
                pos = next;
            }
            step >>= 1;
        }
        debug_assert!(pos < self.weight.len() && self.weight[pos] > 0);
        Some(pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_in_proportion_and_skips_zero_weights() {
        let mut w = Weights::with_capacity(2);
        for _ in 0..5 {
            w.push();
        }
        w.set(0, 1);
        w.set(2, 3);
        w.set(4, 6);
        assert_eq!(w.total(), 10);
        let mut rng = Rng::new(3);
        let mut counts = [0u32; 5];
        for _ in 0..100_000 {
            counts[w.sample(&mut rng).expect("non-zero total")] += 1;
        }
        assert_eq!((counts[1], counts[3]), (0, 0));
        assert!((9_000..11_000).contains(&counts[0]), "{counts:?}");
        assert!((28_500..31_500).contains(&counts[2]), "{counts:?}");
        assert!((58_500..61_500).contains(&counts[4]), "{counts:?}");
        w.set(0, 0);
        w.set(2, 0);
        w.set(4, 0);
        assert_eq!(w.sample(&mut rng), None);
    }
}
