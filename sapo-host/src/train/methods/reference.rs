//! Reference log-probs of fixed pairs, computed once before a phase trains
//! on them (TRL's `precompute_ref_log_probs`): the reference is the policy
//! as the phase starts. They are kept in `ref_logps/` under a name that
//! hashes the reference weights and the tokenised pairs, so a rerun on the
//! same model and data reads them back and a changed one never reads a
//! stale file.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use crate::train::TrainBackend;
use crate::train::checkpoint;
use crate::train::passes::{self, PairSeqs, ReferenceLogps};
use crate::train::report::Reporter;
use crate::train::session::Session;

/// `[logref(y_w), logref(y_l)]` of each pair, in the pairs' order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PairReference {
    sums: Vec<[f32; 2]>,
}

impl PairReference {
    /// The log-probs of `pairs` under the session's current policy, read
    /// from `ref_logps/` when this reference has scored these pairs before.
    ///
    /// # Errors
    /// A pass or I/O error.
    pub fn compute<B: TrainBackend>(session: &mut Session<B>, pairs: &[PairSeqs], reporter: &Reporter) -> Result<Self> {
        let path = cache_path(session, pairs)?;
        let cached: Option<Vec<f32>> = std::fs::read(&path)
            .ok()
            .and_then(|bytes| checkpoint::decode_state(&bytes).ok().and_then(|p| postcard::from_bytes(p).ok()))
            .filter(|sums: &Vec<f32>| sums.len() == 2 * pairs.len());
        let sums = match cached {
            Some(sums) => {
                reporter.say(&format!(
                    "reusing the reference log-probs of {} pairs from {}",
                    pairs.len(),
                    path.display()
                ));
                sums
            }
            None => {
                reporter.say(&format!(
                    "computing reference log-probs of {} pairs once → {}",
                    pairs.len(),
                    path.display()
                ));
                let chunk = session.cfg.per_device_train_batch_size;
                let m = passes::ModelRef { backend: &session.backend, config: &session.model.config };
                let sums = passes::score_pairs(m, &session.model.params, &mut session.ws, pairs, chunk)?;
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
                }
                crate::atomic_file::write_atomically(&path, &checkpoint::encode_state(&postcard::to_allocvec(&sums)?))?;
                sums
            }
        };
        Ok(PairReference { sums: sums.chunks(2).map(|pair| [pair[0], pair[1]]).collect() })
    }

    /// The log-probs a checkpoint kept for `n` pairs.
    ///
    /// # Errors
    /// The checkpoint lacks a pair's log-prob.
    pub fn from_checkpoint(cache: &[((usize, u8), f32)], n: usize) -> Result<Self> {
        let mut sums = vec![[f32::NAN; 2]; n];
        let mut seen = vec![[false; 2]; n];
        for &((pair, side), value) in cache {
            if pair < n && side < 2 {
                sums[pair][usize::from(side)] = value;
                seen[pair][usize::from(side)] = true;
            }
        }
        if let Some(missing) = seen.iter().position(|sides| !sides[0] || !sides[1]) {
            bail!("the checkpoint has no reference log-prob for pair {missing} of {n}");
        }
        Ok(PairReference { sums })
    }

    /// As a checkpoint stores them: `((pair, side), log-prob)`, in order.
    pub fn to_checkpoint(&self) -> Vec<((usize, u8), f32)> {
        self.sums.iter().enumerate().flat_map(|(i, [c, r])| [((i, 0), *c), ((i, 1), *r)]).collect()
    }

    /// How many pairs they cover.
    pub fn len(&self) -> usize {
        self.sums.len()
    }

    /// Whether they cover none.
    pub fn is_empty(&self) -> bool {
        self.sums.is_empty()
    }

    /// The log-probs of the pairs `batch` indexes.
    pub fn batch(&self, batch: &[usize]) -> ReferenceLogps {
        ReferenceLogps {
            chosen: batch.iter().map(|&i| self.sums[i][0]).collect(),
            rejected: batch.iter().map(|&i| self.sums[i][1]).collect(),
        }
    }
}

/// The file in `ref_logps/` for these pairs under the current policy:
/// named by a CRC-32 of the weights and one of the tokenised pairs.
fn cache_path<B: TrainBackend>(session: &Session<B>, pairs: &[PairSeqs]) -> Result<PathBuf> {
    let mut weights = crc32fast::Hasher::new();
    for tensor in session.model.params.tensors() {
        let values = session.backend.download(tensor)?;
        values.iter().for_each(|v| weights.update(&v.to_le_bytes()));
    }
    let mut data = crc32fast::Hasher::new();
    for pair in pairs {
        data.update(&(pair.prompt_len as u64).to_le_bytes());
        for side in [&pair.chosen, &pair.rejected] {
            data.update(&(side.len() as u64).to_le_bytes());
            side.iter().for_each(|t| data.update(&t.to_le_bytes()));
        }
    }
    let name = format!("{:08x}-{:08x}.bin", weights.finalize(), data.finalize());
    Ok(session.cfg.output_dir.join("ref_logps").join(name))
}
