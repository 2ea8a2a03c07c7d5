//! The order in which a run of keys that arrive in key order is inserted into sled, so
//! that the leaves it leaves behind are full: a replica's refresh (`replica/shadow.rs`)
//! and a backup's copy (`directory/backup/copy.rs`) both write whole trees in key order.

/// The order in which a scan batch of `len` entries is inserted, as positions in the
/// batch: in each run of 16, positions 1, 3, 5, 7, 9, 11 and 13 go in after all the
/// others.
///
/// Why: a scan's keys arrive in order (DNs in the provider's key order, and UUIDs
/// made in the order entries were loaded), so each insert lands in the tree's last
/// leaf. sled 0.34 splits a leaf when it passes 16 keys, keeping 9 on the left, and
/// inserted in order, nothing ever lands on the left again: every leaf is left with 9
/// keys, and there is a split (two nodes written, a link in the parent, whose clone
/// grows with it) every 8 or 9 inserts. Inserted this way, each leaf left behind holds
/// 9 of the first pass's keys spanning 16 positions, and the second pass adds the 7
/// keys between them: leaves of 16 keys, half as many leaves and splits. sled alone,
/// 100,000 entries in batches of 200: a fifth less CPU, a store a fifth smaller
/// (`docs/benchmarks-history.md`). The constants are sled 0.34's, which `Cargo.lock` pins.
/// Keys that do not arrive in order (an unordered index) lose nothing: random inserts
/// fill leaves in any order.
pub(crate) fn fill_order(len: usize) -> impl Iterator<Item = usize> {
    const RUN: usize = 16;
    let later = |i: &usize| i % 2 == 1 && i % RUN < RUN - 2;
    (0..len).filter(move |i| !later(i)).chain((0..len).filter(later))
}

#[cfg(test)]
mod tests {
    use super::fill_order;

    /// The scan's insert order drops nothing and repeats nothing, whatever the batch's
    /// length, and it is the one described: a run of 16 takes its even positions and
    /// its last two first.
    #[test]
    fn fill_order_is_a_permutation_with_the_odd_positions_of_each_run_last() {
        for len in 0..=100 {
            let order: Vec<usize> = fill_order(len).collect();
            let mut sorted = order.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..len).collect::<Vec<_>>(), "len {len}");
        }
        let order: Vec<usize> = fill_order(20).collect();
        assert_eq!(order, [0, 2, 4, 6, 8, 10, 12, 14, 15, 16, 18, 1, 3, 5, 7, 9, 11, 13, 17, 19]);
    }
}
