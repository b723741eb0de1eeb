//! Per-pair throughput of every objective (loss + gradients + metrics) on a
//! batch of 256 random pairs, f64 and f32. Baseline in the same run: a plain
//! loop computing only the DPO loss value, the least any implementation does.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sapo_core::objectives::{
    AipoParams, DpoParams, HingeParams, IpoParams, Objective, OrpoParams, PairBatch, SpinParams, SppoHardParams,
    SppoParams,
};
use sapo_core::rng::SapoRng;

const PAIRS: usize = 256;

struct Data {
    columns: Vec<Vec<f64>>,
    chosen_counts: Vec<u32>,
    rejected_counts: Vec<u32>,
    nll_counts: Vec<u32>,
}

fn data() -> Data {
    let mut rng = SapoRng::from_seed_u64(1);
    let mut column = |scale: f64| (0..PAIRS).map(|_| -scale * (0.01 + rng.next_f64())).collect::<Vec<f64>>();
    let logps = [column(80.0), column(80.0), column(80.0), column(80.0), column(120.0)];
    let mut rng = SapoRng::from_seed_u64(3);
    let mut win_rates = || (0..PAIRS).map(|_| rng.next_f64()).collect::<Vec<f64>>();
    let [policy_chosen, policy_rejected, reference_chosen, reference_rejected, chosen_nll] = logps;
    let columns = vec![
        policy_chosen,
        policy_rejected,
        reference_chosen,
        reference_rejected,
        win_rates(),
        win_rates(),
        chosen_nll,
    ];
    let mut rng = SapoRng::from_seed_u64(2);
    let mut counts =
        |extra: u64| (0..PAIRS).map(|_| 1 + extra as u32 + rng.below(200).unwrap_or(0) as u32).collect::<Vec<u32>>();
    Data { columns, chosen_counts: counts(0), rejected_counts: counts(0), nll_counts: counts(200) }
}

fn batch<'a, T>(columns: &'a [Vec<T>], data: &'a Data) -> PairBatch<'a, T> {
    PairBatch::new(&columns[0], &columns[1])
        .with_reference(&columns[2], &columns[3])
        .with_win_rates(&columns[4], &columns[5])
        .with_chosen_nll(&columns[6], &data.nll_counts)
        .with_token_counts(&data.chosen_counts, &data.rejected_counts)
}

fn objectives(c: &mut Criterion) {
    let data = data();
    let single: Vec<Vec<f32>> = data.columns.iter().map(|c| c.iter().map(|&x| x as f32).collect()).collect();
    let all = [
        Objective::Dpo(DpoParams::default()),
        Objective::Dpo(DpoParams { beta: 0.1, label_smoothing: 0.1 }),
        Objective::Hinge(HingeParams::default()),
        Objective::Ipo(IpoParams::default()),
        Objective::Orpo(OrpoParams::default()),
        Objective::Sppo(SppoParams::default()),
        Objective::SppoHard(SppoHardParams::default()),
        Objective::Aipo(AipoParams::default()),
        Objective::Spin(SpinParams::default()),
    ];
    let mut group = c.benchmark_group("objectives");
    group.throughput(Throughput::Elements(PAIRS as u64));
    group.bench_function("baseline_dpo_loss_value_only_f64", |b| {
        let (pc, pr, rc, rr) = (&data.columns[0], &data.columns[1], &data.columns[2], &data.columns[3]);
        b.iter(|| {
            let mut total = 0.0;
            for i in 0..PAIRS {
                let z = (pc[i] - rc[i]) - (pr[i] - rr[i]);
                total += (1.0 + (-0.1 * z).exp()).ln();
            }
            black_box(total / PAIRS as f64)
        })
    });
    for objective in &all {
        let smoothed = matches!(objective, Objective::Dpo(p) if p.label_smoothing > 0.0);
        let name = if smoothed { "dpo_eps" } else { objective.name() };
        group.bench_function(format!("{name}_f64"), |b| {
            b.iter(|| black_box(objective.compute(&batch(&data.columns, &data)).expect("valid")))
        });
        group.bench_function(format!("{name}_f32"), |b| {
            b.iter(|| black_box(objective.compute(&batch(&single, &data)).expect("valid")))
        });
    }
    group.finish();
}

criterion_group!(benches, objectives);
criterion_main!(benches);
