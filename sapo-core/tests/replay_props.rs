//! Properties of the replay buffer: FIFO contents, sampling frequencies
//! against the weights, and exact continuation after a postcard round-trip.

use proptest::prelude::*;
use sapo_core::replay::{ReplayBuffer, SamplingPolicy};
use sapo_core::rng::SapoRng;

#[derive(Debug, Clone)]
enum Op {
    Push(u32),
    Draw(usize, SamplingPolicy),
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => any::<u32>().prop_map(Op::Push),
        1 => (1usize..9, prop_oneof![Just(SamplingPolicy::LeastDrawn), Just(SamplingPolicy::Uniform)])
            .prop_map(|(k, policy)| Op::Draw(k, policy)),
    ]
}

fn apply(buffer: &mut ReplayBuffer<u32>, rng: &mut SapoRng, op: &Op) -> Vec<usize> {
    match *op {
        Op::Push(item) => {
            buffer.push(item);
            Vec::new()
        }
        Op::Draw(k, policy) => buffer.draw(k, policy, rng).unwrap_or_default(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn contents_are_the_last_pushed_items_in_order(capacity in 1usize..40, items in prop::collection::vec(any::<u32>(), 0..120)) {
        let mut buffer = ReplayBuffer::new(capacity).expect("capacity ≥ 1");
        for &item in &items {
            buffer.push(item);
        }
        let kept: Vec<u32> = buffer.entries().map(|e| e.item).collect();
        let start = items.len().saturating_sub(capacity);
        prop_assert_eq!(kept, items[start..].to_vec());
        prop_assert!(buffer.len() <= capacity);
    }

    #[test]
    fn a_restored_buffer_draws_exactly_what_the_original_draws(
        capacity in 1usize..30,
        before in prop::collection::vec(op_strategy(), 0..80),
        after in prop::collection::vec(op_strategy(), 0..80),
        seed in any::<u64>(),
    ) {
        let mut buffer = ReplayBuffer::new(capacity).expect("capacity ≥ 1");
        let mut rng = SapoRng::from_seed_u64(seed);
        for op in &before {
            apply(&mut buffer, &mut rng, op);
        }
        let bytes = postcard::to_allocvec(&(&buffer, &rng)).expect("serialisable");
        let (mut restored, mut restored_rng): (ReplayBuffer<u32>, SapoRng) = postcard::from_bytes(&bytes).expect("round-trip");
        prop_assert_eq!(&restored, &buffer);
        for op in &after {
            let original_draws = apply(&mut buffer, &mut rng, op);
            let restored_draws = apply(&mut restored, &mut restored_rng, op);
            prop_assert_eq!(original_draws, restored_draws);
        }
        prop_assert_eq!(restored, buffer);
    }

    #[test]
    fn draw_counts_add_up_to_the_draws_made(capacity in 1usize..20, k in 1usize..10, rounds in 1usize..20, seed in any::<u64>()) {
        let mut buffer = ReplayBuffer::new(capacity).expect("capacity ≥ 1");
        for item in 0..capacity as u32 {
            buffer.push(item);
        }
        let mut rng = SapoRng::from_seed_u64(seed);
        let mut total = 0;
        for _ in 0..rounds {
            total += buffer.draw(k, SamplingPolicy::LeastDrawn, &mut rng).expect("non-empty").len();
        }
        prop_assert_eq!(total, rounds * k.min(capacity));
        prop_assert_eq!(buffer.entries().map(|e| e.times_drawn as usize).sum::<usize>(), total);
    }
}

/// Chi-square statistic of observed counts against probabilities.
fn chi_square(counts: &[u32], probabilities: &[f64]) -> f64 {
    let draws: f64 = counts.iter().map(|&c| f64::from(c)).sum();
    counts.iter().zip(probabilities).map(|(&c, &p)| (f64::from(c) - draws * p).powi(2) / (draws * p)).sum()
}

/// A buffer of 11 items (wrapped past capacity) with uneven draw counts.
fn uneven_buffer() -> ReplayBuffer<u32> {
    let mut buffer = ReplayBuffer::new(11).expect("capacity 11");
    let mut rng = SapoRng::from_seed_u64(99);
    for item in 0..15 {
        buffer.push(item);
        buffer.draw(3, SamplingPolicy::LeastDrawn, &mut rng).expect("non-empty");
    }
    buffer
}

#[test]
fn least_drawn_frequencies_match_the_inverse_count_weights() {
    let buffer = uneven_buffer();
    let counts_seen: Vec<u64> = buffer.entries().map(|e| e.times_drawn).collect();
    assert!(counts_seen.iter().any(|&c| c != counts_seen[0]), "counts should be uneven: {counts_seen:?}");
    let probabilities: Vec<f64> =
        (0..buffer.len()).map(|i| buffer.least_drawn_probability(i).expect("in range")).collect();
    let total: f64 = counts_seen.iter().map(|&c| 1.0 / (c as f64 + 1.0)).sum();
    for (p, &c) in probabilities.iter().zip(&counts_seen) {
        assert!((p - 1.0 / (c as f64 + 1.0) / total).abs() < 1e-15);
    }
    let mut rng = SapoRng::from_seed_u64(7);
    let mut counts = vec![0u32; buffer.len()];
    for _ in 0..60_000 {
        // Each draw from a fresh copy, so the weights under test stay fixed.
        let mut copy = buffer.clone();
        counts[copy.draw(1, SamplingPolicy::LeastDrawn, &mut rng).expect("non-empty")[0]] += 1;
    }
    let statistic = chi_square(&counts, &probabilities);
    // 10 degrees of freedom: the 99.9th percentile is 29.59.
    assert!(statistic < 29.59, "chi² = {statistic}, counts {counts:?}, p {probabilities:?}");
}

#[test]
fn uniform_frequencies_are_flat() {
    let mut buffer = uneven_buffer();
    let mut rng = SapoRng::from_seed_u64(8);
    let mut counts = vec![0u32; buffer.len()];
    for _ in 0..11_000 {
        for index in buffer.draw(5, SamplingPolicy::Uniform, &mut rng).expect("non-empty") {
            counts[index] += 1;
        }
    }
    let statistic = chi_square(&counts, &[1.0 / 11.0; 11]);
    assert!(statistic < 29.59, "chi² = {statistic}, counts {counts:?}");
}
