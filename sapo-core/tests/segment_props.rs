//! Properties of SAPO's segment truncation (docs/algorithms.md, "Segment
//! truncation") over random prompts, responses, limits and generations.

use proptest::prelude::*;
use sapo_core::rng::SapoRng;
use sapo_core::segment::{SegmentConfig, assemble, plan};

const EOS: u32 = 2;

fn config_strategy() -> impl Strategy<Value = SegmentConfig> {
    (prop_oneof![3 => (1usize..300).prop_map(Some), 1 => Just(None)], 8usize..3000)
        .prop_flat_map(|(segment_len, max_length)| (Just(segment_len), Just(max_length), 1usize..max_length))
        .prop_map(|(segment_len, max_length, max_prompt_length)| SegmentConfig {
            segment_len,
            max_length,
            max_prompt_length,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn sequences_fit_share_their_prefix_and_mask_only_the_prompt(
        config in config_strategy(),
        prompt_len in 0usize..3500,
        chosen_len in 1usize..3500,
        seed in any::<u64>(),
        eos_at in proptest::option::of(0usize..400),
    ) {
        let mut rng = SapoRng::from_seed_u64(seed);
        // Token ids ≥ 3 so that the only EOS in the response is its last token.
        let prompt: Vec<u32> = (0..prompt_len as u32).map(|i| 3 + i % 1000).collect();
        let mut chosen: Vec<u32> = (0..chosen_len as u32 - 1).map(|i| 3 + (i * 7) % 1000).collect();
        chosen.push(EOS);
        let p = plan(prompt.len(), chosen.len(), &config, &mut rng).expect("valid config");

        // The window never runs past the kept chosen tokens and is never empty.
        prop_assert!(p.window >= 1);
        prop_assert!(p.cut + p.window <= p.kept_chosen_len);
        prop_assert!(p.kept_prompt_len() + p.kept_chosen_len <= config.max_length);

        // Pairs that fit are never truncated, and their cut obeys the drawn range.
        if prompt_len + chosen_len <= config.max_length {
            prop_assert_eq!((p.prompt_start, p.kept_chosen_len), (0, chosen_len));
            let window = config.segment_len.map_or(chosen_len, |s| s.min(chosen_len)) as i64;
            let max_cut = chosen_len as i64 - 3 - window;
            let space = config.max_length as i64 - prompt_len.min(config.max_prompt_length) as i64 - window;
            prop_assert!(p.cut as i64 <= max_cut.min(space).max(0));
        }

        // A generation of at most `window` tokens, with an EOS somewhere or none.
        let generated: Vec<u32> = (0..p.window)
            .map(|i| if Some(i) == eos_at { EOS } else { 1000 + i as u32 % 50 })
            .collect();
        let pair = assemble(&prompt, &chosen, &p, &generated, EOS).expect("planned inputs");
        prop_assert!(pair.chosen.len() <= config.max_length);
        prop_assert!(pair.rejected.len() <= config.max_length);
        let shared = p.kept_prompt_len() + p.cut;
        prop_assert_eq!(&pair.rejected[..shared], &pair.chosen[..shared]);
        prop_assert_eq!(&pair.chosen[..p.kept_prompt_len()], &prompt[p.prompt_start..]);
        match generated.iter().position(|&t| t == EOS) {
            Some(eos_position) => {
                prop_assert_eq!(pair.rejected.len(), shared + eos_position + 1);
                prop_assert_eq!(pair.rejected.last(), Some(&EOS));
            }
            None => {
                prop_assert_eq!(pair.rejected.len(), pair.chosen.len());
                prop_assert_eq!(&pair.rejected[shared + p.window..], &pair.chosen[shared + p.window..]);
            }
        }
        for (sequence, mask) in [(&pair.chosen, &pair.chosen_loss_mask), (&pair.rejected, &pair.rejected_loss_mask)] {
            prop_assert_eq!(sequence.len(), mask.len());
            prop_assert!(mask.iter().enumerate().all(|(i, &on)| on == (i >= pair.prompt_len)));
        }
        // The chosen keeps its EOS exactly when it was not cut.
        prop_assert_eq!(pair.chosen.last() == Some(&EOS), p.kept_chosen_len == chosen_len);
    }

    #[test]
    fn a_generation_longer_than_the_window_is_refused(seed in any::<u64>()) {
        let config = SegmentConfig { segment_len: Some(4), max_length: 64, max_prompt_length: 32 };
        let p = plan(5, 20, &config, &mut SapoRng::from_seed_u64(seed)).expect("valid");
        let too_long = vec![9; p.window + 1];
        prop_assert!(assemble(&[5; 5], &[7; 20], &p, &too_long, EOS).is_err());
    }
}

#[test]
fn the_cut_is_uniform_over_its_range_by_chi_square() {
    // max_cut = 50 − 3 − 5 = 42 and space is ample: k ∈ {0, …, 42}.
    let config = SegmentConfig { segment_len: Some(5), max_length: 2048, max_prompt_length: 1792 };
    let mut rng = SapoRng::from_seed_u64(1234);
    let mut counts = [0u32; 43];
    let draws = 43_000;
    for _ in 0..draws {
        counts[plan(10, 50, &config, &mut rng).expect("valid").cut] += 1;
    }
    let expected = f64::from(draws) / 43.0;
    let chi_square: f64 = counts.iter().map(|&c| (f64::from(c) - expected).powi(2) / expected).sum();
    // 42 degrees of freedom: the 99.9th percentile is about 76.1.
    assert!(chi_square < 76.1, "chi² = {chi_square}, counts {counts:?}");
}
