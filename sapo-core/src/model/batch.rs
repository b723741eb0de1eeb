//! A packed batch: sequences end to end, with the response positions whose
//! next-token log-probabilities the objectives need.

use alloc::vec::Vec;

use crate::backend::{Backend, Packing};

/// Why a batch could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// A sequence's mask differs in length from its tokens.
    #[error("sequence {index}: {tokens} tokens but a mask of {mask}")]
    MaskLength {
        /// The sequence.
        index: usize,
        /// Its tokens.
        tokens: usize,
        /// Its mask's length.
        mask: usize,
    },
    /// A token id is outside the vocabulary.
    #[error("sequence {index}: token id {id} is not below the vocabulary size {vocab}")]
    TokenOutOfRange {
        /// The sequence.
        index: usize,
        /// The id.
        id: u32,
        /// The vocabulary size.
        vocab: usize,
    },
}

/// Sequences packed end to end, host side.
///
/// Row `r` asks for `log p(tokens[rows[r] + 1] | tokens[..=rows[r]])`: one row
/// per token whose loss mask is set, predicted from the token before it.
/// The first token of a sequence is never predicted (nothing precedes it).
///
/// ```
/// use sapo_core::model::PackedBatch;
/// // A prompt [5, 6] and response [7, 2]; only the response is scored.
/// let batch = PackedBatch::new(&[(&[5, 6, 7, 2][..], &[false, false, true, true][..])], 10)?;
/// assert_eq!((batch.rows.clone(), batch.targets.clone()), (vec![1, 2], vec![7, 2]));
/// assert_eq!(batch.row_seqs, vec![0, 0]);
/// # Ok::<(), sapo_core::model::BatchError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PackedBatch {
    /// `T` token ids.
    pub tokens: Vec<u32>,
    /// Sequence boundaries and positions.
    pub packing: Packing,
    /// `R` token indices whose next token is scored.
    pub rows: Vec<u32>,
    /// `R` scored token ids.
    pub targets: Vec<u32>,
    /// `R` sequence indices.
    pub row_seqs: Vec<u32>,
}

impl PackedBatch {
    /// Packs `(tokens, loss_mask)` sequences; `loss_mask[t]` marks tokens
    /// whose log-prob counts (the response, for preference objectives).
    ///
    /// # Errors
    /// [`BatchError`].
    pub fn new(sequences: &[(&[u32], &[bool])], vocab_size: usize) -> Result<Self, BatchError> {
        let lengths: Vec<usize> = sequences.iter().map(|(tokens, _)| tokens.len()).collect();
        let mut batch = PackedBatch { packing: Packing::from_lengths(&lengths), ..PackedBatch::default() };
        for (index, (tokens, mask)) in sequences.iter().enumerate() {
            if tokens.len() != mask.len() {
                return Err(BatchError::MaskLength { index, tokens: tokens.len(), mask: mask.len() });
            }
            if let Some(&id) = tokens.iter().find(|&&id| id as usize >= vocab_size) {
                return Err(BatchError::TokenOutOfRange { index, id, vocab: vocab_size });
            }
            let start = batch.tokens.len();
            batch.tokens.extend_from_slice(tokens);
            for t in 1..tokens.len() {
                if mask[t] {
                    batch.rows.push((start + t - 1) as u32);
                    batch.targets.push(tokens[t]);
                    batch.row_seqs.push(index as u32);
                }
            }
        }
        Ok(batch)
    }

    /// `T`.
    pub fn n_tokens(&self) -> usize {
        self.tokens.len()
    }

    /// `R`.
    pub fn n_rows(&self) -> usize {
        self.rows.len()
    }

    /// `S`.
    pub fn n_seqs(&self) -> usize {
        self.packing.n_seqs()
    }

    /// Scored tokens per sequence.
    pub fn row_counts(&self) -> Vec<u32> {
        let mut counts = alloc::vec![0; self.n_seqs()];
        self.row_seqs.iter().for_each(|&s| counts[s as usize] += 1);
        counts
    }
}

/// A [`PackedBatch`] uploaded to a backend.
#[derive(Debug)]
pub struct DeviceBatch<B: Backend> {
    /// Token ids `[T]`.
    pub tokens: B::Buf<u32>,
    /// Positions `[T]`.
    pub positions: B::Buf<u32>,
    /// Sequence starts `[S + 1]`.
    pub seq_starts: B::Buf<u32>,
    /// Scored token indices `[R]`.
    pub rows: B::Buf<u32>,
    /// Scored token ids `[R]`.
    pub targets: B::Buf<u32>,
    /// Row sequence indices `[R]`.
    pub row_seqs: B::Buf<u32>,
    /// `T`.
    pub n_tokens: usize,
    /// `R`.
    pub n_rows: usize,
    /// `S`.
    pub n_seqs: usize,
}

impl<B: Backend> DeviceBatch<B> {
    /// Uploads `batch` (small index buffers; uploaded each step).
    ///
    /// # Errors
    /// A backend error.
    pub fn upload(backend: &B, batch: &PackedBatch) -> Result<Self, B::Error> {
        Ok(DeviceBatch {
            tokens: backend.upload(&batch.tokens)?,
            positions: backend.upload(&batch.packing.positions)?,
            seq_starts: backend.upload(&batch.packing.seq_starts)?,
            rows: backend.upload(&batch.rows)?,
            targets: backend.upload(&batch.targets)?,
            row_seqs: backend.upload(&batch.row_seqs)?,
            n_tokens: batch.n_tokens(),
            n_rows: batch.n_rows(),
            n_seqs: batch.n_seqs(),
        })
    }
}
