//! Weighted draws from the replay buffer at capacity 2000 (SAPO's) and
//! 200 000, against a baseline measured in the same run: the linear scan per
//! draw that a list of weights gives (what `random.choices` does per batch
//! after an O(n) cumulative sum).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sapo_core::replay::{ReplayBuffer, SamplingPolicy};
use sapo_core::rng::SapoRng;

const BATCH: usize = 8;

fn filled(capacity: usize) -> ReplayBuffer<u32> {
    let mut buffer = ReplayBuffer::new(capacity).expect("capacity ≥ 1");
    let mut rng = SapoRng::from_seed_u64(3);
    for item in 0..(capacity + capacity / 3) as u32 {
        buffer.push(item);
        if item % 4 == 0 {
            buffer.draw(BATCH, SamplingPolicy::LeastDrawn, &mut rng).expect("non-empty");
        }
    }
    buffer
}

/// One batch by the authors' method: weights 1/(n+1) of every item, their
/// cumulative sum, then a binary search per draw; counts updated after.
fn linear_batch(counts: &mut [u64], rng: &mut SapoRng) -> [usize; BATCH] {
    let mut cumulative = Vec::with_capacity(counts.len());
    let mut total = 0.0;
    for &count in counts.iter() {
        total += 1.0 / (count as f64 + 1.0);
        cumulative.push(total);
    }
    let mut drawn = [0; BATCH];
    for slot in &mut drawn {
        let target = rng.next_f64() * total;
        *slot = cumulative.partition_point(|&c| c <= target).min(counts.len() - 1);
    }
    for &index in &drawn {
        counts[index] += 1;
    }
    drawn
}

fn replay(c: &mut Criterion) {
    let mut group = c.benchmark_group("replay_draw_batch8");
    group.throughput(Throughput::Elements(BATCH as u64));
    for capacity in [2_000, 200_000] {
        let buffer = filled(capacity);
        let mut rng = SapoRng::from_seed_u64(5);
        let mut tree_buffer = buffer.clone();
        group.bench_with_input(BenchmarkId::new("sum_tree", capacity), &capacity, |b, _| {
            b.iter(|| black_box(tree_buffer.draw(BATCH, SamplingPolicy::LeastDrawn, &mut rng).expect("non-empty")))
        });
        let mut counts: Vec<u64> = buffer.entries().map(|e| e.times_drawn).collect();
        group.bench_with_input(BenchmarkId::new("baseline_cumulative_scan", capacity), &capacity, |b, _| {
            b.iter(|| black_box(linear_batch(&mut counts, &mut rng)))
        });
        let mut uniform_buffer = buffer.clone();
        group.bench_with_input(BenchmarkId::new("uniform", capacity), &capacity, |b, _| {
            b.iter(|| black_box(uniform_buffer.draw(BATCH, SamplingPolicy::Uniform, &mut rng).expect("non-empty")))
        });
    }
    group.finish();
    let mut group = c.benchmark_group("replay_push");
    group.throughput(Throughput::Elements(1));
    for capacity in [2_000, 200_000] {
        let mut buffer = filled(capacity);
        let mut item = 0u32;
        group.bench_with_input(BenchmarkId::from_parameter(capacity), &capacity, |b, _| {
            b.iter(|| {
                item = item.wrapping_add(1);
                black_box(buffer.push(item))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, replay);
criterion_main!(benches);
